"""A DuckLake catalog in PostgreSQL as tr50gw's database: several gateways, one usage log.

One in-memory DuckDB per process (`LakeDatabase`) attaches

* the lake, `ducklake:postgres:<dsn>` with its Parquet files under `--data-path`, as `lake`:
  the usage log, its rollups and bookkeeping, and the device data, in the same tables and
  columns as the DuckDB file's (storage/duckdb/database.py), without their primary keys
  (DuckLake has none: the few upserts use `MERGE INTO` or an UPDATE, then an INSERT). A data
  path `s3://bucket/prefix` is an S3-compatible object store (`ObjectStore`): httpfs is loaded,
  a temporary secret made, and the prefix listed once before the lake is attached, so that a
  wrong key or endpoint stops the start with the store's own reason (`ObjectStoreError`);
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
from storage.duckdb.database import LOG_MIGRATIONS, LOG_SCHEMA, Database, device_schema
from storage.ducklake import extensions
from storage.ducklake.objectstore import ObjectStore, ObjectStoreError, check_s3_path, is_s3

__all__ = [
    "IDENTITY_DDL",
    "LAKE_PREFIX",
    "LakeDatabase",
    "is_lake",
    "lake_ddl",
    "parse_lake",
    "secret_sql",
]

LAKE_PREFIX: Final = "ducklake:"
_POSTGRES: Final = "postgres:"
_SECRET_NAME: Final = "tr50gw_data_path"  # noqa: S105 - the DuckDB secret's name

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
CREATE TABLE IF NOT EXISTS namespace_bindings (
    namespace varchar PRIMARY KEY,
    token_hash varchar NOT NULL,
    bound_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
"""

# DuckLake retries a commit that raced another writer's (every gateway appends to the same
# tables): by default after 100 ms, growing 1.5 times, 10 times. Several gateways committing
# small batches (--durable-replies commits per reply) then waited seconds per commit and stalled;
# short waits growing slowly keep a commit's cost near its own (measured: tests and bench/lake.py).
COMMIT_RETRIES: Final = {
    "ducklake_retry_wait_ms": 5,
    "ducklake_retry_backoff": 1.3,
    "ducklake_max_retry_count": 25,
}

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
    """A SQL string literal (ATTACH and CREATE SECRET take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def secret_sql(store: ObjectStore) -> str:
    """`CREATE TEMPORARY SECRET` for `store`: the connection's own, in memory, never a file.
    Its values were checked when `store` was made."""
    options = [f"TYPE s3, REGION {_quoted(store.region)}, URL_STYLE {_quoted(store.style)}"]
    if store.access_key_id:
        options.append(
            f"KEY_ID {_quoted(store.access_key_id)}, SECRET {_quoted(store.secret_access_key)}"
        )
    endpoint = store.endpoint_host
    if endpoint is not None:
        tls, host = endpoint
        options.append(f"ENDPOINT {_quoted(host)}, USE_SSL {'true' if tls else 'false'}")
    return f"CREATE TEMPORARY SECRET {_SECRET_NAME} ({', '.join(options)})"


def _open_store(connection: duckdb.DuckDBPyConnection, data_path: str, store: ObjectStore) -> None:
    """The secret (httpfs loaded), and one listing of the prefix: a wrong key, region, bucket
    or endpoint fails here, at start, rather than at the first commit of the usage writer."""
    try:
        connection.execute(secret_sql(store))
    except duckdb.Error as error:  # DuckDB may quote the statement: never shown
        raise ObjectStoreError(f"DuckDB refused the S3 settings ({type(error).__name__})") from None
    try:
        connection.execute("SELECT count(*) FROM glob(?)", [data_path.rstrip("/") + "/*"])
    except duckdb.Error as error:
        # What failed and the store's own code and message, on one line, without DuckDB's
        # pointer into our statement or its hints.
        parts = [part for part in str(error).split("\n\n") if not part.startswith("LINE ")]
        reason = " ".join(parts[:2]).replace("\n", " ")
        raise ObjectStoreError(f"listing {data_path} failed: {store.scrubbed(reason)}") from None


class LakeDatabase(Database):
    """The lake and PostgreSQL, attached to one in-memory DuckDB; cursors as `Database`'s."""

    lake = True

    def __init__(
        self,
        db: str,
        data_path: str | Path,
        *,
        memory_limit: str | None = None,
        object_store: ObjectStore | None = None,
    ) -> None:
        """`db`: `ducklake:postgres:<dsn>`; `data_path`: where the lake's Parquet files go (a
        directory every gateway shares, or `s3://bucket/prefix` in `object_store`: AWS with
        unsigned requests when None)."""
        dsn = parse_lake(db)
        self.dsn = dsn
        self.path = Path(str(data_path))
        self.location = f"{LAKE_PREFIX}{_POSTGRES}{_redacted(dsn)} (data {data_path})"
        s3 = is_s3(str(data_path))
        if s3:
            check_s3_path(str(data_path))
        else:
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
            names = ("ducklake", "postgres", "httpfs") if s3 else ("ducklake", "postgres")
            extensions.load(connection, names)
            if s3:
                _open_store(connection, str(data_path), object_store or ObjectStore())
            for setting, value in COMMIT_RETRIES.items():
                connection.execute(f"SET GLOBAL {setting} = {value}")
            connection.execute(
                f"ATTACH {_quoted(LAKE_PREFIX + _POSTGRES + dsn)} AS lake"
                f" (DATA_PATH {_quoted(str(data_path))}, DATA_INLINING_ROW_LIMIT 0)"
            )
            connection.execute(f"ATTACH {_quoted(dsn)} AS pg (TYPE postgres, SCHEMA 'public')")
            connection.execute("CALL postgres_execute('pg', ?)", [IDENTITY_DDL])
            connection.execute("USE lake")
            # One transaction, one snapshot: table by table cost 0.9 s (each a catalog commit).
            connection.execute("BEGIN TRANSACTION")
            connection.execute(
                lake_ddl(LOG_SCHEMA + rollups.SCHEMA + device_schema()) + LOG_MIGRATIONS
            )
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
