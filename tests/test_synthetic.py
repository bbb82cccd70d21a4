"""devtools.synthetic: the generated log keeps its contract, and usage.api.list can page it."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.synthetic import (
    COMMANDS,
    FLEET_KEYS,
    generate_file,
    generate_properties,
    generate_usage,
    stored_file_summary,
    stored_summary,
)
from storage.duckdb.database import Database
from tests.harness import Clock, Harness

ROWS = 20_000
END = datetime(2024, 3, 1, 12, 0, 0)
START = END - timedelta(days=30)
PW = "pw-for-tests"
SPEC_ERROR_CODES = {-90001, -90002, -90003, -90004, -90005, -90008, -90011, -90012, -90099}
WHOAMI = re.compile(r"thing-\d{4}|user\d+@org\d+\.example")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("synthetic") / "usage.duckdb"
    summary = generate_file(path, rows=ROWS, end=END, seed=7, compact=False)
    return path, summary


@pytest.fixture
def cursor(dataset: tuple[Path, dict[str, Any]]) -> Iterator[Any]:
    database = Database(dataset[0])
    yield database.cursor()
    database.close()


def scalar(cursor: Any, sql: str, *values: Any) -> Any:
    return cursor.execute(sql, list(values)).fetchone()[0]


def test_counts_orgs_callers_and_commands(
    dataset: tuple[Path, dict[str, Any]], cursor: Any
) -> None:
    _, summary = dataset
    assert summary["rows"] == summary["rows_in_window"] == ROWS
    assert scalar(cursor, "SELECT count(*) FROM usage_log") == ROWS

    orgs = {(o["orgId"], o["orgKey"]) for o in summary["orgs"]}
    assert len(orgs) == 50
    assert set(cursor.execute("SELECT org_id, org_key FROM orgs").fetchall()) == orgs
    in_log = set(cursor.execute("SELECT DISTINCT org_id, org_key FROM usage_log").fetchall())
    assert in_log - {("", "")} == orgs  # every org is busy, and only real orgs appear
    assert sum(o["rows"] for o in summary["orgs"]) == scalar(
        cursor, "SELECT count(*) FROM usage_log WHERE org_id <> ''"
    )
    sizes = sorted((o["rows"] for o in summary["orgs"]), reverse=True)
    assert sizes[0] > 5 * sizes[len(sizes) // 2]  # a few busy orgs, many quiet ones

    callers = scalar(cursor, "SELECT count(DISTINCT whoami) FROM usage_log WHERE whoami <> ''")
    assert 3_000 < callers <= 5_000 and summary["callers"] == callers
    for org in summary["orgs"][:3]:
        top = org["busiest_caller"]
        assert top["rows"] == scalar(
            cursor,
            "SELECT count(*) FROM usage_log WHERE org_id = ? AND whoami = ?",
            org["orgId"],
            top["whoami"],
        )
    busiest = summary["busy_callers"][0]
    assert busiest["rows"] > 20 * ROWS / 5_000  # skewed: the busiest caller is far above average
    # a caller belongs to exactly one org
    assert (
        scalar(
            cursor,
            "SELECT max(n) FROM (SELECT count(DISTINCT org_id) n FROM usage_log "
            "WHERE whoami <> '' GROUP BY whoami)",
        )
        == 1
    )
    for (who,) in cursor.execute(
        "SELECT DISTINCT whoami FROM usage_log WHERE whoami <> ''"
    ).fetchall():
        assert WHOAMI.fullmatch(who), who

    names = {
        r[0]
        for r in cursor.execute(
            "SELECT DISTINCT service || '.' || command FROM usage_log"
        ).fetchall()
    }
    assert names == {f"{c.service}.{c.command}" for c in COMMANDS} and len(names) == 40
    assert scalar(cursor, "SELECT count(DISTINCT service) FROM usage_log") == 9
    assert summary["commands"] == 40


def test_outcomes_and_fields(cursor: Any) -> None:
    failures, bad_codes, inconsistent = cursor.execute(
        "SELECT count(*) FILTER (WHERE NOT success), "
        "count(*) FILTER (WHERE error_code NOT IN (SELECT unnest(?::INTEGER[]))), "
        "count(*) FILTER (WHERE success <> (error_code IS NULL)) FROM usage_log",
        [sorted(SPEC_ERROR_CODES)],
    ).fetchone()
    assert abs(failures / ROWS - 0.02) < 0.005
    assert bad_codes == 0 and inconsistent == 0
    # authentication failures have no session: the caller is unknown
    assert (
        scalar(
            cursor,
            "SELECT count(*) FROM usage_log WHERE error_code IN (-90004, -90005) AND whoami <> ''",
        )
        == 0
    )
    transports = dict(
        cursor.execute("SELECT transport, count(*) FROM usage_log GROUP BY 1").fetchall()
    )
    assert set(transports) == {"mqtt", "ws"} and transports["mqtt"] > 0.7 * ROWS
    assert (
        scalar(cursor, "SELECT count(*) FROM usage_log WHERE transport = 'ws' AND remote_addr = ''")
        == 0
    )
    median, p99, minimum = cursor.execute(
        "SELECT median(exec_time), quantile_disc(exec_time, 0.99), min(exec_time) FROM usage_log"
    ).fetchone()
    assert minimum > 0 and 50_000 < median < 2_000_000 and p99 > 10 * median  # ns, long tail

    sample = cursor.execute(
        "SELECT service, command, request, response, success FROM usage_log USING SAMPLE 500 ROWS"
    ).fetchall()
    for service, command, request, response, success in sample:
        ((key, body),) = json.loads(request).items()
        assert body["command"] == f"{service}.{command}"
        assert json.loads(response)[key]["success"] is success
        assert 20 <= len(request) <= 400 and len(response) <= 400
        for secret in ("password", "appToken", "sessionId"):
            assert body.get("params", {}).get(secret, "***") == "***"
    lengths = cursor.execute("SELECT avg(length(request)) FROM usage_log").fetchone()[0]
    assert 80 < lengths < 300


def test_time_order_and_uuidv7_ids(cursor: Any) -> None:
    first, last = cursor.execute("SELECT min(ts), max(ts) FROM usage_log").fetchone()
    assert START <= first < START + timedelta(hours=1) and END - timedelta(hours=1) < last < END
    # uncompacted, rows are stored in (ts, id) order: newest-first is reverse insertion order
    disorder = scalar(
        cursor,
        "SELECT count(*) FROM (SELECT ts, id, lag(ts) OVER w AS prev_ts, lag(id) OVER w AS prev_id "
        "FROM usage_log WINDOW w AS (ORDER BY rowid)) WHERE ts < prev_ts OR id <= prev_id",
    )
    assert disorder == 0
    newest_first = cursor.execute(
        "SELECT rowid FROM usage_log ORDER BY ts DESC, id DESC LIMIT 1000"
    ).fetchall()
    assert [r[0] for r in newest_first] == list(range(ROWS - 1, ROWS - 1001, -1))
    for record_id, ts in cursor.execute(
        "SELECT id, ts FROM usage_log USING SAMPLE 200 ROWS"
    ).fetchall():
        value = uuid.UUID(str(record_id))
        assert value.version == 7 and value.variant == uuid.RFC_4122
        assert value.int >> 80 == (ts - datetime(1970, 1, 1)) // timedelta(milliseconds=1)
    # a diurnal rhythm: the afternoon is busier than the night
    by_hour = dict(cursor.execute("SELECT hour(ts), count(*) FROM usage_log GROUP BY 1").fetchall())
    assert by_hour[14] > 1.3 * by_hour[3]


def test_deterministic_for_a_seed_and_summary_is_stored(
    tmp_path: Path, dataset: tuple[Path, dict[str, Any]]
) -> None:
    fingerprints = []
    done: list[int] = []
    for name, seed, chunk in (("a", 3, 1_000_000), ("b", 3, 700), ("c", 4, 1_000_000)):
        database = Database(tmp_path / f"{name}.duckdb")
        generate_usage(
            database,
            rows=2_000,
            orgs=5,
            callers=100,
            end=END,
            seed=seed,
            chunk_rows=chunk,
            progress=lambda rows, total: done.append(rows),
        )
        fingerprints.append(
            database.cursor()
            .execute("SELECT sum(hash(id, ts, whoami, request, exec_time)) FROM usage_log")
            .fetchone()
        )
        assert stored_summary(database)["parameters"]["seed"] == seed
        database.close()
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]  # same seed, chunked or not
    assert stored_file_summary(tmp_path / "c.duckdb")["parameters"]["seed"] == 4
    assert stored_file_summary(tmp_path / "none.duckdb") is None
    assert done == [2_000, 700, 1_400, 2_000, 2_000]
    with pytest.raises(ValueError, match="commands"):
        generate_usage(Database(tmp_path / "d.duckdb"), rows=10, commands=41)


@pytest.fixture
async def harness(
    dataset: tuple[Path, dict[str, Any]],
) -> AsyncIterator[tuple[Harness, dict[str, Any]]]:
    path, summary = dataset
    h = Harness(path, clock=Clock(END))
    busiest = summary["busy_callers"][0]
    h.identity.create_user("ops@synthetic.test", busiest["orgKey"], PW, "super-ops")
    h.identity.create_user("admin@synthetic.test", busiest["orgKey"], PW, "org-admin")
    yield h, summary
    h.close()


async def listing(h: Harness, sid: str, **params: Any) -> dict[str, Any]:
    reply = await h.as_session(sid, l={"command": "usage.api.list", "params": params})
    assert reply["l"]["success"], reply
    result: dict[str, Any] = reply["l"]["params"]
    return result


async def test_usage_api_list_pages_the_generated_log(
    harness: tuple[Harness, dict[str, Any]],
) -> None:
    h, summary = harness
    # the gateway's own connection: DuckDB refuses a second one to the file with other settings
    cursor = h.database.cursor()
    busiest = summary["busy_callers"][0]
    org_id = busiest["orgId"]
    admin = await h.login("admin@synthetic.test", PW)
    ops = await h.login("ops@synthetic.test", PW)
    # the window stops just before the clock, so the listings' own records stay out of it
    window = {"start": "2024-01-31T12:00:00Z", "end": "2024-03-01T11:59:59.999Z"}

    expected = [
        str(r[0])
        for r in cursor.execute(
            "SELECT id FROM usage_log WHERE org_id = ? AND ts < ? ORDER BY ts DESC, id DESC",
            [org_id, END],
        ).fetchall()
    ]
    org_rows = next(o["rows"] for o in summary["orgs"] if o["orgId"] == org_id)
    assert len(expected) == org_rows > 500
    pages: list[str] = []
    for offset in range(0, org_rows + 500, 500):
        page = await listing(h, admin, offset=offset, limit=500, **window)
        assert page["count"] == org_rows
        pages += [r["id"] for r in page["result"] or []]
    assert pages == expected
    assert await listing(h, admin, offset=org_rows, **window) == {"count": org_rows, "result": None}

    deep = await listing(h, admin, offset=600, limit=5, **window)
    assert [r["id"] for r in deep["result"]] == expected[600:605]
    record = deep["result"][0]
    assert record["orgId"] == org_id and record["ts"].endswith("Z") and record["execTime"] > 0

    mine = await listing(h, admin, who=busiest["whoami"], limit=10, **window)
    assert mine["count"] == busiest["rows"]
    assert {r["whoami"] for r in mine["result"]} == {busiest["whoami"]}
    failed = await listing(h, admin, hasFailure=True, limit=2000, **window)
    assert failed["count"] == scalar(
        cursor, "SELECT count(*) FROM usage_log WHERE org_id = ? AND NOT success", org_id
    )
    assert all(not r["success"] and r["errorCode"] in SPEC_ERROR_CODES for r in failed["result"])
    last_day = await listing(h, admin, last="24h", limit=100)
    assert last_day["count"] > 0 and len(last_day["result"]) == min(100, last_day["count"])

    everything = await listing(h, ops, showAll=True, limit=1, **window)
    assert everything["count"] == ROWS
    publishes = await listing(
        h, ops, showAll=True, service="location", command="publish", limit=1, **window
    )
    assert publishes["count"] == scalar(
        cursor, "SELECT count(*) FROM usage_log WHERE service = 'location' AND command = 'publish'"
    )


async def test_property_fleet_is_compacted_registered_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "fleet.duckdb"
    summary = generate_file(path, generate_properties, rows=4_000, things=10, days=5, end=END)
    assert stored_file_summary(path) == summary
    assert summary["thing_keys"][:2] == ["thing-0000", "thing-0001"]
    assert summary["keys"] == list(FLEET_KEYS) == sorted(FLEET_KEYS)
    h = Harness(path, clock=Clock(END))
    try:
        cursor = h.database.cursor()
        # each received day compacted, in (org, thing, key, ts) order, and its rollups built;
        # 100 values per series inside the window
        unsorted = (
            "SELECT count(*) FROM (SELECT row_number() OVER (ORDER BY rowid) AS stored,"
            " row_number() OVER (ORDER BY CAST(received_at AS DATE), org_id, thing_key, key, ts)"
            " AS compacted FROM property_values) WHERE stored <> compacted"
        )
        assert scalar(cursor, unsorted) == 0
        assert scalar(cursor, "SELECT sum(n) FROM property_hourly") == 4_000
        series = cursor.execute(
            "SELECT count(*), min(n), max(n), min(first), max(last) FROM (SELECT count(*) AS n, "
            "min(ts) AS first, max(ts) AS last FROM property_values GROUP BY thing_key, key)"
        ).fetchone()
        assert series[:3] == (40, 100, 100)
        assert END - timedelta(days=5) <= series[3] and series[4] < END
        ranges = {
            key: (low, high)
            for key, low, high in cursor.execute(
                "SELECT key, min(value), max(value) FROM property_values GROUP BY key"
            ).fetchall()
        }
        assert 0 <= ranges["battery"][0] < ranges["battery"][1] <= 100
        assert ranges["rssi"][1] < 0 and ranges["temp"][0] > -20
        assert (
            scalar(cursor, "SELECT count(*) FROM things WHERE org_id = ?", summary["orgId"]) == 10
        )

        h.identity.create_user("admin@fleet.test", summary["orgKey"], PW, "org-admin")
        admin = await h.login("admin@fleet.test", PW)
        reply = await h.as_session(
            admin,
            c={"command": "property.current", "params": {"thingKey": "thing-0003", "key": "temp"}},
            h={
                "command": "property.history",
                "params": {"thingKey": "thing-0003", "key": "temp", "last": "24h"},
            },
        )
        newest = cursor.execute(
            "SELECT value, ts FROM property_values WHERE thing_key = 'thing-0003' AND key = 'temp' "
            "AND ts >= ? ORDER BY ts DESC",
            [END - timedelta(hours=24)],
        ).fetchall()
        assert reply["c"]["params"]["value"] == newest[0][0]
        assert [v["value"] for v in reply["h"]["params"]["values"]] == [v for v, _ in newest]
    finally:
        h.close()
    with pytest.raises(ValueError, match="multiple"):
        generate_properties(Database(tmp_path / "odd.duckdb"), rows=4_001, things=10)
