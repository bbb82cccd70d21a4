"""Usage analytics (README "Usage analytics") on seeded records with hand-computed expectations.

Records are inserted through the storage API with chosen `ts` and `execTime`; queries go through
the dispatcher with real sessions. The clock stands far after every seeded window, so the
gateway's own records of these calls (logged at the clock's now) never fall into a window.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.core.records import Org, RecordIds, UsageRecord
from tests.harness import Clock, Harness

RECORD_IDS = RecordIds()

PW = "pw-for-tests"
NOW = datetime(2027, 1, 1, 0, 30, 0)  # after every seeded window


@dataclass
class World:
    h: Harness
    orgs: dict[str, Org]
    app: tuple[str, str]
    sessions: dict[str, str] = field(default_factory=dict)

    async def session(self, name: str) -> str:
        """A session for a user (`role@org`: created on first use) or a thing of acme."""
        if name not in self.sessions:
            if "@" in name:
                role, org = name.split("@")
                self.h.identity.create_user(
                    name,
                    org,
                    PW,
                    {"ops": "super-ops", "admin": "org-admin"}[role] if role != "user" else role,
                )
                self.sessions[name] = await self.h.login(name, PW)
            else:
                app_id, app_token = self.app
                reply = await self.h.call(
                    {
                        "auth": {
                            "command": "api.authenticate",
                            "params": {"appId": app_id, "appToken": app_token, "thingKey": name},
                        }
                    }
                )
                assert reply["auth"]["success"], reply
                self.sessions[name] = reply["auth"]["params"]["sessionId"]
        return self.sessions[name]


def utc(text: str) -> datetime:
    """'2026-03-29T01:30:00Z' (or with an offset) as a naive UTC datetime."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.astimezone(UTC).replace(tzinfo=None)


def record(
    world: World,
    ts: str,
    *,
    org: str | None = "acme",
    who: str = "user@acme",
    name: str = "diag.ping",
    success: bool = True,
    error_code: int | None = None,
    exec_ns: int = 1_000_000,
    transport: str = "ws",
    client_id: str = "ws-1",
    remote_addr: str = "127.0.0.1",
    request: str | None = None,
    response: str | None = None,
) -> UsageRecord:
    when = utc(ts)
    service, _, command = name.partition(".")
    owner = world.orgs[org] if org else None
    if not success and error_code is None:
        error_code = -90002
    return UsageRecord(
        id=RECORD_IDS.new(int(when.replace(tzinfo=UTC).timestamp() * 1000)),
        ts=when,
        exec_time=exec_ns,
        processed_by="seed",
        org_id=owner.org_id if owner else "",
        org_key=owner.org_key if owner else "",
        whoami=who if owner else "",
        service=service,
        command=command,
        success=success,
        error_code=None if success else error_code,
        transport=transport,
        client_id=client_id,
        remote_addr=remote_addr,
        request=request if request is not None else f'{{"1":{{"command":"{name}"}}}}',
        response=response
        if response is not None
        else ('{"1":{"success":true}}' if success else '{"1":{"success":false}}'),
    )


def seed(world: World, *records: UsageRecord) -> list[UsageRecord]:
    for item in records:
        world.h.usage.submit(item)
    assert world.h.usage.flush()
    return list(records)


@pytest.fixture
async def world(backend: dict[str, Any]) -> AsyncIterator[World]:
    h = Harness(clock=Clock(NOW), **backend)
    orgs = {org: h.identity.create_org(org) for org in ("acme", "globex")}
    yield World(h, orgs, h.identity.create_app("acme", "fleet"))
    h.close()


async def call(world: World, session: str, command: str, /, **params: Any) -> dict[str, Any]:
    reply = await world.h.as_session(
        await world.session(session), c={"command": f"usage.api.{command}", "params": params}
    )
    return dict(reply["c"])


async def ok(world: World, session: str, command: str, /, **params: Any) -> dict[str, Any]:
    outcome = await call(world, session, command, **params)
    assert outcome["success"], outcome
    return dict(outcome["params"])


async def fails(world: World, session: str, command: str, code: int, /, **params: Any) -> str:
    outcome = await call(world, session, command, **params)
    assert outcome["success"] is False, outcome
    assert outcome["errorCodes"] == [code], outcome
    return str(outcome["errorMessages"][0])


def pairs(result: dict[str, Any]) -> list[tuple[str, int]]:
    return [(b["timestamp"], b["count"]) for b in result["result"]]


# -- time zones and DST ------------------------------------------------------------------------

SPRING = [
    "2026-03-27T22:59:59.999Z",  # before the window
    "2026-03-27T23:00:00Z",  # 00:00 CET on the 28th: the window's first instant
    "2026-03-28T12:00:00Z",
    "2026-03-28T22:59:59.999Z",  # 23:59:59.999 CET on the 28th
    "2026-03-28T23:30:00Z",  # 00:30 CET on the 29th
    "2026-03-29T00:59:59Z",  # 01:59:59 CET, just before the jump
    "2026-03-29T01:30:00Z",  # 03:30 CEST
    "2026-03-29T02:15:00Z",  # 04:15 CEST
    "2026-03-29T21:59:59Z",  # 23:59:59 CEST on the 29th
    "2026-03-29T22:30:00Z",  # 00:30 CEST on the 30th
    "2026-03-30T21:59:59.999Z",  # the window's last instant (inclusive)
    "2026-03-30T22:00:00Z",  # after the window
]


