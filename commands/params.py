"""Param pieces shared by commands, defined once: Go-style durations (`1h30m`, `250ms`, `2d`),
RFC 3339 timestamps, the usage filters and window (`WindowParams`) and paging."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from gateway.core.buckets import BucketPlan, plan_buckets
from gateway.core.context import CallContext
from gateway.core.errors import InvalidParams, PermissionDenied
from gateway.core.records import UsageFilter

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_BUCKETED_WINDOW",
    "MAX_DURATION",
    "RECORD_ID",
    "Duration",
    "NoParams",
    "PageParams",
    "Timestamp",
    "WindowParams",
    "bucket_plan",
    "parse_duration",
    "parse_timestamp",
    "scoped_filter",
]

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
RECORD_ID: Final = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)
"""A usage record's id: a UUID, with or without its dashes."""
MAX_DURATION: Final = timedelta(days=100 * 366)
"""The longest `last` (about 100 years)."""


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
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError("duration must be at most 100 years")
    return timedelta(seconds=seconds)


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:[Zz]|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)
# Records carry the time they were received; bucket arithmetic needs room on both sides.
EARLIEST = datetime(1970, 1, 1)
LATEST = datetime(9000, 1, 1)


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 timestamp as a naive UTC datetime (a missing offset is taken as UTC), between
    1970 and 9000."""
    example = "use RFC 3339, e.g. '2024-01-31T12:00:00.000Z'"
    if not isinstance(text, str) or not 10 <= len(text) <= 40 or not _RFC3339.fullmatch(text):
        raise ValueError(f"bad timestamp {str(text)[:40]!r}: {example}")
    try:
        if text[-1] in "Zz":  # UTC already: the common case, no conversion
            value = datetime.fromisoformat(text[:-1])
        else:
            value = datetime.fromisoformat(text)
            if value.tzinfo is not None:
                value = value.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise ValueError(f"bad timestamp {text[:40]!r}: {example}") from None
    if not EARLIEST <= value <= LATEST:
        raise ValueError(f"timestamp {text[:40]!r} out of range: 1970 to 9000")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Timestamp = Annotated[datetime, BeforeValidator(parse_timestamp)]


class NoParams(BaseModel):
    """For commands that take no params: any param is -90002."""

    model_config = ConfigDict(extra="forbid", strict=True)


class WindowParams(BaseModel):
    """The filters shared by every usage command: who, what, when, and whose org."""

    model_config = ConfigDict(extra="forbid", strict=True)

    who: str | None = Field(None, min_length=1, max_length=320)
    service: str | None = Field(None, min_length=1, max_length=200)
    command: str | None = Field(None, min_length=1, max_length=200)
    show_all: bool = Field(False, alias="showAll")
    last: Duration | None = None
    start: Timestamp | None = None
    end: Timestamp | None = None
    has_failure: bool = Field(False, alias="hasFailure")
    search_text: str | None = Field(None, alias="searchText", min_length=1, max_length=200)
    remote_addr: str | None = Field(None, alias="remoteAddr", min_length=1, max_length=100)
    client_id: str | None = Field(None, alias="clientId", min_length=1, max_length=300)
    transport: Literal["mqtt", "ws", "http"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> WindowParams:
        if self.command is not None and self.service is None:
            raise ValueError("command requires service")
        if self.last is not None and (self.start is not None or self.end is not None):
            raise ValueError("give either last or start/end, not both")
        if self.end is not None and self.start is None:
            raise ValueError("end requires start")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError("end is before start")
        return self


class Paging(BaseModel):
    """A page of a listing: `offset` and `limit` (default 100, at most 2000, deviceWISE's cap)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    offset: int = Field(0, ge=0, le=10_000_000)
    limit: int = Field(100, ge=1, le=2000)


class PageParams(WindowParams, Paging):
    """A window plus a page of results."""


def scoped_filter(params: WindowParams, ctx: CallContext) -> UsageFilter:
    """The filter a session may run: its org (or all, for Super-Ops), its own calls for a thing."""
    session = ctx.require_session()
    if params.show_all and not session.has_super_ops:
        raise PermissionDenied("permission denied: showAll needs Super-Ops")
    start, end = params.start, params.end
    if params.last is not None:
        end = ctx.services.clock()
        start = end - params.last
    return UsageFilter(
        org_id=None if params.show_all else session.org_id,
        caller=session.whoami if session.is_thing else None,
        whoami=params.who,
        service=params.service,
        command=params.command,
        start=start,
        end=end,
        failed_only=params.has_failure,
        search_text=params.search_text,
        remote_addr=params.remote_addr,
        client_id=params.client_id,
        transport=params.transport,
    )


# 100 Julian years. `last` itself may reach 36,600 days (MAX_DURATION); a window between the two
# is a valid listing but too long to bucket.
MAX_BUCKETED_WINDOW: Final = timedelta(days=36525)


async def bucket_plan(
    start: datetime, end: datetime, interval: str | None, timezone: str
) -> BucketPlan:
    """The buckets of a window in a zone (usage analytics, property.aggregate), or -90002."""
    if end - start > MAX_BUCKETED_WINDOW:
        raise InvalidParams("invalid params: the window is longer than 100 years")
    try:
        # Finding a zone's offset changes walks the window: off the event loop.
        return await asyncio.to_thread(plan_buckets, start, end, interval, timezone)
    except (ValueError, OverflowError) as error:  # overflow: a window at the calendar's end
        raise InvalidParams(f"invalid params: {error}") from None
