"""Rollups of property values (`property_hourly`, storage/duckdb/rollups.py): property.aggregate
answers from them what it answers from the values alone.

Property-based: random values (bursts of many values in one hour spread over several batches,
so that rollup rows hold many values each, and single values on or next to hour edges) go
through the real property writer into a real DuckDB file; every example asks a random window,
series, zone and calc of `DeviceStore.aggregate_sync` twice, once with the rollups and once with
`use_rollups=False` (what `--no-rollups` builds). Counts, minimums and maximums must be equal;
sums and averages too, up to the rounding of the additions: a sum of doubles depends on the order
it is added in, and the raw query's own answer changes with the order the values are stored in
(`test_the_raw_sum_itself_depends_on_the_stored_order`), so they are held to the bound of
floating-point summation instead (|error| <= (n - 1) u sum|x|, u = 2**-53, for either order).

Then what keeps them right over time: consolidation, a file opened without them, the rollups'
retention, a deleted thing, --no-rollups through the gateway, and a SIGKILL of the writer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.core.buckets import BucketPlan, plan_buckets
from gateway.core.records import PropertyValue
from storage.duckdb import rollups
from storage.duckdb.bucketing import bucket_key_sql
from storage.duckdb.compaction import SORTED_TABLES, compact_day
from storage.duckdb.database import Database
from storage.duckdb.devices import DeviceStore, SeriesWindow, series_where
from storage.duckdb.retention import prune_rollups, retire_due
from tests.harness import Clock, Fleet, Harness
from tests.support import kill_writer_repeatedly
from tests.test_rollups import BASES, ZONES, near_an_edge, windows

NOW = datetime(2030, 1, 1)
CALCS = ["avg", "sum", "min", "max", "count"]
ORG = "org-a"
THINGS = ["meter-1", "meter-2"]
KEYS = ["temp", "rssi"]
UNIT_ROUNDOFF = 2.0**-53
PROPERTY_VALUES = next(table for table in SORTED_TABLES if table.table == "property_values")


def value(ts: datetime, number: float, thing: int = 0, key: int = 0) -> PropertyValue:
    return PropertyValue(ORG, THINGS[thing], KEYS[key], ts, number, None, ts)


@dataclass
class World:
    h: Harness
    rolled: DeviceStore
    raw: DeviceStore
    seeded: list[PropertyValue] = field(default_factory=list)

    def seed(self, batches: list[list[PropertyValue]]) -> None:
        for batch in batches:
            self.rolled.publish(batch)
            assert self.rolled.properties.flush()
            self.seeded += batch


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with tempfile.TemporaryDirectory() as folder:
        h = Harness(Path(folder) / "device-rollups.duckdb", Clock(NOW), rollup_retention_days=0)
        storage = h.assembly.storage
        raw = DeviceStore(storage.database, use_rollups=False)
        yield World(h, storage.devices, raw)
        raw.close()
        h.close()


# -- strategies --------------------------------------------------------------------------------
NUMBERS = st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from([0.1, 0.2, 0.3, -0.7, 21.5])


@st.composite
def bursts(draw: st.DrawFn) -> list[list[PropertyValue]]:
    """Batches of values around one base: a few bursts (many values of one series in one hour,
    in several batches) and single values on or next to hour edges."""
    base = draw(st.sampled_from(BASES))
    batches: list[list[PropertyValue]] = []
    for _ in range(draw(st.integers(1, 3))):
        hour = base + timedelta(hours=draw(st.integers(-3, 30)))
        thing, key = draw(st.integers(0, 1)), draw(st.integers(0, 1))
        for _ in range(draw(st.integers(1, 4))):
            batches.append(
                [
                    value(
                        hour + timedelta(seconds=draw(st.integers(0, 3599))),
                        draw(NUMBERS),
                        thing,
                        key,
                    )
                    for _ in range(draw(st.integers(1, 25)))
                ]
            )
    singles = []
    for _ in range(draw(st.integers(0, 6))):
        singles.append(value(near_an_edge(draw, base), draw(NUMBERS), draw(st.integers(0, 1))))
    return [*batches, singles] if singles else batches


@st.composite
def questions(draw: st.DrawFn) -> tuple[SeriesWindow, BucketPlan, str]:
    start, end = draw(windows())
    series = draw(st.sampled_from(["hour", "day"]))
    zone = draw(st.sampled_from(ZONES) | st.just("UTC"))
    window = SeriesWindow(
        ORG, draw(st.sampled_from(THINGS)), draw(st.sampled_from(KEYS)), start, end
    )
    return window, plan_buckets(start, end, series, zone), draw(st.sampled_from(CALCS))


def summation_bounds(w: World, window: SeriesWindow, plan: BucketPlan, calc: str) -> list[float]:
    """Per bucket, how far apart two sums (or averages) of its values added in different orders
    can be: twice (n - 1) u sum|x|, plus an ulp for the average's division."""
    key_sql, key_values = bucket_key_sql(plan)
    where_sql, values = series_where(window)
    rows = (
        w.h.database.cursor()
        .execute(
            f"SELECT {key_sql} AS bucket, count(*), sum(abs(value)) FROM property_values"  # noqa: S608
            f"{where_sql} GROUP BY bucket",
            [*key_values, *values],
        )
        .fetchall()
    )
    per_bucket = {bucket: (n, magnitude) for bucket, n, magnitude in rows}
    bounds = []
    for bucket in plan.keys:
        n, magnitude = per_bucket.get(bucket, (1, 0.0))
        bound = 2 * (n - 1) * UNIT_ROUNDOFF * magnitude
        bounds.append(bound / n + 2 * UNIT_ROUNDOFF * magnitude / n if calc == "avg" else bound)
    return bounds


