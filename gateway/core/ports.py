"""What the core needs from storage, as `typing.Protocol`s (`storage/duckdb/` implements them).

The core and the commands see only these; the composition root picks the implementation. Every
reader promises read-your-writes: a read sees every record submitted before it was called, so a
handler never waits for the writer itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Iterable
from datetime import datetime, timedelta
from typing import Literal, Protocol

from gateway.core.buckets import BucketPlan
from gateway.core.ratelimit import RateLimitExceeded
from gateway.core.records import (
    AlarmValue,
    AppInfo,
    AttributeValue,
    EndpointPage,
    KeyedCounts,
    LocationValue,
    LogEntry,
    LogQuery,
    Org,
    OrgInfo,
    PropertyValue,
    Session,
    StatusCounts,
    ThingState,
    ThingSummary,
    TimeStats,
    UsageFilter,
    UsageRecord,
    UserChanges,
    UserInfo,
)

__all__ = [
    "Administration",
    "AlreadyExists",
    "BindingsUnavailable",
    "DeviceData",
    "LastSuperOps",
    "LoginAttempt",
    "LoginGuard",
    "Missing",
    "Provisioning",
    "ProvisioningError",
    "SessionBindings",
    "Sessions",
    "Things",
    "UsageAnalytics",
    "UsageExport",
    "UsageReader",
    "UsageSink",
]


class UsageSink(Protocol):
    """Where the dispatcher puts one record per call. `submit` never blocks on the database."""

    def submit(self, record: UsageRecord) -> int:
        """Queue a record; returns its sequence number."""
        ...

    @property
    def submitted(self) -> int: ...

    @property
    def backlog(self) -> int:
        """Records submitted but not yet durable."""
        ...

    async def wait_visible(self, sequence: int | None = None) -> None:
        """Wait until every record up to `sequence` (default: all so far) is durable and visible.

        The dispatcher uses it for durable replies and as back-pressure when the backlog is long.
        """
        ...


class UsageReader(Protocol):
    """Listings of the usage log (read-your-writes)."""

    async def list(
        self, usage_filter: UsageFilter, *, offset: int, limit: int
    ) -> tuple[int, list[UsageRecord]]:
        """The total count and one page, newest first, ties broken by id."""
        ...

    async def get(self, usage_filter: UsageFilter, record_id: str) -> UsageRecord | None: ...

    async def deliveries(
        self, processed_by: str, *, since: datetime, before: datetime, newest: int
    ) -> set[str]:
        """The `UsageRecord.delivery` of the newest `newest` stored records that instance
        `processed_by` logged in [since, before)."""
        ...


ExportFormat = Literal["csv", "json", "parquet"]


class UsageExport(Protocol):
    """Every record a filter matches, in the order the log holds them, encoded as a file in
    chunks (read-your-writes): memory stays flat however many rows match."""

    async def count(self, usage_filter: UsageFilter) -> int: ...

    def export(self, usage_filter: UsageFilter, file_format: ExportFormat) -> AsyncIterator[bytes]:
        """The file's bytes, chunk by chunk; the rows are read as the chunks are taken."""
        ...


class UsageAnalytics(Protocol):
    """Aggregates over the usage log (read-your-writes); lists are aligned with `plan.keys`."""

    async def activity(self, usage_filter: UsageFilter, plan: BucketPlan) -> list[int]: ...

    async def statuses(self, usage_filter: UsageFilter, plan: BucketPlan) -> list[StatusCounts]: ...

    async def times(
        self, usage_filter: UsageFilter, plan: BucketPlan
    ) -> list[TimeStats | None]: ...

    async def by_key(
        self, usage_filter: UsageFilter, plan: BucketPlan, dimension: str, top: int | None
    ) -> KeyedCounts:
        """Counts per bucket of `dimension` (service, command, who, org); with `top`, the keys
        beyond the window's `top` busiest are summed per bucket in `other`."""
        ...

    async def endpoints(
        self, usage_filter: UsageFilter, *, offset: int, limit: int
    ) -> EndpointPage: ...


