"""Sessions bound to isolated-mode MQTT namespaces, in PostgreSQL: one binding for every gateway.

A device that logs in by envelope on `api/<client id>/...` has its session bound to that
namespace, and sends its later envelopes without a `sessionId`. Behind a shared subscription
(`--shared-group`) those envelopes go to any gateway of the pool, so on a DuckLake catalog the
binding is also stored in PostgreSQL's `namespace_bindings` table (`IDENTITY_DDL`): one row per
namespace holding the session's token hash (SPEC §2: no token is stored anywhere), written by a
login (an upsert) and deleted by a logout, both before the reply goes out. The dispatcher reads
the row back (`gateway.core.dispatcher`): for each envelope of a namespace it holds no binding
for, and at most every `RECHECK_EVERY` seconds for one it holds.

PostgreSQL is reached with psycopg (one connection, used by one thread at a time, opened again
after a failure) from a worker thread, off the event loop; a point query on the primary key. The
session a stored hash names comes from the identity store (memory first, else the `sessions`
table). If PostgreSQL is unreachable a read raises `BindingsUnavailable` (the gateway keeps the
binding it holds) and a write is logged and skipped (the binding then holds on this gateway
alone); neither fails the envelope.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import duckdb
import psycopg

from gateway.core.ports import BindingsUnavailable
from gateway.core.records import Session
from storage.duckdb.identity import IdentityStore
from storage.ducklake.pg import PgConnection

__all__ = ["SharedBindings"]

logger = logging.getLogger("tr50gw.bindings")

CONNECT_TIMEOUT: Final = 3  # seconds; an envelope waits at most this for an unreachable server


class SharedBindings:
    """The `SessionBindings` port over PostgreSQL (`dsn`: the catalog's libpq connection
    string); sessions resolved through `identity`."""

    shared: Final = True

    def __init__(self, dsn: str, identity: IdentityStore) -> None:
        self._identity = identity
        self._pg = PgConnection(dsn, connect_timeout=CONNECT_TIMEOUT)
        self._outage_logged = False  # said once per outage

    async def bound(self, namespace: str) -> Session | None:
        try:
            token_hash = await asyncio.to_thread(self._stored, namespace)
        except psycopg.Error as error:
            self._outage(error)
            raise BindingsUnavailable from None
        self._outage_logged = False
        if token_hash is None:
            return None
        try:
            session = await self._identity.session_by_hash(token_hash)
        except duckdb.Error as error:
            self._outage(error)
            raise BindingsUnavailable from None
        if session is None:  # ended (or deleted with its user): the row is stale
            await self.unbind(namespace, token_hash)
        return session

    async def bind(self, namespace: str, session: Session) -> None:
        await self._write(
            "INSERT INTO namespace_bindings (namespace, token_hash, bound_at)"
            " VALUES (%s, %s, now() AT TIME ZONE 'UTC') ON CONFLICT (namespace) DO UPDATE"
            " SET token_hash = excluded.token_hash, bound_at = excluded.bound_at",
            (namespace, session.token_hash),
        )

    async def unbind(self, namespace: str, session: Session | str) -> None:
        token_hash = session if isinstance(session, str) else session.token_hash
        await self._write(
            "DELETE FROM namespace_bindings WHERE namespace = %s AND token_hash = %s",
            (namespace, token_hash),
        )

    def close(self) -> None:
        self._pg.close()

    async def _write(self, sql: str, values: tuple[str, str]) -> None:
        try:
            await asyncio.to_thread(self._execute, sql, values)
        except psycopg.Error as error:
            logger.warning(
                "a namespace's session binding could not be stored (%s); it holds on this"
                " gateway alone",
                type(error).__name__,
            )

    def _outage(self, error: Exception) -> None:
        if not self._outage_logged:
            self._outage_logged = True
            logger.warning(
                "namespace bindings cannot be read (%s); keeping the ones held until it is back",
                type(error).__name__,
            )

    # -- on a worker thread ----------------------------------------------------------------------
    def _stored(self, namespace: str) -> str | None:
        with self._pg.held() as connection:
            row = connection.execute(
                "SELECT token_hash FROM namespace_bindings WHERE namespace = %s", (namespace,)
            ).fetchone()
        return None if row is None else str(row[0])

    def _execute(self, sql: str, values: tuple[str, str]) -> None:
        with self._pg.held() as connection:
            connection.execute(sql, values)