# -- the property ------------------------------------------------------------------------------
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batches=bursts(), question=questions())
def test_the_rollups_answer_what_the_values_answer(
    world: World,
    batches: list[list[PropertyValue]],
    question: tuple[SeriesWindow, BucketPlan, str],
) -> None:
    w = world
    w.seed(batches)
    window, plan, calc = question
    event("raw buckets" if not rollups.plan_fits(plan) else "buckets of whole UTC hours")
    got = w.rolled.aggregate_sync(window, plan, calc)
    want = w.raw.aggregate_sync(window, plan, calc)
    if calc in ("count", "min", "max"):
        assert got == want
        return
    if got != want:
        event("sums differ in their last bits")
    bounds = summation_bounds(w, window, plan, calc)
    for rolled_answer, raw_answer, bound in zip(got, want, bounds, strict=True):
        if raw_answer is None:
            assert rolled_answer is None
            continue
        assert rolled_answer is not None
        assert abs(rolled_answer - raw_answer) <= bound, (rolled_answer, raw_answer, bound)


def test_the_rollups_hold_exactly_the_committed_values(world: World) -> None:
    """Per hour and series, the rollups' count, sum, min and max equal the values' (integers:
    their sums are exact in any order)."""
    world.seed([[value(BASES[0], 5.0), value(BASES[0], 7.0, 1, 1)], [value(BASES[0], -2.0)]])
    cursor = world.h.database.cursor()
    difference = cursor.execute(
        "SELECT count(*) FROM ((SELECT date_trunc('hour', ts) AS hour, org_id, thing_key, key,"
        " count(*), min(value), max(value) FROM property_values GROUP BY ALL)"
        " EXCEPT (SELECT hour, org_id, thing_key, key, sum(n), min(v_min), max(v_max)"
        " FROM property_hourly GROUP BY ALL))"
    ).fetchone()
    assert difference == (0,)


