"""The usage log: records appended in batches on a writer thread, listed with parameterized SQL.

Writes never happen row by row on the event loop. `submit` only appends to an in-memory queue; the
writer thread takes whatever has accumulated, inserts it as one Arrow batch and commits (group
commit: batches grow by themselves under load). `wait_visible` lets a reader wait until every
record submitted before it is committed, which is how a record becomes visible to
`usage.api.list` as soon as its reply has been sent.
"""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from gateway.core.records import UsageFilter, UsageRecord
from gateway.core.tail import matches
from storage.duckdb import rollups
from storage.duckdb.database import Database, reading
from storage.duckdb.writer import BatchWriter, TableSpec

__all__ = ["USAGE_TABLE", "UsageQueries", "UsageWriter", "where"]


USAGE_TABLE = TableSpec(
    name="usage",
    table="usage_log",
    columns=[f.name for f in fields(UsageRecord)],
    arrow_schema=pa.schema(
        [
            ("id", pa.string()),
            ("ts", pa.timestamp("us")),
            ("exec_time", pa.int64()),
            ("processed_by", pa.string()),
            ("org_id", pa.string()),
            ("org_key", pa.string()),
            ("whoami", pa.string()),
            ("service", pa.string()),
            ("command", pa.string()),
            ("success", pa.bool_()),
            ("error_code", pa.int32()),
            ("transport", pa.string()),
            ("client_id", pa.string()),
            ("remote_addr", pa.string()),
            ("request", pa.string()),
            ("response", pa.string()),
        ]
    ),
    # Column names only, from the dataclass: no values are ever spliced into SQL.
    insert_sql="INSERT INTO usage_log SELECT CAST(id AS UUID), "  # noqa: S608
    + ", ".join(f.name for f in fields(UsageRecord) if f.name != "id")
    + " FROM batch",
    also_sql=rollups.WRITER_SQL,  # the hourly rollups, in the records' transaction
)

MERGE_DEPTH = 5000
"""A listing whose page ends within this many records merges the writer's uncommitted ones."""

# How far back from a listing's end the first scan also counts; the page is ranked within the
# smallest horizon that holds it.
_HORIZONS = tuple(timedelta(minutes=minutes) for minutes in (5, 30, 120, 720, 4320, 20160, 86400))


