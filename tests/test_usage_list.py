"""usage.api.list: every parameter and rule of SPEC §3, tenancy of §2, over a real DuckDB file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.harness import Harness

PW = "pw-for-tests"


@pytest.fixture
async def harness(backend: dict[str, Any]) -> AsyncIterator[Harness]:
    h = Harness(**backend)
    for org in ("acme", "globex"):
        h.identity.create_org(org)
        h.identity.create_user(f"user@{org}", org, PW, "user")
        h.identity.create_user(f"admin@{org}", org, PW, "org-admin")
    h.identity.create_user("ops@acme", "acme", PW, "super-ops")
    yield h
    h.close()


async def list_usage(h: Harness, sid: str, **params: Any) -> dict[str, Any]:
    reply = await h.as_session(sid, l={"command": "usage.api.list", "params": params})
    return reply["l"]


async def ok(h: Harness, sid: str, **params: Any) -> dict[str, Any]:
    result = await list_usage(h, sid, **params)
    assert result["success"], result
    return result["params"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 2001}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"command": "ping"}, "command requires service"),
        ({"last": "1h", "start": "2024-03-01T00:00:00Z"}, "either last or start/end"),
        ({"end": "2024-03-01T00:00:00Z"}, "end requires start"),
        ({"start": "2024-03-02T00:00:00Z", "end": "2024-03-01T00:00:00Z"}, "end is before start"),
        ({"last": "5x"}, "bad duration"),
        ({"last": "-1h"}, "bad duration"),
        ({"last": "0s"}, "greater than zero"),
        ({"last": 3600}, "last"),
        ({"start": "yesterday"}, "bad timestamp"),
        ({"hasFailure": "yes"}, "hasFailure"),
        ({"bogus": 1}, "bogus"),
    ],
)
async def test_invalid_params(harness: Harness, params: dict[str, Any], fragment: str) -> None:
    sid = await harness.login("user@acme", PW)
    result = await list_usage(harness, sid, **params)
    assert result["errorCodes"] == [-90002]
    assert fragment in result["errorMessages"][0]


async def test_durations_compose_and_windows_are_inclusive(harness: Harness) -> None:
    sid = await harness.login("user@acme", PW)  # 12:00
    for _ in range(3):
        harness.clock.advance(hours=1)
        await harness.as_session(sid, p={"command": "diag.ping"})  # 13:00, 14:00, 15:00
    for last in ("1h30m", "90m", "5400s", "1.5h", "1h29m60s"):
        page = await ok(harness, sid, last=last, service="diag")
        assert page["count"] == 2, last
    assert (await ok(harness, sid, last="1d", service="diag"))["count"] == 3
    window = await ok(
        harness, sid, start="2024-03-01T13:00:00Z", end="2024-03-01T14:00:00.000Z", service="diag"
    )
    assert [r["ts"] for r in window["result"]] == [
        "2024-03-01T14:00:00.000Z",
        "2024-03-01T13:00:00.000Z",
    ]
    berlin = await ok(harness, sid, start="2024-03-01T15:00:00+01:00", service="diag")
    assert berlin["count"] == 2  # 14:00Z onwards, up to now
    assert (await ok(harness, sid, start="2024-03-01T14:30:00Z", service="diag"))["count"] == 1


async def test_filters(harness: Harness) -> None:
    user = await harness.login("user@acme", PW)
    admin = await harness.login("admin@acme", PW)
    await harness.as_session(
        user, a={"command": "diag.ping"}, b={"command": "diag.time"}, c={"command": "no.such"}
    )
    await harness.as_session(
        admin, a={"command": "diag.ping"}, b={"command": "session.info", "params": {"x": 1}}
    )
    assert (await ok(harness, user, who="admin@acme"))["count"] == 3  # login, ping, failed info
    assert (await ok(harness, user, who="user@acme", service="diag"))["count"] == 2
    pings = await ok(harness, user, service="diag", command="ping")
    assert pings["count"] == 2 and {r["whoami"] for r in pings["result"]} == {
        "user@acme",
        "admin@acme",
    }
    failures = await ok(harness, user, hasFailure=True)
    assert sorted(r["errorCode"] for r in failures["result"]) == [-90002, -90001]
    # hasFailure false means all calls; the second listing also counts the first one
    assert (await ok(harness, user, hasFailure=False))["count"] + 1 == (await ok(harness, user))[
        "count"
    ]
    assert await ok(harness, user, service="nothing") == {"count": 0, "result": None}


async def test_paging_is_stable_with_tied_timestamps(harness: Harness) -> None:
    sid = await harness.login("user@acme", PW)
    await harness.as_session(sid, **{f"c{i}": {"command": "diag.ping"} for i in range(45)})
    everything = await ok(harness, sid, service="diag", limit=2000)
    assert everything["count"] == 45
    ordered = [r["id"] for r in everything["result"]]
    assert ordered == sorted(ordered, reverse=True)
    # newest first: the last command of the envelope is listed first
    assert everything["result"][0]["request"].startswith('{"c44"')
    pages: list[str] = []
    for offset in range(0, 50, 7):
        page = await ok(harness, sid, service="diag", offset=offset, limit=7)
        assert page["count"] == 45
        pages += [r["id"] for r in page["result"] or []]
    assert pages == ordered
    assert await ok(harness, sid, service="diag", offset=45) == {"count": 45, "result": None}


async def test_tenancy(harness: Harness) -> None:
    acme = await harness.login("user@acme", PW)
    globex = await harness.login("user@globex", PW)
    admin = await harness.login("admin@acme", PW)
    ops = await harness.login("ops@acme", PW)
    await harness.as_session(globex, p={"command": "diag.ping"})
    await harness.as_session(acme, p={"command": "diag.ping"})

    seen = await ok(harness, acme, limit=2000)
    assert {r["orgKey"] for r in seen["result"]} == {"acme"}
    assert "user@globex" not in {r["whoami"] for r in seen["result"]}
    assert (await ok(harness, acme, who="user@globex"))["count"] == 0
    globex_view = await ok(harness, globex, limit=2000)
    assert {r["orgKey"] for r in globex_view["result"]} == {"globex"}

    for sid in (acme, admin):
        denied = await list_usage(harness, sid, showAll=True)
        assert denied["errorCodes"] == [-90003]
    own = await ok(harness, ops, limit=2000)
    assert {r["orgKey"] for r in own["result"]} == {"acme"}
    everyone = await ok(harness, ops, showAll=True, limit=2000)
    assert {r["orgKey"] for r in everyone["result"]} == {"acme", "globex"}


async def test_a_thing_sees_only_its_own_calls(harness: Harness) -> None:
    app_id, app_token = harness.identity.create_app("acme", "fleet")
    things = {}
    for key in ("truck-1", "truck-2"):
        reply = await harness.call(
            {
                "auth": {
                    "command": "api.authenticate",
                    "params": {"appId": app_id, "appToken": app_token, "thingKey": key},
                },
                "p": {"command": "diag.ping"},
            }
        )
        things[key] = reply["auth"]["params"]["sessionId"]
    user = await harness.login("user@acme", PW)
    mine = await ok(harness, things["truck-1"], limit=2000)
    assert {r["whoami"] for r in mine["result"]} == {"truck-1"}
    assert (await ok(harness, things["truck-1"], who="truck-2"))["count"] == 0
    assert (await ok(harness, things["truck-1"], who="user@acme"))["count"] == 0
    org_view = await ok(harness, user, limit=2000)
    assert {"truck-1", "truck-2", "user@acme"} <= {r["whoami"] for r in org_view["result"]}
    denied = await list_usage(harness, things["truck-1"], showAll=True)
    assert denied["errorCodes"] == [-90003]


async def test_the_listing_is_logged_and_sees_the_previous_reply(harness: Harness) -> None:
    sid = await harness.login("user@acme", PW)
    first = await ok(harness, sid)
    second = await ok(harness, sid)
    assert second["count"] == first["count"] + 1
    newest = second["result"][0]
    assert (newest["service"], newest["command"]) == ("usage", "api.list")
    assert '"count":' in newest["response"]
