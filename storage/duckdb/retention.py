"""Retention and archive (SPEC §9): whole UTC days older than `retention_days` leave the usage
log, each first written as Parquet (zstd) under `archive_dir` when one is set.

One day is one transaction, so that an interruption (a crash, SIGKILL) at any point leaves every
record exactly once in the log or in the archive:

1. the day's records are read inside the transaction and written to
   `DIR/usage/day=YYYY-MM-DD/part-N.parquet.tmp` (flushed to disk);
2. still inside it, the same records are deleted (the transaction sees exactly the snapshot it
   read: a record committed meanwhile stays in the log) and the part is entered in
   `usage_archive` (day, part, records, path); then COMMIT;
3. the file is renamed to `part-N.parquet` (and the folder flushed).

Before each run, and before the archive is read, `recover` finishes what a crash interrupted: a
`.tmp` whose part is in `usage_archive` was committed (its records left the log) and is renamed;
any other `.tmp` was not (its records are still in the log) and is removed. `usage_archive` is
what readers believe: the archive is exactly its parts. Without `archive_dir` a day is deleted
and entered with no path. A late record for a retired day (a clock stepped back) is retired as
another part of it.

The hourly rollups (rollups.py) have a retention of their own, `rollup_retention_days`, longer
than the records': charts keep reaching back after the records have left (`prune_rollups`).

DuckDB does not shrink its file when rows are deleted: their blocks are freed (a CHECKPOINT
follows each run) and reused by what is written next.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from typing import Final

import duckdb
import pyarrow.parquet as pq

from storage.duckdb import rollups
from storage.duckdb.database import Database
from storage.duckdb.periodic import Periodic

__all__ = ["Retention", "archived_parts", "prune_rollups", "recover", "retire_due"]

logger = logging.getLogger("tr50gw.retention")

BATCH_ROWS: Final = 50_000
CONFLICT_RETRIES: Final = 5


@dataclass(frozen=True, slots=True)
class Retired:
    day: date
    part: int
    records: int
    path: Path | None


def day_folder(archive_dir: Path, day: date) -> Path:
    return archive_dir / "usage" / f"day={day.isoformat()}"


def cutoff(now: datetime, retention_days: int) -> datetime:
    """The first instant that stays: midnight UTC `retention_days` days before today."""
    today = datetime(now.year, now.month, now.day)
    return today - timedelta(days=retention_days)


def due_days(cursor: duckdb.DuckDBPyConnection, before: datetime) -> list[date]:
    rows = cursor.execute(
        "SELECT DISTINCT CAST(ts AS DATE) AS day FROM usage_log WHERE ts < ? ORDER BY day",
        [before],
    ).fetchall()
    return [row[0] for row in rows]


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def retire_day(
    cursor: duckdb.DuckDBPyConnection,
    day: date,
    now: datetime,
    archive_dir: Path | None,
    *,
    before_commit: Callable[[], None] = lambda: None,
) -> Retired:
    """Move one day out of the log (into the archive, with `archive_dir`); one transaction."""
    start = datetime(day.year, day.month, day.day)
    end = start + timedelta(days=1)
    window = [start, end]
    cursor.execute("BEGIN TRANSACTION")
    temporary: Path | None = None
    try:
        (part,) = cursor.execute(
            "SELECT coalesce(max(part) + 1, 0) FROM usage_archive WHERE day = ?", [day]
        ).fetchone() or (0,)
        written = 0
        final: Path | None = None
        if archive_dir is not None:
            folder = day_folder(archive_dir, day)
            folder.mkdir(parents=True, exist_ok=True)
            final = (folder / f"part-{part}.parquet").absolute()
            temporary = final.with_name(f"part-{part}.parquet.tmp")
            # Every column as stored, the id as text (portable: any Parquet reader reads it).
            reader = cursor.execute(
                "SELECT * REPLACE (CAST(id AS VARCHAR) AS id) FROM usage_log"
                " WHERE ts >= ? AND ts < ? ORDER BY ts, id",
                window,
            ).to_arrow_reader(BATCH_ROWS)
            with pq.ParquetWriter(temporary, reader.schema, compression="zstd") as writer:
                for batch in reader:
                    writer.write_batch(batch)
                    written += batch.num_rows
            with open(temporary, "rb+") as file:
                os.fsync(file.fileno())
        (deleted,) = cursor.execute(
            "DELETE FROM usage_log WHERE ts >= ? AND ts < ?", window
        ).fetchone() or (0,)
        if archive_dir is not None and deleted != written:
            raise RuntimeError(f"retention of {day}: wrote {written} records, deleting {deleted}")
        cursor.execute(
            "INSERT INTO usage_archive VALUES (?, ?, ?, ?, ?)",
            [day, part, deleted, None if final is None else str(final), now],
        )
        before_commit()
        cursor.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise
    if temporary is not None and final is not None:
        temporary.replace(final)
        _fsync_dir(final.parent)
    return Retired(day, part, deleted, final)


def _retire_retrying(
    cursor: duckdb.DuckDBPyConnection, day: date, now: datetime, archive_dir: Path | None
) -> Retired:
    """`retire_day`, again after a write-write conflict (the compactor rewriting that day
    meanwhile: DuckDB aborts the later transaction, which changed nothing)."""
    for attempt in range(1, CONFLICT_RETRIES + 1):
        try:
            return retire_day(cursor, day, now, archive_dir)
        except duckdb.TransactionException:
            if attempt == CONFLICT_RETRIES:
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def recover(cursor: duckdb.DuckDBPyConnection, archive_dir: Path | None) -> int:
    """Finish what an interrupted run left: rename the `.tmp` parts `usage_archive` holds,
    remove the others. Returns how many files were renamed or removed."""
    if archive_dir is None or not (archive_dir / "usage").is_dir():
        return 0
    committed = {
        Path(row[0])
        for row in cursor.execute(
            "SELECT path FROM usage_archive WHERE path IS NOT NULL"
        ).fetchall()
    }
    fixed = 0
    for temporary in (archive_dir / "usage").glob("day=*/part-*.parquet.tmp"):
        final = temporary.with_suffix("").absolute()  # part-N.parquet
        if final in committed:
            temporary.replace(final)
            _fsync_dir(final.parent)
            logger.info("retention: finished archiving %s (interrupted after its commit)", final)
        else:
            temporary.unlink()
            logger.info("retention: removed %s (interrupted before its commit)", temporary)
        fixed += 1
    return fixed


def retire_due(
    database: Database,
    now: datetime,
    retention_days: int,
    archive_dir: Path | None,
    *,
    stop: threading.Event | None = None,
) -> list[Retired]:
    """Retire every day before the cutoff, oldest first; then CHECKPOINT (frees the blocks)."""
    if retention_days <= 0:
        return []
    cursor = database.new_cursor()
    retired: list[Retired] = []
    try:
        recover(cursor, archive_dir)
        for day in due_days(cursor, cutoff(now, retention_days)):
            if stop is not None and stop.is_set():
                break
            # Listing counts stop reading this day from the rollups before its records go (they
            # read the records for it meanwhile): never counted from both, nor from neither.
            database.rollup_floors = rollups.raised_floors(
                database.rollup_floors,
                retired_until=datetime.combine(day, time_of_day.min) + timedelta(days=1),
            )
            database.usage_generation += 1
            done = _retire_retrying(cursor, day, now, archive_dir)
            database.usage_generation += 1
            retired.append(done)
            logger.info(
                "retention: %s left the usage log (%d records%s)",
                day,
                done.records,
                f", archived to {done.path}" if done.path else "",
            )
        if retired:
            with contextlib.suppress(duckdb.Error):  # busy: the next checkpoint frees them
                cursor.execute("CHECKPOINT")
        return retired
    finally:
        cursor.close()


def archived_parts(
    cursor: duckdb.DuckDBPyConnection, start: datetime | None, end: datetime | None
) -> list[str]:
    """The archive's Parquet files holding days of [start, end] (either open)."""
    sql = "SELECT path FROM usage_archive WHERE path IS NOT NULL"
    values: list[object] = []
    if start is not None:
        sql += " AND day >= CAST(? AS DATE)"
        values.append(start)
    if end is not None:
        sql += " AND day <= CAST(? AS DATE)"
        values.append(end)
    return [row[0] for row in cursor.execute(sql + " ORDER BY day, part", values).fetchall()]


