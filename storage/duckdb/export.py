"""Streamed exports of the usage log (`GET /usage/export`): every record a filter matches, as CSV,
JSON lines or Parquet (zstd), in batches.

In the order the file holds them, not sorted: records are appended in the order they arrive (time
order), and day compaction (compaction.py) rewrites a finished day by org, caller, then time.
Sorting would make DuckDB hold the whole result (up to its memory limit, then spill to disk):
measured on 1M records, the gateway's RSS grew by 270 to 340 MB with `ORDER BY ts, id` and by
16 to 63 MB without. A consumer that needs time order sorts the file (`ts` is in every row).

DuckDB hands the result over as Arrow record batches (`to_arrow_reader`), each encoded and
handed on before the next is read, so the memory an export takes does not grow with the rows it
holds: a batch of rows and the encoder's buffer. Each read and encode runs on a worker thread
with a cursor of its own; the event loop only forwards bytes. Column names are the wire's
(`execTime`, `orgKey`, ...), as `usage.api.list` answers them; in CSV and JSON `ts` is RFC 3339
text, in Parquet a timestamp.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from gateway.core.ports import ExportFormat
from gateway.core.records import UsageFilter
from storage.duckdb.database import Database, reading
from storage.duckdb.retention import archived_parts
from storage.duckdb.usage import UsageQueries, UsageWriter, where

__all__ = ["BATCH_ROWS", "UsageExporter"]

BATCH_ROWS: Final = 10_000
_COLUMNS: Final = (
    ("CAST(id AS VARCHAR)", "id"),
    ("ts", "ts"),
    ("exec_time", "execTime"),
    ("processed_by", "processedBy"),
    ("org_id", "orgId"),
    ("org_key", "orgKey"),
    ("whoami", "whoami"),
    ("service", "service"),
    ("command", "command"),
    ("success", "success"),
    ("error_code", "errorCode"),
    ("transport", "transport"),
    ("client_id", "clientId"),
    ("remote_addr", "remoteAddr"),
    ("request", "request"),
    ("response", "response"),
)
_RFC3339: Final = "strftime(ts, '%Y-%m-%dT%H:%M:%S.%g') || 'Z'"


_WITH_ARCHIVE: Final = (
    "(SELECT * REPLACE (CAST(id AS VARCHAR) AS id) FROM usage_log"
    " UNION ALL BY NAME SELECT * FROM read_parquet(?))"
)
"""The log and the archive's parts (a list parameter: retention.archived_parts) as one table."""


def _select(file_format: ExportFormat, source: str = "usage_log") -> str:
    columns = [
        f'{_RFC3339 if name == "ts" and file_format != "parquet" else expression} AS "{name}"'
        for expression, name in _COLUMNS
    ]
    return "SELECT " + ", ".join(columns) + " FROM " + source  # noqa: S608 - names only


class _Chunks(io.RawIOBase):
    """A write-only file that keeps what is written until `drain` takes it."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._written += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._written

    def drain(self) -> bytes:
        joined = b"".join(self._parts)
        self._parts.clear()
        return joined


class _Encoder:
    """Turns record batches into a file's bytes; `finish` gives what comes after the last."""

    def encode(self, batch: pa.RecordBatch) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        return b""


class _Csv(_Encoder):
    def __init__(self, schema: pa.Schema) -> None:
        self._sink = _Chunks()
        self._writer = pa_csv.CSVWriter(self._sink, schema)  # the header goes out at once

    def encode(self, batch: pa.RecordBatch) -> bytes:
        self._writer.write_batch(batch)
        return self._sink.drain()

    def finish(self) -> bytes:
        self._writer.close()
        return self._sink.drain()


class _JsonLines(_Encoder):
    def __init__(self, schema: pa.Schema) -> None:
        del schema

    def encode(self, batch: pa.RecordBatch) -> bytes:
        return b"".join(orjson.dumps(row) + b"\n" for row in batch.to_pylist())


class _Parquet(_Encoder):
    def __init__(self, schema: pa.Schema) -> None:
        self._sink = _Chunks()
        self._writer = pq.ParquetWriter(self._sink, schema, compression="zstd")

    def encode(self, batch: pa.RecordBatch) -> bytes:
        self._writer.write_batch(batch)  # one row group per batch
        return self._sink.drain()

    def finish(self) -> bytes:
        self._writer.close()  # the footer
        return self._sink.drain()


_ENCODERS: Final[dict[str, Callable[[pa.Schema], _Encoder]]] = {
    "csv": _Csv,
    "json": _JsonLines,
    "parquet": _Parquet,
}


class UsageExporter:
    """The `UsageExport` port over the usage log's table and, with `archive`, the days
    retention moved to the archive (retention.py): an export holds every matching record
    wherever it is now."""

    def __init__(
        self,
        database: Database,
        writer: UsageWriter,
        queries: UsageQueries,
        *,
        archive: bool = False,
    ) -> None:
        self._database = database
        self._writer = writer
        self._queries = queries
        self._archive = archive

    def _parts(self, usage_filter: UsageFilter) -> list[str]:
        if not self._archive:
            return []
        return archived_parts(self._database.cursor(), usage_filter.start, usage_filter.end)

    async def count(self, usage_filter: UsageFilter) -> int:
        """The listing's own count of what the filter matches, plus the archive's."""
        in_log = await self._queries.count(usage_filter)
        parts = await reading(self._parts, usage_filter)
        if not parts:
            return in_log
        where_sql, values = where(usage_filter)
        sql = "SELECT count(*) FROM read_parquet(?)" + where_sql  # noqa: S608 - placeholders
        row = await reading(
            lambda: self._database.cursor().execute(sql, [parts, *values]).fetchone()
        )
        return in_log + int(row[0] if row else 0)

    async def export(
        self, usage_filter: UsageFilter, file_format: ExportFormat
    ) -> AsyncIterator[bytes]:
        await self._writer.wait_visible()
        where_sql, values = where(usage_filter)
        parts = await reading(self._parts, usage_filter)
        if parts:
            sql = _select(file_format, _WITH_ARCHIVE) + where_sql
            values = [parts, *values]
        else:
            sql = _select(file_format) + where_sql
        cursor = self._database.new_cursor()
        try:
            reader = await reading(lambda: cursor.execute(sql, values).to_arrow_reader(BATCH_ROWS))
            encoder = await reading(_ENCODERS[file_format], reader.schema)
            while True:
                chunk = await reading(_next_chunk, reader, encoder)
                if chunk is None:
                    break
                if chunk:
                    yield chunk
            tail = await reading(encoder.finish)
            if tail:
                yield tail
        finally:
            cursor.close()


def _next_chunk(reader: pa.RecordBatchReader, encoder: _Encoder) -> bytes | None:
    """The next batch, encoded; None once the rows are all read."""
    try:
        batch = reader.read_next_batch()
    except StopIteration:
        return None
    return encoder.encode(batch)