async def test_berlin_spring_change_days(world: World) -> None:
    seed(world, *(record(world, ts) for ts in SPRING))
    window = {"start": "2026-03-28T00:00:00+01:00", "end": "2026-03-30T23:59:59.999+02:00"}
    days = await ok(
        world, "user@acme", "activity", interval="day", timezone="Europe/Berlin", **window
    )
    assert days["interval"] == "day" and days["timezone"] == "Europe/Berlin"
    assert pairs(days) == [
        ("2026-03-28T00:00:00.000+01:00", 3),
        ("2026-03-29T00:00:00.000+01:00", 5),  # a 23-hour day
        ("2026-03-30T00:00:00.000+02:00", 2),
    ]
    listed = await ok(world, "user@acme", "list", **window)
    assert listed["count"] == 10
    in_utc = await ok(world, "user@acme", "activity", interval="day", **window)
    assert in_utc["timezone"] == "UTC"
    assert pairs(in_utc) == [
        ("2026-03-27T00:00:00.000Z", 1),
        ("2026-03-28T00:00:00.000Z", 3),
        ("2026-03-29T00:00:00.000Z", 5),
        ("2026-03-30T00:00:00.000Z", 1),
    ]


async def test_berlin_spring_change_hours_skip_the_missing_hour(world: World) -> None:
    seed(world, *(record(world, ts) for ts in SPRING))
    hours = await ok(
        world,
        "user@acme",
        "activity",
        interval="hour",
        timezone="Europe/Berlin",
        start="2026-03-29T00:00:00Z",
        end="2026-03-29T03:00:00Z",
    )
    assert pairs(hours) == [
        ("2026-03-29T01:00:00.000+01:00", 1),
        ("2026-03-29T03:00:00.000+02:00", 1),  # no 02:00 local
        ("2026-03-29T04:00:00.000+02:00", 1),
        ("2026-03-29T05:00:00.000+02:00", 0),  # holds the window's end, empty
    ]


AUTUMN = [
    "2026-10-24T21:59:59Z",  # 23:59:59 CEST on the 24th
    "2026-10-24T22:00:00Z",  # 00:00 CEST on the 25th
    "2026-10-24T23:10:00Z",  # 01:10 CEST
    "2026-10-25T00:10:00Z",  # 02:10 CEST (first 02:00)
    "2026-10-25T00:50:00Z",  # 02:50 CEST
    "2026-10-25T01:10:00Z",  # 02:10 CET (second 02:00)
    "2026-10-25T02:30:00Z",  # 03:30 CET
    "2026-10-25T22:59:59.999Z",  # 23:59:59.999 CET on the 25th
    "2026-10-25T23:00:00Z",  # 00:00 CET on the 26th
]


async def test_berlin_autumn_change_repeats_an_hour_and_has_a_25_hour_day(world: World) -> None:
    seed(world, *(record(world, ts) for ts in AUTUMN))
    hours = await ok(
        world,
        "user@acme",
        "activity",
        interval="hour",
        timezone="Europe/Berlin",
        start="2026-10-24T23:00:00Z",
        end="2026-10-25T02:30:00Z",
    )
    assert pairs(hours) == [
        ("2026-10-25T01:00:00.000+02:00", 1),
        ("2026-10-25T02:00:00.000+02:00", 2),
        ("2026-10-25T02:00:00.000+01:00", 1),
        ("2026-10-25T03:00:00.000+01:00", 1),  # 02:30Z is the window's end, inclusive
    ]
    days = await ok(
        world,
        "user@acme",
        "activity",
        interval="day",
        timezone="Europe/Berlin",
        start="2026-10-24T00:00:00+02:00",
        end="2026-10-26T23:59:59.999+01:00",
    )
    assert pairs(days) == [
        ("2026-10-24T00:00:00.000+02:00", 1),
        ("2026-10-25T00:00:00.000+02:00", 7),  # 22:00Z on the 24th .. 22:59:59.999Z: 25 h
        ("2026-10-26T00:00:00.000+01:00", 1),
    ]


async def test_kolkata_days_start_at_1830_utc_and_hours_at_half_past(world: World) -> None:
    seed(
        world,
        *(
            record(world, ts)
            for ts in [
                "2026-06-09T18:29:59Z",  # 23:59:59 IST on the 9th: before the window
                "2026-06-09T18:30:00Z",  # 00:00 IST on the 10th
                "2026-06-10T05:59:00Z",  # 11:29 IST
                "2026-06-10T06:00:00Z",  # 11:30 IST
                "2026-06-10T06:29:59Z",  # 11:59:59 IST
                "2026-06-10T06:30:00Z",  # 12:00 IST
                "2026-06-10T08:00:00Z",  # 13:30 IST
                "2026-06-10T18:29:59.999Z",  # last instant of the 10th IST
                "2026-06-10T18:30:00Z",  # 00:00 IST on the 11th
                "2026-06-11T06:00:00Z",
                "2026-06-11T18:29:59.999Z",  # the window's last instant
                "2026-06-11T18:30:00Z",  # after the window
            ]
        ),
    )
    days = await ok(
        world,
        "user@acme",
        "activity",
        interval="day",
        timezone="Asia/Kolkata",
        start="2026-06-10T00:00:00+05:30",
        end="2026-06-11T23:59:59.999+05:30",
    )
    assert pairs(days) == [
        ("2026-06-10T00:00:00.000+05:30", 7),
        ("2026-06-11T00:00:00.000+05:30", 3),
    ]
    hours = await ok(
        world,
        "user@acme",
        "activity",
        interval="hour",
        timezone="Asia/Kolkata",
        start="2026-06-10T06:00:00Z",
        end="2026-06-10T08:00:00Z",
    )
    assert pairs(hours) == [
        ("2026-06-10T11:00:00.000+05:30", 2),  # from 05:30Z; the 05:59Z row is before start
        ("2026-06-10T12:00:00.000+05:30", 1),
        ("2026-06-10T13:00:00.000+05:30", 1),
    ]


