"""The demo database's schema and the rows that fill it: plausible fuel-dispenser service data.

Everything is drawn from one `random.Random`, in a fixed order, so a seed and a reference time
fully determine the data. Times are UTC text ('YYYY-MM-DD HH:MM:SS'), the format SQLite's
`datetime('now', '-1 hour')` produces, so such comparisons work on the stored text. Rows carry
them as Unix seconds and the INSERTs format them with SQLite's `datetime()`: doing it in Python
took a third of a default build.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random
    from collections.abc import Iterator

# Only the primary keys are indexed, on purpose: fossamon's `db analyze` is meant to find the
# full scans that the app's filters (status, customer_id, work_order_id, created_date) cause.
SCHEMA = (
    """CREATE TABLE customers (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        contact_email TEXT,
        city TEXT,
        state TEXT,
        created_date TEXT NOT NULL
    )""",
    """CREATE TABLE work_orders (
        id INTEGER PRIMARY KEY,
        external_id TEXT NOT NULL,
        customer_id INTEGER NOT NULL REFERENCES customers (id),
        site_name TEXT NOT NULL,
        store_number TEXT,
        address TEXT,
        city TEXT,
        state TEXT,
        service_code TEXT NOT NULL,
        status TEXT NOT NULL,
        scheduled_date TEXT,
        created_date TEXT NOT NULL,
        updated_date TEXT NOT NULL,
        notes TEXT
    )""",
    """CREATE TABLE dispensers (
        id INTEGER PRIMARY KEY,
        work_order_id INTEGER NOT NULL REFERENCES work_orders (id),
        dispenser_number TEXT NOT NULL,
        make TEXT NOT NULL,
        model TEXT,
        serial_number TEXT,
        fuel_grades TEXT,
        meter_type TEXT,
        created_date TEXT NOT NULL
    )""",
)

INSERT_CUSTOMER = "INSERT INTO customers VALUES (?, ?, ?, ?, ?, datetime(?, 'unixepoch'))"
INSERT_WORK_ORDER = (
    "INSERT INTO work_orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, date(?, 'unixepoch'),"
    " datetime(?, 'unixepoch'), datetime(?, 'unixepoch'), ?)"
)
INSERT_DISPENSER = (
    "INSERT INTO dispensers VALUES (?, ?, ?, ?, ?, ?, ?, ?, datetime(?, 'unixepoch'))"
)

STATUSES = ("pending", "scheduled", "in_progress", "completed", "cancelled")
SERVICE_CODES = ("2861", "2862", "3002", "3146")

_DAY = 86_400
SPAN_SECONDS = 730 * _DAY  # work orders reach back about two years
RECENT_SECONDS = 3_600  # some always fall in the last hour, for the "last hour" queries

_CHAINS = (
    "Circle K", "7-Eleven", "Speedway", "Wawa", "Sheetz", "QuikTrip", "Casey's", "RaceTrac",
    "Murphy USA", "Love's", "Pilot", "Marathon", "Shell", "BP", "Exxon", "Chevron", "Sunoco",
    "Valero", "Kum & Go", "Thorntons",
)  # fmt: skip
_PLACES = (
    ("Tampa", "FL"), ("Orlando", "FL"), ("Jacksonville", "FL"), ("Miami", "FL"),
    ("Atlanta", "GA"), ("Savannah", "GA"), ("Charlotte", "NC"), ("Raleigh", "NC"),
    ("Columbia", "SC"), ("Nashville", "TN"), ("Memphis", "TN"), ("Birmingham", "AL"),
    ("Mobile", "AL"), ("Jackson", "MS"), ("New Orleans", "LA"), ("Houston", "TX"),
    ("Dallas", "TX"), ("Austin", "TX"), ("Richmond", "VA"), ("Louisville", "KY"),
)  # fmt: skip
_STREETS = ("Main", "Oak", "Pine", "Maple", "Cedar", "Lake", "Hill", "Park", "Washington",
            "Lincoln", "Jackson", "Highway 41", "US-19", "State Road 60", "Airport")  # fmt: skip
_STREET_KINDS = ("St", "Ave", "Blvd", "Rd", "Dr", "Pkwy", "Hwy")
_MODELS = {
    "Gilbarco": ("Encore 700 S", "Encore 500", "Advantage", "FlexPay IV"),
    "Wayne": ("Ovation", "Ovation2", "Helix 6000", "Reliance"),
    "Tokheim": ("Quantium 510", "Premier B", "Quantium 310"),
    "Bennett": ("Pacific", "3800 Series"),
    "Dresser Wayne": ("Vista", "Global Century"),
}
_SERIAL_PREFIX = {"Gilbarco": "GB", "Wayne": "WY", "Tokheim": "TK", "Bennett": "BN"}
_FUEL_GRADES = (
    '["Regular", "Plus", "Premium"]',
    '["Regular", "Plus", "Premium", "Diesel"]',
    '["Regular", "Premium"]',
    '["Regular", "Plus", "Premium", "Ethanol-Free"]',
    '["Regular", "Premium", "E85"]',
    '["Diesel", "DEF"]',
)
_METER_TYPES = ("Electronic", "HD Meter", "Mechanical")
_NOTES = (
    "Calibration within tolerance on all grades.",
    "Customer requested morning visit.",
    "Meter adjusted on dispenser 3/4, retested.",
    "Site contact: store manager.",
    "Rented prover can; return it by Friday.",
    "Filter replaced on Premium.",
)


def _weighted(values: tuple[str, ...], weights: tuple[int, ...]) -> tuple[str, ...]:
    """Each value repeated by its weight: a uniform pick from it is a weighted pick."""
    return tuple(v for v, w in zip(values, weights, strict=True) for _ in range(w))


# An order's status depends on its age: old orders are mostly closed, new ones mostly open.
_OLD_AGE = 30 * _DAY
_OLD_STATUSES = _weighted(STATUSES, (1, 1, 1, 87, 10))
_NEW_STATUSES = _weighted(STATUSES, (30, 35, 15, 15, 5))
_SERVICE_CODE_PICKS = _weighted(SERVICE_CODES, (40, 25, 25, 10))
_MAKE_PICKS = _weighted(tuple(_MODELS), (45, 33, 10, 8, 4))
# The loops draw with `int(random() * n)` rather than randrange/choice/choices: those cost about
# ten times as much per call, and a default build makes over a million draws.


def reference_time(now: datetime | None) -> datetime:
    """`now` as naive UTC to the second (aware times are converted; naive ones taken as UTC)."""
    moment = now or datetime.now(UTC)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=0)


def unix_seconds(moment: datetime) -> int:
    """A naive UTC time as Unix seconds (the row generators' time unit)."""
    return calendar.timegm(moment.timetuple())


def created_offsets(rng: random.Random, count: int) -> list[int]:
    """Seconds before the reference time, oldest first, so ids grow with created_date."""
    r, older = rng.random, SPAN_SECONDS - RECENT_SECONDS
    recent = min(count, max(1, count // 1_000)) if count else 0
    offsets = [RECENT_SECONDS + int(r() * older) for _ in range(count - recent)]
    offsets += [int(r() * RECENT_SECONDS) for _ in range(recent)]
    offsets.sort(reverse=True)
    return offsets


def customer_rows(
    rng: random.Random, count: int, reference: int
) -> tuple[list[tuple[object, ...]], list[str]]:
    """The customer rows, and each customer's chain (index = id - 1) for naming its sites."""
    r = rng.random
    rows: list[tuple[object, ...]] = []
    chains: list[str] = []
    for customer_id in range(1, count + 1):
        chain = _CHAINS[int(r() * len(_CHAINS))]
        city, state = _PLACES[int(r() * len(_PLACES))]
        slug = chain.lower().replace(" ", "").replace("'", "").replace("&", "and")
        created = reference - SPAN_SECONDS - int(r() * SPAN_SECONDS)
        name = f"{chain} ({city}, {state}) #{customer_id}"
        email = f"maintenance.{customer_id}@{slug}.example.com"
        rows.append((customer_id, name, email, city, state, created))
        chains.append(chain)
    return rows, chains


def work_order_row(
    rng: random.Random, order_id: int, age: int, chain: str, customer_id: int, reference: int
) -> tuple[object, ...]:
    r = rng.random
    created = reference - age
    # Updated some time after creation, never after the reference time.
    updated = created + int(r() * min(age, 14 * _DAY))
    scheduled = created + _DAY * (1 + int(r() * 21))
    statuses = _OLD_STATUSES if age > _OLD_AGE else _NEW_STATUSES
    city, state = _PLACES[int(r() * len(_PLACES))]
    store = str(1_000 + int(r() * 99_000))
    number = 100 + int(r() * 9_900)
    street = f"{number} {_STREETS[int(r() * len(_STREETS))]} {_STREET_KINDS[int(r() * 7)]}"
    return (
        order_id,
        f"W-{100_000 + order_id}",
        customer_id,
        f"{chain} #{store}",
        store,
        street,
        city,
        state,
        _SERVICE_CODE_PICKS[int(r() * len(_SERVICE_CODE_PICKS))],
        statuses[int(r() * len(statuses))],
        scheduled,
        created,
        updated,
        _NOTES[int(r() * len(_NOTES))] if r() < 0.3 else None,
    )


def work_order_rows(
    rng: random.Random, ages: list[int], chains: list[str], reference: int
) -> Iterator[tuple[object, ...]]:
    r, customers = rng.random, len(chains)
    for order_id, age in enumerate(ages, start=1):
        customer_id = 1 + int(r() * customers)
        yield work_order_row(rng, order_id, age, chains[customer_id - 1], customer_id, reference)


def dispenser_row(
    rng: random.Random, dispenser_id: int, order_id: int, position: int, created: int
) -> tuple[object, ...]:
    r = rng.random
    make = _MAKE_PICKS[int(r() * len(_MAKE_PICKS))]
    models = _MODELS[make]
    return (
        dispenser_id,
        order_id,
        f"{2 * position - 1}/{2 * position}",  # dispensers are numbered by their two sides
        make,
        models[int(r() * len(models))],
        f"{_SERIAL_PREFIX.get(make, 'DW')}{int(r() * 10_000_000):07d}",
        _FUEL_GRADES[int(r() * len(_FUEL_GRADES))],
        _METER_TYPES[int(r() * len(_METER_TYPES))],
        created,
    )


def dispenser_rows(
    rng: random.Random, count: int, ages: list[int], reference: int
) -> Iterator[tuple[object, ...]]:
    """`count` dispensers spread over the work orders, recorded shortly after their order."""
    r, orders = rng.random, len(ages)
    order_ids = sorted(1 + int(r() * orders) for _ in range(count))
    previous, position = 0, 0
    for dispenser_id, order_id in enumerate(order_ids, start=1):
        position = position + 1 if order_id == previous else 1
        previous = order_id
        age = max(0, ages[order_id - 1] - 60 - int(r() * 7_140))
        yield dispenser_row(rng, dispenser_id, order_id, position, reference - age)
