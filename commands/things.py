"""Which thing a device-data command acts on (SPEC §6), and the checks its params share.

A thing is `(orgId, thingKey)`. A thing session may omit `thingKey` (its own) and may act only on
itself (another key: -90003); a user session acts on things of its own org that exist (an
unknown key: -90008), Super-Ops included (`showAll` is for the usage log, not device data).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from commands.params import Duration, Timestamp
from gateway.core.context import CallContext
from gateway.core.errors import InvalidParams, NotFound, PermissionDenied

__all__ = [
    "BATCH_MAX_ENTRIES",
    "HISTORY_MAX_RECORDS",
    "KEY",
    "SeriesWindow",
    "ThingParam",
    "TimeWindow",
    "acting_on",
    "history_summary",
]

HISTORY_MAX_RECORDS = 5000  # deviceWISE's cap per call
BATCH_MAX_ENTRIES = 5000  # ours: one envelope's batch is checked, then stored in one go
KEY = Field(min_length=1, max_length=256)
"""A property, alarm or attribute key."""


class ThingParam(BaseModel):
    """The thing identifier: `thingKey`, optional for a thing session (its own)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    thing_key: str | None = Field(None, alias="thingKey", min_length=1, max_length=256)


class TimeWindow(BaseModel):
    """A window of device time: `start`/`end` or `last` (up to now), or neither (all time)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    start: Timestamp | None = None
    end: Timestamp | None = None
    last: Duration | None = None

    @model_validator(mode="after")
    def _window(self) -> TimeWindow:
        if self.last is not None and (self.start is not None or self.end is not None):
            raise ValueError("give either last or start/end, not both")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError("end is before start")
        return self

    def bounds(self, ctx: CallContext) -> tuple[datetime | None, datetime | None]:
        if self.last is not None:
            end = ctx.services.clock()
            return end - self.last, end
        return self.start, self.end


class SeriesWindow(TimeWindow):
    """A history's window and at most `records` values."""

    records: int = Field(100, ge=1, le=HISTORY_MAX_RECORDS)


async def acting_on(thing_key: str | None, ctx: CallContext) -> tuple[str, str]:
    """The `(orgId, thingKey)` the session may act on, or the TR50 error why not."""
    session = ctx.require_session()
    if session.is_thing:
        if thing_key is not None and thing_key != session.subject:
            raise PermissionDenied("permission denied: a thing may act only on itself")
        return session.org_id, session.subject
    if thing_key is None:
        raise InvalidParams("invalid params: thingKey is required for a user session")
    if not await ctx.services.devices.thing_exists(session.org_id, thing_key):
        raise NotFound(f"not found: no thing {thing_key[:64]!r} in this org")
    return session.org_id, thing_key


def history_summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the usage log keeps of a history: how many values it returned, not the values."""
    return {"returned": len(result["values"])}
