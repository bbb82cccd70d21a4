"""One helper every storage module uses: a block of statements as one DuckDB transaction."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import duckdb

__all__ = ["transaction"]


@contextlib.contextmanager
def transaction(
    cursor: duckdb.DuckDBPyConnection,
    *,
    commit_lock: threading.Lock | None = None,
    committed: Callable[[], None] | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The block as one transaction on `cursor`: committed, or rolled back whole if it raises
    (a failed COMMIT has ended the transaction already). `commit_lock` is held around the
    COMMIT and `committed`, which runs once it succeeded."""
    cursor.execute("BEGIN TRANSACTION")
    try:
        yield cursor
        with commit_lock or contextlib.nullcontext():
            cursor.execute("COMMIT")
            if committed is not None:
                committed()
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        raise
