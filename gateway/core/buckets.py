"""Time buckets in a time zone: the plan an analytics query groups by (pure; no SQL here).

A window only ever spans a handful of UTC-offset changes, so the plan finds them once, with
`zoneinfo`, and a storage can shift each row by a piecewise constant offset before truncating it:
plain arithmetic instead of a per-row zone conversion (`storage.duckdb.bucketing` turns the plan
into SQL).

Bucket keys, as the plan lists them and a query must return them:
- intervals shorter than a day: the bucket's first instant in UTC (the local truncation, shifted
  back by the row's own offset), so the local hour repeated on an autumn DST night is two
  buckets and the hour skipped in spring is none;
- a day or longer: the local wall time the bucket starts at (local midnight), whatever the offset,
  as a day or week number for days and weeks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "EPOCH",
    "INTERVALS",
    "MAX_AUTO_BUCKETS",
    "MAX_BUCKETS",
    "BucketPlan",
    "choose_interval",
    "epoch_us",
    "format_utc",
    "plan_buckets",
    "resolve_zone",
]

# Approximate lengths, used only to choose an interval and to refuse huge plans early.
INTERVALS: Final = {
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86400.0,
    "week": 7 * 86400.0,
    "month": 30.436875 * 86400,
    "quarter": 91.310625 * 86400,
    "year": 365.2425 * 86400,
}
_SUB_DAY: Final = frozenset({"second", "minute", "hour"})
_FIXED: Final = {
    "second": timedelta(seconds=1),
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
}
MAX_AUTO_BUCKETS: Final = 200
MAX_BUCKETS: Final = 10_000
_SCAN_STEP: Final = timedelta(hours=12)  # no zone changes its offset twice within 12 hours


def resolve_zone(name: str) -> tzinfo:
    """An IANA zone by name; ValueError for an unknown one (names are never paths)."""
    if name.upper() == "UTC":
        return UTC
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"unknown time zone {name[:64]!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a folder: IsADirectoryError
        raise ValueError(
            f"unknown time zone {name[:64]!r}: use an IANA name such as 'Europe/Berlin'"
        ) from None


def _offset(zone: tzinfo, instant: datetime) -> timedelta:
    """UTC offset of `zone` at the naive UTC `instant`."""
    offset = instant.replace(tzinfo=UTC).astimezone(zone).utcoffset()
    return offset if offset is not None else timedelta(0)


def _transitions(zone: tzinfo, start: datetime, end: datetime) -> list[tuple[datetime, timedelta]]:
    """The offset at `start`, then each (instant, new offset) change up to `end`."""
    changes = [(start, _offset(zone, start))]
    if zone is UTC:
        return changes
    cursor = start
    while cursor < end:
        step_end = min(cursor + _SCAN_STEP, end)
        current = changes[-1][1]
        if _offset(zone, step_end) != current:
            low, high = cursor, step_end  # offset(low) == current, offset(high) differs
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                middle = (
                    middle.replace(microsecond=0) if high - low > timedelta(seconds=2) else middle
                )
                if _offset(zone, middle) == current:
                    low = middle
                else:
                    high = middle
            high = high.replace(microsecond=0) if high.microsecond else high
            changes.append((high, _offset(zone, high)))
        cursor = step_end
    return changes


def _truncate(local: datetime, interval: str) -> datetime:
    """`date_trunc(interval, local)` as DuckDB computes it (weeks start on Monday)."""
    if interval == "second":
        return local.replace(microsecond=0)
    if interval == "minute":
        return local.replace(second=0, microsecond=0)
    if interval == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "day":
        return day
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    if interval == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    return day.replace(month=1, day=1)  # year


def _next_local(start: datetime, interval: str) -> datetime:
    if interval == "day":
        return start + timedelta(days=1)
    if interval == "week":
        return start + timedelta(days=7)
    months = {"month": 1, "quarter": 3, "year": 12}[interval]
    month_index = start.year * 12 + start.month - 1 + months
    return start.replace(year=month_index // 12, month=month_index % 12 + 1)


def format_utc(value: datetime) -> str:
    """RFC 3339 with milliseconds in UTC, the wire form of every timestamp (`...T19:15:34.882Z`)."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _label(instant_utc: datetime, zone: tzinfo) -> str:
    """RFC 3339 with milliseconds in the zone's offset (`Z` for UTC)."""
    if zone is UTC:
        return format_utc(instant_utc)
    local = instant_utc.replace(tzinfo=UTC).astimezone(zone)
    offset = local.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return (
        local.strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{local.microsecond // 1000:03d}{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    )


def _local_start_utc(local: datetime, zone: tzinfo) -> datetime:
    """The UTC instant a local wall time begins (fold=0: a skipped midnight maps to the end of
    the gap, when that local day really starts; a repeated one to its first occurrence)."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class BucketPlan:
    """Which buckets a window has, and how a stored row's `ts` maps onto them.

    `keys` are what a query grouping by bucket must produce (the storage turns `interval` and
    `offsets` into that expression): below a day, the bucket's first instant in UTC microseconds
    since the epoch; for days, the local day number since 1970-01-01; for weeks, the number of
    Monday-based weeks since the epoch's week; months and longer, the local wall time the bucket
    starts at. `offsets` is the zone's UTC offset at the window's start, then each change
    `(instant, new offset)` within it.
    """

    interval: str
    timezone: str
    keys: list[Any]  # oldest first
    labels: list[str]  # the wire timestamps, aligned with `keys`
    offsets: list[tuple[datetime, timedelta]]


EPOCH: Final = datetime(1970, 1, 1)
_MICROSECOND: Final = timedelta(microseconds=1)


def epoch_us(value: datetime | timedelta) -> int:
    """Microseconds since the epoch (of a naive UTC datetime), or of a duration."""
    return (value - EPOCH if isinstance(value, datetime) else value) // _MICROSECOND


def choose_interval(start: datetime, end: datetime) -> str:
    seconds = max((end - start).total_seconds(), 1.0)
    for name, length in INTERVALS.items():
        if seconds / length + 1 <= MAX_AUTO_BUCKETS:
            return name
    return "year"


def plan_buckets(start: datetime, end: datetime, interval: str | None, timezone: str) -> BucketPlan:
    """Every bucket from the one holding `start` to the one holding `end` (naive UTC, inclusive).

    The keys are integers wherever possible, because integer arithmetic on `epoch_us(ts)` is
    about 6x cheaper per row than `date_trunc` on a shifted timestamp. ValueError for an unknown
    zone or interval, or more than MAX_BUCKETS buckets.
    """
    zone = resolve_zone(timezone)
    if interval is None:
        interval = choose_interval(start, end)
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval[:20]!r}: use one of {', '.join(INTERVALS)}")
    estimate = (end - start).total_seconds() / INTERVALS[interval]
    if estimate > MAX_BUCKETS * 1.1:
        raise ValueError(
            f"too many buckets: about {math.ceil(estimate):,} {interval}s; at most {MAX_BUCKETS:,}"
        )
    changes = _transitions(zone, start, end)
    keys: list[Any] = []
    labels: list[str] = []
    if interval in _SUB_DAY:

        def key_of(instant: datetime) -> datetime:
            offset = _offset(zone, instant)
            return _truncate(instant + offset, interval) - offset

        step = _FIXED[interval]
        key = key_of(start)
        while key <= end and len(keys) <= MAX_BUCKETS:
            keys.append(epoch_us(key))
            labels.append(_label(key, zone))
            following = key_of(key + step)
            key = following if following > key else key + step
    else:
        local = _truncate(start + _offset(zone, start), interval)
        last = _truncate(end + _offset(zone, end), interval)
        while local <= last and len(keys) <= MAX_BUCKETS:
            if interval == "day":
                keys.append((local - EPOCH).days)
            elif interval == "week":
                keys.append(((local - EPOCH).days + 3) // 7)  # 1970-01-01 was a Thursday
            else:
                keys.append(local)
            labels.append(_label(_local_start_utc(local, zone), zone))
            local = _next_local(local, interval)
    if len(keys) > MAX_BUCKETS:
        raise ValueError(f"too many buckets: more than {MAX_BUCKETS:,} {interval}s")
    return BucketPlan(interval, timezone, keys, labels, changes)