class DeviceData(Protocol):
    """What things publish (SPEC §6): appended in batches like usage records; reads see every
    value submitted before them (read-your-writes)."""

    def publish(self, values: list[PropertyValue]) -> int:
        """Queue values; never blocks on the database."""
        ...

    async def thing_exists(self, org_id: str, thing_key: str) -> bool: ...

    async def current(
        self, org_id: str, thing_key: str, key: str, at: datetime | None
    ) -> PropertyValue | None:
        """The value with the latest `ts` (at or before `at`), whatever order values arrived in."""
        ...

    async def history(
        self,
        org_id: str,
        thing_key: str,
        key: str,
        *,
        start: datetime | None,
        end: datetime | None,
        records: int,
    ) -> list[PropertyValue]:
        """Newest first, at most `records`."""
        ...

    async def property_aggregate(
        self, org_id: str, thing_key: str, key: str, plan: BucketPlan, calc: str, end: datetime
    ) -> list[float | None]:
        """`calc` (avg, sum, min, max or count) of the values in each bucket of `plan` up to
        `end`, aligned with `plan.keys`; None where a bucket has no value."""
        ...

    def publish_locations(self, values: list[LocationValue]) -> int:
        """Queue locations; never blocks on the database."""
        ...

    async def location_history(
        self,
        org_id: str,
        thing_key: str,
        *,
        start: datetime | None,
        end: datetime | None,
        records: int,
    ) -> list[LocationValue]:
        """Newest first by `ts`, at most `records` (the first is the current location)."""
        ...

    def publish_alarms(self, values: list[AlarmValue]) -> int:
        """Queue alarm states; never blocks on the database."""
        ...

    async def alarm_history(
        self,
        org_id: str,
        thing_key: str,
        key: str,
        *,
        start: datetime | None,
        end: datetime | None,
        records: int,
    ) -> list[AlarmValue]:
        """Newest first by `ts`, at most `records` (the first is the current state)."""
        ...

    def publish_attributes(self, values: list[AttributeValue]) -> int:
        """Queue attribute settings (a None value unsets); never blocks on the database."""
        ...

    async def attribute_current(
        self, org_id: str, thing_key: str, key: str
    ) -> AttributeValue | None:
        """The setting with the latest `ts` (its value None if that was an unset)."""
        ...

    def publish_logs(self, entries: list[LogEntry]) -> int:
        """Queue log entries; never blocks on the database."""
        ...

    async def log_entries(self, query: LogQuery) -> tuple[int, list[LogEntry]]:
        """How many entries match, and the page `query.offset`/`query.limit` of them, newest
        first by `ts`."""
        ...

    async def thing_state(self, org_id: str, thing_key: str) -> ThingState:
        """The thing's latest value of each property, alarm and attribute (unset attributes
        left out), and its latest location."""
        ...

    async def located_things(self, org_id: str) -> set[str]:
        """The keys of the org's things that have published a location."""
        ...


class Things(Protocol):
    """The things of an org, as registered when they first authenticated."""

    async def things(self, org_id: str, keys: list[str] | None = None) -> list[ThingSummary]:
        """The org's things (only those in `keys` when given), each with when it last called
        the gateway itself; in no particular order."""
        ...


class Sessions(Protocol):
    """Authentication and sessions; tokens are handed out once and stored only as digests."""

    async def authenticate_user(
        self, email: str, password: str, ttl: int
    ) -> tuple[Session, str] | None: ...

    async def authenticate_thing(
        self, app_id: str, app_token: str, thing_key: str, ttl: int
    ) -> tuple[Session, str] | None: ...

    async def open_thing_session(
        self, org_id: str, app_id: str, thing_key: str, ttl: int
    ) -> tuple[Session, str] | None:
        """A session for a thing the broker authenticated at CONNECT (its app token checked
        there), registering the thing on first use; None if the app no longer exists."""
        ...

    async def resolve(self, token: str) -> Session | None:
        """The live session for `token`, its expiry slid forward; None if unknown or expired."""
        ...

    async def touch(self, session: Session) -> bool:
        """Whether `session` is still alive; if so its expiry slides forward."""
        ...

    async def end(self, token: str) -> None: ...

    async def end_hashed(self, token_hash: str) -> None:
        """End the session stored as `token_hash` (one a gateway knows only by its binding to a
        namespace: the token itself is never stored)."""
        ...


class BindingsUnavailable(Exception):
    """The stored bindings cannot be read now (a lake's PostgreSQL out of reach)."""


class SessionBindings(Protocol):
    """Sessions bound to isolated-mode MQTT namespaces, as every gateway on one database sees
    them. Over a DuckDB file (one gateway) a binding lives only in the namespace's `Connection`
    and this is a no-op (`shared` False: the dispatcher never asks). Over a DuckLake catalog the
    shared subscription hands a namespace's envelopes to any gateway, so a binding is stored
    (the session's token hash, never the token) in PostgreSQL and read by the others."""

    @property
    def shared(self) -> bool:
        """Whether bindings are stored for other gateways (else every call is a no-op)."""
        ...

    async def bound(self, namespace: str) -> Session | None:
        """The live session stored as bound to `namespace`, None if none is (or it ended);
        raises `BindingsUnavailable` when the store cannot be read."""
        ...

    async def bind(self, namespace: str, session: Session) -> None:
        """Store `session` as `namespace`'s, replacing any other (a failure is logged: the
        binding then holds on this gateway alone)."""
        ...

    async def unbind(self, namespace: str, session: Session) -> None:
        """Remove `namespace`'s binding if it is still `session`'s (a later login through
        another gateway stays)."""
        ...


