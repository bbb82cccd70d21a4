"""Retention and archive (SPEC §9, storage/duckdb/retention.py) on real DuckDB files: whole UTC
days older than the retention leave the log, archived first as Parquet; a run killed with
SIGKILL at random points loses and duplicates nothing; exports read the log and the archive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from devtools.synthetic import generate_usage
from gateway.core.records import UsageFilter
from storage.duckdb import DuckDBStorage
from storage.duckdb.database import Database
from storage.duckdb.retention import recover, retire_due
from storage.ducklake.database import LakeDatabase
from tests.support import GatewayThread, Tenants

NOW = datetime(2026, 3, 31, 12, 0)
DAYS = 10
ROWS = 20_000


def seeded(path: Path, rows: int = ROWS) -> set[str]:
    """A file of `rows` synthetic records over the DAYS days before NOW; their ids."""
    database = Database(path)
    generate_usage(database, rows=rows, orgs=3, callers=50, days=DAYS, end=NOW, compact=False)
    rows_of = database.cursor().execute("SELECT CAST(id AS VARCHAR) FROM usage_log").fetchall()
    ids = {row[0] for row in rows_of}
    database.close()
    return ids


def log_ids(path: Path) -> list[str]:
    with duckdb.connect(str(path)) as connection:
        rows = connection.execute("SELECT CAST(id AS VARCHAR) FROM usage_log").fetchall()
        return [r[0] for r in rows]


def archive_ids(path: Path) -> list[str]:
    """The ids in the parts `usage_archive` lists: what readers take the archive to be."""
    with duckdb.connect(str(path)) as connection:
        parts = [
            r[0]
            for r in connection.execute(
                "SELECT path FROM usage_archive WHERE path IS NOT NULL"
            ).fetchall()
        ]
        if not parts:
            return []
        rows = connection.execute("SELECT id FROM read_parquet(?)", [parts]).fetchall()
        return [r[0] for r in rows]


def days_in_log(path: Path) -> list[str]:
    with duckdb.connect(str(path)) as connection:
        rows = connection.execute(
            "SELECT DISTINCT CAST(ts AS DATE)::VARCHAR FROM usage_log ORDER BY 1"
        ).fetchall()
    return [row[0] for row in rows]


@pytest.fixture
def db(tmp_path: Path) -> tuple[Path, set[str]]:
    path = tmp_path / "usage.duckdb"
    return path, seeded(path)


def retire(path: Path, days: int, archive: Path | None) -> list[Any]:
    database = Database(path)
    try:
        return retire_due(database, NOW, days, archive)
    finally:
        database.close()


def test_only_days_older_than_the_retention_stay_out(db: tuple[Path, set[str]]) -> None:
    path, _ = db
    retire(path, 3, None)
    cutoff = (NOW - timedelta(days=3)).date().isoformat()
    assert days_in_log(path)[0] == cutoff


def test_without_an_archive_the_days_are_gone(db: tuple[Path, set[str]]) -> None:
    path, ids = db
    retired = retire(path, 3, None)
    assert (len(log_ids(path)) + sum(r.records for r in retired), archive_ids(path)) == (
        len(ids),
        [],
    )


def test_archived_days_hold_exactly_the_records_that_left(
    db: tuple[Path, set[str]], tmp_path: Path
) -> None:
    path, ids = db
    retire(path, 3, tmp_path / "archive")
    in_log, archived = log_ids(path), archive_ids(path)
    assert (sorted(in_log + archived), set(in_log) & set(archived)) == (sorted(ids), set())


def test_the_archive_is_one_zstd_parquet_folder_per_day(
    db: tuple[Path, set[str]], tmp_path: Path
) -> None:
    path, _ = db
    retired = retire(path, 3, tmp_path / "archive")
    first = retired[0].path
    codecs = {
        pq.ParquetFile(first).metadata.row_group(0).column(i).compression
        for i in range(pq.ParquetFile(first).metadata.num_columns)
    }
    assert (first.parent.name, first.name, codecs) == (
        f"day={retired[0].day.isoformat()}",
        "part-0.parquet",
        {"ZSTD"},
    )


def test_a_second_run_retires_nothing_more(db: tuple[Path, set[str]], tmp_path: Path) -> None:
    path, _ = db
    retire(path, 3, tmp_path / "archive")
    assert retire(path, 3, tmp_path / "archive") == []


def test_zero_keeps_everything(db: tuple[Path, set[str]]) -> None:
    path, ids = db
    retire(path, 0, None)
    assert len(log_ids(path)) == len(ids)


def test_retired_blocks_are_freed_for_new_records(tmp_path: Path) -> None:
    """DuckDB keeps its file's size; the blocks of deleted days become free and are reused."""

    def free_blocks() -> int:
        with duckdb.connect(str(path)) as connection:
            connection.execute("CHECKPOINT")
            return int(
                connection.execute("SELECT free_blocks FROM pragma_database_size()").fetchone()[0]
            )  # type: ignore[index]

    path = tmp_path / "big.duckdb"
    seeded(path, rows=400_000)  # several row groups: a row group is freed once all of it is gone
    before = free_blocks()
    retire(path, 1, tmp_path / "archive")
    assert free_blocks() > before


