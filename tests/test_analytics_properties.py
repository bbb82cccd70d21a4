"""Property-based: the analytics commands agree with usage.api.list and with a Python model.

Random records (random ts around DST changes, execTime, outcome, caller, transport, request text)
are inserted through the storage API into one module-wide DuckDB file; every example queries a
random window, interval, time zone and filter set. The clock stands in 2030, after every window,
so the gateway's own records of these calls never fall into one. Records of earlier examples stay
in the file: every expectation is computed over all records seeded so far.
"""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.core.records import RecordIds, UsageRecord
from tests.harness import Clock, Harness

RECORD_IDS = RecordIds()

PW = "pw-for-properties"
NOW = datetime(2030, 1, 1)
# around Berlin's spring and autumn changes, New York's autumn change, Lord Howe's (30 min) ones
BASES = [
    datetime(2026, 3, 27),
    datetime(2026, 10, 23),
    datetime(2026, 10, 30),
    datetime(2026, 4, 3),
    datetime(2026, 10, 2),
    datetime(2026, 12, 30),  # a year boundary
]
MODEL_ZONES = ["UTC", "Europe/Berlin", "Asia/Kolkata", "America/New_York"]
ALL_ZONES = [*MODEL_ZONES, "Australia/Lord_Howe"]
INTERVALS = ["second", "minute", "hour", "day", "week", "month", "quarter", "year"]
STEPS = {"second": timedelta(seconds=1), "minute": timedelta(minutes=1), "hour": timedelta(hours=1)}
# (org key, whoami); "" is an anonymous caller
CALLERS = [
    ("acme", "user@acme"),
    ("acme", "truck-1"),
    ("acme", "truck-2"),
    ("globex", "user@globex"),
    ("", ""),
]
NAMES = ["diag.ping", "diag.time", "session.info", "alarm.publish", "foo", ""]
TEXT = st.text(alphabet="aAbB%_\\ .x", max_size=10)


@dataclass
class World:
    h: Harness
    loop: asyncio.AbstractEventLoop
    org_ids: dict[str, str]
    sessions: dict[str, str] = field(default_factory=dict)
    seeded: list[UsageRecord] = field(default_factory=list)

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def query(self, session: str, command: str, params: dict[str, Any]) -> dict[str, Any]:
        reply = self.run(
            self.h.as_session(
                self.sessions[session], q={"command": f"usage.api.{command}", "params": params}
            )
        )
        return dict(reply["q"])

    def ok(self, session: str, command: str, params: dict[str, Any]) -> dict[str, Any]:
        outcome = self.query(session, command, params)
        assert outcome["success"], (command, params, outcome)
        return dict(outcome["params"])

    def seed(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            org_key, whoami = CALLERS[row["caller"]]
            service, _, command = row["name"].partition(".")
            ts = row["base"] + timedelta(milliseconds=row["offset_ms"])
            item = UsageRecord(
                id=RECORD_IDS.new(),
                ts=ts,
                exec_time=row["exec_ns"],
                processed_by="prop",
                org_id=self.org_ids.get(org_key, ""),
                org_key=org_key,
                whoami=whoami,
                service=service,
                command=command,
                success=row["success"],
                error_code=None if row["success"] else -90002,
                transport=row["transport"],
                client_id=row["client_id"],
                remote_addr=row["remote_addr"],
                request=row["request"],
                response=row["response"],
            )
            self.h.usage.submit(item)
            self.seeded.append(item)
        assert self.h.usage.flush()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as folder:
        h = Harness(Path(folder) / "props.duckdb", Clock(NOW))
        org_ids = {org: h.identity.create_org(org).org_id for org in ("acme", "globex")}
        h.identity.create_user("user@acme", "acme", PW, "user")
        h.identity.create_user("ops@acme", "acme", PW, "super-ops")
        w = World(h, loop, org_ids)
        for email in ("user@acme", "ops@acme"):
            w.sessions[email] = w.run(h.login(email, PW))
        app_id, app_token = h.identity.create_app("acme", "fleet")
        reply = w.run(
            h.call(
                {
                    "auth": {
                        "command": "api.authenticate",
                        "params": {"appId": app_id, "appToken": app_token, "thingKey": "truck-1"},
                    }
                }
            )
        )
        w.sessions["truck-1"] = reply["auth"]["params"]["sessionId"]
        yield w
        h.close()
    loop.close()


# -- strategies --------------------------------------------------------------------------------

FOUR_DAYS_MS = 4 * 86_400_000

row_strategy = st.fixed_dictionaries(
    {
        # whole hours often, so that rows sit on bucket and window edges
        "offset_ms": st.integers(0, FOUR_DAYS_MS) | st.integers(0, 96).map(lambda h: h * 3_600_000),
        "exec_ns": st.integers(0, 10**10),
        "success": st.booleans(),
        "caller": st.integers(0, len(CALLERS) - 1),
        "name": st.sampled_from(NAMES),
        "transport": st.sampled_from(["ws", "mqtt", "http"]),
        "client_id": st.sampled_from(["ws-1", "ws-10", "truck-1", ""]),
        "remote_addr": st.sampled_from(["10.1.2.3", "10.10.0.1", "192.168.0.7", ""]),
        "request": TEXT,
        "response": TEXT,
    }
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], tuple[datetime, datetime]]:
    """Rows near one of BASES, and a window (inclusive, naive UTC) near the same base."""
    base = draw(st.sampled_from(BASES))
    rows = [{**row, "base": base} for row in draw(st.lists(row_strategy, min_size=5, max_size=30))]
    start = base + timedelta(
        seconds=draw(st.integers(-3600, 2 * 86_400) | st.integers(-1, 48).map(lambda h: h * 3600))
    )
    length = draw(
        st.integers(3600, 3 * 86_400)
        | st.integers(1, 72).map(lambda h: h * 3600)
        | st.integers(0, 7200)  # short: second and minute buckets
    )
    end = start + timedelta(seconds=length, milliseconds=draw(st.sampled_from([0, 999])))
    return rows, (start, end)


