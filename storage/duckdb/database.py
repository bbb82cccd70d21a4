"""Opening the DuckDB file, its schema, and per-thread cursors; reads off the event loop."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import duckdb

from gateway.core.errors import QueryOutOfMemory
from storage.duckdb import rollups

__all__ = [
    "CURRENT_SERIES",
    "DEVICE_TABLES",
    "Database",
    "DatabaseLocked",
    "reading",
]

T = TypeVar("T")


# DuckDB's Python client looks for pandas at every execute with parameters (is a parameter a
# DataFrame?); without pandas installed each look is a failed import that searches sys.path: 5
# per query, 27% of a listing's time (measured: 3.6 -> 2.6 ms). This finder, first on the meta
# path and installed only when pandas is absent, answers "no pandas" at once, with the same
# ModuleNotFoundError the search would end in (pyarrow's check reads it as such too).
class _AbsentPandas:
    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


if importlib.util.find_spec("pandas") is None:
    sys.meta_path.insert(0, _AbsentPandas())

LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_log (
    id UUID NOT NULL,
    ts TIMESTAMP NOT NULL,
    exec_time BIGINT NOT NULL,
    processed_by VARCHAR NOT NULL,
    org_id VARCHAR NOT NULL,
    org_key VARCHAR NOT NULL,
    whoami VARCHAR NOT NULL,
    service VARCHAR NOT NULL,
    command VARCHAR NOT NULL,
    success BOOLEAN NOT NULL,
    error_code INTEGER,
    transport VARCHAR NOT NULL,
    client_id VARCHAR NOT NULL,
    remote_addr VARCHAR NOT NULL,
    request VARCHAR NOT NULL,
    response VARCHAR NOT NULL,
    delivery VARCHAR
);
CREATE TABLE IF NOT EXISTS usage_compaction (
    day DATE PRIMARY KEY,
    records BIGINT NOT NULL,
    compacted_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS usage_archive (
    day DATE NOT NULL,
    part INTEGER NOT NULL,
    records BIGINT NOT NULL,
    path VARCHAR,
    retired_at TIMESTAMP NOT NULL,
    PRIMARY KEY (day, part)
);
"""
"""The usage log and its bookkeeping (the lake's tables, storage/ducklake/)."""

IDENTITY_SCHEMA = """
CREATE TABLE IF NOT EXISTS orgs (
    org_id VARCHAR PRIMARY KEY,
    org_key VARCHAR NOT NULL UNIQUE,
    name VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    email VARCHAR PRIMARY KEY,
    org_id VARCHAR NOT NULL,
    role VARCHAR NOT NULL,
    password_hash VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS applications (
    app_id VARCHAR PRIMARY KEY,
    org_id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    token_hash VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS things (
    org_id VARCHAR NOT NULL,
    thing_key VARCHAR NOT NULL,
    app_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (org_id, thing_key)
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash VARCHAR PRIMARY KEY,
    org_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    subject VARCHAR NOT NULL,
    role VARCHAR NOT NULL,
    app_id VARCHAR NOT NULL,
    ttl_seconds INTEGER NOT NULL,
    start_time TIMESTAMP NOT NULL,
    last_accessed TIMESTAMP NOT NULL,
    ended BOOLEAN NOT NULL DEFAULT false
);
"""
"""Who may call: orgs, users, applications, things, sessions (PostgreSQL's tables on a lake)."""
SCHEMA = LOG_SCHEMA + IDENTITY_SCHEMA

# Columns added after the tables were first shipped: a file made by an earlier version gains them
# when it is opened (every INSERT names its columns, so none depends on their order). The first
# is the usage log's (LOG_MIGRATIONS, a lake's too), the rest the identity tables'.
LOG_MIGRATIONS = """
ALTER TABLE usage_log ADD COLUMN IF NOT EXISTS delivery VARCHAR;
"""
MIGRATIONS = (
    LOG_MIGRATIONS
    + """
ALTER TABLE orgs ADD COLUMN IF NOT EXISTS description VARCHAR DEFAULT '';
ALTER TABLE orgs ADD COLUMN IF NOT EXISTS updated_at TIMESTAMP;
ALTER TABLE users ADD COLUMN IF NOT EXISTS first_name VARCHAR DEFAULT '';
ALTER TABLE users ADD COLUMN IF NOT EXISTS last_name VARCHAR DEFAULT '';
ALTER TABLE users ADD COLUMN IF NOT EXISTS disabled BOOLEAN DEFAULT false;
ALTER TABLE users ADD COLUMN IF NOT EXISTS updated_at TIMESTAMP;
ALTER TABLE users ADD COLUMN IF NOT EXISTS last_login TIMESTAMP;
ALTER TABLE applications ADD COLUMN IF NOT EXISTS description VARCHAR DEFAULT '';
ALTER TABLE applications ADD COLUMN IF NOT EXISTS updated_at TIMESTAMP;
ALTER TABLE applications ADD COLUMN IF NOT EXISTS token_rotated_at TIMESTAMP;
ALTER TABLE things ADD COLUMN IF NOT EXISTS name VARCHAR;
ALTER TABLE things ADD COLUMN IF NOT EXISTS tags VARCHAR[] DEFAULT [];
ALTER TABLE things ADD COLUMN IF NOT EXISTS updated_at TIMESTAMP;
"""
)


