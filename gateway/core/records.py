"""The data the core and its ports exchange: usage records, filters, sessions, analytics rows.

Plain data only: no SQL, no wire names. Storage fills these from its tables; the commands'
presenters turn them into TR50 JSON.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

__all__ = [
    "AlarmValue",
    "AttributeValue",
    "EndpointPage",
    "EndpointStats",
    "KeyedCounts",
    "LocationValue",
    "LogEntry",
    "LogQuery",
    "Org",
    "PropertyValue",
    "RecordIds",
    "Session",
    "StatusCounts",
    "ThingState",
    "ThingSummary",
    "TimeStats",
    "UsageFilter",
    "UsageRecord",
]


@dataclass(slots=True)
class UsageRecord:
    """One logged call (SPEC §3); `ts` is naive UTC, `exec_time` nanoseconds."""

    id: str
    ts: datetime
    exec_time: int
    processed_by: str
    org_id: str
    org_key: str
    whoami: str
    service: str
    command: str
    success: bool
    error_code: int | None
    transport: str
    client_id: str
    remote_addr: str
    request: str
    response: str
    # The MQTT QoS 1 delivery it answered (packet id and a digest of topic and payload), kept
    # so a gateway restarted on the same broker session knows a redelivered request it logged
    # before (gateway/transports/mqtt/redelivery.py); None for every other call. Never listed.
    delivery: str | None = None


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """Which records a listing may see and wants.

    `org_id` and `caller` are the session's scope (`org_id=None`: every org; `caller`: a thing's
    own key); the other fields are what the caller asked for. Times are naive UTC, inclusive.
    """

    org_id: str | None = None
    caller: str | None = None
    whoami: str | None = None
    service: str | None = None
    command: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    failed_only: bool = False
    succeeded_only: bool = False
    name_contains: str | None = None  # in `service.command`, any case
    names: tuple[str, ...] | None = None  # only these `service.command`s
    exclude_names: tuple[str, ...] = ()  # none of these `service.command`s
    exclude_ids: tuple[str, ...] = ()  # none of these records (a reader's merged tail)
    search_text: str | None = None
    remote_addr: str | None = None
    client_id: str | None = None
    transport: str | None = None


class RecordIds:
    """UUIDv7 strings, strictly increasing within one generator so ties in `ts` page stably.

    The composition root owns one per process; ids need uniqueness, not secrecy, so a PRNG seeded
    from the OS (about 20x cheaper than os.urandom per id) fills the random bits.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(os.urandom(16))
        self._last_ms = 0
        self._counter = 0

    def new(self, now_ms: int | None = None) -> str:
        ms = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            if ms <= self._last_ms:
                ms = self._last_ms
                counter = self._counter + 1
                if counter > 0xFFF:
                    ms += 1
                    counter = 0
            else:
                counter = 0
            self._last_ms, self._counter = ms, counter
            random_bits = self._random.getrandbits(62)
        value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | random_bits
        text = f"{value:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@dataclass(frozen=True, slots=True)
class Org:
    org_id: str
    org_key: str
    name: str


@dataclass(slots=True)
class Session:
    """A live session as the core sees it; the token itself is never stored, only its hash."""

    token_hash: str
    org_id: str
    org_key: str
    kind: str  # "user" or "thing"
    subject: str  # the user's email or the thing key
    role: str  # a user role, or "thing"
    app_id: str
    ttl_seconds: int
    start_time: datetime
    last_accessed: datetime
    stored_access: datetime = field(repr=False, default=datetime.min)
    ended: bool = False

    @property
    def whoami(self) -> str:
        return self.subject

    @property
    def is_thing(self) -> bool:
        return self.kind == "thing"

    @property
    def has_super_ops(self) -> bool:
        return self.role == "super-ops"

    @property
    def has_org_admin(self) -> bool:
        return self.role in ("org-admin", "super-ops")

    def expires_at(self) -> datetime:
        return self.last_accessed + timedelta(seconds=self.ttl_seconds)


# -- analytics rows: one per bucket of a BucketPlan, in its order --------------------------------
@dataclass(frozen=True, slots=True)
class StatusCounts:
    count: int
    success: int


@dataclass(frozen=True, slots=True)
class TimeStats:
    """Execution times of one bucket's calls, in nanoseconds."""

    count: int
    min: float
    max: float
    avg: float
    p50: float
    p95: float
    p99: float


