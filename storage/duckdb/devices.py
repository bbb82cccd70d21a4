"""What things publish (the `DeviceData` port): property values and locations, each table
appended by its own writer thread in Arrow batches and read newest first by
`(org, thing[, key], ts)`. Every read first waits for its writer (read-your-writes).

property.aggregate reads the hourly rollups of property values (`property_hourly`, kept by the
property writer in each batch's transaction: storage/duckdb/rollups.py) for the window's whole
UTC hours and the values themselves only for the partial hours at its edges, wherever the
buckets are whole UTC hours (`rollups.plan_fits`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final, TypeVar, get_type_hints

import pyarrow as pa

from gateway.core.buckets import BucketPlan
from gateway.core.records import (
    AlarmValue,
    AttributeValue,
    LocationValue,
    LogEntry,
    LogQuery,
    PropertyValue,
    ThingState,
)
from storage.duckdb import rollups
from storage.duckdb.bucketing import bucket_key_sql
from storage.duckdb.database import CURRENT_SERIES, Database, reading
from storage.duckdb.writer import BatchWriter, TableSpec

__all__ = [
    "ALARM_TABLE",
    "ATTRIBUTE_TABLE",
    "LOCATION_TABLE",
    "LOG_TABLE",
    "PROPERTY_TABLE",
    "DeviceStore",
    "SeriesWindow",
    "series_where",
]

Row = TypeVar("Row", PropertyValue, LocationValue, AlarmValue, AttributeValue, LogEntry)


_ARROW_TYPES: dict[Any, pa.DataType] = {
    str: pa.string(),
    str | None: pa.string(),
    float: pa.float64(),
    float | None: pa.float64(),
    int: pa.int32(),
    datetime: pa.timestamp("us"),
}


def _newest_of(series: tuple[str, ...], source: str, columns: str) -> str:
    """Each series' row with the latest ts (ties: the one received last) of `source`."""
    return (
        f"SELECT {columns} FROM {source} QUALIFY row_number() OVER ("  # noqa: S608
        f"PARTITION BY {', '.join(series)} ORDER BY ts DESC, received_at DESC) = 1"
    )


def _spec(name: str, table: str, row: type[Any], *, merge: bool = False) -> TableSpec:
    """The writer's view of a device table: its row dataclass's fields, as Arrow columns.

    For a table in `CURRENT_SERIES` (database.py), the writer also keeps `<name>_current`, each
    series' row with the latest ts, in the same transaction: the current value is then one
    primary-key lookup instead of a search through the history. With `merge` (a DuckLake table,
    which has no key for `ON CONFLICT`) by `MERGE INTO` on the series' columns.
    """
    hints = get_type_hints(row)
    columns = [f.name for f in fields(row)]
    listed = ", ".join(columns)
    also: tuple[str, ...] = rollups.PROPERTY_WRITER_SQL if table == "property_values" else ()
    series = CURRENT_SERIES.get(name)
    if series is not None:
        also += (_current_sql(name, series, columns, merge=merge),)
    return TableSpec(
        name=name,
        table=table,
        columns=columns,
        arrow_schema=pa.schema([(column, _ARROW_TYPES[hints[column]]) for column in columns]),
        insert_sql=f"INSERT INTO {table} SELECT {listed} FROM batch",  # noqa: S608
        also_sql=also,
    )


def _current_sql(name: str, series: tuple[str, ...], columns: list[str], *, merge: bool) -> str:
    """Each series' newest row of the batch into `<name>_current`, where it is newer (a later
    ts; the same ts received later) than the row there."""
    current = f"{name}_current"
    listed = ", ".join(columns)
    newest = _newest_of(series, "batch", listed)
    if not merge:
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in series)
        return (
            f"INSERT INTO {current} {newest}"
            f" ON CONFLICT DO UPDATE SET {updates} WHERE excluded.ts > {current}.ts"
            f" OR (excluded.ts = {current}.ts AND excluded.received_at >= {current}.received_at)"
        )
    matched = " AND ".join(f"{current}.{c} = newest.{c}" for c in series)
    updates = ", ".join(f"{c} = newest.{c}" for c in columns if c not in series)
    return (
        f"MERGE INTO {current} USING ({newest}) AS newest ON {matched}"  # noqa: S608 - names
        f" WHEN MATCHED AND (newest.ts > {current}.ts OR (newest.ts = {current}.ts"
        f" AND newest.received_at >= {current}.received_at)) THEN UPDATE SET {updates}"
        f" WHEN NOT MATCHED THEN INSERT ({listed})"
        f" VALUES ({', '.join(f'newest.{c}' for c in columns)})"
    )