def where(usage_filter: UsageFilter) -> tuple[str, list[Any]]:
    """`(" WHERE ...", parameters)` for a filter: column names and `?` placeholders only."""
    clauses: list[str] = []
    values: list[Any] = []
    for column, value in (
        ("org_id", usage_filter.org_id),
        ("whoami", usage_filter.caller),
        ("whoami", usage_filter.whoami),
        ("service", usage_filter.service),
        ("command", usage_filter.command),
        ("client_id", usage_filter.client_id),
        ("transport", usage_filter.transport),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            values.append(value)
    if usage_filter.remote_addr is not None:  # a function, not LIKE: `%` and `_` stay plain
        clauses.append("starts_with(remote_addr, ?)")
        values.append(usage_filter.remote_addr)
    if usage_filter.search_text is not None:
        clauses.append(
            "(contains(lower(request), lower(?)) OR contains(lower(response), lower(?)))"
        )
        values += [usage_filter.search_text] * 2
    if usage_filter.start is not None:
        clauses.append("ts >= ?")
        values.append(usage_filter.start)
    if usage_filter.end is not None:
        clauses.append("ts <= ?")
        values.append(usage_filter.end)
    if usage_filter.failed_only:
        clauses.append("NOT success")
    if usage_filter.succeeded_only:
        clauses.append("success")
    if usage_filter.name_contains is not None:
        clauses.append("contains(lower(service || '.' || command), lower(?))")
        values.append(usage_filter.name_contains)
    if usage_filter.names is not None:
        clauses.append("list_contains(?, service || '.' || command)")
        values.append(list(usage_filter.names))
    if usage_filter.exclude_names:
        clauses.append("NOT list_contains(?, service || '.' || command)")
        values.append(list(usage_filter.exclude_names))
    if usage_filter.exclude_ids:
        clauses.append("NOT list_contains(CAST(? AS UUID[]), id)")
        values.append(list(usage_filter.exclude_ids))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", values


def _count(cursor: Any, where_sql: str, values: list[Any]) -> int:
    """The rows of usage_log that `where(...)`'s clause and values match."""
    sql = "SELECT count(*) FROM usage_log" + where_sql  # noqa: S608 - placeholders only
    counted = cursor.execute(sql, values).fetchone()
    return int(counted[0]) if counted else 0


SELECT_RECORDS = """
SELECT CAST(id AS VARCHAR), ts, exec_time, processed_by, org_id, org_key, whoami, service,
       command, success, error_code, transport, client_id, remote_addr, request, response
FROM usage_log"""
"""Full records, in the order of `UsageRecord`'s fields."""


class UsageWriter(BatchWriter[UsageRecord]):
    """Append-only usage records with a group-committing writer thread (the `UsageSink`)."""

    def __init__(
        self, database: Database, *, max_batch: int = 10_000, flush_interval: float = 0.05
    ) -> None:
        super().__init__(
            database,
            USAGE_TABLE,
            max_batch=max_batch,
            flush_interval=flush_interval,
        )

    def tail(self, usage_filter: UsageFilter) -> list[UsageRecord]:
        """The uncommitted records a reader with `usage_filter` must count (the rules of the
        SQL's `where`, in Python: gateway.core.tail.matches)."""
        return [record for record in self.uncommitted() if matches(usage_filter, record)]


class UsageQueries:
    """Listings of the usage log (the `UsageReader`): each read first waits until every record
    submitted before it is committed (read-your-writes), then runs on a worker thread."""

    def __init__(
        self, database: Database, writer: UsageWriter, *, use_rollups: bool = True
    ) -> None:
        """`use_rollups` False: counts scan the raw records (the rollups are still kept)."""
        self._database = database
        self._writer = writer
        self.use_rollups = use_rollups

    def count_sync(
        self, usage_filter: UsageFilter, *, excluded_since: datetime | None = None
    ) -> int:
        """How many records the filter matches: from the hourly rollups for the window's whole
        hours when the filters allow (storage/duckdb/rollups.py), the raw records otherwise.
        `excluded_since`: no record of `exclude_ids` is older (bounds looking them up)."""
        cursor = self._database.cursor()
        level = rollups.level_for(usage_filter)
        if self.use_rollups and level is not None and rollups.fits(usage_filter):
            window = rollups.span(self._database.rollup_floors, usage_filter, level, raw_floor=True)
            if window is not None:
                return self._rolled_count(cursor, usage_filter, level, window, excluded_since)
        where_sql, values = where(usage_filter)
        return _count(cursor, where_sql, values)

    @staticmethod
    def _rolled_count(
        cursor: Any,
        usage_filter: UsageFilter,
        level: rollups.Level,
        window: rollups.Span,
        excluded_since: datetime | None,
    ) -> int:
        """The rollups' count (`raw_floor`: the rows listed are the records, so hours of days
        retention has retired are counted from them, none, not from the rollups that outlive
        them). The rollups cannot leave ids out: those of `exclude_ids` stored by then are taken
        off in the same snapshot."""
        sql, values = rollups.count_sql(level, replace(usage_filter, exclude_ids=()), window, where)
        if not usage_filter.exclude_ids:
            row = cursor.execute(f"SELECT {sql}", values).fetchone()
            return int(row[0] or 0) if row else 0
        since = excluded_since or datetime(1970, 1, 1)
        row = cursor.execute(
            f"SELECT {sql} - (SELECT count(*) FROM usage_log WHERE ts >= ?"  # noqa: S608
            " AND list_contains(CAST(? AS UUID[]), id))",
            [*values, since, list(usage_filter.exclude_ids)],
        ).fetchone()
        return int(row[0] or 0) if row else 0

    async def count(self, usage_filter: UsageFilter) -> int:
        await self._writer.wait_visible()
        return await reading(self.count_sync, usage_filter)

    def list_sync(
        self,
        usage_filter: UsageFilter,
        *,
        offset: int,
        limit: int,
        excluded_since: datetime | None = None,
    ) -> tuple[int, list[UsageRecord]]:
        """One page, newest first, and the total count, in three narrow steps.

        1. One scan of the filter columns counts all matches (a bare filtered count: counting
           at several horizons in the same pass doubled its cost).
        2. Unless the page reaches the window's oldest rows, growing horizons before the
           window's end are counted until one holds rows `0 .. offset+limit`; zone maps skip
           older row groups, so each probe costs about what its horizon holds. The page's sort
           keys `(ts, id)` are ranked within that horizon only: no wide rows are sorted, however
           deep the page.
        3. The page's full rows are read by its key span, with plain range predicates that
           zone maps can use (an `id IN (...)` list would become a join over a scan).
        """
        # `where` holds only column names and `?` placeholders; values travel as parameters.
        where_sql, values = where(usage_filter)
        glue = " AND " if where_sql else " WHERE "
        cursor = self._database.cursor()
        count = self.count_sync(usage_filter, excluded_since=excluded_since)
        if count <= offset:
            return count, []
        lower = self._horizon(cursor, usage_filter, where_sql + glue, values, offset + limit, count)
        keys_sql = "SELECT ts, id FROM usage_log" + where_sql  # noqa: S608
        keys_values: list[Any] = list(values)
        if lower is not None:
            keys_sql += glue + "ts >= ?"
            keys_values.append(lower)
        keys = cursor.execute(
            keys_sql + " ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?",
            [*keys_values, limit, offset],
        ).fetchall()
        if not keys:  # cannot happen in an append-only table; be safe anyway
            return count, []
        (newest_ts, newest_id), (oldest_ts, oldest_id) = keys[0], keys[-1]
        rows = cursor.execute(
            SELECT_RECORDS
            + where_sql
            + glue
            + "ts BETWEEN ? AND ? AND (ts > ? OR id >= ?) AND (ts < ? OR id <= ?)"
            " ORDER BY ts DESC, id DESC",
            [*values, oldest_ts, newest_ts, oldest_ts, oldest_id, newest_ts, newest_id],
        ).fetchall()
        return count, [UsageRecord(*row) for row in rows]

    @staticmethod
    def _horizon(
        cursor: Any,
        usage_filter: UsageFilter,
        where_and: str,
        values: list[Any],
        needed: int,
        count: int,
    ) -> datetime | None:
        """The latest cutoff whose rows up to the window's end hold `needed` matches (None: the
        whole window is needed)."""
        if needed >= count:
            return None
        end = usage_filter.end or datetime.now(UTC).replace(tzinfo=None)
        for horizon in _HORIZONS:
            cutoff = end - horizon
            if usage_filter.start is not None and cutoff <= usage_filter.start:
                return None
            held = cursor.execute(
                "SELECT count(*) FROM usage_log" + where_and + "ts >= ?",  # noqa: S608
                [*values, cutoff],
            ).fetchone()
            if held is not None and held[0] >= needed:
                return cutoff
        return None

    async def list(
        self, usage_filter: UsageFilter, *, offset: int, limit: int
    ) -> tuple[int, list[UsageRecord]]:
        """Every record submitted before the call, none waiting for a commit: the writer's
        uncommitted records that match are merged with the stored ones (those ids excluded from
        the SQL, so a record committed meanwhile counts once). A page deeper than MERGE_DEPTH
        waits for the commit instead (the merge would read every row above it)."""
        if offset + limit > MERGE_DEPTH:
            await self._writer.wait_visible()
            return await reading(self.list_sync, usage_filter, offset=offset, limit=limit)
        tail = self._writer.tail(usage_filter)
        if not tail:
            return await reading(self.list_sync, usage_filter, offset=offset, limit=limit)
        stored = replace(usage_filter, exclude_ids=tuple(record.id for record in tail))
        count, rows = await reading(
            self.list_sync,
            stored,
            offset=0,
            limit=offset + limit,
            excluded_since=min(record.ts for record in tail),
        )
        merged = sorted([*rows, *tail], key=lambda record: (record.ts, record.id), reverse=True)
        return count + len(tail), merged[offset : offset + limit]

    def get_sync(self, usage_filter: UsageFilter, record_id: str) -> UsageRecord | None:
        where_sql, values = where(usage_filter)
        glue = " AND " if where_sql else " WHERE "
        row = (
            self._database.cursor()
            .execute(
                SELECT_RECORDS + where_sql + glue + "id = CAST(? AS UUID)", [*values, record_id]
            )
            .fetchone()
        )
        return None if row is None else UsageRecord(*row)

    async def get(self, usage_filter: UsageFilter, record_id: str) -> UsageRecord | None:
        """The record, from the writer's uncommitted ones or the stored ones: no waiting."""
        for record in self._writer.uncommitted():
            if record.id == record_id:
                return record if matches(usage_filter, record) else None
        return await reading(self.get_sync, usage_filter, record_id)
