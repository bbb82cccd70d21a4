"""The ports of `gateway.core.ports` over a DuckLake catalog in PostgreSQL (issue 15, SPEC §8):
the same storage modules as a DuckDB file's (storage/duckdb/), over `LakeDatabase`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from storage.duckdb import DuckDBStorage
from storage.duckdb.database import Database
from storage.duckdb.periodic import Periodic
from storage.ducklake.bindings import SharedBindings
from storage.ducklake.database import LakeDatabase, is_lake, parse_lake
from storage.ducklake.logins import SharedFailedLogins
from storage.ducklake.maintenance import LakeMaintenance, LakeRetention
from storage.ducklake.objectstore import ObjectStore, ObjectStoreError
from storage.ducklake.pg import PgConnection

__all__ = [
    "DuckLakeStorage",
    "LakeDatabase",
    "ObjectStore",
    "ObjectStoreError",
    "is_lake",
    "parse_lake",
]


class DuckLakeStorage(DuckDBStorage):
    """`DuckDBStorage` whose tables live in a DuckLake catalog (`db`: `ducklake:postgres:<dsn>`)
    with its Parquet files under `data_path` (a shared directory, or `s3://bucket/prefix` in
    `object_store`), and whose identity tables live in PostgreSQL."""

    def __init__(
        self,
        db: str,
        clock: Callable[[], datetime],
        *,
        data_path: str | Path,
        object_store: ObjectStore | None = None,
        **options: Any,
    ) -> None:
        self._data_path = data_path
        self._object_store = object_store
        super().__init__(db, clock, **options)
        # api.authenticate's brute-force counters, shared by every gateway on the catalog
        assert isinstance(self.database, LakeDatabase)
        self.shared_logins = SharedFailedLogins(self.database.dsn)
        self.logins = self.shared_logins
        # Sessions bound to MQTT namespaces, seen by every gateway of a shared subscription
        self.shared_bindings = SharedBindings(self.database.dsn, self.identity)
        self.bindings = self.shared_bindings
        self._catalog = PgConnection(self.database.dsn, connect_timeout=2)  # its figures

    def close(self) -> None:
        try:
            self.shared_logins.close()
            self.shared_bindings.close()
            self._catalog.close()
        finally:
            super().close()

    _retention_class = LakeRetention

    def catalog_rollbacks(self) -> float | None:
        """Transactions rolled back in the catalog's database (PostgreSQL's statistics, every
        client's): with several gateways, mostly DuckLake retrying a commit that lost a race,
        which it does inside the commit, out of the writers' sight. None when unreachable."""
        try:
            with self._catalog.held() as connection:
                row = connection.execute(
                    "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()"
                ).fetchone()
        except psycopg.Error:
            return None
        return None if row is None else float(row[0])

    def _open(self, path: str | Path, memory_limit: str | None) -> Database:
        return LakeDatabase(
            str(path),
            self._data_path,
            memory_limit=memory_limit,
            object_store=self._object_store,
        )

    def _compactor(
        self, clock: Callable[[], datetime], interval: float, retention_days: int
    ) -> Periodic:
        """On a lake: small files merged, old snapshots and files removed, by one gateway at a
        time (storage/ducklake/maintenance.py)."""
        assert isinstance(self.database, LakeDatabase)
        return LakeMaintenance(self.database, clock, interval=interval)
