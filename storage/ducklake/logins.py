"""Failed logins counted in PostgreSQL: one brute-force limit for every gateway on a catalog.

`gateway.core.ratelimit.FailedLogins` counts in one process's memory, so N gateways behind one
broker would allow N times the limit (a client's attempts spread over them by the shared
subscription). On a DuckLake catalog the marks live instead in PostgreSQL's `login_failures`
table (`IDENTITY_DDL`), one row per key and attempt, and `admit` decides under a transaction-scoped
advisory lock per key (taken in a fixed order, so two gateways never deadlock): count the key's
marks younger than the window, refuse at the limit, else add this attempt's mark. Attempts of one
key on several gateways therefore queue on the lock and never exceed the limit together, as the
in-memory guard promises within one process.

Rules as `FailedLogins`'s: the mark is provisional until the password check (withdrawn on
success); a refusal is not counted; the window slides. Keys are stored as SHA-256 digests (the
same on every gateway), never as usernames. Marks older than the window are deleted with each
attempt of their key, and all of them every `SWEEP_EVERY` attempts, so the table stays small.

PostgreSQL is reached with psycopg (one connection, used by one thread at a time) from a worker
thread, off the event loop. If PostgreSQL is unreachable the attempt fails with the error (a login
cannot be checked then anyway: the users and apps live there too), and a failed withdrawal is
logged and leaves the mark to age out.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
from collections.abc import Hashable, Iterable
from datetime import datetime, timedelta
from typing import Final

import psycopg

from gateway.core.ratelimit import RateLimitExceeded, describe_key
from storage.ducklake.pg import PgConnection

__all__ = ["SWEEP_EVERY", "SharedFailedLogins", "digest"]

logger = logging.getLogger("tr50gw.ratelimit")

SWEEP_EVERY: Final = 1000  # attempts between deletions of every expired mark
_LOCK_SPACE: Final = 7_150_050  # advisory locks of login keys: hashtextextended(digest, this)


def digest(key: Hashable) -> str:
    """A key as stored: the same on every gateway, and no username in the clear."""
    return hashlib.sha256(repr(key).encode()).hexdigest()


class _SharedAttempt:
    __slots__ = ("_guard", "_mark", "reached_limit")

    def __init__(
        self, guard: SharedFailedLogins, mark: str, reached_limit: tuple[Hashable, ...]
    ) -> None:
        self._guard = guard
        self._mark = mark
        self.reached_limit = reached_limit

    async def withdraw(self) -> None:
        try:
            await asyncio.to_thread(self._guard._withdraw, self._mark)
        except psycopg.Error as error:
            logger.warning(
                "could not withdraw a login attempt's mark (%s); it ages out with the window",
                type(error).__name__,
            )


class SharedFailedLogins:
    """The `LoginGuard` port over PostgreSQL (`dsn`: the catalog's libpq connection string)."""

    def __init__(self, dsn: str) -> None:
        self._pg = PgConnection(dsn, connect_timeout=5)
        self._attempts = 0
        self._log_key = secrets.token_bytes(16)

    def describe(self, key: Hashable) -> str:
        """A key as the process log may show it: clients plainly, subjects as a keyed hash."""
        return describe_key(self._log_key, key)

    async def admit(
        self, keys: Iterable[Hashable], now: datetime, *, limit: int, window: timedelta
    ) -> RateLimitExceeded | _SharedAttempt:
        if limit < 1 or window <= timedelta(0):
            raise ValueError("limit and window must be positive")
        unique = tuple(dict.fromkeys(keys))
        return await asyncio.to_thread(self._admit, unique, now, limit, window)

    def close(self) -> None:
        self._pg.close()

    # -- on a worker thread ----------------------------------------------------------------------
    def _admit(
        self, keys: tuple[Hashable, ...], now: datetime, limit: int, window: timedelta
    ) -> RateLimitExceeded | _SharedAttempt:
        digests = [digest(key) for key in keys]
        cutoff = now - window
        mark = secrets.token_hex(12)
        with self._pg.held() as connection, connection.transaction():
            for key_digest in sorted(set(digests)):  # one order on every gateway: no deadlock
                connection.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, %s))",
                    (key_digest, _LOCK_SPACE),
                )
            self._attempts += 1
            if self._attempts % SWEEP_EVERY == 0:
                connection.execute("DELETE FROM login_failures WHERE at <= %s", (cutoff,))
            else:
                connection.execute(
                    "DELETE FROM login_failures WHERE key_digest = ANY(%s) AND at <= %s",
                    (digests, cutoff),
                )
            stamps: dict[str, list[datetime]] = {key_digest: [] for key_digest in digests}
            for key_digest, at in connection.execute(
                "SELECT key_digest, at FROM login_failures WHERE key_digest = ANY(%s) ORDER BY at",
                (digests,),
            ):
                stamps[key_digest].append(at)
            for key, key_digest in zip(keys, digests, strict=True):
                held = stamps[key_digest]
                if len(held) >= limit:
                    # The window slides: one more attempt once the limit-th newest mark leaves.
                    frees_at = held[len(held) - limit] + window
                    seconds = (frees_at - now).total_seconds()
                    return RateLimitExceeded(key, max(1, math.ceil(seconds)))
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO login_failures (key_digest, at, attempt) VALUES (%s, %s, %s)",
                    [(key_digest, now, mark) for key_digest in digests],
                )
        reached = tuple(
            key
            for key, key_digest in zip(keys, digests, strict=True)
            if len(stamps[key_digest]) + 1 == limit
        )
        return _SharedAttempt(self, mark, reached)

    def _withdraw(self, mark: str) -> None:
        with self._pg.held() as connection:
            connection.execute("DELETE FROM login_failures WHERE attempt = %s", (mark,))