def test_the_raw_sum_itself_depends_on_the_stored_order(tmp_path: Path) -> None:
    """0.3, 0.2 and 0.1 received in that order, then compacted (sorted by ts: 0.1, 0.2, 0.3): the
    raw query's sum of the same three values changes in its last bit. Why sums and averages are
    held to the rounding bound rather than to equality."""
    h = Harness(tmp_path / "order.duckdb", Clock(NOW))
    try:
        devices = h.assembly.storage.devices
        hour = datetime(2026, 6, 1, 10)
        for minute, number in ((30, 0.3), (20, 0.2), (10, 0.1)):
            devices.publish([value(hour + timedelta(minutes=minute), number)])
            assert devices.properties.flush()
        raw = DeviceStore(h.database, use_rollups=False)
        window = SeriesWindow(ORG, THINGS[0], KEYS[0], hour, hour + timedelta(minutes=59))
        plan = plan_buckets(hour, hour + timedelta(minutes=59), "hour", "UTC")
        before = raw.aggregate_sync(window, plan, "sum")
        compact_day(h.database.cursor(), hour.date(), NOW, table=PROPERTY_VALUES)
        after = raw.aggregate_sync(window, plan, "sum")
        raw.close()
        assert (before, after) == ([0.3 + 0.2 + 0.1], [0.1 + 0.2 + 0.3])
    finally:
        h.close()


# -- upkeep --------------------------------------------------------------------------------------
WINDOW = SeriesWindow(ORG, THINGS[0], KEYS[0], datetime(2026, 5, 31, 22, 30), datetime(2026, 6, 8))


def _answers(devices: DeviceStore) -> list[list[float | None]]:
    """Every calc per hour (UTC), per day in Berlin and per day in Asia/Kolkata (raw buckets)."""
    start, end = WINDOW.start, WINDOW.end
    assert start is not None and end is not None
    plans = [
        plan_buckets(start, end, "hour", "UTC"),
        plan_buckets(start, end, "day", "Europe/Berlin"),
        plan_buckets(start, end, "day", "Asia/Kolkata"),
    ]
    return [devices.aggregate_sync(WINDOW, plan, calc) for plan in plans for calc in CALCS]


def _rows(database: Database) -> int:
    row = database.cursor().execute("SELECT count(*) FROM property_hourly").fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def burst_file(tmp_path: Path) -> Iterator[Harness]:
    """A gateway whose property writer got 600 values of one series in one hour in 60 batches
    (so 60 partial rollup rows) and a few on other days. The values are quarters: every sum of
    them is exact, whatever the order, so answers must be identical, not just close."""
    h = Harness(tmp_path / "burst.duckdb", Clock(NOW), rollup_retention_days=0)
    devices = h.assembly.storage.devices
    hour = datetime(2026, 6, 1, 10)
    for batch in range(60):
        devices.publish(
            [
                value(hour + timedelta(seconds=batch * 60 + i), (batch * 10 + i) / 4)
                for i in range(10)
            ]
        )
        assert devices.properties.flush()
    for day in range(3):
        devices.publish([value(datetime(2026, 6, 5 + day, 3), 50.25)])
    assert devices.properties.flush()
    yield h
    h.close()


def test_consolidation_leaves_one_row_per_series_and_hour(burst_file: Harness) -> None:
    h = burst_file
    rows_before = _rows(h.database)
    rollups.consolidate(h.database.cursor(), NOW)
    assert (rows_before, _rows(h.database)) == (60 + 3, 1 + 3)


def test_consolidation_leaves_the_answers_unchanged(burst_file: Harness) -> None:
    h = burst_file
    before = _answers(h.assembly.storage.devices)
    rollups.consolidate(h.database.cursor(), NOW)
    assert _answers(h.assembly.storage.devices) == before


def test_a_file_without_device_rollups_gets_them_when_opened(burst_file: Harness) -> None:
    h = burst_file
    before = _answers(h.assembly.storage.devices)
    cursor = h.database.cursor()
    cursor.execute("DROP TABLE property_hourly")  # as a file made before they were kept
    cursor.execute("DELETE FROM usage_rollups WHERE level = 'property_hourly'")
    h.restart()
    assert (_answers(h.assembly.storage.devices), _rows(h.database)) == (before, 1 + 3)


def test_pruned_hours_are_read_from_the_values(burst_file: Harness) -> None:
    h = burst_file
    before = _answers(h.assembly.storage.devices)
    deleted = prune_rollups(h.database, datetime(2026, 6, 6, 12), 1)
    assert (deleted, _answers(h.assembly.storage.devices)) == (
        60,
        before,
    )  # the 60 partial rows of June 1


