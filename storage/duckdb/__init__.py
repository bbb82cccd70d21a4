"""The ports of `gateway.core.ports` over one DuckDB file: all of tr50gw's SQL lives here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.core.bindings import UnsharedBindings
from gateway.core.ports import LoginGuard, SessionBindings
from gateway.core.ratelimit import FailedLogins
from storage.duckdb.administration import AdminStore
from storage.duckdb.analytics import UsageAggregates
from storage.duckdb.broker import CredentialsExporter
from storage.duckdb.compaction import Compactor
from storage.duckdb.database import Database, DatabaseLocked
from storage.duckdb.devices import DeviceStore
from storage.duckdb.export import UsageExporter
from storage.duckdb.identity import IdentityStore
from storage.duckdb.periodic import Periodic
from storage.duckdb.retention import Retention
from storage.duckdb.usage import UsageQueries, UsageWriter
from storage.duckdb.writer import BatchWriter

__all__ = ["DatabaseLocked", "DuckDBStorage"]


class DuckDBStorage:
    """One open DuckDB file and the port implementations over it; `close` stops its threads.

    `usage` is the usage sink (its writer thread), `reader` and `analytics` the read ports,
    `identity` both `Sessions` and `Provisioning`, `devices` the `DeviceData` port (its own
    writer thread); with `compact_interval` > 0, a compactor thread re-sorts finished days.
    """

    def __init__(
        self,
        path: str | Path,
        clock: Callable[[], datetime],
        *,
        memory_limit: str | None = None,
        flush_interval: float = 0.05,
        compact_interval: float = 0,
        broker_credentials: Path | None = None,
        retention_days: int = 0,
        rollup_retention_days: int = 0,
        use_rollups: bool = True,
        archive_dir: Path | None = None,
        retention_interval: float = 3600.0,
    ) -> None:
        """With `broker_credentials`, the broker plugin's credentials file (broker/README.md)
        is written there at once and rewritten whenever an app or a thing is added."""
        self.database = self._open(path, memory_limit)
        # api.authenticate's brute-force counters: this process's memory (one gateway per file)
        self.logins: LoginGuard = FailedLogins()
        # Sessions bound to MQTT namespaces: in the namespaces' connections alone (one gateway)
        self.bindings: SessionBindings = UnsharedBindings()
        self.credentials = (
            CredentialsExporter(self.database, broker_credentials)
            if broker_credentials is not None
            else None
        )
        self.usage = UsageWriter(self.database, flush_interval=flush_interval)
        self.reader = UsageQueries(self.database, self.usage, use_rollups=use_rollups)
        self.analytics = UsageAggregates(self.database, self.usage, use_rollups=use_rollups)
        self.archive_dir = archive_dir.absolute() if archive_dir is not None else None
        self.exports = UsageExporter(
            self.database, self.usage, self.reader, archive=self.archive_dir is not None
        )
        self.identity = IdentityStore(
            self.database,
            clock,
            on_change=self.credentials.changed if self.credentials is not None else None,
        )
        self.devices = DeviceStore(
            self.database, flush_interval=flush_interval, use_rollups=use_rollups
        )
        self.admin = AdminStore(
            self.database,
            self.identity,
            clock,
            flush_devices=self._flush_devices,
            on_change=self.credentials.changed if self.credentials is not None else None,
        )
        self.compactor = (
            self._compactor(clock, compact_interval, retention_days)
            if compact_interval > 0
            else None
        )
        self.retention = (
            self._retention_class(
                self.database,
                clock,
                retention_days=retention_days,
                rollup_retention_days=rollup_retention_days,
                archive_dir=self.archive_dir,
                interval=retention_interval,
            )
            if retention_days > 0 or rollup_retention_days > 0
            else None
        )

    _retention_class: type[Retention] = Retention

    def _open(self, path: str | Path, memory_limit: str | None) -> Database:
        return Database(path, memory_limit=memory_limit)

    def _compactor(
        self, clock: Callable[[], datetime], interval: float, retention_days: int
    ) -> Periodic:
        """The upkeep of `compact_interval` (a file: finished days re-sorted by org)."""
        return Compactor(self.database, clock, interval=interval, retention_days=retention_days)

    def catalog_rollbacks(self) -> float | None:
        """A lake's catalog figure (`DuckLakeStorage`); a file has no catalog."""
        return None

    def _flush_devices(self) -> None:
        for writer in self.devices.writers.values():
            writer.flush()

    @property
    def writers(self) -> dict[str, BatchWriter[Any]]:
        """Every writer thread, by the table it appends to: the usage log's and the devices'."""
        return {self.usage.table.table: self.usage, **self.devices.writers}

    def close(self) -> None:
        """Stop compacting, commit every submitted record, close the file (blocking)."""
        try:
            if self.retention is not None:
                self.retention.close()
            if self.compactor is not None:
                self.compactor.close()
            if self.credentials is not None:
                self.credentials.close()
            self.devices.close()
            self.usage.close()
        finally:
            self.database.close()