async def test_week_month_quarter_year_buckets(world: World) -> None:
    seed(
        world,
        *(
            record(world, ts)
            for ts in [
                "2026-03-01T12:00:00Z",  # a Sunday: week of Monday 2026-02-23
                "2026-03-02T00:00:00Z",  # a Monday
                "2026-03-31T23:59:59Z",
                "2026-04-01T00:00:00Z",
                "2026-07-15T00:00:00Z",
            ]
        ),
    )
    window = {"start": "2026-03-01T00:00:00Z", "end": "2026-07-31T00:00:00Z"}
    weeks = await ok(world, "user@acme", "activity", interval="week", **window)
    assert weeks["result"][0] == {"timestamp": "2026-02-23T00:00:00.000Z", "count": 1}
    assert weeks["result"][1] == {"timestamp": "2026-03-02T00:00:00.000Z", "count": 1}
    assert weeks["result"][-1]["timestamp"] == "2026-07-27T00:00:00.000Z"
    assert len(weeks["result"]) == 23  # 2026-02-23 .. 2026-07-27, every Monday
    assert sum(b["count"] for b in weeks["result"]) == 5
    months = await ok(world, "user@acme", "activity", interval="month", **window)
    assert pairs(months) == [
        ("2026-03-01T00:00:00.000Z", 3),
        ("2026-04-01T00:00:00.000Z", 1),
        ("2026-05-01T00:00:00.000Z", 0),
        ("2026-06-01T00:00:00.000Z", 0),
        ("2026-07-01T00:00:00.000Z", 1),
    ]
    quarters = await ok(world, "user@acme", "activity", interval="quarter", **window)
    assert pairs(quarters) == [
        ("2026-01-01T00:00:00.000Z", 3),
        ("2026-04-01T00:00:00.000Z", 1),
        ("2026-07-01T00:00:00.000Z", 1),
    ]
    years = await ok(
        world, "user@acme", "activity", interval="year", timezone="Europe/Berlin", **window
    )
    # in Berlin 2026-03-31T23:59:59Z is already April 1st; both April rows stay in 2026
    assert pairs(years) == [("2026-01-01T00:00:00.000+01:00", 5)]
    berlin_months = await ok(
        world, "user@acme", "activity", interval="month", timezone="Europe/Berlin", **window
    )
    assert pairs(berlin_months)[:2] == [
        ("2026-03-01T00:00:00.000+01:00", 2),
        ("2026-04-01T00:00:00.000+02:00", 2),
    ]


# -- intervals and validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "interval", "buckets"),
    [
        ({"last": "24h"}, "hour", 25),  # 2026-12-31T00:00Z .. 2027-01-01T00:00Z
        ({}, "hour", 25),  # no window is the last 24 h
        ({"start": "2026-05-01T10:00:00Z", "end": "2026-05-01T10:03:19Z"}, "second", 200),
        ({"start": "2026-05-01T10:00:00Z", "end": "2026-05-01T10:03:20Z"}, "minute", 4),
        ({"start": "2026-05-01T10:00:00Z", "end": "2026-05-01T13:19:00Z"}, "minute", 200),
        ({"start": "2026-05-01T10:00:00Z", "end": "2026-05-01T13:20:00Z"}, "hour", 4),
        ({"start": "2026-05-01T00:00:00Z", "end": "2026-05-31T00:00:00Z"}, "day", 31),
        ({"start": "2026-01-01T00:00:00Z", "end": "2026-12-31T00:00:00Z"}, "week", 53),
        ({"start": "2020-01-01T00:00:00Z", "end": "2029-12-31T00:00:00Z"}, "month", 120),
        ({"start": "2000-01-01T00:00:00Z", "end": "2029-12-31T00:00:00Z"}, "quarter", 120),
        ({"start": "1970-01-01T00:00:00Z", "end": "2029-12-31T00:00:00Z"}, "year", 60),
    ],
)
async def test_the_interval_is_chosen_for_at_most_200_buckets(
    world: World, window: dict[str, str], interval: str, buckets: int
) -> None:
    result = await ok(world, "user@acme", "activity", **window)
    assert result["interval"] == interval
    assert len(result["result"]) == buckets
    stamps = [b["timestamp"] for b in result["result"]]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


async def test_last_24h_buckets_start_at_the_hour_holding_the_start(world: World) -> None:
    seed(world, record(world, "2026-12-31T00:29:59Z"), record(world, "2026-12-31T00:30:00Z"))
    result = await ok(world, "user@acme", "activity", service="diag", last="24h")
    assert result["result"][0] == {"timestamp": "2026-12-31T00:00:00.000Z", "count": 1}
    assert result["result"][-1]["timestamp"] == "2027-01-01T00:00:00.000Z"
    assert sum(b["count"] for b in result["result"]) == 1


