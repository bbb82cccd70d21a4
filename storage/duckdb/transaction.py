"""One helper every storage module uses: a block of statements as one DuckDB transaction."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import duckdb

__all__ = ["transaction"]


@contextlib.contextmanager
def transaction(cursor: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """The block as one transaction on `cursor`: committed, or rolled back whole if it raises
    (a failed COMMIT has ended the transaction already)."""
    cursor.execute("BEGIN TRANSACTION")
    try:
        yield cursor
        cursor.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        raise
