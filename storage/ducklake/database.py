"""A DuckLake catalog in PostgreSQL as tr50gw's database: several gateways, one usage log.

One in-memory DuckDB per process (`LakeDatabase`) attaches

* the lake, `ducklake:postgres:<dsn>` with its Parquet files under `--data-path`, as `lake`:
  the usage log, its rollups and bookkeeping, and the device data, in the same tables and
  columns as the DuckDB file's (storage/duckdb/database.py), without their primary keys
  (DuckLake has none: the few upserts use `MERGE INTO` or an UPDATE, then an INSERT);
* the same PostgreSQL database through DuckDB's postgres extension, as `pg`: the identity tables
  (orgs, users, applications, things, sessions) with their keys, created there in PostgreSQL's
  own DDL, so that every gateway sees one set of them.

Every cursor uses `lake` and searches `lake.main` then `pg.public`, so the storage modules'
statements name their tables unqualified, as over a DuckDB file. A transaction may write only
one of the two (DuckDB's rule for attached databases).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import duckdb

from storage.duckdb import rollups
from storage.duckdb.database import LOG_SCHEMA, Database, device_schema
from storage.ducklake import extensions

__all__ = ["IDENTITY_DDL", "LAKE_PREFIX", "LakeDatabase", "is_lake", "lake_ddl", "parse_lake"]

LAKE_PREFIX: Final = "ducklake:"
_POSTGRES: Final = "postgres:"

# The identity tables in PostgreSQL's DDL, with every column the DuckDB file's have after its
# migrations (storage/duckdb/database.py: IDENTITY_SCHEMA + MIGRATIONS).
IDENTITY_DDL: Final = """
CREATE TABLE IF NOT EXISTS orgs (
    org_id varchar PRIMARY KEY,
    org_key varchar NOT NULL UNIQUE,
    name varchar NOT NULL,
    created_at timestamp NOT NULL,
    description varchar DEFAULT '',
    updated_at timestamp
);
CREATE TABLE IF NOT EXISTS users (
    email varchar PRIMARY KEY,
    org_id varchar NOT NULL,
    role varchar NOT NULL,
    password_hash varchar NOT NULL,
    created_at timestamp NOT NULL,
    first_name varchar DEFAULT '',
    last_name varchar DEFAULT '',
    disabled boolean DEFAULT false,
    updated_at timestamp,
    last_login timestamp
);
CREATE TABLE IF NOT EXISTS applications (
    app_id varchar PRIMARY KEY,
    org_id varchar NOT NULL,
    name varchar NOT NULL,
    token_hash varchar NOT NULL,
    created_at timestamp NOT NULL,
    description varchar DEFAULT '',
    updated_at timestamp,
    token_rotated_at timestamp
);
CREATE TABLE IF NOT EXISTS things (
    org_id varchar NOT NULL,
    thing_key varchar NOT NULL,
    app_id varchar NOT NULL,
    created_at timestamp NOT NULL,
    name varchar,
    tags varchar[] DEFAULT '{}',
    updated_at timestamp,
    PRIMARY KEY (org_id, thing_key)
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash varchar PRIMARY KEY,
    org_id varchar NOT NULL,
    kind varchar NOT NULL,
    subject varchar NOT NULL,
    role varchar NOT NULL,
    app_id varchar NOT NULL,
    ttl_seconds integer NOT NULL,
    start_time timestamp NOT NULL,
    last_accessed timestamp NOT NULL,
    ended boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS login_failures (
    key_digest varchar NOT NULL,
    at timestamp NOT NULL,
    attempt varchar NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_by_key ON login_failures (key_digest, at);
CREATE INDEX IF NOT EXISTS login_failures_by_attempt ON login_failures (attempt);
"""

_KEYS: Final = (
    re.compile(r",\s*PRIMARY KEY\s*\([^)]*\)"),  # a table's key clause
    re.compile(r"\s+(PRIMARY KEY|UNIQUE)\b"),  # a column's
)


def lake_ddl(ddl: str) -> str:
    """The DuckDB file's DDL without keys, for DuckLake (which has no constraints but NOT NULL)."""
    for pattern in _KEYS:
        ddl = pattern.sub("", ddl)
    return ddl


def is_lake(db: str | Path) -> bool:
    """Whether `--db` names a DuckLake catalog rather than a DuckDB file."""
    return str(db).startswith(LAKE_PREFIX)


def parse_lake(db: str) -> str:
    """The PostgreSQL connection string of `ducklake:postgres:<dsn>` (ValueError otherwise)."""
    if not is_lake(db):
        raise ValueError(f"not a DuckLake catalog: {db!r}")
    catalog = db[len(LAKE_PREFIX) :]
    if not catalog.startswith(_POSTGRES) or not catalog[len(_POSTGRES) :].strip():
        raise ValueError(
            "a DuckLake catalog is ducklake:postgres:<libpq connection string>, e.g."
            " ducklake:postgres:dbname=tr50gw host=127.0.0.1 port=5432 user=tr50gw"
        )
    return catalog[len(_POSTGRES) :].strip()


def _quoted(text: str) -> str:
    """A SQL string literal (ATTACH takes no parameters)."""
    return "'" + text.replace("'", "''") + "'"


class LakeDatabase(Database):
    """The lake and PostgreSQL, attached to one in-memory DuckDB; cursors as `Database`'s."""

    lake = True

    def __init__(self, db: str, data_path: str | Path, *, memory_limit: str | None = None) -> None:
        """`db`: `ducklake:postgres:<dsn>`; `data_path`: where the lake's Parquet files go (a
        directory every gateway shares)."""
        dsn = parse_lake(db)
        self.dsn = dsn
        self.path = Path(str(data_path))
        self.location = f"{LAKE_PREFIX}{_POSTGRES}{_redacted(dsn)} (data {data_path})"
        if not str(data_path).startswith("s3://"):
            Path(data_path).mkdir(parents=True, exist_ok=True)
        config: dict[str, str | bool | int | float | list[str]] = {
            "extension_directory": str(extensions.cache_directory()),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
        if memory_limit:
            config["memory_limit"] = memory_limit
        connection = duckdb.connect(":memory:", config=config)
        try:
            extensions.load(connection, ("ducklake", "postgres"))
            connection.execute(
                f"ATTACH {_quoted(LAKE_PREFIX + _POSTGRES + dsn)} AS lake"
                f" (DATA_PATH {_quoted(str(data_path))})"
            )
            connection.execute(f"ATTACH {_quoted(dsn)} AS pg (TYPE postgres, SCHEMA 'public')")
            connection.execute("CALL postgres_execute('pg', ?)", [IDENTITY_DDL])
            connection.execute("USE lake")
            # One transaction, one snapshot: table by table cost 0.9 s (each a catalog commit).
            connection.execute("BEGIN TRANSACTION")
            connection.execute(lake_ddl(LOG_SCHEMA + rollups.SCHEMA + device_schema()))
            connection.execute("COMMIT")
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        self._search(connection)
        self._prepared()

    @staticmethod
    def _search(cursor: duckdb.DuckDBPyConnection) -> None:
        cursor.execute("USE lake")
        cursor.execute("SET search_path = 'lake.main,pg.public'")

    def new_cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = self._connection.cursor()
        self._search(cursor)
        return cursor


def _redacted(dsn: str) -> str:
    """The DSN without its password (it never reaches a log)."""
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", dsn, flags=re.IGNORECASE)