FILTER_KEYS = {
    "who": st.sampled_from(["user@acme", "truck-1", "truck-2", "user@globex"]),
    "service": st.sampled_from(["diag", "session", "alarm", "foo", "usage"]),
    "hasFailure": st.booleans(),
    "searchText": st.text(alphabet="aAbB%_\\ .x", min_size=1, max_size=3),
    "remoteAddr": st.sampled_from(["10.1", "10.1.", "1", "192.168.0.7", "10_"]),
    "clientId": st.sampled_from(["ws-1", "ws-10", "truck-1", "ws"]),
    "transport": st.sampled_from(["ws", "mqtt", "http"]),
}


@st.composite
def filters(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """(session, filter params): who asks, and for what."""
    session = draw(st.sampled_from(["user@acme", "ops@acme", "truck-1"]))
    chosen = draw(st.sets(st.sampled_from(sorted(FILTER_KEYS)), max_size=2))
    params = {key: draw(FILTER_KEYS[key]) for key in sorted(chosen)}
    if "service" in params and draw(st.booleans()):
        params["command"] = draw(st.sampled_from(["ping", "time", "info", "publish", "nope"]))
    if session == "ops@acme" and draw(st.booleans()):
        params["showAll"] = True
    return session, params


# -- the model ---------------------------------------------------------------------------------


def rfc3339(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def visible(item: UsageRecord, session: str, params: dict[str, Any], world: World) -> bool:
    if not params.get("showAll") and item.org_id != world.org_ids["acme"]:
        return False
    if session == "truck-1" and item.whoami != "truck-1":
        return False
    checks = [
        ("who", item.whoami),
        ("service", item.service),
        ("command", item.command),
        ("clientId", item.client_id),
        ("transport", item.transport),
    ]
    if any(key in params and params[key] != value for key, value in checks):
        return False
    if params.get("hasFailure") and item.success:
        return False
    if "remoteAddr" in params and not item.remote_addr.startswith(params["remoteAddr"]):
        return False
    needle = params.get("searchText")
    return needle is None or any(
        needle.lower() in text.lower() for text in (item.request, item.response)
    )


def matching(
    world: World, session: str, params: dict[str, Any], start: datetime, end: datetime
) -> list[UsageRecord]:
    return [r for r in world.seeded if start <= r.ts <= end and visible(r, session, params, world)]


def bucket_start(ts: datetime, interval: str, zone: ZoneInfo) -> datetime:
    """The aware local first instant of the bucket holding naive-UTC `ts`."""
    local = ts.replace(tzinfo=UTC).astimezone(zone)
    if interval in STEPS:
        unit = {"second": 1, "minute": 60, "hour": 3600}[interval]
        utc_seconds = int(ts.replace(tzinfo=UTC).timestamp())
        offset = int(local.utcoffset().total_seconds())  # type: ignore[union-attr]
        first = (utc_seconds + offset) // unit * unit - offset
        return datetime.fromtimestamp(first, UTC).astimezone(zone)
    day = local.date()
    if interval == "week":
        day -= timedelta(days=day.weekday())
    elif interval == "month":
        day = day.replace(day=1)
    elif interval == "quarter":
        day = date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    elif interval == "year":
        day = date(day.year, 1, 1)
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC).astimezone(zone)


def next_bucket(first: datetime, interval: str, zone: ZoneInfo) -> datetime:
    if interval in STEPS:
        return (first.astimezone(UTC) + STEPS[interval]).astimezone(zone)
    day = first.date()
    if interval == "day":
        day += timedelta(days=1)
    elif interval == "week":
        day += timedelta(days=7)
    else:
        months = {"month": 1, "quarter": 3, "year": 12}[interval]
        index = day.year * 12 + day.month - 1 + months
        day = date(index // 12, index % 12 + 1, 1)
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC).astimezone(zone)


def label(first: datetime, timezone: str) -> str:
    text = first.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if timezone == "UTC" else text


def buckets(
    start: datetime, end: datetime, interval: str, timezone: str, cap: int = 10_001
) -> list[str]:
    """Labels of every bucket from the one holding `start` to the one holding `end` (at most
    `cap` of them)."""
    zone = ZoneInfo(timezone)
    current = bucket_start(start, interval, zone)
    last = bucket_start(end, interval, zone)
    out = []
    while current.astimezone(UTC) <= last.astimezone(UTC) and len(out) < cap:
        out.append(label(current, timezone))
        current = next_bucket(current, interval, zone)
    return out


def auto_interval(start: datetime, end: datetime, timezone: str) -> str:
    for interval in INTERVALS:
        if len(buckets(start, end, interval, timezone, cap=201)) <= 200:
            return interval
    raise AssertionError("unreachable")


def key_of(item: UsageRecord, by: str) -> str:
    """What breakdown, history and endpoints group a record by."""
    if by == "command":
        return f"{item.service}.{item.command}" if item.command else item.service
    return {"service": item.service, "who": item.whoami, "org": item.org_key}[by]


def window_params(start: datetime, end: datetime) -> dict[str, str]:
    return {"start": rfc3339(start), "end": rfc3339(end)}


def le(a: float, b: float) -> bool:
    """a <= b, allowing for float rounding in averages and interpolation."""
    return a <= b + 1e-9 * max(1.0, abs(b))


PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_the_model_helpers_agree_with_the_readme() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    autumn = [
        label(bucket_start(datetime(2026, 10, 25, h, 10), "hour", berlin), "Europe/Berlin")
        for h in (0, 1)
    ]
    assert autumn == ["2026-10-25T02:00:00.000+02:00", "2026-10-25T02:00:00.000+01:00"]
    assert buckets(datetime(2026, 3, 29), datetime(2026, 3, 29, 3), "hour", "Europe/Berlin") == [
        "2026-03-29T01:00:00.000+01:00",
        "2026-03-29T03:00:00.000+02:00",
        "2026-03-29T04:00:00.000+02:00",
        "2026-03-29T05:00:00.000+02:00",
    ]
    assert buckets(datetime(2026, 6, 10, 6), datetime(2026, 6, 10, 7), "hour", "Asia/Kolkata") == [
        "2026-06-10T11:00:00.000+05:30",
        "2026-06-10T12:00:00.000+05:30",
    ]
    assert auto_interval(datetime(2026, 1, 1), datetime(2026, 1, 2), "UTC") == "hour"


# -- properties --------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(
    scenario=scenarios(),
    interval=st.none() | st.sampled_from(INTERVALS),
    timezone=st.sampled_from(MODEL_ZONES),
    who=filters(),
)
def test_activity_and_list_match_the_model(
    world: World,
    scenario: tuple[list[dict[str, Any]], tuple[datetime, datetime]],
    interval: str | None,
    timezone: str,
    who: tuple[str, dict[str, Any]],
) -> None:
    rows, window = scenario
    world.seed(rows)
    start, end = window
    session, params = who
    expected_rows = matching(world, session, params, start, end)
    query = {**params, **window_params(start, end)}

    listed = world.ok(session, "list", {**query, "limit": 2000})
    assert listed["count"] == len(expected_rows)
    assert {r["id"] for r in listed["result"] or []} == {r.id for r in expected_rows}

    chosen = interval or auto_interval(start, end, timezone)
    labels = buckets(start, end, chosen, timezone)
    asked = {**query, "timezone": timezone, **({"interval": interval} if interval else {})}
    event(
        "rows in window: "
        + ("0" if not expected_rows else "1-9" if len(expected_rows) < 10 else "10+")
    )
    event(f"interval: {chosen}" + (" (chosen)" if interval is None else ""))
    if len(labels) > 10_000:
        event("more than 10,000 buckets")
        outcome = world.query(session, "activity", asked)
        assert outcome["errorCodes"] == [-90002], outcome
        return
    activity = world.ok(session, "activity", asked)
    assert activity["interval"] == chosen and activity["timezone"] == timezone
    zone = ZoneInfo(timezone)
    counts = dict.fromkeys(labels, 0)
    for item in expected_rows:
        counts[label(bucket_start(item.ts, chosen, zone), timezone)] += 1
    assert [(b["timestamp"], b["count"]) for b in activity["result"]] == list(counts.items())
    assert sum(b["count"] for b in activity["result"]) == listed["count"]


