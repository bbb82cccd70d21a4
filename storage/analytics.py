"""Usage analytics: one parameterized DuckDB query per command, aggregated in the database.

Python touches only the aggregated rows (at most one per bucket, key or endpoint) to lay them
out on the full bucket plan; no per-record loop runs here. SQL text is assembled only from fixed
fragments (column names, the plan's `?`-placeholder expression); every value is a parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, TypeVar

from storage.buckets import BucketPlan, format_utc
from storage.db import Database, reading
from storage.usage import _SELECT, _WIRE_NAMES, UsageFilter  # one record shape for list and get

__all__ = ["DIMENSIONS", "UsageAnalytics"]

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
_MS: Final = 1_000_000.0  # exec_time is stored in nanoseconds


def _ms(value: float | None) -> float | None:
    return None if value is None else float(value) / _MS


class UsageAnalytics:
    """Read-only aggregates over `usage_log`, each computed by one query on a reader cursor."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await reading(function, *args, **kwargs)

    def _grouped(
        self, usage_filter: UsageFilter, plan: BucketPlan, aggregates: str
    ) -> dict[Any, tuple[Any, ...]]:
        where, values = usage_filter.where()
        sql = f"SELECT {plan.key_sql} AS bucket, {aggregates} FROM usage_log{where} GROUP BY bucket"  # noqa: S608
        rows = self._database.cursor().execute(sql, [*plan.key_values, *values]).fetchall()
        return {row[0]: row[1:] for row in rows}

    def _envelope(self, plan: BucketPlan, result: list[dict[str, Any]]) -> dict[str, Any]:
        return {"interval": plan.interval, "timezone": plan.timezone, "result": result}

    def activity(self, usage_filter: UsageFilter, plan: BucketPlan) -> dict[str, Any]:
        counts = self._grouped(usage_filter, plan, "count(*)")
        return self._envelope(
            plan,
            [
                {"timestamp": label, "count": int(counts.get(key, (0,))[0])}
                for key, label in zip(plan.keys, plan.labels, strict=True)
            ],
        )

    def statuses(self, usage_filter: UsageFilter, plan: BucketPlan) -> dict[str, Any]:
        counts = self._grouped(usage_filter, plan, "count(*), count(*) FILTER (WHERE success)")
        result = []
        for key, label in zip(plan.keys, plan.labels, strict=True):
            total, success = counts.get(key, (0, 0))
            result.append(
                {"timestamp": label, "count": total, "success": success, "failed": total - success}
            )
        return self._envelope(plan, result)

    def times(self, usage_filter: UsageFilter, plan: BucketPlan) -> dict[str, Any]:
        stats = self._grouped(
            usage_filter,
            plan,
            "count(*), min(exec_time), max(exec_time), avg(exec_time),"
            " quantile_cont(exec_time, [0.5, 0.95, 0.99])",
        )
        result = []
        for key, label in zip(plan.keys, plan.labels, strict=True):
            row = stats.get(key)
            if row is None:
                result.append(
                    {
                        "timestamp": label,
                        "count": 0,
                        "min": None,
                        "max": None,
                        "avg": None,
                        "p50": None,
                        "p95": None,
                        "p99": None,
                    }
                )
                continue
            count, low, high, mean, (p50, p95, p99) = row
            result.append(
                {
                    "timestamp": label,
                    "count": count,
                    "min": _ms(low),
                    "max": _ms(high),
                    "avg": _ms(mean),
                    "p50": _ms(p50),
                    "p95": _ms(p95),
                    "p99": _ms(p99),
                }
            )
        return self._envelope(plan, result)

    def _by_key(
        self, usage_filter: UsageFilter, plan: BucketPlan, dimension: str, top: int | None
    ) -> tuple[list[str], dict[Any, dict[str, int]], dict[Any, int]]:
        """Counts per (bucket, key), the keys most calls first; with `top`, the keys beyond the
        window's top ones are summed per bucket instead."""
        where, values = usage_filter.where()
        columns, key_sql = DIMENSIONS[dimension]
        grouped = (
            f"WITH grouped AS (SELECT {plan.key_sql} AS bucket, {columns}, count(*) AS n"  # noqa: S608
            f" FROM usage_log{where} GROUP BY ALL),"
            f" keyed AS (SELECT bucket, {key_sql} AS k, n FROM grouped)"
        )
        parameters = [*plan.key_values, *values]
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
        return keys, per_bucket, other

    def breakdown(
        self, usage_filter: UsageFilter, plan: BucketPlan, dimension: str, top: int
    ) -> dict[str, Any]:
        keys, per_bucket, other = self._by_key(usage_filter, plan, dimension, top)
        result = []
        for bucket, label in zip(plan.keys, plan.labels, strict=True):
            counts = per_bucket.get(bucket, {})
            shown = {key: counts.get(key, 0) for key in keys}
            rest = other.get(bucket, 0)
            result.append(
                {
                    "timestamp": label,
                    "count": sum(shown.values()) + rest,
                    "counts": shown,
                    "other": rest,
                }
            )
        return {
            "interval": plan.interval,
            "timezone": plan.timezone,
            "by": dimension,
            "keys": keys,
            "result": result,
        }

    def history(
        self, usage_filter: UsageFilter, plan: BucketPlan, dimension: str
    ) -> dict[str, Any]:
        keys, per_bucket, _ = self._by_key(usage_filter, plan, dimension, None)
        counters = {
            key: [per_bucket.get(bucket, {}).get(key, 0) for bucket in plan.keys] for key in keys
        }
        total = sum(sum(series) for series in counters.values())
        return {"counters": counters, "total": total, "ts": list(plan.labels)}

    def endpoints(self, usage_filter: UsageFilter, *, offset: int, limit: int) -> dict[str, Any]:
        where, values = usage_filter.where()
        sql = (
            "WITH grouped AS (SELECT service, command, count(*) AS hits,"  # noqa: S608
            " count(*) FILTER (WHERE success) AS ok, max(ts) AS last_hit, avg(exec_time) AS mean,"
            " min(exec_time) AS low, max(exec_time) AS high,"
            f" quantile_cont(exec_time, 0.95) AS p95 FROM usage_log{where} GROUP BY ALL),"
            f" named AS (SELECT {_FULL_NAME} AS name, * EXCLUDE (service, command) FROM grouped),"
            " page AS (SELECT * FROM named ORDER BY hits DESC, name LIMIT ? OFFSET ?)"
            " SELECT (SELECT count(*) FROM named), page.* FROM (SELECT 1) AS one"
            " LEFT JOIN page ON true ORDER BY page.hits DESC, page.name"
        )
        rows = self._database.cursor().execute(sql, [*values, limit, offset]).fetchall()
        count = int(rows[0][0]) if rows else 0
        result = [
            {
                "command": name,
                "hits": hits,
                "success": ok,
                "error": hits - ok,
                "lastHit": format_utc(last_hit),
                "avg": _ms(mean),
                "min": _ms(low),
                "max": _ms(high),
                "p95": _ms(p95),
            }
            for _, name, hits, ok, last_hit, mean, low, high, p95 in rows
            if name is not None
        ]
        return {"count": count, "pages": math.ceil(count / limit), "result": result or None}

    def get(self, usage_filter: UsageFilter, record_id: str) -> dict[str, Any] | None:
        where, values = usage_filter.where()
        glue = " AND " if where else " WHERE "
        row = (
            self._database.cursor()
            .execute(_SELECT + where + glue + "id = CAST(? AS UUID)", [*values, record_id])
            .fetchone()
        )
        return None if row is None else dict(zip(_WIRE_NAMES, row, strict=True))
