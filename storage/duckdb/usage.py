"""The usage log: records appended in batches on a writer thread, listed with parameterized SQL.

Writes never happen row by row on the event loop. `submit` only appends to an in-memory queue; the
writer thread takes whatever has accumulated, inserts it as one Arrow batch and commits (group
commit: batches grow by themselves under load). `wait_visible` lets a reader wait until every
record submitted before it is committed, which is how a record becomes visible to
`usage.api.list` as soon as its reply has been sent.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
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
            ("delivery", pa.string()),
        ]
    ),
    # Column names only, from the dataclass: no values are ever spliced into SQL.
    insert_sql="INSERT INTO usage_log ("  # noqa: S608
    + ", ".join(f.name for f in fields(UsageRecord))
    + ") SELECT CAST(id AS UUID), "
    + ", ".join(f.name for f in fields(UsageRecord) if f.name != "id")
    + " FROM batch",
    also_sql=rollups.WRITER_SQL,  # the hourly rollups, in the records' transaction
)

MERGE_DEPTH = 5000
"""A listing whose page ends within this many records merges the writer's uncommitted ones."""

RECENT_RECORDS = 10_000
RECENT_TEXT = 8 * 2**20
"""The newest records submitted, committed or not, kept in memory for listings (at most this
many, holding at most this many characters of requests and responses)."""
RECENT_SCAN = 4096
"""How many of them a listing looks through before it asks the database instead."""
RECENT_PAGE = 1000
"""The deepest page (`offset + limit`) answered from them."""
COUNTS_CACHED = 256
"""Open-ended filters whose count and newest page are kept and brought up to date from the
newest records."""