@PROPERTY_SETTINGS
@given(
    scenario=scenarios(),
    interval=st.none() | st.sampled_from(["minute", "hour", "day", "week", "month"]),
    timezone=st.sampled_from(ALL_ZONES),
    who=filters(),
    by=st.sampled_from(["service", "command", "who", "org"]),
    top=st.integers(1, 4),
    series=st.sampled_from(["hour", "day"]),
    dimension=st.sampled_from(["service", "org"]),
)
def test_bucketed_commands_are_consistent(
    world: World,
    scenario: tuple[list[dict[str, Any]], tuple[datetime, datetime]],
    interval: str | None,
    timezone: str,
    who: tuple[str, dict[str, Any]],
    by: str,
    top: int,
    series: str,
    dimension: str,
) -> None:
    rows, window = scenario
    world.seed(rows)
    session, params = who
    query = {**params, **window_params(*window)}
    count = world.ok(session, "list", {**query, "limit": 1})["count"]
    expected = matching(world, session, params, *window)
    assert count == len(expected)
    event("rows in window: " + ("0" if not expected else "1-9" if len(expected) < 10 else "10+"))
    asked = {**query, "timezone": timezone, **({"interval": interval} if interval else {})}

    activity = world.ok(session, "activity", asked)
    stamps = [b["timestamp"] for b in activity["result"]]
    per_bucket = [b["count"] for b in activity["result"]]
    assert stamps and len(stamps) <= (10_000 if interval else 200)
    instants = [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps]
    assert instants == sorted(instants) and len(set(instants)) == len(instants)
    assert sum(per_bucket) == count

    statuses = world.ok(session, "statuses", asked)
    assert [b["timestamp"] for b in statuses["result"]] == stamps
    assert [b["count"] for b in statuses["result"]] == per_bucket
    for bucket in statuses["result"]:
        assert bucket["success"] + bucket["failed"] == bucket["count"]
        assert bucket["success"] >= 0 and bucket["failed"] >= 0
    if not params.get("hasFailure"):
        failed = world.ok(session, "list", {**query, "limit": 1, "hasFailure": True})["count"]
        assert sum(b["failed"] for b in statuses["result"]) == failed

    times = world.ok(session, "times", asked)
    assert [(b["timestamp"], b["count"]) for b in times["result"]] == list(
        zip(stamps, per_bucket, strict=True)
    )
    for bucket in times["result"]:
        values = [bucket[k] for k in ("min", "p50", "p95", "p99", "max")]
        if bucket["count"] == 0:
            assert [*values, bucket["avg"]] == [None] * 6
            continue
        assert all(isinstance(v, float) and v >= 0 for v in values)
        assert all(le(a, b) for a, b in pairwise(values)), bucket
        assert le(bucket["min"], bucket["avg"]) and le(bucket["avg"], bucket["max"]), bucket

    breakdown = world.ok(session, "breakdown", {**asked, "by": by, "top": top})
    assert breakdown["by"] == by and len(breakdown["keys"]) <= top
    assert len(set(breakdown["keys"])) == len(breakdown["keys"])
    assert [(b["timestamp"], b["count"]) for b in breakdown["result"]] == list(
        zip(stamps, per_bucket, strict=True)
    )
    totals = dict.fromkeys(breakdown["keys"], 0)
    for bucket in breakdown["result"]:
        assert set(bucket["counts"]) == set(breakdown["keys"])
        assert sum(bucket["counts"].values()) + bucket["other"] == bucket["count"]
        assert bucket["other"] >= 0
        for key, n in bucket["counts"].items():
            totals[key] += n
    model = Counter(key_of(item, by) for item in expected)
    assert breakdown["keys"] == sorted(model, key=lambda k: (-model[k], k))[:top]
    assert totals == {k: model[k] for k in breakdown["keys"]}
    if len(breakdown["keys"]) < top:  # every key is listed, so nothing is "other"
        assert all(b["other"] == 0 for b in breakdown["result"])

    history = world.ok(
        session,
        "history",
        {**query, "timezone": timezone, "series": series, "dimension": dimension},
    )
    assert history["ts"] and all(len(v) == len(history["ts"]) for v in history["counters"].values())
    assert history["total"] == sum(sum(v) for v in history["counters"].values()) == count
    hours_or_days = world.ok(session, "activity", {**asked, "interval": series})
    assert history["ts"] == [b["timestamp"] for b in hours_or_days["result"]]
    sums = [sum(column) for column in zip(*history["counters"].values(), strict=True)]
    assert sums in ([b["count"] for b in hours_or_days["result"]], [])
    model = Counter(key_of(item, dimension) for item in expected)
    assert {k: sum(v) for k, v in history["counters"].items() if sum(v)} == dict(model)

    endpoints = world.ok(session, "endpoints", {**query, "limit": 2000})
    listing = endpoints["result"] or []
    assert endpoints["count"] == len(listing)
    assert endpoints["pages"] == math.ceil(endpoints["count"] / 2000)
    assert sum(e["hits"] for e in listing) == count
    model = Counter(key_of(item, "command") for item in expected)
    assert [(e["command"], e["hits"]) for e in listing] == sorted(
        model.items(), key=lambda pair: (-pair[1], pair[0])
    )
    failures = Counter(key_of(item, "command") for item in expected if not item.success)
    assert {e["command"]: e["error"] for e in listing} == {k: failures[k] for k in model}
    assert [(-e["hits"], e["command"]) for e in listing] == sorted(
        (-e["hits"], e["command"]) for e in listing
    )
    for endpoint in listing:
        assert endpoint["success"] + endpoint["error"] == endpoint["hits"] > 0
        assert le(endpoint["min"], endpoint["avg"]) and le(endpoint["avg"], endpoint["max"])
        assert le(endpoint["min"], endpoint["p95"]) and le(endpoint["p95"], endpoint["max"])
    json.dumps(endpoints)  # plain JSON values only