_ROWS: Final = {
    "property": ("property_values", PropertyValue),
    "location": ("location_values", LocationValue),
    "alarm": ("alarm_values", AlarmValue),
    "attribute": ("attribute_values", AttributeValue),
    "log": ("log_entries", LogEntry),
}
_SPECS: Final = {name: _spec(name, *rows) for name, rows in _ROWS.items()}
_LAKE_SPECS: Final = {name: _spec(name, *rows, merge=True) for name, rows in _ROWS.items()}
PROPERTY_TABLE = _SPECS["property"]
LOCATION_TABLE = _SPECS["location"]
ALARM_TABLE = _SPECS["alarm"]
ATTRIBUTE_TABLE = _SPECS["attribute"]
LOG_TABLE = _SPECS["log"]


# property.aggregate's `calc` (a validated param): a fixed SQL aggregate over the values, and
# the same over rollup-shaped rows (rollups.PROPERTY_MEASURES).
_CALCS = {
    "avg": ("avg(value)", "sum(v_sum) / sum(n)"),
    "sum": ("sum(value)", "sum(v_sum)"),
    "min": ("min(value)", "min(v_min)"),
    "max": ("max(value)", "max(v_max)"),
    "count": ("count(value)", "sum(n)"),
}


@dataclass(frozen=True, slots=True)
class SeriesWindow:
    """One series' values with `ts` in [start, end] (None: open): what property.aggregate
    reads, in the form rollups.py's readers take (a filter with `start` and `end`)."""

    org_id: str
    thing_key: str
    key: str
    start: datetime | None = None
    end: datetime | None = None


def series_where(window: SeriesWindow) -> tuple[str, list[Any]]:
    """`(" WHERE ...", parameters)` over `property_values` or `property_hourly`'s keys."""
    clauses = ["org_id = ?", "thing_key = ?", "key = ?"]
    values: list[Any] = [window.org_id, window.thing_key, window.key]
    if window.start is not None:
        clauses.append("ts >= ?")
        values.append(window.start)
    if window.end is not None:
        clauses.append("ts <= ?")
        values.append(window.end)
    return " WHERE " + " AND ".join(clauses), values


