"""Hourly rollups (storage/duckdb/rollups.py): the answers they give are the raw records' answers.

Property-based: random records (bursts in few hours, so that histograms and rollup rows hold many
records each, and single records on hour edges) go through the real usage writer into a real
DuckDB file; every example asks a random window, interval, zone and filter of the analytics
twice, once from the rollups and once from the raw records only, and of the listing count. Counts
must be equal; percentiles from the histograms must lie within 1% of the raw time of that rank.

Then what keeps them right over time: consolidation, a file opened without rollups, retention
(charts reach back after the records left, listing counts do not), pruning, a SIGKILL of the
writer at random points, and the settings.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.core.buckets import BucketPlan, plan_buckets
from gateway.core.records import RecordIds, UsageFilter, UsageRecord
from gateway.settings import Settings
from storage.duckdb import rollups
from storage.duckdb.analytics import UsageAggregates
from storage.duckdb.bucketing import bucket_key_sql
from storage.duckdb.database import Database
from storage.duckdb.retention import prune_rollups, retire_due
from storage.duckdb.usage import UsageQueries, where
from tests.harness import Clock, Harness
from tests.support import kill_writer_repeatedly

IDS = RecordIds()
NOW = datetime(2030, 1, 1)
BASES = [datetime(2026, 3, 28, 20), datetime(2026, 10, 24, 22), datetime(2026, 12, 31, 21)]
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
]
INTERVALS = ["minute", "hour", "day", "week", "month"]
ORGS = ["org-a", "org-b"]
CALLERS = ["truck-1", "truck-2", "user@a"]
NAMES = [("diag", "ping"), ("property", "publish"), ("usage", "api.list"), ("foo", "")]
TRANSPORTS = ["mqtt", "ws"]
FRACTIONS = (0.5, 0.95, 0.99)


def record(
    ts: datetime, exec_time: int, org: int, caller: int, name: int, **rest: Any
) -> UsageRecord:
    service, command = NAMES[name]
    values: dict[str, Any] = {
        "id": IDS.new(),
        "ts": ts,
        "exec_time": exec_time,
        "processed_by": "rollups",
        "org_id": ORGS[org],
        "org_key": ORGS[org],
        "whoami": CALLERS[caller],
        "service": service,
        "command": command,
        "success": True,
        "error_code": None,
        "transport": TRANSPORTS[caller % 2],
        "client_id": CALLERS[caller],
        "remote_addr": "10.0.0.1",
        "request": "{}",
        "response": "{}",
    }
    values.update(rest)
    return UsageRecord(**values)


@dataclass
class World:
    h: Harness
    rolled: UsageAggregates
    raw: UsageAggregates
    counts_rolled: UsageQueries
    counts_raw: UsageQueries
    seeded: list[UsageRecord] = field(default_factory=list)

    def seed(self, records: list[UsageRecord]) -> None:
        for item in records:
            self.h.usage.submit(item)
        assert self.h.usage.flush()
        self.seeded += records


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with tempfile.TemporaryDirectory() as folder:
        h = Harness(Path(folder) / "rollups.duckdb", Clock(NOW), rollup_retention_days=0)
        storage = h.assembly.storage
        yield World(
            h,
            # histograms whenever the rollups answer at all, so that they are always checked
            rolled=UsageAggregates(storage.database, storage.usage, histogram_gain=0.0),
            raw=UsageAggregates(storage.database, storage.usage, use_rollups=False),
            counts_rolled=UsageQueries(storage.database, storage.usage),
            counts_raw=UsageQueries(storage.database, storage.usage, use_rollups=False),
        )
        h.close()


# -- strategies --------------------------------------------------------------------------------
@st.composite
def bursts(draw: st.DrawFn) -> list[UsageRecord]:
    """Records around one base: a few bursts (many records in one hour: several per rollup row,
    times from a narrow or a wide spread) and single records on or next to hour edges."""
    base = draw(st.sampled_from(BASES))
    records = []
    for _ in range(draw(st.integers(1, 3))):
        hour = base + timedelta(hours=draw(st.integers(-3, 30)))
        median = draw(st.sampled_from([0, 1, 40, 1_000, 2_500_000, 10**9]))
        spread = draw(st.sampled_from([0.0, 0.05, 1.0]))
        org, caller, name = (draw(st.integers(0, n - 1)) for n in (2, 3, 4))
        for i in range(draw(st.integers(1, 60))):
            jitter = draw(st.floats(-1, 1))
            records.append(
                record(
                    hour + timedelta(seconds=draw(st.integers(0, 3599))),
                    max(0, round(median * math.exp(spread * jitter))),
                    org if i % 5 else draw(st.integers(0, 1)),
                    caller,
                    name if i % 7 else draw(st.integers(0, 3)),
                    success=draw(st.booleans()) if i % 3 == 0 else True,
                )
            )
    for _ in range(draw(st.integers(0, 6))):
        records.append(
            record(
                near_an_edge(draw, base),
                draw(st.integers(0, 10**10)),
                *(draw(st.integers(0, n - 1)) for n in (2, 3, 4)),
            )
        )
    return records


def near_an_edge(draw: st.DrawFn, base: datetime) -> datetime:
    """An hour's or a quarter hour's edge near `base`, on it, a microsecond before it or a
    minute after it."""
    edge = base + timedelta(
        hours=draw(st.integers(-3, 30)), minutes=draw(st.sampled_from([0, 0, 15, 30, 45]))
    )
    return edge + draw(
        st.sampled_from([timedelta(0), -timedelta(microseconds=1), timedelta(minutes=1)])
    )


@st.composite
def windows(draw: st.DrawFn) -> tuple[datetime, datetime]:
    """A window near one of BASES, from an instant to days, its ends on and off hour edges."""
    base = draw(st.sampled_from(BASES))
    start = base + timedelta(
        hours=draw(st.integers(-4, 20)),
        seconds=draw(st.sampled_from([0, 0, 1, 900, 1799, 1800, 3599])),
        microseconds=draw(st.sampled_from([0, 0, 1])),
    )
    end = start + timedelta(
        hours=draw(st.integers(0, 40) | st.integers(24, 120)),
        minutes=draw(st.sampled_from([0, 0, 30, 59])),
        microseconds=draw(st.sampled_from([0, -1, 999_999])),
    )
    return start, max(end, start)


@st.composite
def questions(draw: st.DrawFn) -> tuple[UsageFilter, BucketPlan]:
    start, end = draw(windows())
    interval = draw(st.sampled_from(INTERVALS))
    if interval == "minute" and end - start > timedelta(hours=100):
        interval = "hour"
    zone = draw(st.sampled_from(ZONES) | st.just("UTC"))
    options: dict[str, Any] = {}
    if draw(st.booleans()):
        options["org_id"] = draw(st.sampled_from(ORGS))
    if draw(st.integers(0, 3)) == 0:
        options["whoami"] = draw(st.sampled_from(CALLERS))
    if draw(st.integers(0, 3)) == 0:
        options["service"] = draw(st.sampled_from(["diag", "property", "foo"]))
    if draw(st.integers(0, 4)) == 0:
        options["transport"] = draw(st.sampled_from(TRANSPORTS))
    if draw(st.integers(0, 4)) == 0:
        options[draw(st.sampled_from(["failed_only", "succeeded_only"]))] = True
    if draw(st.integers(0, 5)) == 0:
        options["names"] = ("diag.ping", "foo")
    if draw(st.integers(0, 5)) == 0:
        options["exclude_names"] = ("property.publish",)
    usage_filter = UsageFilter(start=start, end=end, **options)
    return usage_filter, plan_buckets(start, end, interval, zone)


def exact_ranks(w: World, usage_filter: UsageFilter, plan: BucketPlan) -> dict[Any, list[int]]:
    """Every bucket's raw times, sorted (the reference the histograms are held to)."""
    key_sql, key_values = bucket_key_sql(plan)
    where_sql, values = where(usage_filter)
    rows = (
        w.h.database.cursor()
        .execute(
            f"SELECT {key_sql} AS b, list(exec_time ORDER BY exec_time) FROM usage_log"  # noqa: S608
            f"{where_sql} GROUP BY b",
            [*key_values, *values],
        )
        .fetchall()
    )
    return {bucket: times for bucket, times in rows}


