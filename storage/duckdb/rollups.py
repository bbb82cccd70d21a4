"""Hourly rollups of the usage log: what a chart asks for, without scanning every record.

Three levels, each a table of per-UTC-hour aggregates, from the coarsest:

* `usage_hourly_orgs`: per hour, org, transport and outcome: a few rows an hour per org
  whatever the fleet's size, so a year of hourly charts reads about what a day of raw records
  would;
* `usage_hourly`: the same per service and command too (history and breakdowns by service or
  command, the endpoints table, a command filter);
* `usage_hourly_callers`: per hour, org, caller, transport and outcome, for a `who` filter or a
  breakdown by caller; without histograms (a caller's times are read raw: compaction keeps a
  caller's records together, and these histograms were half the writer's upkeep).

`usage_quarter_orgs`, the first per quarter hour: what hourly (or longer) buckets in a zone whose
offset is not a whole hour (Asia/Kolkata +05:30, Asia/Kathmandu +05:45) are made of;

and, per UTC day, `usage_daily_orgs`, `usage_daily_commands` and `usage_daily_callers` (the
keys, and the histograms or not, of the hourly three), read for the whole days of a plan whose
buckets are whole UTC days, and of the endpoints table, which has no buckets (`daily_for`,
`day_span`).

A query reads the coarsest level holding every column its filters and grouping name (`level_for`).
A caller and a command together (a `who` filter on a command breakdown...) read the raw records:
on the benchmark's log (5,000 callers, 40 commands) that cross product held 0.7 rows per record,
a level that would cost the writer as much as it saved.

Each row holds the count, the sum, min and max of `exec_time`, the latest `ts`, and a latency
histogram: `exec_time` (ns) in logarithmic bins 2% wide, `bin = 1 + round(ln(t) / ln(1.02))`
(0 for t <= 0), whose value `1.02 ** (bin - 1)` is within 1% of every time in the bin. Summed
bin by bin, histograms merge exactly, so p50/p95/p99 of any set of rows come within 1% of a time
of that rank.

The usage writer appends one partial row per group of each batch in the batch's own transaction
(`WRITER_SQL`): the rollups always hold exactly the committed records, a crash loses or doubles
nothing, and no reader ever sees one without the other. Finished hours are consolidated later to
one row per group (`consolidate`, from the compactor's round; answers are the same before and
after, only cheaper). A file without rollups gets them when it is opened (`prepare`).

Queries (storage/duckdb/analytics.py, usage.py) read whole hours from a level and the partial
hours at a window's edges from the raw records (`Span`, `source_sql`); rollups older than
`--rollup-retention-days` are deleted (`prune`) and the hours before `kept_from` are read raw too.

Device data has a level of its own, kept, built, consolidated, pruned and read by the same
functions (a `Level` names its source table and its `Measure`s): `property_hourly`, per UTC hour
and series (org, thing, key), the count, sum, min and max of the values, kept by the property
writer (`PROPERTY_WRITER_SQL`) and read by property.aggregate (storage/duckdb/devices.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import duckdb

from gateway.core.buckets import BucketPlan
from gateway.core.records import UsageFilter
from storage.duckdb.transaction import transaction

__all__ = [
    "ALL_LEVELS",
    "BIN_SQL",
    "BY_CALLER",
    "BY_COMMAND",
    "BY_ORG",
    "BY_ORG_QUARTER",
    "LEVELS",
    "PROPERTY_HOURLY",
    "PROPERTY_LEVELS",
    "PROPERTY_WRITER_SQL",
    "QUARTERLY",
    "SCHEMA",
    "WRITER_SQL",
    "Floors",
    "Level",
    "Measure",
    "Span",
    "bin_value",
    "consolidate",
    "count_sql",
    "daily_for",
    "day_span",
    "fits",
    "histograms_pay",
    "level_for",
    "plan_fits",
    "prepare",
    "prune",
    "raised_floors",
    "read_floors",
    "rebuild",
    "source_sql",
    "span",
    "writer_sql",
]

logger = logging.getLogger("tr50gw.rollups")

GAMMA: Final = 1.02
BIN_SQL: Final = (
    "CASE WHEN exec_time <= 0 THEN 0::SMALLINT"
    " ELSE (1 + round(ln(exec_time) / ln(1.02)))::SMALLINT END"
)
"""The histogram bin of a row's `exec_time` (the same formula as `bin_value` inverts)."""
HOUR: Final = timedelta(hours=1)
QUARTER: Final = timedelta(minutes=15)
_STEPS: Final = {"quarter": QUARTER, "hour": HOUR, "day": timedelta(days=1)}
_TICK: Final = timedelta(microseconds=1)
CONSOLIDATE_GRACE: Final = timedelta(minutes=10)
CONSOLIDATE_STEP: Final = timedelta(days=2)  # hours merged per transaction