class DeviceStore:
    def __init__(
        self, database: Database, *, flush_interval: float = 0.05, use_rollups: bool = True
    ) -> None:
        """`use_rollups` False: property.aggregate reads the values only (the rollups are still
        kept)."""
        self._database = database
        self.use_rollups = use_rollups
        self._fill_current_tables()
        specs = _LAKE_SPECS if database.lake else _SPECS
        self.properties: BatchWriter[PropertyValue] = BatchWriter(
            database, specs["property"], flush_interval=flush_interval
        )
        self.locations: BatchWriter[LocationValue] = BatchWriter(
            database, specs["location"], flush_interval=flush_interval
        )
        self.alarms: BatchWriter[AlarmValue] = BatchWriter(
            database, specs["alarm"], flush_interval=flush_interval
        )
        self.attributes: BatchWriter[AttributeValue] = BatchWriter(
            database, specs["attribute"], flush_interval=flush_interval
        )
        self.logs: BatchWriter[LogEntry] = BatchWriter(
            database, specs["log"], flush_interval=flush_interval
        )

    @property
    def writers(self) -> dict[str, BatchWriter[Any]]:
        """Each table's writer, by table name (health and metrics)."""
        writers: list[BatchWriter[Any]] = [
            self.properties,
            self.locations,
            self.alarms,
            self.attributes,
            self.logs,
        ]
        return {writer.table.table: writer for writer in writers}

    # -- writing -------------------------------------------------------------------------------
    def publish(self, values: list[PropertyValue]) -> int:
        return self.properties.submit_many(values)

    def publish_locations(self, values: list[LocationValue]) -> int:
        return self.locations.submit_many(values)

    def publish_alarms(self, values: list[AlarmValue]) -> int:
        return self.alarms.submit_many(values)

    def publish_attributes(self, values: list[AttributeValue]) -> int:
        return self.attributes.submit_many(values)

    def publish_logs(self, entries: list[LogEntry]) -> int:
        return self.logs.submit_many(entries)

    # -- reading -------------------------------------------------------------------------------
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
        return await self._newest(
            self.properties, PropertyValue, org_id, thing_key, key, start, end, records
        )

    async def property_aggregate(
        self, org_id: str, thing_key: str, key: str, plan: BucketPlan, calc: str, end: datetime
    ) -> list[float | None]:
        await self.properties.wait_visible()
        window = SeriesWindow(org_id, thing_key, key, plan.offsets[0][0], end)
        return await reading(self.aggregate_sync, window, plan, calc)

    def aggregate_sync(
        self, window: SeriesWindow, plan: BucketPlan, calc: str
    ) -> list[float | None]:
        """`calc` per bucket of `plan` over the series' values in the window (on the calling
        thread): from the rollups where they can answer (`_rolled`), else from the values."""
        raw_sql, rolled_sql = _CALCS[calc]
        source = self._rolled(window, plan)
        if source is None:
            where_sql, values = series_where(window)
            source, aggregate = (f"property_values{where_sql}", values), raw_sql
        else:
            aggregate = rolled_sql
        key_sql, key_values = bucket_key_sql(plan)
        from_sql, values = source
        sql = f"SELECT {key_sql} AS bucket, {aggregate} FROM {from_sql} GROUP BY bucket"  # noqa: S608
        rows = self._database.cursor().execute(sql, [*key_values, *values]).fetchall()
        found = dict(rows)
        return [
            None if (item := found.get(bucket)) is None else float(item) for bucket in plan.keys
        ]

    def _rolled(self, window: SeriesWindow, plan: BucketPlan) -> tuple[str, list[Any]] | None:
        """`FROM` text and parameters of rollup-shaped rows (hour, n, v_sum, v_min, v_max) for
        the window: `property_hourly`'s rows of its whole UTC hours and its edges' values
        grouped by hour, one statement (one snapshot); None where the rollups cannot answer
        (buckets not whole UTC hours, a window within one hour, `--no-rollups`)."""
        if not self.use_rollups or not rollups.plan_fits(plan):
            return None
        level = rollups.PROPERTY_HOURLY
        hours = rollups.span(self._database.rollup_floors, window, level)
        if hours is None:
            return None
        return rollups.source_sql(level, window, hours, series_where)

    async def location_history(
        self,
        org_id: str,
        thing_key: str,
        *,
        start: datetime | None,
        end: datetime | None,
        records: int,
    ) -> list[LocationValue]:
        return await self._newest(
            self.locations, LocationValue, org_id, thing_key, None, start, end, records
        )

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
        return await self._newest(
            self.alarms, AlarmValue, org_id, thing_key, key, start, end, records
        )

    async def attribute_current(
        self, org_id: str, thing_key: str, key: str
    ) -> AttributeValue | None:
        found = await self._newest(
            self.attributes, AttributeValue, org_id, thing_key, key, None, None, 1
        )
        return found[0] if found else None

    async def log_entries(self, query: LogQuery) -> tuple[int, list[LogEntry]]:
        await self.logs.wait_visible()
        return await reading(self._logs_sync, query)

    def _logs_sync(self, query: LogQuery) -> tuple[int, list[LogEntry]]:
        clauses = ["org_id = ?"]
        values: list[Any] = [query.org_id]
        for clause, value in (
            ("thing_key = ?", query.thing_key),
            ("ts >= ?", query.start),
            ("ts <= ?", query.end),
            ("level = ?", query.level),
            ("corr_id = ?", query.corr_id),
        ):
            if value is not None:
                clauses.append(clause)
                values.append(value)
        where = " WHERE " + " AND ".join(clauses)  # fixed clauses; values are parameters
        cursor = self._database.cursor()
        count_row = cursor.execute(f"SELECT count(*) FROM log_entries{where}", values).fetchone()  # noqa: S608
        columns = ", ".join(LOG_TABLE.columns)
        rows = cursor.execute(
            f"SELECT {columns} FROM log_entries{where}"  # noqa: S608
            " ORDER BY ts DESC, received_at DESC, id DESC LIMIT ? OFFSET ?",
            [*values, query.limit, query.offset],
        ).fetchall()
        return (count_row[0] if count_row else 0), [LogEntry(*row) for row in rows]

    async def thing_state(self, org_id: str, thing_key: str) -> ThingState:
        for writer in (self.properties, self.alarms, self.attributes, self.locations):
            await writer.wait_visible()
        return await reading(self._thing_state_sync, org_id, thing_key)

    def _latest_per_key_sync(
        self, row: type[Row], spec: TableSpec, org_id: str, thing_key: str
    ) -> list[Row]:
        columns = ", ".join(spec.columns)
        # Per key, the row with the latest ts (ties: the one received last), as *.current has it.
        sql = (
            f"SELECT {columns} FROM {spec.table} WHERE org_id = ? AND thing_key = ?"  # noqa: S608
            " QUALIFY row_number() OVER (PARTITION BY key ORDER BY ts DESC, received_at DESC) = 1"
            " ORDER BY key"
        )
        rows = self._database.cursor().execute(sql, [org_id, thing_key]).fetchall()
        return [row(*found) for found in rows]

    def _thing_state_sync(self, org_id: str, thing_key: str) -> ThingState:
        locations = self._newest_sync(
            LocationValue, LOCATION_TABLE, org_id, thing_key, None, None, None, 1
        )
        return ThingState(
            properties=self._latest_per_key_sync(PropertyValue, PROPERTY_TABLE, org_id, thing_key),
            alarms=self._latest_per_key_sync(AlarmValue, ALARM_TABLE, org_id, thing_key),
            attributes=[
                setting
                for setting in self._latest_per_key_sync(
                    AttributeValue, ATTRIBUTE_TABLE, org_id, thing_key
                )
                if setting.value is not None
            ],
            location=locations[0] if locations else None,
        )

    async def located_things(self, org_id: str) -> set[str]:
        await self.locations.wait_visible()
        return await reading(self._located_things_sync, org_id)

    def _located_things_sync(self, org_id: str) -> set[str]:
        rows = (
            self._database.cursor()
            .execute("SELECT DISTINCT thing_key FROM location_values WHERE org_id = ?", [org_id])
            .fetchall()
        )
        return {thing_key for (thing_key,) in rows}

    def _fill_current_tables(self) -> None:
        """Fill an empty `<name>_current` from its history (a file written before they existed;
        afterwards the writers keep them). A lake never had such files: nothing to fill."""
        if self._database.lake:
            return
        cursor = self._database.cursor()
        for spec in (PROPERTY_TABLE, LOCATION_TABLE, ALARM_TABLE, ATTRIBUTE_TABLE):
            current = f"{spec.name}_current"
            probe = (  # and whether there is a history to fill it from (saves a commit)
                f"SELECT NOT EXISTS (SELECT 1 FROM {current})"  # noqa: S608
                f" AND EXISTS (SELECT 1 FROM {spec.table})"
            )
            empty = cursor.execute(probe).fetchone()
            if empty is not None and empty[0]:
                newest = _newest_of(CURRENT_SERIES[spec.name], spec.table, ", ".join(spec.columns))
                cursor.execute(f"INSERT INTO {current} {newest}")

    async def _newest(
        self,
        writer: BatchWriter[Row],
        row: type[Row],
        org_id: str,
        thing_key: str,
        key: str | None,
        start: datetime | None,
        end: datetime | None,
        records: int,
    ) -> list[Row]:
        """A table's rows of one thing (and key), newest first, once its writer has committed
        every row submitted before this call."""
        await writer.wait_visible()
        return await reading(
            self._newest_sync, row, writer.table, org_id, thing_key, key, start, end, records
        )

    def _newest_sync(
        self,
        row: type[Row],
        spec: TableSpec,
        org_id: str,
        thing_key: str,
        key: str | None,
        start: datetime | None,
        end: datetime | None,
        records: int,
    ) -> list[Row]:
        # Table and column names are fixed strings of this module; values are parameters.
        table = spec.table
        if start is None and end is None and records == 1 and spec.name in CURRENT_SERIES:
            table = f"{spec.name}_current"  # the newest of all time: kept by the writer
        sql = f"SELECT {', '.join(spec.columns)} FROM {table} WHERE org_id = ? AND thing_key = ?"  # noqa: S608
        values: list[Any] = [org_id, thing_key]
        if key is not None:
            sql += " AND key = ?"
            values.append(key)
        if start is not None:
            sql += " AND ts >= ?"
            values.append(start)
        if end is not None:
            sql += " AND ts <= ?"
            values.append(end)
        # Ties in ts: the value received last wins, as a repeated publish would.
        sql += " ORDER BY ts DESC, received_at DESC LIMIT ?"
        values.append(records)
        return [row(*found) for found in self._database.cursor().execute(sql, values).fetchall()]

    def close(self) -> None:
        self.properties.close()
        self.locations.close()
        self.alarms.close()
        self.attributes.close()
        self.logs.close()