def close_to_rank(estimate: float, times: list[int], fraction: float) -> bool:
    """Within 1% of the time of rank floor(fraction * (n - 1)) (a histogram's answer), or
    between it and the next (the raw records' interpolated quantile, where the buckets or
    filters keep the rollups out)."""
    rank = fraction * (len(times) - 1)
    low, high = times[math.floor(rank)], times[math.ceil(rank)]
    return low * 0.99 <= estimate <= max(low * 1.01, high)


# -- the property ------------------------------------------------------------------------------
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(records=bursts(), question=questions())
def test_rollups_answer_what_the_raw_records_answer(
    world: World, records: list[UsageRecord], question: tuple[UsageFilter, BucketPlan]
) -> None:
    w = world
    w.seed(records)
    usage_filter, plan = question
    if not rollups.fits(usage_filter, plan):
        event("raw buckets")
    elif rollups.daily_for(rollups.BY_CALLER, plan) is not None:
        event("buckets of whole UTC days")
    elif not rollups.plan_fits(plan):
        event("buckets of whole UTC quarter hours")
    else:
        event("buckets of whole UTC hours")
    assert w.rolled.activity_sync(usage_filter, plan) == w.raw.activity_sync(usage_filter, plan)
    assert w.rolled.statuses_sync(usage_filter, plan) == w.raw.statuses_sync(usage_filter, plan)
    for dimension, top in (("service", 2), ("command", None), ("org", 1), ("who", 2)):
        assert w.rolled.by_key_sync(usage_filter, plan, dimension, top) == w.raw.by_key_sync(
            usage_filter, plan, dimension, top
        ), dimension
    assert w.counts_rolled.count_sync(usage_filter) == w.counts_raw.count_sync(usage_filter)

    exact = exact_ranks(w, usage_filter, plan)
    for key, got, want in zip(
        plan.keys,
        w.rolled.times_sync(usage_filter, plan),
        w.raw.times_sync(usage_filter, plan),
        strict=True,
    ):
        if want is None:
            assert got is None
            continue
        assert got is not None
        assert (got.count, got.min, got.max) == (want.count, want.min, want.max)
        assert math.isclose(got.avg, want.avg, rel_tol=1e-9)
        times = exact[key]
        for fraction, estimate in zip(FRACTIONS, (got.p50, got.p95, got.p99), strict=True):
            assert close_to_rank(estimate, times, fraction), (fraction, estimate, times)

    got_page = w.rolled.endpoints_sync(usage_filter, offset=0, limit=50)
    want_page = w.raw.endpoints_sync(usage_filter, offset=0, limit=50)
    assert got_page.count == want_page.count
    for got_row, want_row in zip(got_page.rows, want_page.rows, strict=True):
        assert (got_row.name, got_row.hits, got_row.success, got_row.last_hit) == (
            want_row.name,
            want_row.hits,
            want_row.success,
            want_row.last_hit,
        )
        assert (got_row.min, got_row.max) == (want_row.min, want_row.max)