def _newest_first(record: UsageRecord) -> tuple[datetime, str]:
    return record.ts, record.id


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
    """Append-only usage records with a group-committing writer thread (the `UsageSink`).

    Besides the uncommitted records, it keeps the newest ones submitted (`RECENT_RECORDS`,
    committed or not) with, for each, the highest `ts` of any record submitted up to it: every
    record older in the queue, or no longer in it, has a `ts` at most that (`_older_than` for
    those evicted and those stored before the gateway started). So the newest page of a
    listing can be answered from memory, and a count brought up to date, exactly
    (`recent_page`, `matched_since`).
    """

    def __init__(
        self,
        database: Database,
        *,
        max_batch: int = 10_000,
        flush_interval: float = 0.05,
        recent_records: int = RECENT_RECORDS,
        recent_text: int = RECENT_TEXT,
    ) -> None:
        self._recent_records, self._recent_text_cap = recent_records, recent_text
        self._recent: deque[tuple[datetime, UsageRecord]] = deque()
        self._recent_text = 0
        stored = database.cursor().execute("SELECT max(ts) FROM usage_log").fetchone()
        self._older_than: datetime | None = stored[0] if stored else None
        super().__init__(
            database,
            USAGE_TABLE,
            max_batch=max_batch,
            flush_interval=flush_interval,
        )

    def _held(self, row: UsageRecord) -> None:
        recent = self._recent
        high = row.ts if not recent or row.ts > recent[-1][0] else recent[-1][0]
        recent.append((high, row))
        self._recent_text += len(row.request) + len(row.response)
        while len(recent) > self._recent_records or (
            self._recent_text > self._recent_text_cap and len(recent) > 1
        ):
            gone_high, gone = recent.popleft()
            self._recent_text -= len(gone.request) + len(gone.response)
            if self._older_than is None or gone_high > self._older_than:
                self._older_than = gone_high

    def tail(self, usage_filter: UsageFilter) -> list[UsageRecord]:
        """The uncommitted records a reader with `usage_filter` must count (the rules of the
        SQL's `where`, in Python: gateway.core.tail.matches)."""
        return [record for record in self.uncommitted() if matches(usage_filter, record)]

    def recent_page(
        self, usage_filter: UsageFilter, needed: int
    ) -> tuple[list[UsageRecord], int] | None:
        """The newest `needed` records the filter matches, newest first, and the sequence
        number they are the newest at, when the records in memory are enough to know them
        (None: ask the database). Looks through at most `RECENT_SCAN` records, newest submitted
        first, and stops once no older one can rank."""
        best: list[tuple[datetime, str, UsageRecord]] = []  # a min-heap of the top `needed`
        with self._condition:
            sequence, older_than = self._submitted, self._older_than
            for seen, (high, record) in enumerate(reversed(self._recent)):
                if len(best) == needed and high < best[0][0]:
                    break  # this record and every one before it is older than the page
                if seen == RECENT_SCAN:
                    return None
                if (older_than is None or record.ts > older_than) and matches(usage_filter, record):
                    item = (record.ts, record.id, record)
                    if len(best) < needed:
                        heapq.heappush(best, item)
                    elif item[:2] > best[0][:2]:
                        heapq.heapreplace(best, item)
            else:  # every record in memory was looked at
                if len(best) < needed and older_than is not None:
                    return None  # older ones, no longer in memory, may belong to the page
        best.sort(key=lambda item: item[:2], reverse=True)
        return [item[2] for item in best], sequence

    def matched_since(
        self, usage_filter: UsageFilter, sequence: int
    ) -> tuple[list[UsageRecord], int] | None:
        """The records submitted after `sequence` that the filter matches, and the sequence
        number that reaches; None when some of them are no longer in memory."""
        with self._condition:
            newer = self._submitted - sequence
            if newer > min(len(self._recent), RECENT_SCAN):
                return None
            found = [
                record
                for _, record in itertools.islice(reversed(self._recent), newer)
                if matches(usage_filter, record)
            ]
            return found, self._submitted


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
        # Open-ended filter -> (count, the sequence number it reaches, database generation),
        # and -> (its newest records, how deep they reach, sequence number, generation).
        self._counts: OrderedDict[UsageFilter, tuple[int, int, int]] = OrderedDict()
        self._pages: OrderedDict[UsageFilter, tuple[list[UsageRecord], int, int, int]] = (
            OrderedDict()
        )

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
        matching = replace(usage_filter, exclude_ids=())
        sql, values = rollups.count_sql(level, matching, window, where)
        if not usage_filter.exclude_ids:
            row = cursor.execute(f"SELECT {sql}", values).fetchone()
            return int(row[0] or 0) if row else 0
        # Only the excluded records the filter matches were counted: those are taken off.
        since = excluded_since or datetime(1970, 1, 1)
        matched_sql, matched_values = where(matching)
        glue = " AND " if matched_sql else " WHERE "
        row = cursor.execute(
            f"SELECT {sql} - (SELECT count(*) FROM usage_log{matched_sql}{glue}ts >= ?"  # noqa: S608
            " AND list_contains(CAST(? AS UUID[]), id))",
            [*values, *matched_values, since, list(usage_filter.exclude_ids)],
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

    def counted_now(self, usage_filter: UsageFilter) -> tuple[int, int]:
        """The filter's count over every record submitted so far, and the sequence number that
        is: the uncommitted records and the DuckDB snapshot are taken while no batch commits
        (`commit_lock`), so they add up to exactly that many records, none counted twice."""
        cursor = self._database.cursor()
        with self._writer.commit_lock:
            tail, sequence = self._writer.uncommitted_at()
            cursor.execute("BEGIN TRANSACTION")
            cursor.execute("SELECT count(*) FROM usage_rollups").fetchone()  # the snapshot
        try:
            stored = self.count_sync(usage_filter)
        finally:
            cursor.execute("COMMIT")
        return stored + sum(1 for record in tail if matches(usage_filter, record)), sequence

    async def _recent_count(self, usage_filter: UsageFilter) -> int:
        """An open-ended filter's count: kept per filter and brought up to date from the newest
        records (`matched_since`); counted afresh when those no longer reach back to it, or the
        log lost records since (retention: `Database.usage_generation`)."""
        generation = self._database.usage_generation
        cached = self._counts.get(usage_filter)
        if cached is not None and cached[2] == generation:
            since = self._writer.matched_since(usage_filter, cached[1])
            if since is not None:
                count = cached[0] + len(since[0])
                self._remember(self._counts, usage_filter, (count, since[1], generation))
                return count
        count, sequence = await reading(self.counted_now, usage_filter)
        self._remember(self._counts, usage_filter, (count, sequence, generation))
        return count

    def _recent_page(self, usage_filter: UsageFilter, needed: int) -> list[UsageRecord] | None:
        """The newest `needed` records of an open-ended filter, from memory: the filter's newest
        records are kept (as deep as a listing asked) and brought up to date with the records
        submitted since, which costs what arrived since, not what the listing skips over (a
        filter that matches one record in a thousand looks at the thousand once)."""
        generation = self._database.usage_generation
        cached = self._pages.get(usage_filter)
        if cached is not None and cached[3] == generation and needed <= cached[1]:
            newest, depth, sequence, _ = cached
            since = self._writer.matched_since(usage_filter, sequence)
            if since is not None:
                if since[0]:
                    newest = sorted([*newest, *since[0]], key=_newest_first, reverse=True)
                    newest = newest[:depth]
                self._remember(self._pages, usage_filter, (newest, depth, since[1], generation))
                return newest[:needed]
        found = self._writer.recent_page(usage_filter, needed)
        if found is None:
            return None
        self._remember(self._pages, usage_filter, (found[0], needed, found[1], generation))
        return found[0]

    @staticmethod
    def _remember(
        known: OrderedDict[UsageFilter, Any], usage_filter: UsageFilter, value: Any
    ) -> None:
        known[usage_filter] = value
        known.move_to_end(usage_filter)
        while len(known) > COUNTS_CACHED:
            known.popitem(last=False)

    async def list(
        self, usage_filter: UsageFilter, *, offset: int, limit: int
    ) -> tuple[int, list[UsageRecord]]:
        """Every record submitted before the call, none waiting for a commit.

        - The newest pages of an open-ended filter (no `start`, no `end`) come from the records
          in memory (`_recent_page`) and a count kept up to date (`_recent_count`).
        - Otherwise the writer's uncommitted records that match are merged with the stored ones
          (those ids excluded from the SQL, so a record committed meanwhile counts once).
        - A page deeper than MERGE_DEPTH waits for the commit instead (the merge would read
          every row above it)."""
        open_ended = usage_filter.start is None and usage_filter.end is None
        if (  # a lake's other gateways append records this process never saw: not from memory
            open_ended
            and not self._database.lake
            and not usage_filter.exclude_ids
            and 0 < offset + limit <= RECENT_PAGE
        ):
            page = self._recent_page(usage_filter, offset + limit)
            if page is not None:
                count = await self._recent_count(usage_filter)
                return count, page[offset : offset + limit]
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

    def deliveries_sync(
        self, processed_by: str, since: datetime, before: datetime, newest: int
    ) -> set[str]:
        rows = (
            self._database.cursor()
            .execute(
                "SELECT DISTINCT delivery FROM (SELECT delivery FROM usage_log"
                " WHERE processed_by = ? AND delivery IS NOT NULL AND ts >= ? AND ts < ?"
                " ORDER BY ts DESC LIMIT ?)",
                [processed_by, since, before, newest],
            )
            .fetchall()
        )
        return {str(row[0]) for row in rows}

    async def deliveries(
        self, processed_by: str, *, since: datetime, before: datetime, newest: int
    ) -> set[str]:
        """The MQTT deliveries of the newest `newest` stored records `processed_by` logged in
        [since, before) (what a gateway answered before it was restarted)."""
        return await reading(self.deliveries_sync, processed_by, since, before, newest)

    async def get(self, usage_filter: UsageFilter, record_id: str) -> UsageRecord | None:
        """The record, from the writer's uncommitted ones or the stored ones: no waiting."""
        for record in self._writer.uncommitted():
            if record.id == record_id:
                return record if matches(usage_filter, record) else None
        return await reading(self.get_sync, usage_filter, record_id)
