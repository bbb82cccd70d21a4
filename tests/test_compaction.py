"""Day compaction: finished days re-sorted by org, caller and time, with nothing lost or changed.

Records are seeded through the usage writer over three days (and the current one), compacted
on a real DuckDB file, and compared before and after: the rows themselves, their physical order,
and what `usage.api.list` and the analytics commands answer through the dispatcher.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.core.records import Org, PropertyValue, RecordIds, UsageRecord
from storage.duckdb.compaction import compact_due, due_days
from tests.harness import Clock, Harness
from tests.support import PASSWORD, GatewayThread, Tenants, provision

RECORD_IDS = RecordIds()

DAY0 = datetime(2026, 3, 27)
NOW = datetime(2026, 3, 30, 9, 0)  # days 27, 28 and 29 are over; the 30th is not


def _record(org: Org, whoami: str, ts: datetime, rng: random.Random) -> UsageRecord:
    ms = (ts - datetime(1970, 1, 1)) // timedelta(milliseconds=1)
    return UsageRecord(
        id=RECORD_IDS.new(ms), ts=ts, exec_time=rng.randrange(1_000, 5_000_000),
        processed_by="seed", org_id=org.org_id, org_key=org.org_key, whoami=whoami,
        service=rng.choice(["diag", "property", "location"]), command=rng.choice(["a", "b"]),
        success=rng.random() > 0.1, error_code=None, transport="mqtt", client_id=whoami,
        remote_addr="", request='{"1":{"command":"x"}}', response='{"1":{"success":true}}',
    )  # fmt: skip


def _seed(harness: Harness, orgs: list[Org], rows: int, seed: int = 5) -> None:
    rng = random.Random(seed)
    span = (NOW - DAY0) // timedelta(seconds=1)
    for _ in range(rows):
        org = rng.choice(orgs)
        ts = DAY0 + timedelta(seconds=rng.randrange(span), microseconds=rng.randrange(10**6))
        harness.usage.submit(_record(org, f"thing-{rng.randrange(20)}", ts, rng))
    assert harness.usage.flush()


def _rows(harness: Harness) -> list[tuple[Any, ...]]:
    return sorted(harness.database.cursor().execute("SELECT * FROM usage_log").fetchall())


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Harness, list[Org], str, str]]:
    tenants = provision(tmp_path / "usage.duckdb")
    harness = Harness(tenants.db, Clock(NOW))
    orgs = [harness.identity.org_by_key(key) for key in ("acme", "globex")]
    assert all(orgs)
    admin = await harness.login(tenants.user("acme", "org-admin"), PASSWORD)
    ops = await harness.login("ops@acme.test", PASSWORD)  # Super-Ops
    try:
        yield harness, [org for org in orgs if org is not None], admin, ops
    finally:
        harness.close()


async def test_finished_days_are_sorted_and_nothing_changes(
    world: tuple[Harness, list[Org], str, str],
) -> None:
    harness, orgs, _, _ = world
    _seed(harness, orgs, 3000)
    before = _rows(harness)
    cursor = harness.database.cursor()
    assert due_days(cursor, NOW) == [DAY0.date() + timedelta(days=n) for n in range(3)]

    assert compact_due(harness.database, NOW) == 3

    assert _rows(harness) == before  # the same rows, every column
    recorded = cursor.execute("SELECT day, records FROM usage_compaction ORDER BY day").fetchall()
    per_day = cursor.execute(
        "SELECT CAST(ts AS DATE), count(*) FROM usage_log WHERE ts < ? GROUP BY 1 ORDER BY 1",
        [datetime(2026, 3, 30)],
    ).fetchall()
    assert recorded == per_day and len(recorded) == 3
    for day, _ in recorded:  # physically: each finished day in (org, caller, time) order
        start = datetime(day.year, day.month, day.day)
        stored = cursor.execute(
            "SELECT org_id, whoami, ts, id FROM usage_log WHERE ts >= ? AND ts < ? ORDER BY rowid",
            [start, start + timedelta(days=1)],
        ).fetchall()
        assert stored == sorted(stored)
    today = cursor.execute(
        "SELECT ts FROM usage_log WHERE ts >= ? ORDER BY rowid", [datetime(2026, 3, 30)]
    ).fetchall()
    assert today != sorted(today, key=lambda row: row[0]) or len(today) < 2  # left as it came
    assert due_days(cursor, NOW) == [] and compact_due(harness.database, NOW) == 0
    # the 30th is due only once it is over and the grace period has passed
    assert due_days(cursor, datetime(2026, 3, 31, 0, 5)) == []
    assert due_days(cursor, datetime(2026, 3, 31, 0, 11)) == [datetime(2026, 3, 30).date()]


async def test_listings_and_analytics_answer_the_same_after_compaction(
    world: tuple[Harness, list[Org], str, str],
) -> None:
    harness, orgs, admin, ops = world
    _seed(harness, orgs, 2000, seed=9)
    window = {"start": "2026-03-27T00:00:00Z", "end": "2026-03-30T08:00:00Z"}
    queries: list[tuple[str, str, dict[str, Any]]] = [
        (admin, "usage.api.list", {**window, "limit": 50, "offset": 100}),
        (admin, "usage.api.list", {**window, "who": "thing-3", "limit": 500}),
        (admin, "usage.api.list", {**window, "hasFailure": True, "limit": 20}),
        (ops, "usage.api.list", {**window, "showAll": True, "limit": 30, "offset": 1500}),
        (admin, "usage.api.activity", {**window, "interval": "hour"}),
        (ops, "usage.api.times", {**window, "showAll": True, "interval": "day"}),
        (admin, "usage.api.breakdown", {**window, "by": "who", "top": 5}),
        (ops, "usage.api.endpoints", {**window, "showAll": True}),
    ]

    async def answers() -> list[Any]:
        results = []
        for session, command, params in queries:
            reply = await harness.as_session(session, q={"command": command, "params": params})
            assert reply["q"]["success"] is True, reply
            results.append(reply["q"]["params"])
        return results

    before = await answers()
    assert before[0]["count"] > 150 and len(before[0]["result"]) == 50
    assert compact_due(harness.database, NOW) == 3
    assert await answers() == before


def test_records_written_during_compaction_are_kept(
    world: tuple[Harness, list[Org], str, str],
) -> None:
    harness, orgs, _, _ = world
    assert harness.usage.flush()
    (logged,) = harness.database.cursor().execute("SELECT count(*) FROM usage_log").fetchone()
    _seed(harness, orgs, 3000, seed=11)
    done = threading.Event()
    written = [0]

    def write() -> None:  # the live writer appending "now" records while days are rewritten
        rng = random.Random(2)
        while not done.is_set():
            harness.usage.submit(_record(orgs[0], "live", NOW, rng))
            written[0] += 1
            time.sleep(0.0005)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert compact_due(harness.database, NOW) == 3
    finally:
        done.set()
        writer.join()
    assert harness.usage.flush()
    count = harness.database.cursor().execute("SELECT count(*) FROM usage_log").fetchone()
    # `logged`: what was there before (the provisioning's admin calls, the fixture's logins)
    assert written[0] > 0 and count == (3000 + written[0] + logged,)


def test_a_running_gateway_compacts_finished_days(
    tenants: Tenants, start_gateway: Callable[..., GatewayThread]
) -> None:
    harness = Harness(tenants.db, Clock(NOW))
    orgs = [org for key in ("acme",) if (org := harness.identity.org_by_key(key)) is not None]
    yesterday = datetime.utcnow().replace(microsecond=0) - timedelta(days=2)
    rng = random.Random(3)
    for n in range(200):
        harness.usage.submit(_record(orgs[0], f"t{n % 7}", yesterday + timedelta(seconds=n), rng))
    assert harness.usage.flush()
    harness.close()

    gateway = start_gateway(compact_interval_s=1)
    assert gateway.gateway is not None
    deadline = time.monotonic() + 30
    compacted: list[Any] = []
    while time.monotonic() < deadline and not compacted:
        compacted = (
            gateway.gateway.assembly.storage.database.cursor()
            .execute("SELECT day, records FROM usage_compaction WHERE records > 0")
            .fetchall()
        )
        time.sleep(0.1)
    assert compacted == [(yesterday.date(), 200)]


# -- device data ---------------------------------------------------------------------------------
def _seed_properties(harness: Harness, orgs: list[Org], rows: int, seed: int = 3) -> None:
    """Values received over three days and the current one, for device times anywhere in the
    month before (a backfill now and then), in arrival order."""
    rng = random.Random(seed)
    span = (NOW - DAY0) // timedelta(seconds=1)
    values = []
    for _ in range(rows):
        received = DAY0 + timedelta(seconds=rng.randrange(span))
        values.append(
            PropertyValue(
                org_id=rng.choice(orgs).org_id,
                thing_key=f"thing-{rng.randrange(8)}",
                key=rng.choice(["temp", "rssi", "battery"]),
                ts=received - timedelta(seconds=rng.choice([0, 5, 3600, 20 * 86400])),
                value=rng.uniform(-40, 40),
                corr_id=None,
                received_at=received,
            )
        )
    values.sort(key=lambda value: value.received_at)
    harness.assembly.storage.devices.publish(values)
    assert harness.assembly.storage.devices.properties.flush()


async def test_device_data_is_sorted_by_org_thing_key_and_time_per_day_received(
    world: tuple[Harness, list[Org], str, str],
) -> None:
    harness, orgs, _, _ = world
    _seed_properties(harness, orgs, 3000)
    cursor = harness.database.cursor()
    before = sorted(cursor.execute("SELECT * FROM property_values").fetchall())

    assert compact_due(harness.database, NOW) == 3

    assert sorted(cursor.execute("SELECT * FROM property_values").fetchall()) == before
    for n in range(3):
        start = DAY0 + timedelta(days=n)
        stored = cursor.execute(
            "SELECT org_id, thing_key, key, ts, received_at FROM property_values"
            " WHERE received_at >= ? AND received_at < ? ORDER BY rowid",
            [start, start + timedelta(days=1)],
        ).fetchall()
        assert stored == sorted(stored)


async def test_device_reads_answer_the_same_after_compaction(
    world: tuple[Harness, list[Org], str, str],
) -> None:
    harness, orgs, _, _ = world
    _seed_properties(harness, orgs, 2000, seed=4)
    acme = await harness.login("ops@acme.test", PASSWORD)
    queries = [
        ("property.current", {"thingKey": "thing-3", "key": "temp"}),
        ("property.history", {"thingKey": "thing-5", "key": "rssi", "records": 500}),
        ("property.aggregate", {"thingKey": "thing-1", "key": "battery", "calc": "avg",
                                "series": "day", "start": "2026-02-20T00:00:00Z",
                                "end": "2026-03-30T08:00:00Z"}),
    ]  # fmt: skip
    for thing in range(8):  # the things exist, so a user may read them
        harness.database.cursor().execute(
            "INSERT INTO things (org_id, thing_key, app_id, created_at) VALUES (?, ?, 'seed', ?)"
            " ON CONFLICT DO NOTHING",
            [orgs[0].org_id, f"thing-{thing}", DAY0],
        )

    async def answers() -> list[Any]:
        results = []
        for command, params in queries:
            reply = await harness.as_session(acme, q={"command": command, "params": params})
            assert reply["q"]["success"] is True, reply
            results.append(reply["q"]["params"])
        return results

    before = await answers()
    assert len(before[1]["values"]) > 20
    assert compact_due(harness.database, NOW) == 3
    after = await answers()
    assert after[:2] == before[:2]
    # An average sums doubles in storage order: equal up to rounding in the last bits.
    assert [v["ts"] for v in after[2]["values"]] == [v["ts"] for v in before[2]["values"]]
    assert [v["value"] for v in after[2]["values"]] == pytest.approx(
        [v["value"] for v in before[2]["values"]], rel=1e-12
    )
