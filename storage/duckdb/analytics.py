"""Usage analytics (the `UsageAnalytics` port): one parameterized DuckDB query per command.

Python touches only the aggregated rows (at most one per bucket, key or endpoint) to lay them out
on the bucket plan; no per-record loop runs here. SQL text is assembled only from fixed fragments
(column names, the plan's `?`-placeholder expression); every value is a parameter. Every query
sees every record submitted before it (read-your-writes), the writer's uncommitted ones merged
in rather than waited for.
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


_TAIL_COLUMNS: Final = ("ts", "exec_time", "org_key", "whoami", "service", "command", "success")
"""The columns the analytics read: all a tail of uncommitted records needs to carry."""
_TAIL_SCHEMA: Final = pa.schema([USAGE_TABLE.arrow_schema.field(name) for name in _TAIL_COLUMNS])


class UsageAggregates:
    """Read-only aggregates over `usage_log`, each computed by one query on a reader cursor."""

    def __init__(self, database: Database, writer: UsageWriter) -> None:
        self._database = database
        self._writer = writer

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
        key_sql, key_values = bucket_key_sql(plan)
        with self._source(usage_filter, tail) as (from_sql, values):
            sql = f"SELECT {key_sql} AS bucket, {aggregates} FROM {from_sql} GROUP BY bucket"  # noqa: S608
            rows = self._database.cursor().execute(sql, [*key_values, *values]).fetchall()
        return {row[0]: row[1:] for row in rows}

    def activity_sync(
        self, usage_filter: UsageFilter, plan: BucketPlan, *, tail: list[UsageRecord] | None = None
    ) -> list[int]:
        counts = self._grouped(usage_filter, plan, "count(*)", tail)
        return [int(counts.get(key, (0,))[0]) for key in plan.keys]

    def statuses_sync(
        self, usage_filter: UsageFilter, plan: BucketPlan, *, tail: list[UsageRecord] | None = None
    ) -> list[StatusCounts]:
        counts = self._grouped(
            usage_filter, plan, "count(*), count(*) FILTER (WHERE success)", tail
        )
        return [StatusCounts(*counts.get(key, (0, 0))) for key in plan.keys]

    def times_sync(
        self, usage_filter: UsageFilter, plan: BucketPlan, *, tail: list[UsageRecord] | None = None
    ) -> list[TimeStats | None]:
        stats = self._grouped(
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
            result.append(TimeStats(count, low, high, mean, p50, p95, p99))
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
        with self._source(usage_filter, tail) as (from_sql, values):
            grouped = (
                f"WITH grouped AS (SELECT {key_sql} AS bucket, {columns}, count(*) AS n"  # noqa: S608
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
        with self._source(usage_filter, tail) as (from_sql, values):
            sql = (
                "WITH grouped AS (SELECT service, command, count(*) AS hits,"  # noqa: S608
                " count(*) FILTER (WHERE success) AS ok, max(ts) AS last_hit,"
                " avg(exec_time) AS mean, min(exec_time) AS low, max(exec_time) AS high,"
                f" quantile_cont(exec_time, 0.95) AS p95 FROM {from_sql} GROUP BY ALL),"
                f" named AS (SELECT {_FULL_NAME} AS name, * EXCLUDE (service, command)"
                " FROM grouped),"
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