class Retention(Periodic):
    """Applies retention at start and then every `interval` seconds on its own thread."""

    name = "usage-retention"
    what = "retention"

    def __init__(
        self,
        database: Database,
        clock: Callable[[], datetime],
        *,
        retention_days: int,
        archive_dir: Path | None,
        rollup_retention_days: int = 0,
        interval: float = 3600.0,
    ) -> None:
        self._database = database
        self._clock = clock
        self._days = retention_days
        self._rollup_days = rollup_retention_days
        self._archive_dir = archive_dir
        super().__init__(interval, logger)

    def round(self) -> None:
        now = self._clock()
        retire_due(self._database, now, self._days, self._archive_dir, stop=self.stopping)
        if self._rollup_days > 0:
            prune_rollups(self._database, now, self._rollup_days)


def prune_rollups(database: Database, now: datetime, rollup_retention_days: int) -> int:
    """Delete the hourly rollups older than `rollup_retention_days` whole UTC days (the charts'
    own retention, longer than the records'); returns the rows deleted."""
    cursor = database.new_cursor()
    try:
        before = cutoff(now, rollup_retention_days)
        # Queries read those hours from the records before their rollups go (as retire_due).
        database.rollup_floors = rollups.raised_floors(database.rollup_floors, kept_from=before)
        deleted = rollups.prune(cursor, before)
        database.rollup_floors = rollups.read_floors(cursor)
    finally:
        cursor.close()
    if deleted:
        logger.info(
            "retention: %d rollup rows older than %d days deleted", deleted, rollup_retention_days
        )
    return deleted