# Device data: each table's columns once. A table named in CURRENT_SERIES also has a
# `<name>_current` twin, the same columns with the series as primary key, which the writer keeps
# (storage/duckdb/devices.py); every device table has a `<table>_compaction` record of its
# finished days (storage/duckdb/compaction.py).
DEVICE_TABLES: Final = (
    (
        "property_values",
        """
    org_id VARCHAR NOT NULL,
    thing_key VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL,
    value DOUBLE NOT NULL,
    corr_id VARCHAR,
    received_at TIMESTAMP NOT NULL
""",
    ),
    (
        "location_values",
        """
    org_id VARCHAR NOT NULL,
    thing_key VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL,
    lat DOUBLE NOT NULL,
    lng DOUBLE NOT NULL,
    heading DOUBLE,
    altitude DOUBLE,
    speed DOUBLE,
    fix_acc DOUBLE,
    fix_type VARCHAR,
    corr_id VARCHAR,
    street_number VARCHAR,
    street VARCHAR,
    city VARCHAR,
    state VARCHAR,
    zip_code VARCHAR,
    country VARCHAR,
    received_at TIMESTAMP NOT NULL
""",
    ),
    (
        "alarm_values",
        """
    org_id VARCHAR NOT NULL,
    thing_key VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL,
    state INTEGER NOT NULL,
    msg VARCHAR,
    corr_id VARCHAR,
    lat DOUBLE,
    lng DOUBLE,
    received_at TIMESTAMP NOT NULL
""",
    ),
    (
        "attribute_values",
        """
    org_id VARCHAR NOT NULL,
    thing_key VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL,
    value VARCHAR,
    corr_id VARCHAR,
    received_at TIMESTAMP NOT NULL
""",
    ),
    (
        "log_entries",
        """
    id VARCHAR NOT NULL,
    org_id VARCHAR NOT NULL,
    thing_key VARCHAR,
    ts TIMESTAMP NOT NULL,
    level INTEGER NOT NULL,
    msg VARCHAR NOT NULL,
    corr_id VARCHAR,
    received_at TIMESTAMP NOT NULL
""",
    ),
)
CURRENT_SERIES: Final = {
    "property": ("org_id", "thing_key", "key"),
    "location": ("org_id", "thing_key"),
    "alarm": ("org_id", "thing_key", "key"),
    "attribute": ("org_id", "thing_key", "key"),
}
"""The device tables whose current values are kept in `<name>_current` (`<name>_values`'s
columns), each with the columns naming one series: that table's primary key."""


def device_schema() -> str:
    columns = dict(DEVICE_TABLES)
    statements = []
    for table, listed in DEVICE_TABLES:
        statements.append(f"CREATE TABLE IF NOT EXISTS {table} ({listed});")
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {table}_compaction ("
            "day DATE PRIMARY KEY, records BIGINT NOT NULL, compacted_at TIMESTAMP NOT NULL);"
        )
    for name, series in CURRENT_SERIES.items():
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {name}_current ({columns[name + '_values']},"
            f" PRIMARY KEY ({', '.join(series)}));"
        )
    return "\n".join(statements)


class DatabaseLocked(RuntimeError):
    """Another process holds the DuckDB file open for writing."""


async def reading(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a read on a worker thread; DuckDB's out-of-memory error becomes QueryOutOfMemory."""
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except duckdb.OutOfMemoryException as error:
        raise QueryOutOfMemory(str(error).split("\n", 1)[0]) from None


class Database:
    """One DuckDB file, opened once per process; each thread gets its own cursor.

    `lake` says which SQL the tables take: False here (a DuckDB file: primary keys, `ON
    CONFLICT`), True for a DuckLake catalog (storage/ducklake/: no keys, so `MERGE INTO`), and
    whether other processes append to the same tables (then nothing is answered from what this
    process alone has seen)."""

    lake = False

    def __init__(self, path: str | Path, *, memory_limit: str | None = None) -> None:
        """`memory_limit` caps DuckDB's buffer cache (its default is 80% of RAM); beyond it,
        DuckDB spills to a temporary folder next to the file."""
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        config: dict[str, str | bool | int | float | list[str]] = {}
        if memory_limit:
            config["memory_limit"] = memory_limit
        try:
            self._connection = duckdb.connect(str(path), config=config)
        except duckdb.IOException as error:
            if "lock" in str(error).lower():
                raise DatabaseLocked(
                    f"{path} is in use by another process (is another tr50gw running?)"
                ) from None
            raise
        self._connection.execute(SCHEMA + rollups.SCHEMA + device_schema() + MIGRATIONS)
        self._prepared()

    def _prepared(self) -> None:
        """Once the tables exist: the rollups of files made before them, the floors, the
        per-thread cursors."""
        rollups.prepare(self._connection)
        self.rollup_floors = rollups.read_floors(self._connection)
        # Raised before and after records leave the usage log (retention): counts kept in
        # memory from an earlier generation are counted again (storage/duckdb/usage.py).
        self.usage_generation = 0
        # Schema changes go to the file itself, not to the write-ahead log: DuckDB 1.5 cannot
        # replay a logged column default that calls a function (`DEFAULT []`), so a process
        # killed before its first checkpoint left a file that no longer opened ("Failure while
        # replaying WAL file ... no default database set"; tests/test_rollups.py kills one).
        if not self.lake:  # a lake's CHECKPOINT is its whole maintenance (storage/ducklake/)
            self._connection.execute("CHECKPOINT")
        self._local = threading.local()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor owned by the calling thread (DuckDB connections are not thread-safe)."""
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self.new_cursor()
            self._local.cursor = cursor
        return cursor

    def new_cursor(self) -> duckdb.DuckDBPyConnection:
        return self._connection.cursor()

    def close(self) -> None:
        self._connection.close()