def test_usage_retention_leaves_device_data_and_its_rollups(burst_file: Harness) -> None:
    """--retention-days retires usage records only: device data is kept until deleted with its
    thing, so its rollups stay too."""
    h = burst_file
    before = (_answers(h.assembly.storage.devices), _rows(h.database))
    retire_due(h.database, datetime(2026, 6, 6, 12), 1, None)
    assert (_answers(h.assembly.storage.devices), _rows(h.database)) == before


def test_rollups_off_answer_the_same(burst_file: Harness) -> None:
    h = burst_file
    before = _answers(h.assembly.storage.devices)
    h.close()
    off = Harness(h.settings.db, Clock(NOW), rollup_retention_days=0, rollups=False)
    try:
        devices = off.assembly.storage.devices
        assert (devices.use_rollups, _answers(devices)) == (False, before)
    finally:
        off.close()
    h._open()


# -- through the gateway -----------------------------------------------------------------------
async def test_a_deleted_things_rollups_go_with_it(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "property.publish", key="k", value=1, ts="2024-03-01T10:00:00Z")
    await fleet.h.assembly.storage.devices.properties.wait_visible()
    cursor = fleet.h.database.cursor()
    rows = cursor.execute(
        "SELECT org_id FROM property_hourly WHERE thing_key = 'meter-1'"
    ).fetchall()
    await fleet.h.assembly.storage.admin.delete_thing(rows[0][0], "meter-1")
    left = cursor.execute("SELECT count(*) FROM property_hourly WHERE thing_key = 'meter-1'")
    assert left.fetchone() == (0,)


async def test_property_aggregate_answers_the_same_without_rollups(fleet: Fleet) -> None:
    """The command, over a week of values (whole hours from the rollups, both edges raw), equals
    what the same gateway answers with --no-rollups."""
    for hour in range(0, 24 * 7, 5):
        for minute in (0, 17, 59):
            ts = datetime(2024, 2, 23) + timedelta(hours=hour, minutes=minute)
            await fleet.ok(
                "meter-1", "property.publish", key="k", value=hour + minute / 4,
                ts=ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            )  # fmt: skip
    params = {
        "key": "k", "calc": "avg", "series": "hour", "timezone": "Europe/Berlin",
        "start": "2024-02-23T07:30:00Z", "end": "2024-03-01T07:29:59Z",
    }  # fmt: skip
    rolled = await fleet.ok("meter-1", "property.aggregate", **params)
    fleet.h.assembly.storage.devices.use_rollups = False
    raw = await fleet.ok("meter-1", "property.aggregate", **params)
    assert (len(rolled["values"]), rolled) == (len(raw["values"]), raw)


# -- a writer killed at random points ------------------------------------------------------------
WRITER = """
import sys, time
from datetime import datetime, timedelta
from storage.duckdb import DuckDBStorage
from tests.test_device_rollups import value
storage = DuckDBStorage(sys.argv[1], datetime.utcnow, flush_interval=0.001)
start = datetime(2026, 6, 1)
print("ready", flush=True)
i = 0
while True:
    storage.devices.publish(
        [value(start + timedelta(seconds=i + j), (i + j) % 97 / 4, j % 2, i % 2) for j in range(20)]
    )
    i += 20
    time.sleep(0.001)
"""


def test_a_killed_writer_leaves_rollups_that_match_the_values(tmp_path: Path) -> None:
    path = tmp_path / "killed.duckdb"
    kill_writer_repeatedly(WRITER, path)
    database = Database(path)
    try:
        cursor = database.cursor()
        stored = cursor.execute("SELECT count(*), sum(value) FROM property_values").fetchone()
        rolled = cursor.execute("SELECT sum(n), sum(v_sum) FROM property_hourly").fetchone()
        assert stored is not None and stored[0] > 0
        assert rolled == stored  # quarters below 25: every sum exact
    finally:
        database.close()