def bin_value(index: int) -> float:
    """The time (ns) a bin stands for: within 1% of every time in it."""
    return 0.0 if index <= 0 else GAMMA ** (index - 1)


@dataclass(frozen=True, slots=True)
class Measure:
    """One column of a level's rows after its keys: how it is computed from the source's rows
    (`raw`) and how partial rows of one group merge (`merged`, exact: counts and sums of
    integers add up, extremes take the extreme)."""

    name: str
    type: str
    raw: str
    merged: str


USAGE_MEASURES: Final = (
    Measure("n", "BIGINT", "count(*)", "sum(n)::BIGINT"),
    Measure("t_sum", "BIGINT", "sum(exec_time)::BIGINT", "sum(t_sum)::BIGINT"),
    Measure("t_min", "BIGINT", "min(exec_time)", "min(t_min)"),
    Measure("t_max", "BIGINT", "max(exec_time)", "max(t_max)"),
    Measure("last_ts", "TIMESTAMP", "max(ts)", "max(last_ts)"),
)
PROPERTY_MEASURES: Final = (
    Measure("n", "BIGINT", "count(*)", "sum(n)::BIGINT"),
    # A sum of doubles depends on the order it is added in, the raw query's included (see
    # PROPERTY_HOURLY): merged sums agree with it to the rounding of the additions.
    Measure("v_sum", "DOUBLE", "sum(value)", "sum(v_sum)"),
    Measure("v_min", "DOUBLE", "min(value)", "min(v_min)"),
    Measure("v_max", "DOUBLE", "max(value)", "max(v_max)"),
)


@dataclass(frozen=True, slots=True)
class Level:
    """One rollup table, the table of raw rows it aggregates (its `ts` says the hour) and the
    columns its rows are grouped by (fixed names, never values)."""

    table: str
    keys: tuple[str, ...]
    hist: bool = True  # whether its rows hold latency histograms (usage levels only)
    unit: str = "hour"  # "day": its rows' `hour` is the UTC day's first instant; "quarter":
    # the quarter hour's (:00, :15, :30, :45), for zones whose offsets are not whole hours
    source: str = "usage_log"
    measures: tuple[Measure, ...] = USAGE_MEASURES

    @property
    def listed(self) -> str:
        return ", ".join(self.keys)

    @property
    def step(self) -> timedelta:
        """How long one of its rows' periods is."""
        return _STEPS[self.unit]

    def truncated(self, moment: str) -> str:
        """SQL of the first instant of the period holding `moment` (an SQL expression)."""
        if self.unit == "quarter":  # date_trunc's 'quarter' is a quarter of a year
            return f"time_bucket(INTERVAL 15 MINUTE, {moment})"
        return f"date_trunc('{self.unit}', {moment})"

    def measured(self, *, hist: bool = False) -> tuple[str, ...]:
        """Its measures' names, and with `hist` the histogram's."""
        names = tuple(measure.name for measure in self.measures)
        return (*names, "hist") if hist else names

    @property
    def stored(self) -> tuple[str, ...]:
        """Its columns after the keys (`bins`: the histogram's entries, what merging costs)."""
        return (*self.measured(hist=True), "bins") if self.hist else self.measured()


