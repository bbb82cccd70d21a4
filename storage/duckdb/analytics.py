"""Usage analytics (the `UsageAnalytics` port): one parameterized DuckDB query per command.

Python touches only the aggregated rows (at most one per bucket, key or endpoint) to lay them out
on the bucket plan; no per-record loop runs here. Whenever the filters and buckets allow
(storage/duckdb/rollups.py: `fits`), a query reads the hourly rollups for the window's whole
hours and the raw records only for its partial hours at the edges; then percentiles come from the
rollups' histograms, within 1%, and everything else is exact. SQL text is assembled only from
fixed fragments (column names, the plan's `?`-placeholder expression); every value is a
parameter. Every query sees every record submitted before it (read-your-writes), the writer's
uncommitted ones merged in rather than waited for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, Final, TypeVar

import pyarrow as pa

from gateway.core.buckets import BucketPlan
from gateway.core.records import (
    EndpointPage,
    EndpointStats,
    KeyedCounts,
    StatusCounts,
    TimeStats,
    UsageFilter,
    UsageRecord,
)
from storage.duckdb import rollups
from storage.duckdb.bucketing import bucket_key_sql
from storage.duckdb.database import Database, reading
from storage.duckdb.usage import USAGE_TABLE, UsageWriter, where

__all__ = ["DIMENSIONS", "UsageAggregates"]

T = TypeVar("T")

# A dimension groups by plain columns first (cheap), then names the group: concatenating service
# and command per row cost more than the whole grouping. A command without a dot counts under
# its service alone; a payload that was not an envelope under "".
_FULL_NAME: Final = "CASE WHEN command = '' THEN service ELSE service || '.' || command END"
DIMENSIONS: Final = {  # name: (grouping columns, key expression over them)
    "service": ("service", "service"),
    "command": ("service, command", _FULL_NAME),
    "who": ("whoami", "whoami"),
    "org": ("org_key", "org_key"),
}


_TAIL_COLUMNS: Final = (
    "ts",
    "exec_time",
    "org_id",
    "org_key",
    "whoami",
    "service",
    "command",
    "transport",
    "success",
)
"""The columns the analytics read: all a tail of uncommitted records needs to carry."""
_TAIL_SCHEMA: Final = pa.schema([USAGE_TABLE.arrow_schema.field(name) for name in _TAIL_COLUMNS])


class UsageAggregates:
    """Read-only aggregates over `usage_log`, each computed by one query on a reader cursor."""

    def __init__(
        self,
        database: Database,
        writer: UsageWriter,
        *,
        use_rollups: bool = True,
        histogram_gain: float = rollups.HISTOGRAM_GAIN,
    ) -> None:
        """`use_rollups` False: every query scans the raw records (the rollups are still kept).
        Percentiles come from the histograms where they hold `histogram_gain` times fewer
        entries than the records they stand for (rollups.histograms_pay)."""
        self._database = database
        self._writer = writer
        self.use_rollups = use_rollups
        self.histogram_gain = histogram_gain

    async def _run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`function` on a worker thread with the writer's uncommitted records that match the
        filter (`args[0]`) as its `tail`: every record submitted before the call counts, none
        waits for the commit (the listing does the same, storage/duckdb/usage.py)."""
        usage_filter: UsageFilter = args[0]
        tail = self._writer.tail(usage_filter)
        return await reading(function, *args, tail=tail, **kwargs)

    @contextlib.contextmanager
    def _source(
        self, usage_filter: UsageFilter, tail: list[UsageRecord] | None
    ) -> Iterator[tuple[str, list[Any]]]:
        """`FROM` text and its parameters: the filtered stored records, and with a `tail`
        (registered on this thread's cursor as `tail_records` while the block runs, those ids
        left out of the SQL so that one committed meanwhile counts once) the uncommitted ones."""
        if not tail:
            where_sql, values = where(usage_filter)
            yield f"usage_log{where_sql}", values
            return
        stored = replace(usage_filter, exclude_ids=tuple(record.id for record in tail))
        where_sql, values = where(stored)
        columns = {name: [getattr(record, name) for record in tail] for name in _TAIL_COLUMNS}
        cursor = self._database.cursor()
        cursor.register("tail_records", pa.Table.from_pydict(columns, schema=_TAIL_SCHEMA))
        listed = ", ".join(_TAIL_COLUMNS)
        try:
            yield (
                f"(SELECT {listed} FROM usage_log{where_sql}"  # noqa: S608 - names only
                f" UNION ALL SELECT {listed} FROM tail_records)",
                values,
            )
        finally:
            cursor.unregister("tail_records")

    @contextlib.contextmanager
    def _rolled(
        self,
        usage_filter: UsageFilter,
        plan: BucketPlan | None,
        tail: list[UsageRecord] | None,
        *,
        dimension: str | None = None,
        hist: bool = False,
    ) -> Iterator[tuple[str, list[Any]] | None]:
        """`FROM` text and parameters of rollup-shaped rows (storage/duckdb/rollups.py) for the
        filter, or None when the rollups cannot answer it (then the caller reads raw).

        With a tail, one read transaction holds the level's rows, the raw edges and the registered
        tail in one snapshot: a tail record that the snapshot already holds is dropped from the
        tail (the rollups cannot leave ids out), so every record counts exactly once."""
        if not self.use_rollups or not rollups.fits(usage_filter, plan):
            yield None
            return
        level = rollups.level_for(usage_filter, dimension, plan)
        if level is None or (hist and not level.hist):
            yield None
            return
        cursor = self._database.cursor()
        window = rollups.span(self._database.rollup_floors, usage_filter, level)
        if (
            window is not None
            and hist
            and not rollups.histograms_pay(
                cursor, level, usage_filter, window, where, gain=self.histogram_gain
            )
        ):
            window = None
        if window is None:
            yield None
            return
        daily = rollups.daily_for(level, plan, hist=hist)
        whole_days = (
            rollups.day_span(self._database.rollup_floors, window, daily) if daily else None
        )
        days = (daily, whole_days) if daily is not None and whole_days is not None else None
        if not tail:  # one statement: one snapshot
            yield rollups.source_sql(level, usage_filter, window, where, hist=hist, days=days)
            return
        cursor.execute("BEGIN TRANSACTION")  # read-only: always rolled back
        registered = False
        try:
            stored = {
                str(row[0])
                for row in cursor.execute(
                    "SELECT id FROM usage_log WHERE ts >= ?"
                    " AND list_contains(CAST(? AS UUID[]), id)",
                    [min(record.ts for record in tail), [record.id for record in tail]],
                ).fetchall()
            }
            tail = [record for record in tail if record.id not in stored]
            if tail:
                columns = {name: [getattr(r, name) for r in tail] for name in _TAIL_COLUMNS}
                cursor.register("tail_records", pa.Table.from_pydict(columns, schema=_TAIL_SCHEMA))
                registered = True
            yield rollups.source_sql(
                level, usage_filter, window, where, hist=hist, tail=registered, days=days
            )
        finally:
            if registered:
                cursor.unregister("tail_records")
            cursor.execute("ROLLBACK")

    # -- the port --------------------------------------------------------------------------------
    async def activity(self, usage_filter: UsageFilter, plan: BucketPlan) -> list[int]:
        return await self._run(self.activity_sync, usage_filter, plan)

    async def statuses(self, usage_filter: UsageFilter, plan: BucketPlan) -> list[StatusCounts]:
        return await self._run(self.statuses_sync, usage_filter, plan)

    async def times(self, usage_filter: UsageFilter, plan: BucketPlan) -> list[TimeStats | None]:
        return await self._run(self.times_sync, usage_filter, plan)

    async def by_key(
        self, usage_filter: UsageFilter, plan: BucketPlan, dimension: str, top: int | None
    ) -> KeyedCounts:
        return await self._run(self.by_key_sync, usage_filter, plan, dimension, top)

    async def endpoints(
        self, usage_filter: UsageFilter, *, offset: int, limit: int
    ) -> EndpointPage:
        return await self._run(self.endpoints_sync, usage_filter, offset=offset, limit=limit)

    # -- the queries, on the calling thread -------------------------------------------------------
    def _grouped(
        self,
        usage_filter: UsageFilter,
        plan: BucketPlan,
        aggregates: str,
        tail: list[UsageRecord] | None = None,
    ) -> dict[Any, tuple[Any, ...]]:
        """Per bucket, `aggregates` written over `n` (a row's count): over rollup rows, or over
        raw records where each counts 1."""
        with self._rolled(usage_filter, plan, tail) as rolled:
            if rolled is not None:
                return self._by_bucket(plan, aggregates, rolled)
        return self._grouped_raw(usage_filter, plan, aggregates.replace("sum(n)", "count(*)"), tail)

    def _grouped_raw(
        self,
        usage_filter: UsageFilter,
        plan: BucketPlan,
        aggregates: str,
        tail: list[UsageRecord] | None,
    ) -> dict[Any, tuple[Any, ...]]:
        with self._source(usage_filter, tail) as source:
            return self._by_bucket(plan, aggregates, source)

    def _by_bucket(
        self, plan: BucketPlan, aggregates: str, source: tuple[str, list[Any]]
    ) -> dict[Any, tuple[Any, ...]]:
        """`aggregates` per bucket key of `plan` over the rows of `source` (FROM text, values)."""
        key_sql, key_values = bucket_key_sql(plan)
        from_sql, values = source
        sql = f"SELECT {key_sql} AS bucket, {aggregates} FROM {from_sql} GROUP BY bucket"  # noqa: S608
        rows = self._database.cursor().execute(sql, [*key_values, *values]).fetchall()
        return {row[0]: row[1:] for row in rows}

    def activity_sync(
        self, usage_filter: UsageFilter, plan: BucketPlan, *, tail: list[UsageRecord] | None = None
    ) -> list[int]:
        counts = self._grouped(usage_filter, plan, "sum(n)", tail)
        return [int(counts.get(key, (0,))[0]) for key in plan.keys]

    def statuses_sync(
        self, usage_filter: UsageFilter, plan: BucketPlan, *, tail: list[UsageRecord] | None = None
    ) -> list[StatusCounts]:
        counts = self._grouped(
            usage_filter, plan, "sum(n), coalesce(sum(n) FILTER (WHERE success), 0)", tail
        )
        return [
            StatusCounts(int(total), int(ok))
            for total, ok in (counts.get(key, (0, 0)) for key in plan.keys)
        ]

    def times_sync(
        self, usage_filter: UsageFilter, plan: BucketPlan, *, tail: list[UsageRecord] | None = None
    ) -> list[TimeStats | None]:
        key_sql, key_values = bucket_key_sql(plan)
        with self._rolled(usage_filter, plan, tail, hist=True) as rolled:
            if rolled is not None:
                from_sql, values = rolled
                sql = (
                    f"WITH src AS MATERIALIZED (SELECT {key_sql} AS bucket, *"  # noqa: S608
                    f" FROM {from_sql}), {_quantiles_sql('bucket', (0.5, 0.95, 0.99))}"
                    " SELECT bucket, n, low, high, mean, q0, q1, q2"
                    " FROM stats JOIN quantiles USING (bucket)"
                )
                rows = self._database.cursor().execute(sql, [*key_values, *values]).fetchall()
                stats = {
                    row[0]: (*row[1:5], [rollups.bin_value(b) for b in row[5:]]) for row in rows
                }
        if rolled is None:
            stats = self._grouped_raw(
                usage_filter,
                plan,
                "count(*), min(exec_time), max(exec_time), avg(exec_time),"
                " quantile_cont(exec_time, [0.5, 0.95, 0.99])",
                tail,
            )
        result: list[TimeStats | None] = []
        for key in plan.keys:
            row = stats.get(key)
            if row is None:
                result.append(None)
                continue
            count, low, high, mean, (p50, p95, p99) = row
            result.append(TimeStats(int(count), low, high, mean, p50, p95, p99))
        return result

    def by_key_sync(
        self,
        usage_filter: UsageFilter,
        plan: BucketPlan,
        dimension: str,
        top: int | None,
        *,
        tail: list[UsageRecord] | None = None,
    ) -> KeyedCounts:
        key_sql, key_values = bucket_key_sql(plan)
        columns, name_sql = DIMENSIONS[dimension]
        with contextlib.ExitStack() as stack:
            rolled = stack.enter_context(
                self._rolled(usage_filter, plan, tail, dimension=dimension)
            )
            count = "sum(n)" if rolled is not None else "count(*)"
            from_sql, values = rolled or stack.enter_context(self._source(usage_filter, tail))
            grouped = (
                f"WITH grouped AS (SELECT {key_sql} AS bucket, {columns}, {count} AS n"  # noqa: S608
                f" FROM {from_sql} GROUP BY ALL),"
                f" keyed AS (SELECT bucket, {name_sql} AS k, n FROM grouped)"
            )
            parameters = [*key_values, *values]
            if top is None:
                sql = grouped + " SELECT bucket, k, true, sum(n)::BIGINT FROM keyed GROUP BY ALL"  # noqa: S608
            else:
                sql = (
                    grouped  # noqa: S608
                    + ", top_keys AS (SELECT k FROM keyed GROUP BY k"
                    " ORDER BY sum(n) DESC, k LIMIT ?)"
                    " SELECT bucket, top_keys.k, top_keys.k IS NOT NULL, sum(n)::BIGINT"
                    " FROM keyed LEFT JOIN top_keys USING (k) GROUP BY ALL"
                )
                parameters.append(top)
            rows = self._database.cursor().execute(sql, parameters).fetchall()
        per_bucket: dict[Any, dict[str, int]] = {}
        totals: dict[str, int] = {}
        other: dict[Any, int] = {}
        for bucket, key, shown, count in rows:
            if not shown:
                other[bucket] = other.get(bucket, 0) + count
                continue
            per_bucket.setdefault(bucket, {})[key] = count
            totals[key] = totals.get(key, 0) + count
        keys = sorted(totals, key=lambda k: (-totals[k], k))
        return KeyedCounts(
            keys=keys,
            per_bucket=[per_bucket.get(bucket, {}) for bucket in plan.keys],
            other=[other.get(bucket, 0) for bucket in plan.keys],
        )

    def endpoints_sync(
        self,
        usage_filter: UsageFilter,
        *,
        offset: int,
        limit: int,
        tail: list[UsageRecord] | None = None,
    ) -> EndpointPage:
        with contextlib.ExitStack() as stack:
            rolled = stack.enter_context(
                self._rolled(usage_filter, None, tail, dimension="endpoints", hist=True)
            )
            if rolled is not None:
                from_sql, values = rolled
                grouped = (
                    f"WITH src AS MATERIALIZED (SELECT * FROM {from_sql}),"  # noqa: S608
                    f" {_quantiles_sql('service, command', (0.95,))},"
                    " grouped AS (SELECT service, command, n AS hits, ok, last_hit, mean, low,"
                    " high, q0 AS p95 FROM stats JOIN quantiles USING (service, command)),"
                )
            else:
                from_sql, values = stack.enter_context(self._source(usage_filter, tail))
                grouped = (
                    "WITH grouped AS (SELECT service, command, count(*) AS hits,"  # noqa: S608
                    " count(*) FILTER (WHERE success) AS ok, max(ts) AS last_hit,"
                    " avg(exec_time) AS mean, min(exec_time) AS low, max(exec_time) AS high,"
                    f" quantile_cont(exec_time, 0.95) AS p95 FROM {from_sql} GROUP BY ALL),"
                )
            named = f" named AS (SELECT {_FULL_NAME} AS name, * EXCLUDE (service, command)"
            sql = (
                grouped  # noqa: S608 - names and placeholders only
                + named
                + " FROM grouped),"
                " page AS (SELECT * FROM named ORDER BY hits DESC, name LIMIT ? OFFSET ?)"
                " SELECT (SELECT count(*) FROM named), page.* FROM (SELECT 1) AS one"
                " LEFT JOIN page ON true ORDER BY page.hits DESC, page.name"
            )
            rows = self._database.cursor().execute(sql, [*values, limit, offset]).fetchall()
        count = int(rows[0][0]) if rows else 0
        value = rollups.bin_value if rolled is not None else float
        return EndpointPage(
            count=count,
            rows=[
                EndpointStats(name, int(hits), int(ok), last_hit, mean, low, high, value(p95))
                for _, name, hits, ok, last_hit, mean, low, high, p95 in rows
                if name is not None
            ],
        )