@dataclass(frozen=True, slots=True)
class KeyedCounts:
    """Counts per bucket and key; `keys` most calls first. `per_bucket[i]` holds bucket i's
    counts of the shown keys, `other[i]` the sum of the keys beyond the top ones."""

    keys: list[str]
    per_bucket: list[dict[str, int]]
    other: list[int]


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """One endpoint (a full command name) over a window; times in nanoseconds."""

    name: str
    hits: int
    success: int
    last_hit: datetime
    avg: float
    min: float
    max: float
    p95: float


@dataclass(frozen=True, slots=True)
class EndpointPage:
    count: int
    rows: list[EndpointStats]


@dataclass(slots=True)  # not frozen: a frozen dataclass is built 5x slower
class PropertyValue:
    """One published property value of a thing; `ts` is the device's time (naive UTC)."""

    org_id: str
    thing_key: str
    key: str
    ts: datetime
    value: float
    corr_id: str | None
    received_at: datetime


@dataclass(slots=True)  # not frozen: a frozen dataclass is built 5x slower
class LocationValue:
    """One published location of a thing (deviceWISE's lat/lng form; the address is display
    text the device sent, not a geocoded one)."""

    org_id: str
    thing_key: str
    ts: datetime
    lat: float
    lng: float
    heading: float | None
    altitude: float | None
    speed: float | None
    fix_acc: float | None
    fix_type: str | None
    corr_id: str | None
    street_number: str | None
    street: str | None
    city: str | None
    state: str | None
    zip_code: str | None
    country: str | None
    received_at: datetime


@dataclass(slots=True)  # not frozen: a frozen dataclass is built 5x slower
class AlarmValue:
    """One published alarm state of a thing (an integer state, a message, where it happened)."""

    org_id: str
    thing_key: str
    key: str
    ts: datetime
    state: int
    msg: str | None
    corr_id: str | None
    lat: float | None
    lng: float | None
    received_at: datetime


@dataclass(slots=True)  # not frozen: a frozen dataclass is built 5x slower
class AttributeValue:
    """One attribute setting of a thing: a string, or None where the attribute was unset."""

    org_id: str
    thing_key: str
    key: str
    ts: datetime
    value: str | None
    corr_id: str | None
    received_at: datetime


@dataclass(slots=True)  # not frozen: a frozen dataclass is built 5x slower
class LogEntry:
    """One log entry a thing (or, `thing_key` None, its org: deviceWISE's `global`) published;
    `level` 0 error, 1 warning, 2 information."""

    id: str
    org_id: str
    thing_key: str | None
    ts: datetime
    level: int
    msg: str
    corr_id: str | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class LogQuery:
    """Which log entries a `log.list` wants. `thing_key` None: every entry of the org (its
    things' and its global ones); `level` and `corr_id` narrow; times are naive UTC, inclusive."""

    org_id: str
    thing_key: str | None
    start: datetime | None
    end: datetime | None
    level: int | None
    corr_id: str | None
    offset: int
    limit: int


@dataclass(frozen=True, slots=True)
class ThingSummary:
    """A thing as `thing.list` shows it: `last_seen` is when the thing itself last called the
    gateway (None: never since it was registered); `name` None: never named (the key stands
    in)."""

    org_id: str
    thing_key: str
    app_id: str
    created_at: datetime
    last_seen: datetime | None
    name: str | None = None
    tags: tuple[str, ...] = ()


# -- administration (SPEC §10) ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OrgInfo:
    org_id: str
    org_key: str
    name: str
    description: str
    created_at: datetime
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class UserInfo:
    email: str
    org_id: str
    org_key: str
    role: str
    first_name: str
    last_name: str
    disabled: bool
    created_at: datetime
    updated_at: datetime | None
    last_login: datetime | None


@dataclass(frozen=True, slots=True)
class AppInfo:
    """An application as the admin commands show it: never its token (stored as a digest)."""

    app_id: str
    org_id: str
    org_key: str
    name: str
    description: str
    created_at: datetime
    updated_at: datetime | None
    token_rotated_at: datetime | None


@dataclass(frozen=True, slots=True)
class UserChanges:
    """What `user.update` changes (None: left as it is)."""

    role: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    disabled: bool | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class ThingState:
    """Everything a thing has published, latest per key (what `thing.find` shows)."""

    properties: list[PropertyValue]
    alarms: list[AlarmValue]
    attributes: list[AttributeValue]
    location: LocationValue | None