def test_exports_read_the_log_and_the_archive(db: tuple[Path, set[str]], tmp_path: Path) -> None:
    path, ids = db
    retire(path, 3, tmp_path / "archive")
    storage = DuckDBStorage(path, lambda: NOW, archive_dir=tmp_path / "archive")
    try:
        import asyncio

        async def export() -> tuple[int, bytes]:
            everything = UsageFilter()
            count = await storage.exports.count(everything)
            chunks = [chunk async for chunk in storage.exports.export(everything, "csv")]
            return count, b"".join(chunks)

        count, body = asyncio.run(export())
    finally:
        storage.close()
    exported = {line.split(b",")[0].strip(b'"').decode() for line in body.splitlines()[1:]}
    assert (count, exported) == (len(ids), ids)


# -- SIGKILL at random points ---------------------------------------------------------------------
CHILD = """
import sys
from datetime import datetime
from pathlib import Path
from storage.duckdb.database import Database
from storage.duckdb.retention import retire_due
database = Database(sys.argv[1])
print("ready", flush=True)
retire_due(database, datetime.fromisoformat(sys.argv[3]), 1, Path(sys.argv[2]))
database.close()
print("done", flush=True)
"""


def run_child(path: Path, archive: Path, kill_after: float | None) -> float:
    """Retention in a process of its own, SIGKILLed `kill_after` s after it is ready (None:
    let it finish); how long it ran."""
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(archive), NOW.isoformat()],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    started = time.monotonic()
    if kill_after is None:
        process.wait(120)
    else:
        time.sleep(kill_after)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    return time.monotonic() - started


def test_a_killed_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """The run is timed once, then killed at random points of it (each on a fresh copy); after
    `recover` (what the next run does first) every record is in the log or the archive, once,
    and the archive folder holds exactly the parts `usage_archive` lists."""
    template = tmp_path / "template.duckdb"
    ids = seeded(template, rows=60_000)
    timing = tmp_path / "timing.duckdb"
    timing.write_bytes(template.read_bytes())
    full = run_child(timing, tmp_path / "timing-archive", None)
    outcomes = []
    for attempt, fraction in enumerate((0.05, 0.2, 0.35, 0.5, 0.65, 0.8)):
        path = tmp_path / f"killed-{attempt}.duckdb"
        path.write_bytes(template.read_bytes())
        archive = tmp_path / f"archive-{attempt}"
        run_child(path, archive, fraction * full)
        database = Database(path)
        try:
            recover(database.cursor(), archive)
            paths = (
                database.cursor()
                .execute("SELECT path FROM usage_archive WHERE path IS NOT NULL")
                .fetchall()
            )
            listed = {Path(r[0]) for r in paths}
        finally:
            database.close()
        on_disk = set(archive.glob("usage/*/*")) if archive.exists() else set()
        in_log, archived = log_ids(path), archive_ids(path)
        outcomes.append(
            (
                sorted(in_log + archived) == sorted(ids),
                len(set(in_log) & set(archived)),
                on_disk == listed,
            )
        )
    assert outcomes == [(True, 0, True)] * 6


