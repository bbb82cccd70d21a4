"""The live tail's filter in Python (`gateway.core.tail.matches`) against the listing's SQL
(`storage.duckdb.usage.where`) on a real DuckDB file: for random records and random filters, a
record is pushed exactly when `usage.api.list` with the same filter would return it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.records import RecordIds, UsageFilter, UsageRecord
from gateway.core.tail import matches
from storage.duckdb import DuckDBStorage

BASE = datetime(2026, 11, 30)
WORDS = ["", "a", "A", "ab", "%", "_", "a.b", "x y"]
OPTIONAL = st.none() | st.sampled_from(WORDS[1:])


def _records() -> list[UsageRecord]:
    ids = RecordIds()
    records = []
    for n in range(200):
        word = WORDS[n % len(WORDS)]
        other = WORDS[(n * 7 + 3) % len(WORDS)]
        records.append(
            UsageRecord(
                id=ids.new(),
                ts=BASE + timedelta(seconds=n),
                exec_time=n,
                processed_by="t",
                org_id=("o1", "o2", "")[n % 3],
                org_key="k",
                whoami=("a", "A", "b", "")[n % 4],
                service=("a", "ab", "", "x y")[n % 4],
                command=("b", "a", "%")[n % 3],
                success=n % 5 != 0,
                error_code=None if n % 5 else -90002,
                transport=("mqtt", "ws", "http")[n % 3],
                client_id=other,
                remote_addr=("10.0.0.1", "10.1.2.3", "", "192.168.0.9")[n % 4],
                request=f"{word} req",
                response=f"resp {other}",
            )
        )
    return records


RECORDS = _records()
EXCLUDABLE_IDS = [record.id for record in RECORDS[::17]] + ["00000000-0000-7000-8000-000000000000"]


@pytest.fixture(scope="module")
def stored() -> Iterator[tuple[DuckDBStorage, list[UsageRecord]]]:
    with tempfile.TemporaryDirectory() as folder:
        storage = DuckDBStorage(Path(folder) / "m.duckdb", lambda: BASE + timedelta(days=1))
        records = RECORDS
        for record in records:
            storage.usage.submit(record)
        assert storage.usage.flush()
        try:
            yield storage, records
        finally:
            storage.close()


filters = st.builds(
    UsageFilter,
    org_id=st.none() | st.sampled_from(["o1", "o2", ""]),
    caller=st.none() | st.sampled_from(["a", "A", "b"]),
    whoami=st.none() | st.sampled_from(["a", "b", ""]),
    service=st.none() | st.sampled_from(["a", "ab", "", "x y"]),
    command=st.none() | st.sampled_from(["b", "a", "%"]),
    start=st.none() | st.integers(0, 200).map(lambda s: BASE + timedelta(seconds=s)),
    end=st.none() | st.integers(0, 200).map(lambda s: BASE + timedelta(seconds=s)),
    failed_only=st.booleans(),
    succeeded_only=st.booleans(),
    search_text=OPTIONAL,
    remote_addr=st.none() | st.sampled_from(["10.", "10.0", "192", "1"]),
    client_id=st.none() | st.sampled_from(WORDS),
    transport=st.none() | st.sampled_from(["mqtt", "ws", "http"]),
    name_contains=OPTIONAL,
    names=st.none() | st.lists(st.sampled_from(["a.b", "ab.a", ".%", "x y.b", "a."])).map(tuple),
    exclude_names=st.lists(st.sampled_from(["a.b", "ab.a", ".%", "x y.b"])).map(tuple),
    exclude_ids=st.lists(st.sampled_from(EXCLUDABLE_IDS)).map(tuple),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(usage_filter=filters)
def test_the_tail_pushes_exactly_what_the_listing_returns(
    stored: tuple[DuckDBStorage, list[UsageRecord]], usage_filter: UsageFilter
) -> None:
    storage, records = stored
    _, listed = storage.reader.list_sync(usage_filter, offset=0, limit=1000)
    assert sorted(r.id for r in listed) == sorted(r.id for r in records if matches(usage_filter, r))
