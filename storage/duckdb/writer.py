"""A table's rows appended in batches by one writer thread (group commit), never on the loop.

`submit` only appends to an in-memory queue; the writer thread takes whatever has accumulated,
inserts it as one Arrow batch (about 200x faster than executemany) and commits; batches grow by
themselves under load. `wait_visible` lets a reader wait until every row submitted before it is
committed: how a call's effect becomes visible as soon as its reply has been sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

import duckdb
import pyarrow as pa

from storage.duckdb.database import Database
from storage.duckdb.transaction import transaction

__all__ = ["BatchWriter", "TableSpec"]

Row = TypeVar("Row")

MAX_CONFLICT_RETRIES = 50  # a batch tried again after a commit conflict, at most this often
# On a lake whose catalog is unreachable, records wait in memory up to this many (about 1 KB
# each); beyond it the batch being stored is given up, logged, so memory stays bounded.
MAX_BACKLOG = 500_000


def _conflict(error: duckdb.Error) -> bool:
    """A commit lost to a concurrent one (DuckDB's write-write conflicts, DuckLake's)."""
    return isinstance(error, duckdb.TransactionException) and "onflict" in str(error)


@dataclass(frozen=True, slots=True)
class TableSpec:
    """What a writer appends: the row dataclass's fields as Arrow columns, and the INSERT that
    reads them from the registered `batch` (column names only, never values)."""

    name: str
    table: str
    columns: list[str]
    arrow_schema: pa.Schema
    insert_sql: str
    # Run after `insert_sql` in the same transaction (keeping derived tables in step).
    also_sql: tuple[str, ...] = ()


class BatchWriter(Generic[Row]):
    """Append-only rows of one table with a group-committing writer thread."""

    def __init__(
        self,
        database: Database,
        table: TableSpec,
        *,
        max_batch: int = 10_000,
        flush_interval: float = 0.05,
    ) -> None:
        """`flush_interval` (seconds): how long the writer lets a batch grow before committing,
        unless a reader is waiting for it. A commit costs ~5 ms whatever its size, so this
        trades at most one interval of records (on a hard crash) for far fewer commits."""
        self._database = database
        self.table = table
        self._logger = logging.getLogger(f"tr50gw.{table.name}")
        self._max_batch = max_batch
        self._flush_interval = flush_interval
        self._pending: list[Row] = []
        self._in_flight: list[Row] = []  # the batch being stored now
        self._flushing = 0  # threads blocked in flush()
        self._condition = threading.Condition()
        self._submitted = 0
        self._committed = 0
        self._stopping = False
        self._last_commit = time.monotonic()
        self._failing = False  # the last batch could not be stored at all
        # Counted for /metrics: batches committed, and commits lost to a concurrent one and
        # tried again (several gateways on one lake, or its compaction).
        self.commits = 0
        self.conflicts = 0
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._staged: Any = None  # the cursor whose `batch` table and statements are ready
        # Held while a batch commits and `committed` moves with it: a reader holding it sees a
        # DuckDB snapshot and an uncommitted list that add up to exactly `submitted` (usage.py).
        self.commit_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"{table.name}-writer", daemon=True)
        self._thread.start()

    # -- writing -------------------------------------------------------------------------------
    def submit(self, row: Row) -> int:
        """Queue a row; returns its sequence number. Never blocks on the database."""
        with self._condition:
            if self._stopping:
                raise RuntimeError(f"the {self.table.name} writer is closed")
            self._pending.append(row)
            self._submitted += 1
            self._held(row)
            if len(self._pending) == 1:  # the writer sleeps only when the queue is empty
                self._condition.notify()
            return self._submitted

    def submit_many(self, rows: list[Row]) -> int:
        """Queue rows that belong together (one command's); returns the last sequence number."""
        with self._condition:
            if self._stopping:
                raise RuntimeError(f"the {self.table.name} writer is closed")
            was_empty = not self._pending
            self._pending.extend(rows)
            self._submitted += len(rows)
            for row in rows:
                self._held(row)
            if was_empty:
                self._condition.notify()
            return self._submitted

    def _held(self, row: Row) -> None:
        """Called holding the condition for every row submitted (a subclass may keep some)."""

    @property
    def submitted(self) -> int:
        return self._submitted

    @property
    def backlog(self) -> int:
        """Records submitted but not yet committed."""
        return self._submitted - self._committed

    @property
    def commit_lag(self) -> float:
        """Seconds the oldest waiting record has waited for a commit, at most: the time since
        the last commit while records wait, else 0."""
        if self._submitted == self._committed:
            return 0.0
        return time.monotonic() - self._last_commit

    def healthy(self, max_lag: float) -> bool:
        """Whether the writer is storing what it is given: its thread runs, its last batch was
        stored, and nothing has waited longer than `max_lag` seconds."""
        return self._thread.is_alive() and not self._failing and self.commit_lag <= max_lag

    def uncommitted(self) -> list[Row]:
        """The rows submitted and not yet committed, oldest first (a copy, taken at once): with
        what is committed, every row submitted so far. Readers merge them rather than wait for
        the commit (storage/duckdb/usage.py)."""
        with self._condition:
            return [*self._in_flight, *self._pending]

    def uncommitted_at(self) -> tuple[list[Row], int]:
        """`uncommitted()` and the `submitted` count it completes, taken together."""
        with self._condition:
            return [*self._in_flight, *self._pending], self._submitted

    async def wait_visible(self, sequence: int | None = None) -> None:
        """Wait until every record up to `sequence` (default: all submitted so far) is committed."""
        loop = asyncio.get_running_loop()
        with self._condition:
            target = self._submitted if sequence is None else sequence
            if self._committed >= target:
                return
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((target, loop, future))
            self._condition.notify()  # a lingering writer commits now
        await future

    def flush(self, timeout: float = 30.0) -> bool:
        """Block the calling thread until everything submitted so far is committed, or until
        `timeout`; whether it was. For tools and tests that are not on an event loop."""
        deadline = time.monotonic() + timeout
        with self._condition:
            target = self._submitted
            self._flushing += 1  # a lingering writer commits now
            self._condition.notify_all()
            try:
                while self._committed < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._condition.wait(remaining)
            finally:
                self._flushing -= 1
        return True

    def close(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        self._thread.join()

    def _run(self) -> None:
        cursor = self._database.new_cursor()
        while True:
            with self._condition:
                while not self._pending and not self._stopping:
                    self._condition.wait()
                if not self._pending and self._stopping:
                    break
                self._linger()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                self._in_flight = batch
            failing = False
            try:
                self._store(cursor, batch)
            except Exception:
                # One unstorable string (a lone surrogate...) must not sink the whole batch.
                self._logger.exception(
                    "storing %d %s records failed; retrying sanitized", len(batch), self.table.name
                )
                try:
                    self._insert(cursor, [self._sanitized(row) for row in batch])
                except Exception:
                    failing = True
                    self._logger.exception(
                        "failed to store %d %s records", len(batch), self.table.name
                    )
                    with self.commit_lock:
                        self._advance(len(batch))  # given up: they leave the uncommitted list
            with self._condition:
                self._failing = failing
                self._last_commit = time.monotonic()
                self._condition.notify_all()
                ready = [w for w in self._waiters if w[0] <= self._committed]
                self._waiters = [w for w in self._waiters if w[0] > self._committed]
            for _, loop, future in ready:
                loop.call_soon_threadsafe(_resolve, future)
        cursor.close()

    def _store(self, cursor: Any, batch: list[Row]) -> None:
        """`_insert` the batch, again after a commit conflict (several gateways appending to one
        lake, or its compaction, committed first: the transaction was rolled back whole, so
        trying again stores the batch once) and, on a lake, while the catalog is unreachable
        (PostgreSQL restarting) and no more than `MAX_BACKLOG` records wait; then the error."""
        conflicts = 0
        outage_since: float | None = None
        while True:
            try:
                self._insert(cursor, batch)
            except duckdb.Error as error:
                if _conflict(error) and conflicts < MAX_CONFLICT_RETRIES:
                    conflicts += 1
                    self.conflicts += 1
                    time.sleep(random.uniform(0.5, 1.5) * min(0.2, 0.002 * 2**conflicts))
                    continue
                if (
                    not self._database.lake
                    or _conflict(error)
                    or self._stopping
                    or self.backlog > MAX_BACKLOG
                ):
                    raise
                if outage_since is None:
                    outage_since = time.monotonic()
                    self._failing = True
                    self._logger.error(
                        "the lake is unreachable (%s); %d records wait, retrying",
                        str(error).splitlines()[0][:200],
                        self.backlog,
                    )
                time.sleep(min(5.0, 0.1 + (time.monotonic() - outage_since) / 10))
                continue
            self.commits += 1
            if outage_since is not None:
                self._logger.warning(
                    "the lake is back after %.1f s: %d waiting records stored, %d more queued",
                    time.monotonic() - outage_since,
                    len(batch),
                    self.backlog,
                )
            return

    def _linger(self) -> None:
        """Let the batch grow for up to one flush interval (called holding the condition)."""
        deadline = time.monotonic() + self._flush_interval
        while not (
            self._stopping
            or self._waiters
            or self._flushing
            or len(self._pending) >= self._max_batch
        ):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._condition.wait(remaining)

    def _insert(self, cursor: Any, batch: list[Row]) -> None:
        spec = self.table
        columns = {name: [getattr(row, name) for row in batch] for name in spec.columns}
        arrow = pa.Table.from_pydict(columns, schema=spec.arrow_schema)
        if not spec.also_sql:
            cursor.register("batch", arrow)
            try:
                with self.commit_lock:
                    cursor.execute(spec.insert_sql)
                    self._advance(len(batch))
            finally:
                cursor.unregister("batch")
            return
        # Several statements read the batch: each scan of a registered Arrow table and each
        # parse and plan costs about a millisecond here, more than a small batch's rows do. So
        # the batch is copied once into a temporary table and the statements are prepared once
        # per cursor (`_staged`): a batch of 50 records went from ~40 to ~25 ms.
        if self._staged is not cursor:
            self._stage(cursor, arrow)
        cursor.register("batch_arrow", arrow)
        try:
            with transaction(
                cursor, commit_lock=self.commit_lock, committed=lambda: self._advance(len(batch))
            ):
                cursor.execute("INSERT INTO batch SELECT * FROM batch_arrow")
                for index, statement in enumerate((spec.insert_sql, *spec.also_sql)):
                    if _preparable(statement):
                        cursor.execute(f"EXECUTE tr50gw_{spec.name}_{index}")
                    else:
                        cursor.execute(statement)
                cursor.execute("DELETE FROM batch")
        finally:
            cursor.unregister("batch_arrow")

    def _advance(self, count: int) -> None:
        """The batch in flight is committed (called holding `commit_lock`, right after)."""
        with self._condition:
            self._committed += count
            self._in_flight = []

    def _stage(self, cursor: Any, arrow: pa.Table) -> None:
        """On `cursor`: the temporary table `batch` (the Arrow batch's columns) and the prepared
        statements that read it (fixed SQL of column and table names, no values)."""
        spec = self.table
        cursor.register("batch_arrow", arrow.slice(0, 0))
        try:
            cursor.execute("CREATE OR REPLACE TEMP TABLE batch AS SELECT * FROM batch_arrow")
        finally:
            cursor.unregister("batch_arrow")
        for index, statement in enumerate((spec.insert_sql, *spec.also_sql)):
            if _preparable(statement):
                cursor.execute(f"PREPARE tr50gw_{spec.name}_{index} AS {statement}")
        self._staged = cursor

    def _sanitized(self, row: Row) -> Row:
        """The row with every string made encodable as UTF-8 (bad characters become "?")."""
        changes: dict[str, Any] = {
            name: value.encode("utf-8", "replace").decode("utf-8")
            for name in self.table.columns
            if isinstance(value := getattr(row, name), str)
        }
        return replace(row, **changes)  # type: ignore[type-var]


def _preparable(statement: str) -> bool:
    """Whether DuckDB can PREPARE the statement (1.5.5 cannot prepare `MERGE INTO`, which a
    DuckLake's writers run: storage/duckdb/devices.py)."""
    return not statement.lstrip().upper().startswith("MERGE")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
