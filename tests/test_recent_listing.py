"""Listings answered from the records in memory (storage/duckdb/usage.py): the newest pages of
an open-ended filter come from the writer's recent records and a count kept up to date, with no
query and no wait for a commit. On a real DuckDB file, for random sequences of submits, commits
and listings, every answer must equal the model's: every record submitted so far, newest first,
ties by id; including records whose `ts` is older than those submitted before them, records
evicted from memory, records stored before the writer started, and records retention removed.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.core.records import RecordIds, UsageFilter, UsageRecord
from gateway.core.tail import matches
from storage.duckdb.database import Database
from storage.duckdb.retention import retire_due
from storage.duckdb.usage import UsageQueries, UsageWriter

BASE = datetime(2026, 11, 30, 12)
IDS = RecordIds()


def record(n: int, ts: datetime, *, org: str = "o1", service: str = "diag") -> UsageRecord:
    return UsageRecord(
        id=IDS.new(),
        ts=ts,
        exec_time=1000 + n,
        processed_by="t",
        org_id=org,
        org_key="k",
        whoami=("a", "b")[n % 2],
        service=service,
        command=("ping", "time", "echo")[n % 3],
        success=n % 4 != 0,
        error_code=None if n % 4 else -90002,
        transport=("mqtt", "ws")[n % 2],
        client_id="c",
        remote_addr="10.0.0.1",
        request=f"request {n}",
        response=f"response {n}",
    )


def expected(
    submitted: list[UsageRecord], usage_filter: UsageFilter, offset: int, limit: int
) -> tuple[int, list[str]]:
    found = sorted(
        (r for r in submitted if matches(usage_filter, r)), key=lambda r: (r.ts, r.id), reverse=True
    )
    return len(found), [r.id for r in found[offset : offset + limit]]


def listed(
    reader: UsageQueries, usage_filter: UsageFilter, offset: int, limit: int
) -> tuple[int, list[str]]:
    count, page = asyncio.run(reader.list(usage_filter, offset=offset, limit=limit))
    return count, [r.id for r in page]


class Log:
    """A usage writer and reader on a fresh DuckDB file that commits only when told to."""

    def __init__(self, folder: Path, recent_records: int, stored: list[UsageRecord]) -> None:
        self.database = Database(folder / "usage.duckdb")
        if stored:  # records stored before this writer started
            earlier = UsageWriter(self.database, flush_interval=60)
            for item in stored:
                earlier.submit(item)
            assert earlier.flush()
            earlier.close()
        self.writer = UsageWriter(self.database, flush_interval=60, recent_records=recent_records)
        self.reader = UsageQueries(self.database, self.writer)

    def close(self) -> None:
        self.writer.close()
        self.database.close()


@pytest.fixture
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


filters = st.builds(
    UsageFilter,
    org_id=st.none() | st.sampled_from(["o1", "o2"]),
    service=st.none() | st.sampled_from(["diag", "usage"]),
    command=st.none() | st.sampled_from(["ping", "time"]),
    whoami=st.none() | st.just("a"),
    failed_only=st.sampled_from([False, False, False, True]),
    transport=st.none() | st.just("ws"),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(1, 40), st.integers(-5, 5)),
        st.tuples(st.just("commit")),
        st.tuples(st.just("list"), filters, st.integers(0, 30), st.integers(1, 20)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    script=steps,
    recent_records=st.sampled_from([0, 5, 30, 10_000, 10_000, 10_000]),
    stored_before=st.integers(0, 20),
)
def test_listings_from_memory_equal_every_record_submitted(
    script: list[tuple], recent_records: int, stored_before: int
) -> None:
    """Steps: submit n records (each `ts` up to `jitter` seconds off the running clock, so
    arrival order and `ts` order differ), commit what was submitted, or list; every listing
    equals the model, whether it came from memory or from the database."""
    clock = BASE
    submitted: list[UsageRecord] = []
    for n in range(stored_before):
        clock += timedelta(milliseconds=300)
        submitted.append(record(n, clock, org=("o1", "o2")[n % 2]))
    with tempfile.TemporaryDirectory() as name:
        log = Log(Path(name), recent_records, list(submitted))
        try:
            for step in script:
                if step[0] == "submit":
                    _, count, jitter = step
                    for n in range(count):
                        clock += timedelta(milliseconds=250)
                        item = record(
                            len(submitted),
                            clock + timedelta(seconds=jitter * (n % 2)),
                            org=("o1", "o2")[n % 3 == 0],
                            service=("diag", "usage")[n % 5 == 0],
                        )
                        log.writer.submit(item)
                        submitted.append(item)
                elif step[0] == "commit":
                    assert log.writer.flush()
                else:
                    _, usage_filter, offset, limit = step
                    from_memory = log.writer.recent_page(usage_filter, offset + limit) is not None
                    event("page from memory" if from_memory else "page from the database")
                    assert listed(log.reader, usage_filter, offset, limit) == expected(
                        submitted, usage_filter, offset, limit
                    )
        finally:
            log.close()


def test_the_newest_page_is_answered_from_memory(folder: Path) -> None:
    log = Log(folder, 10_000, [])
    try:
        for n in range(50):
            log.writer.submit(record(n, BASE + timedelta(seconds=n)))
        page = log.writer.recent_page(UsageFilter(org_id="o1"), 10)
        assert page is not None and [r.ts for r in page[0]] == [
            BASE + timedelta(seconds=n) for n in range(49, 39, -1)
        ]
    finally:
        log.close()


def test_a_page_reaching_past_the_records_in_memory_is_left_to_the_database(folder: Path) -> None:
    log = Log(folder, 20, [])
    try:
        for n in range(50):
            log.writer.submit(record(n, BASE + timedelta(seconds=n)))
        assert log.writer.recent_page(UsageFilter(org_id="o1"), 30) is None
    finally:
        log.close()


def test_counts_kept_in_memory_drop_when_retention_removes_records(folder: Path) -> None:
    log = Log(folder, 10_000, [])
    old_day = BASE - timedelta(days=30)
    try:
        for n in range(30):
            log.writer.submit(record(n, old_day + timedelta(seconds=n)))
        assert log.writer.flush()
        for n in range(10):
            log.writer.submit(record(n, BASE + timedelta(seconds=n)))
        everything = UsageFilter(org_id="o1")
        assert listed(log.reader, everything, 0, 5)[0] == 40  # counted, and kept
        retire_due(log.database, BASE, 7, None)
        assert listed(log.reader, everything, 0, 5)[0] == 10
    finally:
        log.close()


def test_a_count_taken_while_batches_commit_matches_the_sequence_it_reports(
    folder: Path,
) -> None:
    """`counted_now` holds the writer's commit lock while it takes the uncommitted records and
    the DuckDB snapshot: with a writer committing every millisecond meanwhile, each count must
    be exactly that of the records submitted up to the sequence number it reports."""
    database = Database(folder / "usage.duckdb")
    writer = UsageWriter(database, flush_interval=0.001)
    reader = UsageQueries(database, writer)
    submitted: list[UsageRecord] = []
    done = threading.Event()

    def submit() -> None:
        for n in range(6000):
            item = record(n, BASE + timedelta(milliseconds=n), org=("o1", "o2")[n % 3 == 0])
            submitted.append(item)
            writer.submit(item)
            if n % 20 == 0:
                time.sleep(0.001)  # batches keep committing while counts are taken
        done.set()

    usage_filter = UsageFilter(org_id="o1")
    thread = threading.Thread(target=submit)
    thread.start()
    wrong: list[tuple[int, int, int]] = []
    counted = 0
    try:
        while not done.is_set():
            count, sequence = reader.counted_now(usage_filter)
            counted += 1
            truth = sum(1 for item in submitted[:sequence] if matches(usage_filter, item))
            if count != truth:
                wrong.append((sequence, count, truth))
    finally:
        thread.join()
        writer.close()
        database.close()
    assert (counted > 50, wrong) == (True, [])


def test_an_evicted_record_with_a_late_ts_keeps_its_place(folder: Path) -> None:
    """A slow call: its record is submitted after newer ones but carries the earlier `ts`.
    Once it has left memory, the page that should hold it comes from the database."""
    log = Log(folder, 3, [])
    try:
        first = record(0, BASE + timedelta(seconds=10))
        log.writer.submit(first)
        slow = record(1, BASE + timedelta(seconds=9))
        log.writer.submit(slow)
        for n in range(2, 6):
            log.writer.submit(record(n, BASE + timedelta(seconds=n)))
        usage_filter = UsageFilter(org_id="o1")
        submitted_order = [first, slow]
        assert listed(log.reader, usage_filter, 0, 2) == (
            6,
            [r.id for r in sorted(submitted_order, key=lambda r: r.ts, reverse=True)],
        )
    finally:
        log.close()


def test_a_filter_with_a_window_is_not_answered_from_memory_but_still_right(folder: Path) -> None:
    log = Log(folder, 10_000, [])
    try:
        items = [record(n, BASE + timedelta(seconds=n)) for n in range(20)]
        for item in items:
            log.writer.submit(item)
        windowed = UsageFilter(org_id="o1", start=BASE + timedelta(seconds=5))
        assert listed(log.reader, windowed, 0, 3) == expected(items, windowed, 0, 3)
        assert listed(log.reader, replace(windowed, start=None), 0, 3) == expected(
            items, replace(windowed, start=None), 0, 3
        )
    finally:
        log.close()
