"""A sliding-window counter of failed logins per key, in memory (no I/O, no clock of its own).

`api.authenticate` asks it, before checking a password, whether any of the attempt's keys (the
username, the client) already has `limit` failures younger than `window`; if so the attempt is
refused without a password check. The caller passes `now` (the services clock), so tests move
time by hand, and the limit and window (from settings) with each call, so one instance can sit in
`Services` with no configuration of its own.

An attempt is marked as a failure *before* its password is checked and the mark is withdrawn when
the check succeeds (`FailedLogins.begin` / `Attempt.withdraw`). Concurrent attempts of one key,
which would all pass the check while the slow password hash runs, therefore cannot exceed the
limit: at most `limit` attempts per key are in flight or failed within one window.

Memory is bounded: each key keeps at most `limit` timestamps, keys whose newest failure has left
the window are dropped, and at most `max_keys` (default 100,000) keys are tracked. Beyond that the
keys whose last failure is oldest are forgotten (with a warning in the log), so an attacker who
can produce failures under that many distinct keys within one window can wipe a victim's counter;
the per-client key makes that cost many clients. The counters live in one process: several
gateway instances on one DuckDB file would count separately, and a restart forgets them; on a
DuckLake catalog the counters live in PostgreSQL instead (`storage.ducklake.logins`), shared by
every gateway. Both serve `api.authenticate` as a `gateway.core.ports.LoginGuard`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["DEFAULT_MAX_KEYS", "Attempt", "FailedLogins", "RateLimitExceeded", "describe_key"]

logger = logging.getLogger("tr50gw.ratelimit")

DEFAULT_MAX_KEYS = 100_000


def describe_key(log_key: bytes, key: Hashable) -> str:
    """A guard's key as the process log may show it: clients plainly, subjects (usernames...) as
    a hash keyed by `log_key`, so that a password typed into the username field cannot be
    recovered from the log by hashing guesses."""
    if isinstance(key, tuple) and key[0] == "client":
        return f"{key[1]} client {key[2]}"
    kind = key[0] if isinstance(key, tuple) else "key"
    digest = hmac.new(log_key, repr(key).encode(), hashlib.sha256).hexdigest()
    return f"{kind} #{digest[:12]}"


@dataclass(frozen=True, slots=True)
class RateLimitExceeded:
    """Why an attempt is refused: the key at its limit and the whole seconds until it is not."""

    key: Hashable
    retry_after: int


class Attempt:
    """One login attempt, provisionally counted as a failure under each of its keys."""

    __slots__ = ("_at", "_keys", "_limiter", "reached_limit")

    def __init__(
        self,
        limiter: FailedLogins,
        keys: tuple[Hashable, ...],
        at: datetime,
        reached_limit: tuple[Hashable, ...],
    ) -> None:
        self._limiter = limiter
        self._keys = keys
        self._at = at
        # The keys this attempt's mark brought to the limit: if it fails, they are now locked.
        self.reached_limit = reached_limit

    async def withdraw(self) -> None:
        """Withdraw the provisional failure (the login succeeded, or never reached a verdict)."""
        self._limiter._withdraw(self._keys, self._at)


class FailedLogins:
    """Failure timestamps per key, counted over a sliding window; pure and synchronous.

    Keys are any hashable values; `api.authenticate` uses tuples such as `("user", email)` and
    `("client", "mqtt", namespace)`. Not thread-safe: it lives on the gateway's event loop.
    """

    def __init__(self, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be positive")
        self.max_keys = max_keys
        # Keys the process log's short hashes of usernames, so that a password typed into the
        # username field cannot be recovered from the log by hashing guesses.
        self._log_key = secrets.token_bytes(16)
        # Ordered by each key's latest mark (moved to the end on every new one), so keys whose
        # failures have all expired, and the least recently failing keys, are at the front. A
        # withdrawn mark leaves its key a little too far back; that only delays its sweep.
        self._failures: OrderedDict[Hashable, deque[datetime]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def describe(self, key: Hashable) -> str:
        """A key as the process log may show it: clients plainly, subjects as a keyed hash."""
        return describe_key(self._log_key, key)

    def failures(self, key: Hashable, now: datetime, *, window: timedelta) -> int:
        """How many failures of `key` are still inside the window at `now`."""
        stamps = self._failures.get(key)
        if stamps is None:
            return 0
        self._prune(key, stamps, now, window)
        return len(stamps)

    def blocked(
        self, keys: Iterable[Hashable], now: datetime, *, limit: int, window: timedelta
    ) -> RateLimitExceeded | None:
        """The first of `keys` at its limit, with the seconds until it drops below; else None."""
        for key in keys:
            stamps = self._failures.get(key)
            if stamps is None:
                continue
            self._prune(key, stamps, now, window)
            if len(stamps) >= limit:
                # The window slides: one more attempt is allowed once the `limit`-th newest
                # failure leaves it.
                frees_at = stamps[len(stamps) - limit] + window
                seconds = (frees_at - now).total_seconds()
                return RateLimitExceeded(key, max(1, math.ceil(seconds)))
        return None

    def begin(
        self, keys: Iterable[Hashable], now: datetime, *, limit: int, window: timedelta
    ) -> RateLimitExceeded | Attempt:
        """Refuse the attempt if one of `keys` is at its limit (the refusal is not counted);
        otherwise count it as failed under every key until `Attempt.withdraw()`."""
        if limit < 1 or window <= timedelta(0):
            raise ValueError("limit and window must be positive")
        unique = tuple(dict.fromkeys(keys))
        refused = self.blocked(unique, now, limit=limit, window=window)
        if refused is not None:
            return refused
        self._sweep(now, window)
        reached = []
        for key in unique:
            stamps = self._failures.get(key)
            if stamps is None:
                stamps = self._failures[key] = deque()
            else:
                self._failures.move_to_end(key)
            stamps.append(now)
            while len(stamps) > limit:  # only after a lowered limit: keep what decides
                stamps.popleft()
            if len(stamps) == limit:
                reached.append(key)
        self._evict_beyond_cap(keep=len(unique))
        return Attempt(self, unique, now, tuple(reached))

    async def admit(
        self, keys: Iterable[Hashable], now: datetime, *, limit: int, window: timedelta
    ) -> RateLimitExceeded | Attempt:
        """`begin`, as the `LoginGuard` port asks for it."""
        return self.begin(keys, now, limit=limit, window=window)

    def _withdraw(self, keys: tuple[Hashable, ...], at: datetime) -> None:
        for key in keys:
            stamps = self._failures.get(key)
            if stamps is None:  # expired or evicted meanwhile
                continue
            try:
                stamps.remove(at)  # equal timestamps are interchangeable
            except ValueError:
                continue
            if not stamps:
                del self._failures[key]

    def _prune(
        self, key: Hashable, stamps: deque[datetime], now: datetime, window: timedelta
    ) -> None:
        cutoff = now - window
        while stamps and stamps[0] <= cutoff:
            stamps.popleft()
        if not stamps:
            del self._failures[key]

    def _sweep(self, now: datetime, window: timedelta) -> None:
        """Drop keys whose newest failure has left the window; they sit at the front."""
        cutoff = now - window
        while self._failures:
            key, stamps = next(iter(self._failures.items()))
            if stamps and stamps[-1] > cutoff:
                break
            del self._failures[key]

    def _evict_beyond_cap(self, keep: int) -> None:
        """Forget the least recently failing keys beyond `max_keys`, never the `keep` newest."""
        evicted = 0
        while len(self._failures) > max(self.max_keys, keep):
            self._failures.popitem(last=False)
            evicted += 1
        if evicted:
            logger.warning(
                "failed-login counters at their cap of %d keys: forgot the %d oldest",
                self.max_keys,
                evicted,
            )
