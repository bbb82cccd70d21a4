"""Go-style durations (`1h30m`, `250ms`, `2d`) and RFC 3339 timestamps, as params accept them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

from pydantic import BeforeValidator

from storage.buckets import format_utc

__all__ = ["Duration", "Timestamp", "format_timestamp", "parse_duration", "parse_timestamp"]

_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d)", re.ASCII)
_MAX_SECONDS: Final = 100 * 366 * 86400


def parse_duration(text: str) -> timedelta:
    """Parse a positive Go duration; units may repeat in any order, as Go allows."""
    if not isinstance(text, str) or not text:
        raise ValueError("duration must be a non-empty string like '15m' or '1h30m'")
    position = 0
    seconds = 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(text):
        raise ValueError(
            f"bad duration {text[:40]!r}: use units ns, us, ms, s, m, h, d as in '1h30m'"
        )
    if seconds <= 0:
        raise ValueError("duration must be greater than zero")
    if seconds > _MAX_SECONDS:
        raise ValueError("duration must be at most 100 years")
    return timedelta(seconds=seconds)


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:[Zz]|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)
# Records carry the time they were received; bucket arithmetic needs room on both sides.
_EARLIEST = datetime(1970, 1, 1)
_LATEST = datetime(9000, 1, 1)


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 timestamp as a naive UTC datetime (a missing offset is taken as UTC), between
    1970 and 9000."""
    example = "use RFC 3339, e.g. '2024-01-31T12:00:00.000Z'"
    if not isinstance(text, str) or not 10 <= len(text) <= 40 or not _RFC3339.fullmatch(text):
        raise ValueError(f"bad timestamp {str(text)[:40]!r}: {example}")
    try:
        value = datetime.fromisoformat(text)
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise ValueError(f"bad timestamp {text[:40]!r}: {example}") from None
    if not _EARLIEST <= value <= _LATEST:
        raise ValueError(f"timestamp {text[:40]!r} out of range: 1970 to 9000")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Timestamp = Annotated[datetime, BeforeValidator(parse_timestamp)]

# One wire form of a timestamp (`...T19:15:34.882Z`) for commands and storage alike.
format_timestamp = format_utc
