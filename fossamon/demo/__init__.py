"""A stand-in for the FossaWork V2 application: a seeded SQLite database and an aiohttp API.

Used by `fossamon demo`, the integration tests and the benchmarks. `seed` builds the database,
`target` serves it with injectable faults (`faults`).
"""