def test_recovery_finishes_a_part_committed_before_its_rename(
    db: tuple[Path, set[str]], tmp_path: Path
) -> None:
    """The window between COMMIT and the rename, made by hand: the records left the log, the
    file still has its .tmp name; the next run renames it."""
    path, ids = db
    (retired, *_) = retire(path, 9, tmp_path / "archive")
    retired.path.replace(retired.path.with_name(retired.path.name + ".tmp"))
    database = Database(path)
    try:
        fixed = recover(database.cursor(), tmp_path / "archive")
    finally:
        database.close()
    assert (fixed, retired.path.exists(), sorted(log_ids(path) + archive_ids(path))) == (
        1,
        True,
        sorted(ids),
    )


def test_recovery_removes_a_part_never_committed(db: tuple[Path, set[str]], tmp_path: Path) -> None:
    path, _ = db
    stray = tmp_path / "archive" / "usage" / "day=2026-03-20" / "part-0.parquet.tmp"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half a file")
    database = Database(path)
    try:
        recover(database.cursor(), tmp_path / "archive")
    finally:
        database.close()
    assert list(stray.parent.iterdir()) == []


def test_a_gateway_applies_retention_at_start(
    tenants: Tenants, start_gateway: Callable[..., GatewayThread], tmp_path: Path
) -> None:
    database = Database(tenants.db)
    generate_usage(database, rows=5_000, orgs=2, callers=20, days=5, compact=False)
    database.close()
    gateway = start_gateway(retention_days=2, archive_dir=tmp_path / "archive")
    assert gateway.gateway is not None
    retention = gateway.gateway.assembly.storage.retention
    assert retention is not None
    deadline = time.monotonic() + 20
    while retention.rounds == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    first = (
        gateway.gateway.assembly.storage.database.cursor()
        .execute("SELECT min(ts) FROM usage_log WHERE transport <> 'cli'")
        .fetchone()
    )
    today = datetime.now(UTC).replace(tzinfo=None)
    assert first is not None and first[0] >= datetime(
        today.year, today.month, today.day
    ) - timedelta(days=2)


# -- on a lake (issue 15: retention under its own lock, storage/ducklake/maintenance.py) ---------
@pytest.fixture
def lake_seeded(lake: dict[str, Any], db: tuple[Path, set[str]]) -> Iterator[LakeDatabase]:
    """A lake holding the `db` file's ROWS synthetic records over the DAYS days before NOW."""
    database = LakeDatabase(str(lake["db"]), lake["data_path"])
    cursor = database.cursor()
    cursor.execute(f"ATTACH '{db[0]}' AS seeded (READ_ONLY)")
    cursor.execute("INSERT INTO usage_log BY NAME SELECT * FROM seeded.usage_log")
    cursor.execute("DETACH seeded")
    yield database
    database.close()


def lake_days(database: Database) -> list[str]:
    rows = (
        database.cursor()
        .execute("SELECT DISTINCT CAST(ts AS DATE)::VARCHAR FROM usage_log ORDER BY 1")
        .fetchall()
    )
    return [row[0] for row in rows]


def test_on_a_lake_only_days_older_than_the_retention_stay_out(lake_seeded: LakeDatabase) -> None:
    retire_due(lake_seeded, NOW, 3, None)
    assert lake_days(lake_seeded)[0] == (NOW - timedelta(days=3)).date().isoformat()


def test_on_a_lake_the_archive_holds_exactly_the_records_that_left(
    lake_seeded: LakeDatabase, tmp_path: Path
) -> None:
    cursor = lake_seeded.cursor()
    before = {r[0] for r in cursor.execute("SELECT CAST(id AS VARCHAR) FROM usage_log").fetchall()}
    retire_due(lake_seeded, NOW, 3, tmp_path / "archive")
    kept = {r[0] for r in cursor.execute("SELECT CAST(id AS VARCHAR) FROM usage_log").fetchall()}
    parts = [
        r[0]
        for r in cursor.execute("SELECT path FROM usage_archive WHERE path IS NOT NULL").fetchall()
    ]
    archived = {r[0] for r in cursor.execute("SELECT id FROM read_parquet(?)", [parts]).fetchall()}
    assert (kept | archived, kept & archived) == (before, set())
