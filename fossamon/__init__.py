"""fossamon: a performance-monitoring daemon for a web API + SQLite application and its host."""

__version__ = "0.1.0"
