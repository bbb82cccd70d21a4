"""Upkeep of a lake several gateways share, by one gateway at a time.

Every commit of a writer is a DuckLake snapshot with a small Parquet file per table it touched
(or, for a handful of rows, rows inlined in the catalog), so a busy lake gathers thousands of
small files a day, and every scan pays per file; and every commit adds partial rows to the hourly
rollups. `LakeMaintenance` (every `--compact-interval-s`, the DuckDB file's day compaction's
setting) folds them:

0. `rollups.consolidate`: each finished hour's partial rollup rows into one per group, as on a
   DuckDB file (storage/duckdb/rollups.py);
1. `ducklake_flush_inlined_data`: rows inlined in the catalog into Parquet;
2. `ducklake_merge_adjacent_files`: small files of one table into larger ones;
3. `ducklake_rewrite_data_files`: files with many deleted rows (retention) rewritten without them;
4. `ducklake_expire_snapshots` older than `keep` (an hour): snapshots no reader needs any more;
5. `ducklake_cleanup_old_files` older than `keep`: the files only expired snapshots referenced.

Each step is a DuckLake commit of its own: a concurrent append commits beside it (DuckLake
retries a commit that conflicts), and readers keep the snapshot they began with, so counts never
change (tests/test_ducklake.py compacts under load and counts). Only one gateway runs a round at
once: it holds a PostgreSQL session-level advisory lock (`exclusive`) on a connection of its own
for the round; the others find it taken and skip theirs. Retention on a lake (`LakeRetention`)
takes a lock of its own the same way, so that no two gateways archive one day.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import duckdb
import psycopg

from storage.duckdb import rollups
from storage.duckdb.periodic import Periodic
from storage.duckdb.retention import Retention
from storage.ducklake.database import LakeDatabase

__all__ = [
    "COMPACTION_LOCK",
    "RETENTION_LOCK",
    "LakeMaintenance",
    "LakeRetention",
    "Round",
    "compact",
    "exclusive",
]

logger = logging.getLogger("tr50gw.lake")

# Advisory lock keys (one bigint space per PostgreSQL database): "tr50" then a number.
COMPACTION_LOCK: Final = 0x7472_3530_0001
RETENTION_LOCK: Final = 0x7472_3530_0002
KEEP: Final = timedelta(hours=1)  # snapshots and files a reader may still use
STEP_TRIES: Final = 5


@contextmanager
def exclusive(dsn: str, key: int) -> Iterator[bool]:
    """Whether this process holds advisory lock `key` (taken without waiting) for the block; the
    lock is held by a connection of its own and released when the block ends, or by PostgreSQL
    when the process dies."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as connection:
        row = connection.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        held = bool(row and row[0])
        try:
            yield held
        finally:
            if held:
                connection.execute("SELECT pg_advisory_unlock(%s)", (key,))


@dataclass(slots=True)
class Round:
    """What one round of compaction did, per step (rows or files each step reported)."""

    consolidated: int = 0  # hours of rollups
    conflicts: int = 0  # steps tried again after losing a commit conflict to an append
    flushed: int = 0
    merged: int = 0
    rewritten: int = 0
    expired: int = 0
    cleaned: int = 0
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step


def compact(database: LakeDatabase, now: datetime, keep: timedelta = KEEP) -> Round:
    """One compaction round (the caller holds `COMPACTION_LOCK`): the steps above. A step that
    loses a commit conflict to a gateway's append (both wrote one table) is tried again, up to
    `STEP_TRIES` times, then left to the next round: appends always win."""
    done = Round()
    cursor = database.new_cursor()
    older_than = now - keep

    def counted(sql: str, *parameters: Any) -> Callable[[], int]:
        # fetchall: a statement commits once its result is read whole (fetchone leaves it
        # open, and the next statement then rolls the step back)
        return lambda: int(cursor.execute(sql, parameters).fetchall()[0][0])

    steps: tuple[tuple[str, Callable[[], int]], ...] = (
        ("consolidated", lambda: rollups.consolidate(cursor, now)),
        ("flushed", counted("SELECT count(*) FROM ducklake_flush_inlined_data('lake')")),
        ("merged", counted("SELECT count(*) FROM ducklake_merge_adjacent_files('lake')")),
        ("rewritten", counted("SELECT count(*) FROM ducklake_rewrite_data_files('lake')")),
        (
            "expired",
            counted(
                "SELECT count(*) FROM ducklake_expire_snapshots('lake', older_than => ?)",
                older_than,
            ),
        ),
        (
            "cleaned",
            counted(
                "SELECT count(*) FROM ducklake_cleanup_old_files('lake', older_than => ?)",
                older_than,
            ),
        ),
    )
    try:
        for name, step in steps:
            started = time.perf_counter()
            for attempt in range(1, STEP_TRIES + 1):
                try:
                    setattr(done, name, step())
                    break
                except duckdb.Error as error:
                    # A commit conflict, or PostgreSQL refusing a serialization (another
                    # gateway's append won): the step is rolled back, tried again, or left to
                    # the next round. Appends always win.
                    with contextlib.suppress(duckdb.Error):
                        cursor.execute("ROLLBACK")
                    if not _lost_a_race(error):
                        raise
                    done.conflicts += 1
                    if attempt == STEP_TRIES:
                        logger.info("lake compaction: %s left to the next round", name)
                    else:
                        time.sleep(0.01 * attempt)
            done.steps[name] = time.perf_counter() - started
    finally:
        cursor.close()
    return done


def _lost_a_race(error: duckdb.Error) -> bool:
    text = str(error)
    return "onflict" in text or "could not serialize" in text


class LakeMaintenance(Periodic):
    """`compact` every `interval` seconds, by whichever gateway holds the lock."""

    name = "lake-maintenance"
    what = "lake compaction"

    def __init__(
        self, database: LakeDatabase, clock: Callable[[], datetime], *, interval: float
    ) -> None:
        self._database = database
        self._clock = clock
        self.ran = 0  # rounds this gateway did
        self.skipped = 0  # rounds another gateway held the lock for
        self.last: Round | None = None
        super().__init__(interval, logger)

    def round(self) -> None:
        with exclusive(self._database.dsn, COMPACTION_LOCK) as held:
            if not held:
                self.skipped += 1
                return
            self.last = compact(self._database, self._clock())
            self.ran += 1
        last = self.last
        if last.merged or last.flushed or last.cleaned:
            logger.info(
                "lake compacted: %d inlined rows flushed, %d files merged, %d rewritten, "
                "%d snapshots expired, %d old files removed (%.1f s)",
                last.flushed,
                last.merged,
                last.rewritten,
                last.expired,
                last.cleaned,
                sum(last.steps.values()),
            )


class LakeRetention(Retention):
    """Retention on a lake: a round runs only in the gateway holding `RETENTION_LOCK`."""

    def round(self) -> None:
        database = self._database
        assert isinstance(database, LakeDatabase)
        with exclusive(database.dsn, RETENTION_LOCK) as held:
            if held:
                super().round()