def test_the_rollups_hold_exactly_the_committed_records(world: World) -> None:
    """Per level, every group's count, sum, min and max equal the raw records' (the writer keeps
    them in the records' transaction)."""
    world.seed([record(BASES[0], 5, 0, 0, 0), record(BASES[0], 7, 1, 2, 1)])
    cursor = world.h.database.cursor()
    for level in rollups.LEVELS:
        keys, period = level.listed, level.truncated("ts")
        difference = cursor.execute(
            f"SELECT count(*) FROM ((SELECT {keys}, {period} AS hour, count(*),"  # noqa: S608
            f" sum(exec_time), min(exec_time), max(exec_time) FROM usage_log GROUP BY ALL)"
            f" EXCEPT (SELECT {keys}, hour, sum(n), sum(t_sum), min(t_min), max(t_max)"
            f" FROM {level.table} GROUP BY ALL))"
        ).fetchone()
        assert difference == (0,), level.table


# -- upkeep --------------------------------------------------------------------------------------
def _answers(aggregates: UsageAggregates, queries: UsageQueries) -> list[Any]:
    window = UsageFilter(start=datetime(2026, 1, 1), end=datetime(2027, 1, 2))
    plan = plan_buckets(window.start, window.end, "day", "Europe/Berlin")  # type: ignore[arg-type]
    utc_days = plan_buckets(window.start, window.end, "day", "UTC")  # type: ignore[arg-type]
    return [
        aggregates.statuses_sync(window, plan),
        aggregates.by_key_sync(window, plan, "who", None),
        aggregates.by_key_sync(window, plan, "command", None),
        aggregates.by_key_sync(window, utc_days, "who", None),  # the daily levels
        aggregates.by_key_sync(window, utc_days, "command", None),
        queries.count_sync(replace(window, org_id="org-a")),
    ]