_KEY_TYPES: Final = {
    "org_id": "VARCHAR",
    "org_key": "VARCHAR",
    "whoami": "VARCHAR",
    "service": "VARCHAR",
    "command": "VARCHAR",
    "transport": "VARCHAR",
    "success": "BOOLEAN",
    "thing_key": "VARCHAR",
    "key": "VARCHAR",
}
BY_ORG: Final = Level("usage_hourly_orgs", ("org_id", "org_key", "transport", "success"))
BY_COMMAND: Final = Level(
    "usage_hourly", ("org_id", "org_key", "service", "command", "transport", "success")
)
BY_CALLER: Final = Level(
    "usage_hourly_callers", ("org_id", "org_key", "whoami", "transport", "success"), hist=False
)
HOURLY: Final = (BY_ORG, BY_COMMAND, BY_CALLER)  # coarsest first
BY_ORG_QUARTER: Final = Level("usage_quarter_orgs", BY_ORG.keys, unit="quarter")
"""BY_ORG per quarter hour: hourly (and daily, weekly...) buckets in a zone whose offset is not
a whole hour (Asia/Kolkata +05:30, Asia/Kathmandu +05:45...) are whole quarter hours of UTC."""
QUARTERLY: Final = (BY_ORG_QUARTER,)
DAILY: Final = {  # the same per UTC day, where a plan's buckets are whole UTC days
    BY_ORG.table: Level("usage_daily_orgs", BY_ORG.keys, unit="day"),
    BY_COMMAND.table: Level("usage_daily_commands", BY_COMMAND.keys, unit="day"),
    BY_CALLER.table: Level("usage_daily_callers", BY_CALLER.keys, hist=False, unit="day"),
}
LEVELS: Final = (*HOURLY, *QUARTERLY, *DAILY.values())
"""The usage log's levels."""
PROPERTY_HOURLY: Final = Level(
    "property_hourly",
    ("org_id", "thing_key", "key"),
    hist=False,
    source="property_values",
    measures=PROPERTY_MEASURES,
)
"""Per UTC hour (of the values' `ts`) and series: count, sum, min and max of the values, what
property.aggregate's every `calc` is made of (avg = sum / count)."""
PROPERTY_LEVELS: Final = (PROPERTY_HOURLY,)
ALL_LEVELS: Final = (*LEVELS, *PROPERTY_LEVELS)
"""Every level the upkeep (`prepare`, `consolidate`, `prune`) looks after."""


