"""A listing sees every record submitted before it without waiting for the writer's commit
(issue 14 item 2, storage/duckdb/usage.py): the writer's uncommitted records are merged with the
stored ones. A writer that lingers 30 s between commits shows that nothing waited."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gateway.core.records import RecordIds, UsageFilter, UsageRecord
from storage.duckdb import DuckDBStorage

BASE = datetime(2026, 11, 30, 12)


def record(ids: RecordIds, n: int, org: str, ts: datetime) -> UsageRecord:
    return UsageRecord(
        id=ids.new(),
        ts=ts,
        exec_time=n,
        processed_by="t",
        org_id=org,
        org_key=org,
        whoami=f"user{n % 3}",
        service="diag",
        command="ping",
        success=n % 4 != 0,
        error_code=None if n % 4 else -90001,
        transport="ws",
        client_id="ws-1",
        remote_addr="",
        request="{}",
        response="{}",
    )


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[tuple[DuckDBStorage, list[UsageRecord]]]:
    """300 stored records, then 40 submitted to a writer that will not commit for 30 s, some
    of them older than stored ones (a slow command's record comes late)."""
    ids = RecordIds()
    rng = random.Random(5)
    storage = DuckDBStorage(tmp_path / "u.duckdb", lambda: BASE, flush_interval=30.0)
    stored = [record(ids, n, ("o1", "o2")[n % 2], BASE + timedelta(seconds=n)) for n in range(300)]
    for item in stored:
        storage.usage.submit(item)
    assert storage.usage.flush()
    late = [
        record(ids, n, ("o1", "o2")[n % 2], BASE + timedelta(seconds=rng.uniform(0, 400)))
        for n in range(300, 340)
    ]
    for item in late:
        storage.usage.submit(item)
    try:
        yield storage, stored + late
    finally:
        storage.close()


def newest_first(records: list[UsageRecord]) -> list[str]:
    return [r.id for r in sorted(records, key=lambda r: (r.ts, r.id), reverse=True)]


@pytest.mark.parametrize(("offset", "limit"), [(0, 10), (0, 400), (35, 20), (290, 100)])
def test_pages_hold_the_uncommitted_records_in_order(
    storage: tuple[DuckDBStorage, list[UsageRecord]], offset: int, limit: int
) -> None:
    store, everything = storage
    wanted = UsageFilter(org_id="o1")
    count, page = asyncio.run(store.reader.list(wanted, offset=offset, limit=limit))
    mine = [r for r in everything if r.org_id == "o1"]
    assert (count, [r.id for r in page]) == (len(mine), newest_first(mine)[offset : offset + limit])


def test_nothing_waited_for_the_commit(storage: tuple[DuckDBStorage, list[UsageRecord]]) -> None:
    store, everything = storage
    count, _ = asyncio.run(store.reader.list(UsageFilter(), offset=0, limit=10))
    assert (count, store.usage.backlog) == (len(everything), 40)


def test_a_record_not_yet_committed_is_found(
    storage: tuple[DuckDBStorage, list[UsageRecord]],
) -> None:
    store, everything = storage
    found = asyncio.run(store.reader.get(UsageFilter(), everything[-1].id))
    assert (found, store.usage.backlog) == (everything[-1], 40)


def test_another_orgs_uncommitted_record_is_not_found(
    storage: tuple[DuckDBStorage, list[UsageRecord]],
) -> None:
    store, everything = storage
    other = next(r for r in reversed(everything) if r.org_id == "o2")
    assert asyncio.run(store.reader.get(UsageFilter(org_id="o1"), other.id)) is None


def test_a_deep_page_waits_and_is_right(
    storage: tuple[DuckDBStorage, list[UsageRecord]],
) -> None:
    """Beyond MERGE_DEPTH the listing waits for the commit instead of merging."""
    store, everything = storage
    count, page = asyncio.run(store.reader.list(UsageFilter(), offset=5000, limit=10))
    assert (count, page, store.usage.backlog) == (len(everything), [], 0)


def test_analytics_count_the_uncommitted_records_too(
    storage: tuple[DuckDBStorage, list[UsageRecord]],
) -> None:
    """Each analytics answer with 40 records still uncommitted equals the answer once they are
    committed, and nothing waited for the commit meanwhile."""
    from gateway.core.buckets import plan_buckets

    store, _ = storage
    start, end = BASE - timedelta(hours=1), BASE + timedelta(hours=1)
    plan = plan_buckets(start, end, "minute", "UTC")
    wanted = UsageFilter(start=start, end=end, org_id="o1")
    analytics = store.analytics

    async def answers() -> list[object]:
        return [
            await analytics.statuses(wanted, plan),
            await analytics.times(wanted, plan),
            await analytics.by_key(wanted, plan, "who", 2),
            await analytics.endpoints(wanted, offset=0, limit=10),
        ]

    merged = asyncio.run(answers())
    backlog = store.usage.backlog
    assert store.usage.flush()
    assert (merged, backlog) == (asyncio.run(answers()), 40)