def _rows(database: Database, level: rollups.Level) -> int:
    row = database.cursor().execute(f"SELECT count(*) FROM {level.table}").fetchone()  # noqa: S608
    return int(row[0]) if row else 0


@pytest.fixture
def burst_file(tmp_path: Path) -> Iterator[Harness]:
    """A gateway whose log got 600 records of one hour in 60 batches (so 60 partial rollup rows
    of each group) and a few on other days."""
    h = Harness(tmp_path / "burst.duckdb", Clock(NOW), rollup_retention_days=0)
    hour = datetime(2026, 6, 1, 10)
    for batch in range(60):
        for i in range(10):
            h.usage.submit(
                record(hour + timedelta(seconds=batch * 60 + i), 1000 + i, 0, i % 3, i % 2)
            )
        assert h.usage.flush()
    for day in range(3):
        h.usage.submit(record(datetime(2026, 6, 5 + day, 3), 50, 1, 2, 3))
    assert h.usage.flush()
    yield h
    h.close()


def _storage_answers(h: Harness) -> list[Any]:
    storage = h.assembly.storage
    return _answers(storage.analytics, storage.reader)


def test_consolidation_leaves_one_row_per_group_and_the_answers_unchanged(
    burst_file: Harness,
) -> None:
    h = burst_file
    before = _storage_answers(h)
    daily = rollups.DAILY[rollups.BY_COMMAND.table]
    rows_before = (_rows(h.database, rollups.BY_COMMAND), _rows(h.database, daily))
    merged = rollups.consolidate(h.database.cursor(), NOW)
    assert merged > 0
    assert _storage_answers(h) == before
    # 600 records of one hour (and day) in 60 batches, each with the same 4 groups (2 commands
    # x 2 transports), and 3 single records on other days
    rows_after = (_rows(h.database, rollups.BY_COMMAND), _rows(h.database, daily))
    assert (rows_before, rows_after) == ((60 * 4 + 3, 60 * 4 + 3), (4 + 3, 4 + 3))


def test_consolidation_is_resumed_not_repeated(burst_file: Harness) -> None:
    cursor = burst_file.database.cursor()
    rollups.consolidate(cursor, NOW)
    assert rollups.consolidate(cursor, NOW) == 0


def test_a_file_without_rollups_gets_them_when_opened(burst_file: Harness, tmp_path: Path) -> None:
    h = burst_file
    before = _storage_answers(h)
    cursor = h.database.cursor()
    for level in rollups.LEVELS:  # as a file made before rollups were kept
        cursor.execute(f"DROP TABLE {level.table}")
    cursor.execute("DROP TABLE usage_rollups")
    h.restart()
    assert _storage_answers(h) == before
    assert _rows(h.database, rollups.BY_COMMAND) == 4 + 3