async def test_every_bucket_is_present_even_without_data(world: World) -> None:
    window = {"start": "2026-05-01T00:00:00Z", "end": "2026-05-01T05:59:59Z"}
    activity = await ok(world, "user@acme", "activity", interval="hour", **window)
    assert pairs(activity) == [(f"2026-05-01T0{h}:00:00.000Z", 0) for h in range(6)]
    statuses = await ok(world, "user@acme", "statuses", interval="hour", **window)
    assert [(b["count"], b["success"], b["failed"]) for b in statuses["result"]] == [(0, 0, 0)] * 6
    times = await ok(world, "user@acme", "times", interval="hour", **window)
    for bucket in times["result"]:
        assert bucket["count"] == 0
        assert [bucket[k] for k in ("min", "max", "avg", "p50", "p95", "p99")] == [None] * 6


@pytest.mark.parametrize(
    ("command", "params", "fragment"),
    [
        ("activity", {"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ("activity", {"timezone": ""}, "timezone"),
        ("times", {"timezone": "Europe/Berlinn"}, "timezone"),
        ("activity", {"timezone": 1}, "timezone"),
        ("activity", {"interval": "fortnight"}, "interval"),
        ("activity", {"interval": "second", "last": "3h"}, ""),  # 10,801 buckets
        ("statuses", {"interval": "minute", "last": "8d"}, ""),  # 11,521
        (
            "activity",
            {"interval": "second", "start": "2026-05-01T00:00:00Z", "end": "2026-05-01T02:46:40Z"},
            "",
        ),  # exactly 10,001
        ("activity", {"bogus": 1}, "bogus"),
        ("activity", {"limit": 10}, "limit"),
        ("activity", {"command": "ping"}, "command requires service"),
        ("activity", {"last": "1h", "start": "2026-05-01T00:00:00Z"}, "either last or start"),
        ("activity", {"end": "2026-05-01T00:00:00Z"}, "end requires start"),
        ("breakdown", {"by": "planet"}, "by"),
        ("breakdown", {"by": "service", "top": 0}, "top"),
        ("breakdown", {"by": "service", "top": 101}, "top"),
        ("endpoints", {"interval": "hour"}, "interval"),
        ("endpoints", {"timezone": "UTC"}, "timezone"),
        ("endpoints", {"limit": 0}, "limit"),
        ("endpoints", {"limit": 2001}, "limit"),
        ("endpoints", {"offset": -1}, "offset"),
        ("history", {"series": "minute"}, "series"),
        ("history", {"dimension": "who"}, "dimension"),
        ("get", {}, "id"),
        ("get", {"id": "not-a-uuid"}, "id"),
        ("get", {"id": 7}, "id"),
        ("list", {"searchText": ""}, "searchText"),
        ("list", {"searchText": "x" * 201}, "searchText"),
        ("list", {"remoteAddr": ""}, "remoteAddr"),
        ("list", {"remoteAddr": "1" * 101}, "remoteAddr"),
        ("list", {"clientId": ""}, "clientId"),
        ("list", {"transport": "smtp"}, "transport"),
        ("activity", {"transport": "carrier-pigeon"}, "transport"),
    ],
)
async def test_invalid_params(
    world: World, command: str, params: dict[str, Any], fragment: str
) -> None:
    message = await fails(world, "user@acme", command, -90002, **params)
    # the message names the field ("timezone" may read "time zone")
    assert fragment.lower().replace(" ", "") in message.lower().replace(" ", "")


async def test_exactly_10000_buckets_is_allowed(world: World) -> None:
    result = await ok(
        world,
        "user@acme",
        "activity",
        interval="second",
        start="2026-05-01T00:00:00Z",
        end="2026-05-01T02:46:39Z",
    )
    assert len(result["result"]) == 10_000
    assert result["result"][-1] == {"timestamp": "2026-05-01T02:46:39.000Z", "count": 0}


# -- times and statuses ------------------------------------------------------------------------


async def test_times_and_statuses_per_bucket(world: World) -> None:
    seed(
        world,
        record(world, "2026-05-01T10:00:00Z", exec_ns=1_000_000),
        record(world, "2026-05-01T10:10:00Z", exec_ns=2_000_000, success=False),
        record(world, "2026-05-01T10:20:00Z", exec_ns=3_000_000),
        record(world, "2026-05-01T10:30:00Z", exec_ns=4_000_000, success=False),
        record(world, "2026-05-01T10:59:59.999Z", exec_ns=10_000_000),
        # 11:00 is empty
        record(world, "2026-05-01T12:00:00Z", exec_ns=250_000),
        record(world, "2026-05-01T12:30:00Z", exec_ns=750_000),
        record(world, "2026-05-01T13:00:00Z", exec_ns=1_500),  # 0.0015 ms
        record(world, "2026-05-01T12:15:00Z", org="globex", who="user@globex", exec_ns=99),
    )
    window = {"start": "2026-05-01T10:00:00Z", "end": "2026-05-01T13:00:00Z"}
    times = await ok(world, "user@acme", "times", interval="hour", **window)
    assert times["interval"] == "hour" and times["timezone"] == "UTC"
    first, empty, third, last = times["result"]
    assert first["timestamp"] == "2026-05-01T10:00:00.000Z"
    assert first["count"] == 5
    # execTime in ms: 1, 2, 3, 4, 10; quantile_cont at (n - 1) * q = 4q
    assert first["min"] == pytest.approx(1.0)
    assert first["max"] == pytest.approx(10.0)
    assert first["avg"] == pytest.approx(4.0)
    assert first["p50"] == pytest.approx(3.0)
    assert first["p95"] == pytest.approx(8.8)  # 4 + 0.8 * (10 - 4)
    assert first["p99"] == pytest.approx(9.76)  # 4 + 0.96 * (10 - 4)
    assert all(isinstance(first[k], float) for k in ("min", "max", "avg", "p50", "p95", "p99"))
    assert empty == {
        "timestamp": "2026-05-01T11:00:00.000Z",
        "count": 0,
        "min": None,
        "max": None,
        "avg": None,
        "p50": None,
        "p95": None,
        "p99": None,
    }
    assert third["count"] == 2  # globex's row is not acme's
    assert [third[k] for k in ("min", "max", "avg", "p50", "p95", "p99")] == pytest.approx(
        [0.25, 0.75, 0.5, 0.5, 0.725, 0.745]
    )
    assert last["count"] == 1
    assert [last[k] for k in ("min", "max", "avg", "p50", "p95", "p99")] == pytest.approx(
        [0.0015] * 6
    )

    statuses = await ok(world, "user@acme", "statuses", interval="hour", **window)
    assert statuses["interval"] == "hour"
    assert statuses["result"] == [
        {"timestamp": "2026-05-01T10:00:00.000Z", "count": 5, "success": 3, "failed": 2},
        {"timestamp": "2026-05-01T11:00:00.000Z", "count": 0, "success": 0, "failed": 0},
        {"timestamp": "2026-05-01T12:00:00.000Z", "count": 2, "success": 2, "failed": 0},
        {"timestamp": "2026-05-01T13:00:00.000Z", "count": 1, "success": 1, "failed": 0},
    ]
    failed_only = await ok(world, "user@acme", "times", interval="hour", hasFailure=True, **window)
    assert [b["count"] for b in failed_only["result"]] == [2, 0, 0, 0]
    assert failed_only["result"][0]["p50"] == pytest.approx(3.0)  # 2 and 4 ms


# -- breakdown, endpoints, history ---------------------------------------------------------------

DAY1, DAY2 = "2026-05-01", "2026-05-02"


def breakdown_dataset(world: World) -> None:
    rows = [
        record(world, f"{DAY1}T10:00:00Z", name="diag.ping", exec_ns=1_000_000),
        record(world, f"{DAY1}T11:00:00Z", name="diag.ping", exec_ns=2_000_000),
        record(world, f"{DAY1}T12:00:00Z", name="diag.ping", exec_ns=6_000_000, success=False),
        record(world, f"{DAY1}T09:00:00Z", name="diag.time"),
        record(world, f"{DAY1}T09:30:00Z", name="session.info"),
        record(world, f"{DAY1}T09:40:00Z", name="session.info"),
        record(world, f"{DAY1}T08:00:00Z", name="thing.list", success=False, error_code=-90001),
        record(world, f"{DAY1}T08:10:00Z", name="alarm.publish"),
        record(world, f"{DAY1}T08:20:00Z", name="alarm.publish"),
        record(world, f"{DAY2}T01:00:00Z", who="truck-1", name="session.info"),
        record(world, f"{DAY2}T02:00:00Z", who="truck-1", name="session.info"),
        record(world, f"{DAY2}T03:00:00Z", who="truck-1", name="alarm.publish"),
        record(world, f"{DAY2}T04:00:00Z", who="truck-1", name="foo", success=False),
        record(world, f"{DAY2}T05:00:00Z", who="truck-1", name="", success=False),
        record(world, f"{DAY1}T13:00:00Z", org="globex", who="user@globex"),
        record(world, f"{DAY1}T14:00:00Z", org="globex", who="user@globex"),
        record(world, f"{DAY2}T06:00:00Z", org=None, name="api.authenticate", success=False),
        record(world, "2026-05-03T00:00:00Z", name="diag.ping"),  # after the window
    ]
    seed(world, *rows)


WINDOW = {"start": f"{DAY1}T00:00:00Z", "end": f"{DAY2}T23:59:59.999Z"}
DAILY = {**WINDOW, "interval": "day"}  # left to itself, two days would be 48 hours


async def test_breakdown_by_service_top_and_other(world: World) -> None:
    breakdown_dataset(world)
    # acme's services: diag 4, session 4, alarm 3, thing 1, foo 1, "" 1
    top2 = await ok(world, "user@acme", "breakdown", by="service", top=2, **DAILY)
    assert top2["interval"] == "day" and top2["by"] == "service"
    assert top2["keys"] == ["diag", "session"]  # tied at 4: by key
    assert top2["result"] == [
        {
            "timestamp": f"{DAY1}T00:00:00.000Z",
            "count": 9,
            "counts": {"diag": 4, "session": 2},
            "other": 3,
        },
        {
            "timestamp": f"{DAY2}T00:00:00.000Z",
            "count": 5,
            "counts": {"diag": 0, "session": 2},
            "other": 3,
        },
    ]
    default = await ok(world, "user@acme", "breakdown", by="service", **DAILY)
    assert default["keys"] == ["diag", "session", "alarm", "", "foo", "thing"]
    assert [b["other"] for b in default["result"]] == [0, 0]
    assert default["result"][1]["counts"] == {
        "diag": 0,
        "session": 2,
        "alarm": 1,
        "": 1,
        "foo": 1,
        "thing": 0,
    }


async def test_breakdown_by_command_who_and_org(world: World) -> None:
    breakdown_dataset(world)
    commands = await ok(world, "user@acme", "breakdown", by="command", **DAILY)
    assert commands["keys"] == [
        "session.info",
        "alarm.publish",
        "diag.ping",
        "",
        "diag.time",
        "foo",
        "thing.list",
    ]
    assert commands["result"][0]["counts"] == {
        "session.info": 2,
        "alarm.publish": 2,
        "diag.ping": 3,
        "": 0,
        "diag.time": 1,
        "foo": 0,
        "thing.list": 1,
    }
    assert commands["result"][1]["counts"]["foo"] == 1
    assert commands["result"][1]["counts"][""] == 1
    who = await ok(world, "user@acme", "breakdown", by="who", top=1, **DAILY)
    assert who["keys"] == ["user@acme"]
    assert [(b["count"], b["counts"], b["other"]) for b in who["result"]] == [
        (9, {"user@acme": 9}, 0),
        (5, {"user@acme": 0}, 5),
    ]
    # Super-Ops across orgs: acme 14, globex 2, anonymous ("") 1
    orgs = await ok(world, "ops@acme", "breakdown", by="org", top=2, showAll=True, **DAILY)
    assert orgs["keys"] == ["acme", "globex"]
    assert [(b["count"], b["counts"], b["other"]) for b in orgs["result"]] == [
        (11, {"acme": 9, "globex": 2}, 0),
        (6, {"acme": 5, "globex": 0}, 1),
    ]
    own = await ok(world, "ops@acme", "breakdown", by="org", **DAILY)
    assert own["keys"] == ["acme"]


async def test_endpoints_stats_and_paging(world: World) -> None:
    breakdown_dataset(world)
    everything = await ok(world, "user@acme", "endpoints", **WINDOW)
    assert everything["count"] == 7 and everything["pages"] == 1
    assert [(e["command"], e["hits"]) for e in everything["result"]] == [
        ("session.info", 4),
        ("alarm.publish", 3),
        ("diag.ping", 3),
        ("", 1),
        ("diag.time", 1),
        ("foo", 1),
        ("thing.list", 1),
    ]
    ping = everything["result"][2]
    assert ping["success"] == 2 and ping["error"] == 1
    assert ping["lastHit"] == f"{DAY1}T12:00:00.000Z"
    # 1, 2, 6 ms; p95 at position 2 * 0.95 = 1.9: 2 + 0.9 * 4
    assert [ping[k] for k in ("avg", "min", "max", "p95")] == pytest.approx([3.0, 1.0, 6.0, 5.6])
    thing = everything["result"][6]
    assert (thing["success"], thing["error"]) == (0, 1)

    first = await ok(world, "user@acme", "endpoints", limit=3, **WINDOW)
    assert (first["count"], first["pages"]) == (7, 3)
    assert [e["command"] for e in first["result"]] == ["session.info", "alarm.publish", "diag.ping"]
    last = await ok(world, "user@acme", "endpoints", limit=3, offset=6, **WINDOW)
    assert [e["command"] for e in last["result"]] == ["thing.list"]
    assert await ok(world, "user@acme", "endpoints", limit=3, offset=7, **WINDOW) == {
        "count": 7,
        "pages": 3,
        "result": None,
    }
    none = await ok(world, "user@acme", "endpoints", service="nothing", **WINDOW)
    assert none == {"count": 0, "pages": 0, "result": None}
    failed = await ok(world, "user@acme", "endpoints", hasFailure=True, **WINDOW)
    assert [(e["command"], e["hits"], e["error"]) for e in failed["result"]] == [
        ("", 1, 1),
        ("diag.ping", 1, 1),
        ("foo", 1, 1),
        ("thing.list", 1, 1),
    ]


async def test_history_by_service_and_by_org(world: World) -> None:
    breakdown_dataset(world)
    days = [f"{DAY1}T00:00:00.000Z", f"{DAY2}T00:00:00.000Z"]
    by_service = await ok(world, "user@acme", "history", **WINDOW)
    assert by_service == {
        "counters": {
            "diag": [4, 0],
            "session": [2, 2],
            "alarm": [2, 1],
            "thing": [1, 0],
            "foo": [0, 1],
            "": [0, 1],
        },
        "total": 14,
        "ts": days,
    }
    by_org = await ok(world, "ops@acme", "history", dimension="org", showAll=True, **WINDOW)
    assert by_org == {
        "counters": {"acme": [9, 5], "globex": [2, 0], "": [0, 1]},
        "total": 17,
        "ts": days,
    }
    hourly = await ok(
        world,
        "user@acme",
        "history",
        series="hour",
        start=f"{DAY1}T08:00:00Z",
        end=f"{DAY1}T10:59:59Z",
    )
    assert hourly["ts"] == [f"{DAY1}T{h:02d}:00:00.000Z" for h in (8, 9, 10)]
    assert hourly["counters"] == {
        "thing": [1, 0, 0],
        "alarm": [2, 0, 0],
        "session": [0, 2, 0],
        "diag": [0, 1, 1],
    }
    assert hourly["total"] == 7
    empty = await ok(world, "user@acme", "history", service="nothing", **WINDOW)
    assert empty["total"] == 0 and empty["ts"] == days
    assert all(counts == [0, 0] for counts in empty["counters"].values())


async def test_history_default_series_is_day_over_the_last_24h(world: World) -> None:
    seed(world, record(world, "2026-12-31T06:00:00Z"), record(world, "2026-12-30T06:00:00Z"))
    result = await ok(world, "user@acme", "history", service="diag")
    assert result["ts"] == ["2026-12-31T00:00:00.000Z", "2027-01-01T00:00:00.000Z"]
    assert result == {"counters": {"diag": [1, 0]}, "total": 1, "ts": result["ts"]}


# -- usage.api.get ---------------------------------------------------------------------------------


async def test_get_one_record_within_tenancy(world: World) -> None:
    mine, theirs, truck1, truck2 = seed(
        world,
        record(world, "2026-05-01T10:00:00Z", request='{"1":{"command":"diag.ping"}}'),
        record(world, "2026-05-01T10:00:01Z", org="globex", who="user@globex"),
        record(world, "2026-05-01T10:00:02Z", who="truck-1"),
        record(world, "2026-05-01T10:00:03Z", who="truck-2"),
    )
    listed = await ok(world, "user@acme", "list", **WINDOW)
    expected = next(r for r in listed["result"] if r["id"] == mine.id)
    assert await ok(world, "user@acme", "get", id=mine.id) == expected
    assert expected["ts"] == "2026-05-01T10:00:00.000Z" and expected["execTime"] == 1_000_000
    assert (await ok(world, "user@acme", "get", id=mine.id.upper()))["id"] == mine.id

    await fails(world, "user@acme", "get", -90008, id=theirs.id)
    await fails(world, "admin@acme", "get", -90008, id=theirs.id)
    await fails(world, "user@acme", "get", -90008, id="01890000-0000-7000-8000-000000000000")
    assert (await ok(world, "user@globex", "get", id=theirs.id))["orgKey"] == "globex"
    await fails(world, "user@globex", "get", -90008, id=mine.id)

    assert (await ok(world, "truck-1", "get", id=truck1.id))["whoami"] == "truck-1"
    await fails(world, "truck-1", "get", -90008, id=truck2.id)
    await fails(world, "truck-1", "get", -90008, id=mine.id)
    assert (await ok(world, "user@acme", "get", id=truck2.id))["whoami"] == "truck-2"

    for bad in ("not-a-uuid", "", "01890000-0000-7000-8000-00000000000g"):
        await fails(world, "user@acme", "get", -90002, id=bad)


async def test_get_needs_a_session(world: World) -> None:
    reply = await world.h.call({"g": {"command": "usage.api.get", "params": {"id": "x"}}})
    assert reply["g"]["errorCodes"] == [-90005]


# -- tenancy ------------------------------------------------------------------------------------

ANALYTICS = ["activity", "times", "statuses", "breakdown", "endpoints", "history"]


def extra(command: str) -> dict[str, Any]:
    return {"by": "who"} if command == "breakdown" else {}


def total(command: str, result: dict[str, Any]) -> int:
    if command == "history":
        return int(result["total"])
    if command == "endpoints":
        return sum(e["hits"] for e in result["result"] or [])
    return sum(b["count"] for b in result["result"])


@pytest.mark.parametrize("command", ANALYTICS)
async def test_analytics_tenancy(world: World, command: str) -> None:
    breakdown_dataset(world)  # acme 14 (user@acme 9, truck-1 5), globex 2, anonymous 1
    params = {**WINDOW, **extra(command)}
    assert total(command, await ok(world, "user@acme", command, **params)) == 14
    assert total(command, await ok(world, "admin@acme", command, **params)) == 14
    assert total(command, await ok(world, "user@globex", command, **params)) == 2
    assert total(command, await ok(world, "truck-1", command, **params)) == 5
    assert total(command, await ok(world, "truck-2", command, **params)) == 0
    assert total(command, await ok(world, "truck-1", command, who="user@acme", **params)) == 0
    assert total(command, await ok(world, "user@acme", command, who="user@globex", **params)) == 0
    assert total(command, await ok(world, "ops@acme", command, **params)) == 14
    assert total(command, await ok(world, "ops@acme", command, showAll=True, **params)) == 17
    for session in ("user@acme", "admin@acme", "truck-1"):
        await fails(world, session, command, -90003, showAll=True, **params)
    reply = await world.h.call({"c": {"command": f"usage.api.{command}", "params": params}})
    assert reply["c"]["errorCodes"] == [-90005]


async def test_thing_breakdown_by_who_shows_only_itself(world: World) -> None:
    breakdown_dataset(world)
    result = await ok(world, "truck-1", "breakdown", by="who", **DAILY)
    assert result["keys"] == ["truck-1"]
    history = await ok(world, "truck-1", "history", dimension="org", **WINDOW)
    assert history["counters"] == {"acme": [0, 5]}


# -- the new usage.api.list filters --------------------------------------------------------------


def filter_dataset(world: World) -> dict[str, UsageRecord]:
    t = "2026-05-01T10:00:"
    rows = {
        "percent": record(
            world,
            t + "00Z",
            request='{"1":{"command":"diag.ping","params":{"note":"100% Done_now"}}}',
            remote_addr="10.1.2.3",
            client_id="ws-1",
        ),
        "words": record(
            world,
            t + "01Z",
            request='{"1":{"command":"diag.ping","params":{"note":"100 percent, eXn"}}}',
            remote_addr="10.1.20.4",
            client_id="ws-10",
        ),
        "backslash": record(
            world,
            t + "02Z",
            request="path C:\\Temp\\new",
            remote_addr="10.10.0.1",
            client_id="ws-2",
        ),
        "response": record(
            world,
            t + "03Z",
            success=False,
            response='{"1":{"success":false,"errorMessages":["Hello World"]}}',
            transport="mqtt",
            client_id="truck-9",
            remote_addr="",
        ),
        "http": record(
            world,
            t + "04Z",
            transport="http",
            client_id="",
            remote_addr="192.168.0.7",
            request='{"1":{"command":"diag.ping","params":{"x":"a_b"}}}',
        ),
        "globex": record(
            world,
            t + "05Z",
            org="globex",
            who="user@globex",
            request='{"1":{"command":"diag.ping","params":{"note":"100% Done_now"}}}',
            remote_addr="10.1.2.3",
        ),
    }
    seed(world, *rows.values())
    return rows


FILTER_WINDOW = {"start": "2026-05-01T00:00:00Z", "end": "2026-05-01T23:59:59Z"}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"searchText": "100%"}, {"percent"}),  # % is not a wildcard
        ({"searchText": "e_n"}, {"percent"}),  # _ is not a wildcard ("eXn" does not match)
        ({"searchText": "a_b"}, {"http"}),
        ({"searchText": "done_NOW"}, {"percent"}),  # case-insensitive
        ({"searchText": "c:\\temp\\"}, {"backslash"}),  # \ is a plain character
        ({"searchText": "\\"}, {"backslash"}),
        ({"searchText": "hello world"}, {"response"}),  # in the response only
        ({"searchText": "DIAG.PING"}, {"percent", "words", "http", "response"}),
        ({"searchText": "%"}, {"percent"}),
        ({"searchText": "_"}, {"http", "percent"}),
        ({"searchText": "no such text"}, set()),
        ({"remoteAddr": "10.1."}, {"percent", "words"}),  # a prefix, per octet
        ({"remoteAddr": "10.1"}, {"percent", "words", "backslash"}),
        ({"remoteAddr": "0.1"}, set()),  # a prefix, not a substring
        ({"remoteAddr": "10.1.2.3"}, {"percent"}),
        ({"remoteAddr": "10_"}, set()),
        ({"remoteAddr": "192.168.0.7"}, {"http"}),
        ({"clientId": "ws-1"}, {"percent"}),  # exact, not a prefix of ws-10
        ({"clientId": "ws-10"}, {"words"}),
        ({"clientId": "WS-1"}, set()),
        ({"clientId": "truck-9"}, {"response"}),
        ({"transport": "mqtt"}, {"response"}),
        ({"transport": "http"}, {"http"}),
        ({"transport": "ws"}, {"percent", "words", "backslash"}),
        ({"transport": "ws", "searchText": "100"}, {"percent", "words"}),
        ({"remoteAddr": "10.", "clientId": "ws-2"}, {"backslash"}),
        ({"searchText": "hello", "hasFailure": True}, {"response"}),
    ],
)
async def test_new_list_filters(world: World, params: dict[str, Any], expected: set[str]) -> None:
    rows = filter_dataset(world)
    names = {r.id: name for name, r in rows.items()}
    listed = await ok(world, "user@acme", "list", **FILTER_WINDOW, **params)
    assert listed["count"] == len(expected)
    assert {names[r["id"]] for r in listed["result"] or []} == expected
    activity = await ok(world, "user@acme", "activity", interval="day", **FILTER_WINDOW, **params)
    assert pairs(activity) == [("2026-05-01T00:00:00.000Z", len(expected))]