class LoginAttempt(Protocol):
    """A login attempt the guard let through, provisionally counted as a failure."""

    # The keys this attempt's mark brought to the limit: if it fails, they are now locked.
    reached_limit: tuple[Hashable, ...]

    async def withdraw(self) -> None:
        """Withdraw the provisional failure (the login succeeded, or reached no verdict)."""
        ...


class LoginGuard(Protocol):
    """`api.authenticate`'s brute-force guard: failed logins per key over a sliding window
    (`gateway.core.ratelimit.FailedLogins` in memory; `storage.ducklake.logins` in PostgreSQL,
    one count for every gateway on the catalog)."""

    async def admit(
        self, keys: Iterable[Hashable], now: datetime, *, limit: int, window: timedelta
    ) -> RateLimitExceeded | LoginAttempt:
        """Refuse the attempt if one of `keys` is at its limit (the refusal is not counted);
        otherwise count it as failed under every key until it is withdrawn."""
        ...

    def describe(self, key: Hashable) -> str:
        """A key as the process log may show it (subjects only as a keyed hash)."""
        ...


class Provisioning(Protocol):
    """Orgs, users and applications made in one step (tests' and benchmarks' set-up)."""

    def create_org(self, org_key: str, name: str | None = None) -> Org: ...

    def create_user(self, email: str, org_key: str, password: str, role: str = "user") -> Org: ...

    def create_app(self, org_key: str, name: str) -> tuple[str, str]:
        """`(appId, appToken)`: the token is shown once and stored only as a digest."""
        ...

    def org_by_key(self, org_key: str) -> Org | None: ...


class Administration(Protocol):
    """Orgs, users, applications and things, managed while the gateway runs (SPEC §10).

    Each change is one transaction (a failure leaves nothing half-done) and takes effect at the
    next call of whoever it touches: a deleted, disabled or re-passworded user's sessions end, a
    role change reaches its live sessions, a deleted or rotated app's sessions end. Raises
    `AlreadyExists`, `LastSuperOps` or `ProvisioningError`.
    """

    async def orgs(self, org_id: str | None, offset: int, limit: int) -> tuple[int, list[OrgInfo]]:
        """Every org (`org_id` None) or only that one, by key; the count of all."""
        ...

    async def org(
        self, *, org_id: str | None = None, org_key: str | None = None
    ) -> OrgInfo | None: ...

    async def create_org(self, org_key: str, name: str, description: str) -> OrgInfo: ...

    async def update_org(self, org_id: str, name: str | None, description: str | None) -> None: ...

    async def users(
        self, org_id: str | None, offset: int, limit: int, sort: str
    ) -> tuple[int, list[UserInfo]]:
        """An org's users (every org's with `org_id` None), `sort` a column name with `+`/`-`."""
        ...

    async def user(self, email: str) -> UserInfo | None: ...

    async def create_user(
        self, email: str, org_id: str, password: str, role: str, first_name: str, last_name: str
    ) -> UserInfo: ...

    async def update_user(
        self, email: str, changes: UserChanges, keep_session: str | None = None
    ) -> UserInfo:
        """`keep_session`: the hash of a session that a password change leaves open (the one of
        a user changing its own password)."""
        ...

    async def delete_user(self, email: str) -> None: ...

    async def check_password(self, email: str, password: str) -> bool: ...

    async def apps(
        self, org_id: str | None, offset: int, limit: int
    ) -> tuple[int, list[AppInfo]]: ...

    async def app(self, app_id: str) -> AppInfo | None: ...

    async def create_app(self, org_id: str, name: str, description: str) -> tuple[AppInfo, str]:
        """The app and its token, shown this once (stored as a digest)."""
        ...

    async def update_app(self, app_id: str, name: str | None, description: str | None) -> None: ...

    async def rotate_app_token(self, app_id: str) -> str:
        """A new token (the old one opens nothing any more; its sessions end)."""
        ...

    async def delete_app(self, app_id: str) -> None: ...

    async def update_thing(
        self, org_id: str, thing_key: str, name: str | None, tags: list[str] | None
    ) -> None: ...

    async def delete_thing(self, org_id: str, thing_key: str) -> None:
        """The thing, its device data (values, current values, log entries) and its sessions;
        its usage records stay (they are the audit trail)."""
        ...


class ProvisioningError(ValueError):
    """A provisioning request that cannot be carried out (unknown org, bad role...)."""


class AlreadyExists(ProvisioningError):
    """The org, user or application exists already."""


class Missing(ProvisioningError):
    """The org, user, application or thing is not there (any more)."""


class LastSuperOps(ProvisioningError):
    """The change would leave no enabled Super-Ops user."""