def test_charts_reach_back_after_the_records_left_and_listings_do_not(
    burst_file: Harness,
) -> None:
    h = burst_file
    storage = h.assembly.storage
    before = _answers(storage.analytics, storage.reader)
    retired = retire_due(h.database, datetime(2026, 6, 6, 12), 1, None)
    assert [day.day for day in retired] == [datetime(2026, 6, 1).date()]
    after = _answers(storage.analytics, storage.reader)
    assert after[:5] == before[:5]  # the charts still count the retired days
    listed, _ = storage.reader.list_sync(
        UsageFilter(start=datetime(2026, 1, 1), end=datetime(2027, 1, 2)), offset=0, limit=10
    )
    assert listed == 3  # what the listing can still show: the days kept


def test_after_a_restart_listings_still_count_only_the_kept_days(burst_file: Harness) -> None:
    h = burst_file
    retire_due(h.database, datetime(2026, 6, 6, 12), 1, None)
    h.restart()  # the floors are read from the file again
    window = UsageFilter(start=datetime(2026, 1, 1), end=datetime(2027, 1, 2))
    listed, _ = h.assembly.storage.reader.list_sync(window, offset=0, limit=10)
    assert listed == 3


def test_pruned_hours_are_read_from_the_records_while_they_are_kept(burst_file: Harness) -> None:
    h = burst_file
    storage = h.assembly.storage
    before = _answers(storage.analytics, storage.reader)
    deleted = prune_rollups(h.database, datetime(2026, 6, 6, 12), 1)
    assert deleted > 0
    assert _answers(storage.analytics, storage.reader) == before


def test_pruning_keeps_the_newer_hours(burst_file: Harness) -> None:
    h = burst_file
    prune_rollups(h.database, datetime(2026, 6, 6, 12), 1)
    first = h.database.cursor().execute("SELECT min(hour) FROM usage_hourly").fetchone()
    assert first == (datetime(2026, 6, 5, 3),)


def test_rollup_retention_shorter_than_the_records_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="rollup-retention-days"):
        Settings(retention_days=90, rollup_retention_days=30)


def test_rollups_can_be_turned_off_and_answer_the_same(burst_file: Harness, tmp_path: Path) -> None:
    h = burst_file
    before = _storage_answers(h)
    h.close()
    off = Harness(h.settings.db, Clock(NOW), rollup_retention_days=0, rollups=False)
    try:
        assert off.assembly.storage.analytics.use_rollups is False
        assert _storage_answers(off) == before
    finally:
        off.close()
    h._open()


# -- a writer killed at random points ------------------------------------------------------------
WRITER = """
import sys, time
from datetime import datetime, timedelta
from storage.duckdb import DuckDBStorage
from tests.test_rollups import record
storage = DuckDBStorage(sys.argv[1], datetime.utcnow, flush_interval=0.001)
start = datetime(2026, 6, 1)
print("ready", flush=True)
i = 0
while True:
    storage.usage.submit(record(start + timedelta(seconds=i), i % 5000, i % 2, i % 3, i % 4))
    i += 1
    if i % 50 == 0:
        time.sleep(0.001)
"""


def test_a_killed_writer_leaves_rollups_that_match_the_records(tmp_path: Path) -> None:
    path = tmp_path / "killed.duckdb"
    kill_writer_repeatedly(WRITER, path)
    database = Database(path)
    try:
        cursor = database.cursor()
        stored = cursor.execute("SELECT count(*) FROM usage_log").fetchone()
        assert stored is not None and stored[0] > 0
        for level in rollups.LEVELS:
            counted = cursor.execute(f"SELECT sum(n) FROM {level.table}").fetchone()  # noqa: S608
            assert counted == stored, level.table
    finally:
        database.close()
