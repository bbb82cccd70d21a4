"""Property values (the `DeviceData` port): appended by their own writer thread in Arrow
batches, read newest first by `(org, thing, key, ts)`."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

import pyarrow as pa

from gateway.core.records import PropertyValue
from storage.duckdb.database import Database, reading
from storage.duckdb.writer import BatchWriter, TableSpec

__all__ = ["PROPERTY_TABLE", "PropertyStore"]

_COLUMNS = [f.name for f in fields(PropertyValue)]
PROPERTY_TABLE = TableSpec(
    name="property",
    columns=_COLUMNS,
    arrow_schema=pa.schema(
        [
            ("org_id", pa.string()),
            ("thing_key", pa.string()),
            ("key", pa.string()),
            ("ts", pa.timestamp("us")),
            ("value", pa.float64()),
            ("corr_id", pa.string()),
            ("received_at", pa.timestamp("us")),
        ]
    ),
    insert_sql="INSERT INTO property_values SELECT " + ", ".join(_COLUMNS) + " FROM batch",  # noqa: S608
)
_SELECT = "SELECT " + ", ".join(_COLUMNS) + " FROM property_values"  # noqa: S608


class PropertyStore:
    def __init__(self, database: Database, *, flush_interval: float = 0.05) -> None:
        self._database = database
        self.writer: BatchWriter[PropertyValue] = BatchWriter(
            database, PROPERTY_TABLE, flush_interval=flush_interval
        )

    def publish(self, values: list[PropertyValue]) -> int:
        return self.writer.submit_many(values)

    async def thing_exists(self, org_id: str, thing_key: str) -> bool:
        return await reading(self._thing_exists_sync, org_id, thing_key)

    def _thing_exists_sync(self, org_id: str, thing_key: str) -> bool:
        row = (
            self._database.cursor()
            .execute("SELECT 1 FROM things WHERE org_id = ? AND thing_key = ?", [org_id, thing_key])
            .fetchone()
        )
        return row is not None

    async def current(
        self, org_id: str, thing_key: str, key: str, at: datetime | None
    ) -> PropertyValue | None:
        rows = await self.history(org_id, thing_key, key, start=None, end=at, records=1)
        return rows[0] if rows else None

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
        await self.writer.wait_visible()
        return await reading(self._history_sync, org_id, thing_key, key, start, end, records)

    def _history_sync(
        self,
        org_id: str,
        thing_key: str,
        key: str,
        start: datetime | None,
        end: datetime | None,
        records: int,
    ) -> list[PropertyValue]:
        sql = _SELECT + " WHERE org_id = ? AND thing_key = ? AND key = ?"
        values: list[Any] = [org_id, thing_key, key]
        if start is not None:
            sql += " AND ts >= ?"
            values.append(start)
        if end is not None:
            sql += " AND ts <= ?"
            values.append(end)
        # Ties in ts: the value received last wins, as a repeated publish would.
        sql += " ORDER BY ts DESC, received_at DESC LIMIT ?"
        values.append(records)
        rows = self._database.cursor().execute(sql, values).fetchall()
        return [PropertyValue(*row) for row in rows]

    def close(self) -> None:
        self.writer.close()