def _quantiles_sql(keys: str, fractions: tuple[float, ...]) -> str:
    """CTEs `stats` (n, ok, low, high, mean, last_hit) and `quantiles` (q0, q1, ...: histogram
    bins) per `keys` over the rollup-shaped rows of a CTE `src`. The bins of all the rows are
    added up; the quantile of rank r (0-based, `floor(fraction * (n - 1))`) lies in the first
    bin whose running count exceeds r."""
    picks = ", ".join(
        f"min(bin) FILTER (WHERE upto > floor({fraction!r} * (n - 1))) AS q{i}"
        for i, fraction in enumerate(fractions)
    )
    return (
        f"stats AS (SELECT {keys}, sum(n)::BIGINT AS n,"  # noqa: S608
        " coalesce(sum(n) FILTER (WHERE success), 0)::BIGINT AS ok, min(t_min) AS low,"
        " max(t_max) AS high, sum(t_sum) / sum(n) AS mean, max(last_ts) AS last_hit"
        " FROM src GROUP BY ALL),"
        f" bins AS (SELECT {keys}, e.key AS bin, sum(e.value) AS c"
        f" FROM (SELECT {keys}, unnest(map_entries(hist)) AS e FROM src) GROUP BY ALL),"
        f" ranked AS (SELECT {keys}, bin,"
        f" sum(c) OVER (PARTITION BY {keys} ORDER BY bin) AS upto FROM bins),"
        f" quantiles AS (SELECT {keys}, {picks} FROM ranked JOIN stats USING ({keys})"
        " GROUP BY ALL)"
    )
