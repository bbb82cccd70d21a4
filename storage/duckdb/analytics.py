"""Usage analytics (the `UsageAnalytics` port): one parameterized DuckDB query per command.

Python touches only the aggregated rows (at most one per bucket, key or endpoint) to lay them out
on the bucket plan; no per-record loop runs here. SQL text is assembled only from fixed fragments
(column names, the plan's `?`-placeholder expression); every value is a parameter. Every query
first waits until the records submitted before it are committed (read-your-writes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from gateway.core.buckets import BucketPlan
from gateway.core.records import (
    EndpointPage,
    EndpointStats,
    KeyedCounts,
    StatusCounts,
    TimeStats,
    UsageFilter,
)
from storage.duckdb.bucketing import bucket_key_sql
from storage.duckdb.database import Database, reading
from storage.duckdb.usage import UsageWriter, where

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


class UsageAggregates:
    """Read-only aggregates over `usage_log`, each computed by one query on a reader cursor."""

    def __init__(self, database: Database, writer: UsageWriter) -> None:
        self._database = database
        self._writer = writer

    async def _run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        await self._writer.wait_visible()
        return await reading(function, *args, **kwargs)

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
        self, usage_filter: UsageFilter, plan: BucketPlan, aggregates: str
    ) -> dict[Any, tuple[Any, ...]]:
        where_sql, values = where(usage_filter)
        key_sql, key_values = bucket_key_sql(plan)
        sql = f"SELECT {key_sql} AS bucket, {aggregates} FROM usage_log{where_sql} GROUP BY bucket"  # noqa: S608
        rows = self._database.cursor().execute(sql, [*key_values, *values]).fetchall()
        return {row[0]: row[1:] for row in rows}

    def activity_sync(self, usage_filter: UsageFilter, plan: BucketPlan) -> list[int]:
        counts = self._grouped(usage_filter, plan, "count(*)")
        return [int(counts.get(key, (0,))[0]) for key in plan.keys]

    def statuses_sync(self, usage_filter: UsageFilter, plan: BucketPlan) -> list[StatusCounts]:
        counts = self._grouped(usage_filter, plan, "count(*), count(*) FILTER (WHERE success)")
        return [StatusCounts(*counts.get(key, (0, 0))) for key in plan.keys]

    def times_sync(self, usage_filter: UsageFilter, plan: BucketPlan) -> list[TimeStats | None]:
        stats = self._grouped(
            usage_filter,
            plan,
            "count(*), min(exec_time), max(exec_time), avg(exec_time),"
            " quantile_cont(exec_time, [0.5, 0.95, 0.99])",
        )
        result: list[TimeStats | None] = []
        for key in plan.keys:
            row = stats.get(key)
            if row is None:
                result.append(None)
                continue
            count, low, high, mean, (p50, p95, p99) = row
            result.append(TimeStats(count, low, high, mean, p50, p95, p99))
        return result

    def by_key_sync(
        self, usage_filter: UsageFilter, plan: BucketPlan, dimension: str, top: int | None
    ) -> KeyedCounts:
        where_sql, values = where(usage_filter)
        key_sql, key_values = bucket_key_sql(plan)
        columns, name_sql = DIMENSIONS[dimension]
        grouped = (
            f"WITH grouped AS (SELECT {key_sql} AS bucket, {columns}, count(*) AS n"  # noqa: S608
            f" FROM usage_log{where_sql} GROUP BY ALL),"
            f" keyed AS (SELECT bucket, {name_sql} AS k, n FROM grouped)"
        )
        parameters = [*key_values, *values]
        if top is None:
            sql = grouped + " SELECT bucket, k, true, sum(n)::BIGINT FROM keyed GROUP BY ALL"  # noqa: S608
        else:
            sql = (
                grouped  # noqa: S608
                + ", top_keys AS (SELECT k FROM keyed GROUP BY k ORDER BY sum(n) DESC, k LIMIT ?)"
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

    def endpoints_sync(self, usage_filter: UsageFilter, *, offset: int, limit: int) -> EndpointPage:
        where_sql, values = where(usage_filter)
        sql = (
            "WITH grouped AS (SELECT service, command, count(*) AS hits,"  # noqa: S608
            " count(*) FILTER (WHERE success) AS ok, max(ts) AS last_hit, avg(exec_time) AS mean,"
            " min(exec_time) AS low, max(exec_time) AS high,"
            f" quantile_cont(exec_time, 0.95) AS p95 FROM usage_log{where_sql} GROUP BY ALL),"
            f" named AS (SELECT {_FULL_NAME} AS name, * EXCLUDE (service, command) FROM grouped),"
            " page AS (SELECT * FROM named ORDER BY hits DESC, name LIMIT ? OFFSET ?)"
            " SELECT (SELECT count(*) FROM named), page.* FROM (SELECT 1) AS one"
            " LEFT JOIN page ON true ORDER BY page.hits DESC, page.name"
        )
        rows = self._database.cursor().execute(sql, [*values, limit, offset]).fetchall()
        count = int(rows[0][0]) if rows else 0
        return EndpointPage(
            count=count,
            rows=[
                EndpointStats(name, hits, ok, last_hit, mean, low, high, p95)
                for _, name, hits, ok, last_hit, mean, low, high, p95 in rows
                if name is not None
            ],
        )