async def test_new_filters_respect_tenancy(world: World) -> None:
    filter_dataset(world)
    assert (await ok(world, "user@acme", "list", searchText="100%", **FILTER_WINDOW))["count"] == 1
    assert (await ok(world, "user@globex", "list", searchText="100%", **FILTER_WINDOW))[
        "count"
    ] == 1
    everyone = await ok(
        world, "ops@acme", "list", showAll=True, remoteAddr="10.1.2.3", **FILTER_WINDOW
    )
    assert {r["orgKey"] for r in everyone["result"]} == {"acme", "globex"}
    endpoints = await ok(world, "ops@acme", "endpoints", showAll=True, searchText="done")
    assert endpoints["count"] == 0  # the default window is the last 24 h: none of these rows


async def test_search_text_finds_the_gateways_own_records(world: World) -> None:
    """End to end: a call's params are searchable in the log, secrets are not."""
    sid = await world.session("user@acme")
    await world.h.as_session(sid, p={"command": "no.such", "params": {"tag": "Needle-42%"}})
    found = await ok(world, "user@acme", "list", searchText="needle-42%", last="1m")
    assert found["count"] == 1
    assert found["result"][0]["service"] == "no" and found["result"][0]["errorCode"] == -90001
    assert (await ok(world, "user@acme", "list", searchText=PW, last="1h"))["count"] == 0
    by_transport = await ok(world, "user@acme", "list", transport="ws", clientId="ws-1", last="1m")
    assert by_transport["count"] >= 1
    by_addr = await ok(world, "user@acme", "list", remoteAddr="127.0.", last="1m")
    assert by_addr["count"] >= 1