def _table_ddl(level: Level) -> str:
    keys = ", ".join(f"{key} {_KEY_TYPES[key]} NOT NULL" for key in level.keys)
    measures = ", ".join(f"{m.name} {m.type} NOT NULL" for m in level.measures)
    histogram = (
        ", hist MAP(SMALLINT, UBIGINT) NOT NULL, bins INTEGER NOT NULL" if level.hist else ""
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {level.table} (hour TIMESTAMP NOT NULL, {keys},"
        f" {measures}{histogram});"
    )


SCHEMA: Final = "\n".join(
    [
        *(_table_ddl(level) for level in ALL_LEVELS),
        # Per level (device data's too: the name is older than they are): rollups before
        # `kept_from` were pruned (NULL: none), hours before `consolidated_until` hold one row
        # per group.
        "CREATE TABLE IF NOT EXISTS usage_rollups (level VARCHAR PRIMARY KEY,"
        " kept_from TIMESTAMP, consolidated_until TIMESTAMP);",
    ]
)


def _aggregate_sql(level: Level, source: str, where_sql: str = "", *, hist: bool = True) -> str:
    """`SELECT` of a level's rows (hour, keys, measures) from raw rows in `source`."""
    measures = ", ".join(f"{m.raw} AS {m.name}" for m in level.measures)
    histogram = f", histogram({BIN_SQL}) AS hist" if hist else ""
    return (
        f"SELECT {level.truncated('ts')} AS hour, {level.listed}, {measures}"  # noqa: S608
        f"{histogram} FROM {source}{where_sql} GROUP BY ALL"
    )


def _insert_sql(level: Level, source: str, where_sql: str = "") -> str:
    aggregated = _aggregate_sql(level, source, where_sql, hist=level.hist)
    bins = ", cardinality(hist)" if level.hist else ""
    return (
        f"INSERT INTO {level.table} (hour, {level.listed}, {', '.join(level.stored)})"  # noqa: S608
        f" SELECT *{bins} FROM ({aggregated})"
    )


def writer_sql(levels: tuple[Level, ...]) -> tuple[str, ...]:
    """What a writer runs after each batch's insert, in its transaction: the batch's rows
    (registered as `batch`) added to each level."""
    return tuple(_insert_sql(level, "batch") for level in levels)


WRITER_SQL: Final = writer_sql(LEVELS)
"""Run by the usage writer after each batch's insert, in its transaction."""
PROPERTY_WRITER_SQL: Final = writer_sql(PROPERTY_LEVELS)
"""Run by the property writer after each batch's insert, in its transaction."""


# -- upkeep ------------------------------------------------------------------------------------
def prepare(cursor: duckdb.DuckDBPyConnection) -> None:
    """Give each level its rollups of every stored row when it has none yet (a file made
    before that level, or by a generator that inserts rows directly), in one transaction."""
    known = {row[0] for row in cursor.execute("SELECT level FROM usage_rollups").fetchall()}
    missing = [level for level in ALL_LEVELS if level.table not in known]
    if not missing:
        return
    with transaction(cursor):
        for source in dict.fromkeys(level.source for level in missing):
            _build(cursor, source, [level for level in missing if level.source == source])


def _build(cursor: duckdb.DuckDBPyConnection, source: str, levels: list[Level]) -> None:
    """`levels`, all of `source`'s, from its rows (inside the caller's transaction)."""
    days = [
        row[0]
        for row in cursor.execute(
            f"SELECT DISTINCT date_trunc('day', ts) AS day FROM {source} ORDER BY day"  # noqa: S608
        ).fetchall()
    ]
    started = time.monotonic()
    for level in levels:
        cursor.execute(f"DELETE FROM {level.table}")  # noqa: S608
        for day in days:  # a day at a time: the grouping's memory stays a day's
            cursor.execute(
                _insert_sql(level, source, " WHERE ts >= ? AND ts < ?"),
                [day, day + timedelta(days=1)],
            )
        cursor.execute(  # built at once: one row per group up to the last period
            "INSERT INTO usage_rollups (level, consolidated_until)"  # noqa: S608
            f" SELECT ?, {level.truncated('max(ts)')} FROM {source}",
            [level.table],
        )
    if days:
        logger.info(
            "rollups of %d days built for %s in %.1f s",
            len(days),
            ", ".join(level.table for level in levels),
            time.monotonic() - started,
        )


def rebuild(cursor: duckdb.DuckDBPyConnection, levels: tuple[Level, ...] = ALL_LEVELS) -> None:
    """`levels` again from the stored rows (tools that write `usage_log` or `property_values`
    directly)."""
    cursor.execute(
        "DELETE FROM usage_rollups WHERE list_contains(?, level)",
        [[level.table for level in levels]],
    )
    prepare(cursor)


def _merge_sql(level: Level) -> str:
    """One row per group of the level's rows with `hour` in [?, ?): sums, extremes and the
    histograms added bin by bin."""
    keys = level.listed
    merged = ", ".join(f"{m.merged} AS {m.name}" for m in level.measures)
    stats = (
        f"WITH part AS (SELECT * FROM {level.table} WHERE hour >= ? AND hour < ?),"  # noqa: S608
        f" stats AS (SELECT hour, {keys}, {merged} FROM part GROUP BY ALL)"
    )
    if not level.hist:
        return f"{stats} SELECT hour, {keys}, {', '.join(level.stored)} FROM stats"  # noqa: S608
    hists = (
        f", bins AS (SELECT hour, {keys}, e.key AS bin, sum(e.value)::UBIGINT AS c"  # noqa: S608
        f" FROM (SELECT hour, {keys}, unnest(map_entries(hist)) AS e FROM part) GROUP BY ALL),"
        f" hists AS (SELECT hour, {keys}, map(list(bin ORDER BY bin), list(c ORDER BY bin))"
        " AS hist FROM bins GROUP BY ALL)"
    )
    return (
        f"{stats}{hists} SELECT hour, {keys}, {', '.join(level.measured(hist=True))},"  # noqa: S608
        " cardinality(hist) AS bins"
        f" FROM stats JOIN hists USING (hour, {keys})"
    )


def consolidate(cursor: duckdb.DuckDBPyConnection, now: datetime) -> int:
    """Merge each level's partial rows of finished hours (ended `CONSOLIDATE_GRACE` before
    `now`), a few days per transaction; returns how many hours were merged. Answers do not
    change: only how many rows hold them. A record arriving later for a merged hour adds a
    partial row again, counted like any other."""
    merged = 0
    for level in ALL_LEVELS:
        until = (now - CONSOLIDATE_GRACE).replace(minute=0, second=0, microsecond=0)
        step = CONSOLIDATE_STEP
        if level.unit == "day":
            until, step = until.replace(hour=0), CONSOLIDATE_STEP * 15
        while True:
            row = cursor.execute(  # the first hour not yet consolidated that has rows
                f"SELECT min(hour) FROM {level.table} WHERE hour >= coalesce("  # noqa: S608
                "(SELECT consolidated_until FROM usage_rollups WHERE level = ?), hour)",
                [level.table],
            ).fetchone()
            start = row[0] if row else None
            if start is None or start >= until:
                break
            end = min(until, start + step)
            _merge_range(cursor, level, start, end)
            merged += int((end - start) / HOUR)
    return merged


def _merge_range(
    cursor: duckdb.DuckDBPyConnection, level: Level, start: datetime, end: datetime
) -> None:
    stored = ", ".join(level.stored)
    try:
        with transaction(cursor):
            cursor.execute(
                f"CREATE OR REPLACE TEMP TABLE rollup_merge AS {_merge_sql(level)}", [start, end]
            )
            cursor.execute(
                f"DELETE FROM {level.table} WHERE hour >= ? AND hour < ?",  # noqa: S608
                [start, end],
            )
            cursor.execute(
                f"INSERT INTO {level.table} (hour, {level.listed}, {stored})"  # noqa: S608
                f" SELECT hour, {level.listed}, {stored} FROM rollup_merge"
            )
            _remember(cursor, level, "consolidated_until = ?", [end], "consolidated_until", end)
    finally:
        cursor.execute("DROP TABLE IF EXISTS rollup_merge")


def _remember(
    cursor: duckdb.DuckDBPyConnection,
    level: Level,
    assignment: str,
    values: list[Any],
    column: str,
    value: datetime,
) -> None:
    """Set a level's `usage_rollups` row (`assignment`, fixed text), or add it with `column` =
    `value`: an UPDATE, then an INSERT if it updated nothing, in the caller's transaction (a
    DuckLake table has no key for `ON CONFLICT`)."""
    row = cursor.execute(
        f"UPDATE usage_rollups SET {assignment} WHERE level = ?",  # noqa: S608
        [*values, level.table],
    ).fetchone()
    if not row or not row[0]:
        cursor.execute(
            f"INSERT INTO usage_rollups (level, {column}) VALUES (?, ?)",  # noqa: S608
            [level.table, value],
        )


def prune(cursor: duckdb.DuckDBPyConnection, before: datetime) -> int:
    """Delete every level's hours before `before` and remember it (queries read those hours
    raw, if the records are still there); returns the rows deleted."""
    before = before.replace(minute=0, second=0, microsecond=0)
    deleted = 0
    with transaction(cursor):
        for level in ALL_LEVELS:
            row = cursor.execute(  # a DELETE answers how many rows it deleted
                f"DELETE FROM {level.table} WHERE hour < ?",  # noqa: S608
                [before],
            ).fetchone()
            deleted += int(row[0]) if row else 0
            _remember(
                cursor,
                level,
                "kept_from = greatest(coalesce(kept_from, ?), ?)",
                [before, before],
                "kept_from",
                before,
            )
    return deleted


# -- reading -----------------------------------------------------------------------------------
def fits(usage_filter: UsageFilter, plan: BucketPlan | None = None) -> bool:
    """Whether rollups can answer: every filter is on a rollup column, and every bucket of
    `plan` is whole UTC quarter hours (an hour or longer, in a zone whose offsets are whole
    quarter hours: all of today's); `level_for` then says which level, if any, holds them."""
    f = usage_filter
    if f.search_text is not None or f.remote_addr is not None or f.client_id is not None:
        return False
    return plan is None or plan_fits(plan, QUARTER)


def plan_fits(plan: BucketPlan, step: timedelta = HOUR) -> bool:
    """Whether every bucket of `plan` is whole UTC periods of `step` (an hour or a quarter
    hour): an hour or longer, in a zone whose offsets are whole steps (Asia/Kolkata's +05:30 is
    whole quarter hours, not whole hours)."""
    if plan.interval in ("second", "minute"):
        return False
    return all(offset % step == timedelta(0) for _, offset in plan.offsets)


def level_for(
    usage_filter: UsageFilter, dimension: str | None = None, plan: BucketPlan | None = None
) -> Level | None:
    """The coarsest level holding every column the filter and the grouping (`dimension`:
    who, service, command, org; `endpoints`: service and command) name, among the hourly ones,
    or where `plan`'s buckets are whole quarter hours but not whole hours, the quarterly ones."""
    f = usage_filter
    needed = set()
    if f.whoami is not None or f.caller is not None or dimension == "who":
        needed.add("whoami")
    if (
        f.service is not None
        or f.command is not None
        or f.names is not None
        or f.exclude_names
        or f.name_contains is not None
        or dimension in ("service", "command", "endpoints")
    ):
        needed.update(("service", "command"))
    levels = HOURLY if plan is None or plan_fits(plan) else QUARTERLY
    return next((level for level in levels if needed <= set(level.keys)), None)


def daily_for(level: Level, plan: BucketPlan | None, *, hist: bool = False) -> Level | None:
    """The daily twin of an hourly level (with histograms, if `hist`), where every bucket of
    `plan` is whole UTC days (a day or longer, in a zone at UTC+0 throughout the window); with
    no plan (no buckets: the endpoints table), wherever there is one."""
    if plan is not None:
        if plan.interval in ("second", "minute", "hour"):
            return None
        if any(offset != timedelta(0) for _, offset in plan.offsets):
            return None
    daily = DAILY.get(level.table)
    return None if daily is None or (hist and not daily.hist) else daily


def _floor(moment: datetime, step: timedelta) -> datetime:
    """The start of the UTC hour or quarter hour (`step`) holding `moment`."""
    hour = moment.replace(minute=0, second=0, microsecond=0)
    return hour + (moment - hour) // step * step


@dataclass(frozen=True, slots=True)
class Span:
    """Rollup hours `[low, high)` (None: unbounded); the filter's records outside them are
    read raw."""

    low: datetime | None
    high: datetime | None


@dataclass(frozen=True, slots=True)
class Floors:
    """Where each level's rollups begin (`kept_from`: older hours were pruned) and where the
    log's records begin (`retired_until`: retention took the days before). The process that
    opened the file keeps them in memory (`Database.rollup_floors`), read when the file is
    opened and again by whatever prunes or retires (retention.py): a query then needs no
    statement of its own to learn them."""

    kept_from: dict[str, datetime]
    retired_until: datetime | None


def read_floors(cursor: duckdb.DuckDBPyConnection) -> Floors:
    kept = {
        level: kept_from
        for level, kept_from in cursor.execute(
            "SELECT level, kept_from FROM usage_rollups WHERE kept_from IS NOT NULL"
        ).fetchall()
    }
    row = cursor.execute("SELECT max(day) + 1 FROM usage_archive").fetchone()
    retired = row[0] if row else None
    return Floors(
        kept, None if retired is None else datetime(retired.year, retired.month, retired.day)
    )


def raised_floors(
    floors: Floors, *, kept_from: datetime | None = None, retired_until: datetime | None = None
) -> Floors:
    """`floors` raised to the given instants (never lowered): set before pruning or retiring,
    so that queries read those hours from elsewhere before they go."""
    kept = dict(floors.kept_from)
    if kept_from is not None:
        for level in ALL_LEVELS:
            kept[level.table] = max(kept.get(level.table, kept_from), kept_from)
    retired = floors.retired_until
    if retired_until is not None:
        retired = retired_until if retired is None else max(retired, retired_until)
    return Floors(kept, retired)


class Windowed(Protocol):
    """What the readers below take as a filter: a dataclass (`replace` moves its bounds) whose
    rows have `ts` in [start, end] (naive UTC, inclusive; None: open), and which the `where`
    passed with it turns into `(" WHERE ...", parameters)` over the level's keys and source
    (storage.duckdb.usage's `UsageFilter` and `where`, storage.duckdb.devices' `SeriesWindow`
    and `series_where`)."""

    @property
    def start(self) -> datetime | None: ...

    @property
    def end(self) -> datetime | None: ...


def span(
    floors: Floors,
    row_filter: Windowed,
    level: Level,
    *,
    raw_floor: bool = False,
) -> Span | None:
    """The hours (or quarter hours) of the filter's window a level can answer (None: none).

    Hours before the level's `kept_from` were pruned; with `raw_floor` (a listing's count, which
    must agree with the rows it lists), hours of days retention has retired are left out too.
    """
    start, end = row_filter.start, row_filter.end
    low = None
    if start is not None:
        low = _floor(start, level.step)
        if low < start:
            low += level.step
    high = None if end is None else _floor(end + _TICK, level.step)
    kept_from = floors.kept_from.get(level.table)
    for floor in (kept_from, floors.retired_until if raw_floor else None):
        if floor is not None:
            low = floor if low is None else max(low, floor)
    if low is not None and high is not None and low >= high:
        return None
    return Span(low, high)


def source_sql(
    level: Level,
    row_filter: Windowed,
    window: Span,
    where: Any,
    *,
    hist: bool = False,
    tail: bool = False,
    days: tuple[Level, Span] | None = None,
) -> tuple[str, list[Any]]:
    """`(SELECT ...)` of rollup-shaped rows (`hour AS ts`, the level's keys, the measures) for
    the filter (`Windowed`): the level's rows of the span's hours, the raw rows before and
    after them aggregated by hour, and with `tail` those of the registered `tail_records`; with
    `days` (a daily level and its span of whole days, `day_span`), that level's rows for those
    days and the hourly level's for the rest. In a plan that `fits`, a row's hour (or day) lies
    in exactly the bucket each of its records does. `where` is the filter's (passed in: the
    modules that own the filters read through this one)."""
    columns = f"hour AS ts, {level.listed}, {', '.join(level.measured(hist=hist))}"
    parts: list[str] = []
    parameters: list[Any] = []
    ranges = [(level, window)]
    if days is not None:
        daily, whole_days = days
        ranges = [(daily, whole_days)]
        if whole_days.low is not None and (window.low is None or window.low < whole_days.low):
            ranges.append((level, Span(window.low, whole_days.low)))
        if whole_days.high is not None and (window.high is None or whole_days.high < window.high):
            ranges.append((level, Span(whole_days.high, window.high)))
    for table_level, hours in ranges:
        hours_sql, hour_values = _hours_where(row_filter, hours, where)
        parts.append(f"SELECT {columns} FROM {table_level.table}{hours_sql}")  # noqa: S608
        parameters += hour_values
    for raw_sql, raw_values in _edges_where(row_filter, window, where):
        parts.append(
            f"SELECT {columns} FROM ("  # noqa: S608
            + _aggregate_sql(level, level.source, raw_sql, hist=hist)
            + ")"
        )
        parameters += raw_values
    if tail:
        parts.append(
            f"SELECT {columns} FROM ({_aggregate_sql(level, 'tail_records', hist=hist)})"  # noqa: S608
        )
    return "(" + " UNION ALL ".join(parts) + ")", parameters


def day_span(floors: Floors, window: Span, daily: Level) -> Span | None:
    """The whole UTC days within a span of hours that a daily level holds (None: none)."""
    low, high = window.low, window.high
    if low is not None and low.hour:
        low = low.replace(hour=0) + timedelta(days=1)
    if high is not None:
        high = high.replace(hour=0)
    kept_from = floors.kept_from.get(daily.table)
    if kept_from is not None:
        first_day = kept_from.replace(hour=0)
        if first_day < kept_from:
            first_day += timedelta(days=1)
        low = first_day if low is None else max(low, first_day)
    if low is not None and high is not None and low >= high:
        return None
    return Span(low, high)


def count_sql(
    level: Level, usage_filter: UsageFilter, window: Span, where: Any
) -> tuple[str, list[Any]]:
    """`(SELECT ...)` of the filter's count, as `source_sql` would sum it, in its cheapest
    form: the level's counts and the edges' bare `count(*)`s."""
    hours_sql, parameters = _hours_where(usage_filter, window, where)
    parts = [f"SELECT sum(n) AS n FROM {level.table}{hours_sql}"]  # noqa: S608
    for raw_sql, raw_values in _edges_where(usage_filter, window, where):
        parts.append(f"SELECT count(*) AS n FROM {level.source}{raw_sql}")  # noqa: S608
        parameters += raw_values
    return f"(SELECT sum(n) FROM ({' UNION ALL '.join(parts)}))", parameters  # noqa: S608


def _hours_where(row_filter: Windowed, window: Span, where: Any) -> tuple[str, list[Any]]:
    """`WHERE` over a level's rows: the filter's columns and the span's hours."""
    unbounded = _bounded(row_filter, None, None)
    where_sql, values = where(unbounded)
    hours = [where_sql[len(" WHERE ") :]] if where_sql else []
    if window.low is not None:
        hours.append("hour >= ?")
        values.append(window.low)
    if window.high is not None:
        hours.append("hour < ?")
        values.append(window.high)
    return (" WHERE " + " AND ".join(hours) if hours else ""), values


def _edges_where(row_filter: Windowed, window: Span, where: Any) -> list[tuple[str, list[Any]]]:
    """`WHERE`s over the raw rows of the filter's window outside the span's hours."""
    start, end = row_filter.start, row_filter.end
    edges: list[tuple[datetime | None, datetime | None]] = []
    if window.low is not None and (start is None or start < window.low):
        edges.append((start, window.low - _TICK))
    if window.high is not None and (end is None or end >= window.high):
        edges.append((window.high, end))
    return [where(_bounded(row_filter, low, high)) for low, high in edges]


def _bounded(row_filter: Windowed, start: datetime | None, end: datetime | None) -> Windowed:
    bounded: Windowed = replace(row_filter, start=start, end=end)  # type: ignore[type-var]
    return bounded


HISTOGRAM_GAIN: Final = 4.0
"""Histograms answer percentiles where the records they stand for are this many times their
entries: adding entries up bin by bin cost about 2.5 times what ranking as many raw times did
(measured: 365k entries 22 ms, 1.27M raw times 25 ms)..."""
HISTOGRAM_RECORDS: Final = 1_000_000
"""...or where they stand for this many records at least: exact percentiles hold every time of
a bucket in memory outside DuckDB's cap (a 30-day `usage.api.times` over 10M records peaked the
gateway at 700 MB) and rank them (177 ms against 95 ms from the histograms)."""


def histograms_pay(
    cursor: duckdb.DuckDBPyConnection,
    level: Level,
    usage_filter: UsageFilter,
    window: Span,
    where: Any,
    *,
    gain: float = HISTOGRAM_GAIN,
) -> bool:
    """Whether the span's histograms hold `gain` times fewer entries than records, or stand for
    `HISTOGRAM_RECORDS` at least: where each group of an hour has few records (a small log, a
    short window of a quiet org), the raw times are as cheap to rank, and exact."""
    hours_sql, values = _hours_where(usage_filter, window, where)
    row = cursor.execute(
        f"SELECT sum(n), sum(bins) FROM {level.table}{hours_sql}",  # noqa: S608
        values,
    ).fetchone()
    records, entries = (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)
    if not records:
        return False
    return entries * gain <= records or records >= HISTOGRAM_RECORDS
