"""One psycopg connection to the catalog's PostgreSQL, shared by one component's worker threads
(the shared login counters, the namespace bindings): used by one thread at a time, opened when
first needed, and dropped after a connection failure so that the next use reconnects
(PostgreSQL restarted, a network blip)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

__all__ = ["PgConnection"]


class PgConnection:
    def __init__(self, dsn: str, *, connect_timeout: int) -> None:
        """`connect_timeout` (seconds): how long a use waits for an unreachable server."""
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._connection: psycopg.Connection | None = None
        self._lock = threading.Lock()  # one statement sequence on the connection at a time

    @contextmanager
    def held(self) -> Iterator[psycopg.Connection]:
        """The connection (autocommit), this thread's alone until the block ends."""
        with self._lock:
            connection = self._connection
            if connection is None or connection.closed or connection.broken:
                connection = self._connection = psycopg.connect(
                    self._dsn, autocommit=True, connect_timeout=self._connect_timeout
                )
            try:
                yield connection
            except psycopg.OperationalError:
                self._connection = None
                connection.close()
                raise

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
