"""Typed rows in, TR50 JSON out: the wire names and shapes of the usage commands.

Storage returns `gateway.core.records` rows; only this module knows that `exec_time` is called
`execTime` on the wire, that timestamps are RFC 3339 with milliseconds, that durations in the
analytics are milliseconds, and that an empty page is `"result": null` as on deviceWISE.
"""

from __future__ import annotations

import math
from typing import Any, Final

from gateway.core.buckets import BucketPlan, format_utc
from gateway.core.records import EndpointPage, KeyedCounts, StatusCounts, TimeStats, UsageRecord

__all__ = [
    "activity",
    "breakdown",
    "endpoints",
    "history",
    "listing",
    "listing_summary",
    "statuses",
    "times",
    "usage_record",
]

_MS: Final = 1_000_000.0  # stored times are nanoseconds, the wire's milliseconds


def _ms(value: float | None) -> float | None:
    return None if value is None else float(value) / _MS


def usage_record(record: UsageRecord) -> dict[str, Any]:
    """One record as `usage.api.list` and `usage.api.get` answer it (SPEC §3)."""
    return {
        "id": record.id,
        "ts": format_utc(record.ts),
        "execTime": record.exec_time,
        "processedBy": record.processed_by,
        "orgId": record.org_id,
        "orgKey": record.org_key,
        "whoami": record.whoami,
        "service": record.service,
        "command": record.command,
        "success": record.success,
        "errorCode": record.error_code,
        "transport": record.transport,
        "clientId": record.client_id,
        "remoteAddr": record.remote_addr,
        "request": record.request,
        "response": record.response,
    }


def listing(count: int, records: list[UsageRecord]) -> dict[str, Any]:
    return {"count": count, "result": [usage_record(record) for record in records] or None}


def listing_summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the usage log keeps of a `{count, result}` listing (usage records, endpoints, log
    entries, things): how many matched and how many were returned, not the entries."""
    return {"count": result["count"], "returned": len(result["result"] or ())}


def _envelope(plan: BucketPlan, result: list[dict[str, Any]]) -> dict[str, Any]:
    return {"interval": plan.interval, "timezone": plan.timezone, "result": result}


def activity(plan: BucketPlan, counts: list[int]) -> dict[str, Any]:
    return _envelope(
        plan,
        [
            {"timestamp": label, "count": count}
            for label, count in zip(plan.labels, counts, strict=True)
        ],
    )


def statuses(plan: BucketPlan, rows: list[StatusCounts]) -> dict[str, Any]:
    return _envelope(
        plan,
        [
            {
                "timestamp": label,
                "count": row.count,
                "success": row.success,
                "failed": row.count - row.success,
            }
            for label, row in zip(plan.labels, rows, strict=True)
        ],
    )


def _time_stats(label: str, row: TimeStats | None) -> dict[str, Any]:
    if row is None:
        return {
            "timestamp": label,
            "count": 0,
            "min": None,
            "max": None,
            "avg": None,
            "p50": None,
            "p95": None,
            "p99": None,
        }
    return {
        "timestamp": label,
        "count": row.count,
        "min": _ms(row.min),
        "max": _ms(row.max),
        "avg": _ms(row.avg),
        "p50": _ms(row.p50),
        "p95": _ms(row.p95),
        "p99": _ms(row.p99),
    }


def times(plan: BucketPlan, rows: list[TimeStats | None]) -> dict[str, Any]:
    return _envelope(
        plan, [_time_stats(label, row) for label, row in zip(plan.labels, rows, strict=True)]
    )


def breakdown(plan: BucketPlan, dimension: str, keyed: KeyedCounts) -> dict[str, Any]:
    result = []
    for label, counts, rest in zip(plan.labels, keyed.per_bucket, keyed.other, strict=True):
        shown = {key: counts.get(key, 0) for key in keyed.keys}
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
        "keys": keyed.keys,
        "result": result,
    }


def history(plan: BucketPlan, keyed: KeyedCounts) -> dict[str, Any]:
    counters = {key: [counts.get(key, 0) for counts in keyed.per_bucket] for key in keyed.keys}
    total = sum(sum(series) for series in counters.values())
    return {"counters": counters, "total": total, "ts": list(plan.labels)}


def endpoints(page: EndpointPage, limit: int) -> dict[str, Any]:
    result = [
        {
            "command": row.name,
            "hits": row.hits,
            "success": row.success,
            "error": row.hits - row.success,
            "lastHit": format_utc(row.last_hit),
            "avg": _ms(row.avg),
            "min": _ms(row.min),
            "max": _ms(row.max),
            "p95": _ms(row.p95),
        }
        for row in page.rows
    ]
    return {"count": page.count, "pages": math.ceil(page.count / limit), "result": result or None}
