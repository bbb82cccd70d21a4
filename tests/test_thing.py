"""thing.find and thing.list (SPEC §6): lastSeen, newest activity first, paging, tenancy."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import Fleet


async def test_find_shows_what_the_thing_published(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "property.publish", key="temp", value=21.5)
    await fleet.ok("meter-1", "alarm.publish", key="door", state=1, msg="open")
    await fleet.ok("meter-1", "attribute.publish", key="fw", value="1.2")
    await fleet.ok("meter-1", "location.publish", lat=45.5, lng=-73.6)
    found = await fleet.ok("meter-1", "thing.find")
    at = "2024-03-01T12:00:00.000Z"
    assert {k: found[k] for k in ("key", "properties", "alarms", "attrs", "loc")} == {
        "key": "meter-1",
        "properties": {"temp": {"value": 21.5, "ts": at}},
        "alarms": {"door": {"state": 1, "ts": at, "msg": "open"}},
        "attrs": {"fw": {"value": "1.2", "ts": at}},
        "loc": {"lat": 45.5, "lng": -73.6, "ts": at},
    }


async def test_find_shows_the_latest_value_by_ts(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "property.publish", key="t", value=2, ts="2024-03-01T11:00:00Z")
    await fleet.ok("meter-1", "property.publish", key="t", value=1, ts="2024-03-01T10:00:00Z")
    found = await fleet.ok("meter-1", "thing.find")
    assert found["properties"]["t"]["value"] == 2.0


async def test_find_leaves_out_unset_attributes(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "thing.attr.set", key="fw", value="1.0")
    fleet.h.clock.advance(seconds=1)
    await fleet.ok("meter-1", "thing.attr.unset", key="fw")
    assert (await fleet.ok("meter-1", "thing.find"))["attrs"] == {}


async def test_a_thing_that_never_published_has_no_location(fleet: Fleet) -> None:
    found = await fleet.ok("user@acme", "thing.find", key="meter-2")
    assert (found["locEnabled"], "loc" in found) == (False, False)


async def test_last_seen_is_the_things_own_last_call(fleet: Fleet) -> None:
    fleet.h.clock.advance(minutes=5)
    await fleet.ok("meter-1", "diag.time")  # needs no session, but the session is used
    fleet.h.clock.advance(minutes=5)
    await fleet.ok("user@acme", "property.publish", thingKey="meter-1", key="k", value=1)
    found = await fleet.ok("user@acme", "thing.find", key="meter-1")
    assert found["lastSeen"] == "2024-03-01T12:05:00.000Z"


async def test_last_seen_survives_a_restart(fleet: Fleet) -> None:
    fleet.h.clock.advance(minutes=3)
    await fleet.ok("meter-1", "session.info")
    await fleet.ok("meter-1", "session.end")
    fleet.h.restart()
    session = await fleet.h.login("user@acme", "pw-for-tests")
    reply = await fleet.h.as_session(
        session, x={"command": "thing.find", "params": {"key": "meter-1"}}
    )
    assert reply["x"]["params"]["lastSeen"] == "2024-03-01T12:03:00.000Z"


async def test_list_is_newest_activity_first(fleet: Fleet) -> None:
    fleet.h.clock.advance(minutes=1)
    await fleet.ok("meter-1", "session.info")
    fleet.h.clock.advance(minutes=1)
    await fleet.ok("meter-2", "session.info")
    listed = await fleet.ok("user@acme", "thing.list")
    assert [(t["key"], t["lastSeen"]) for t in listed["result"]] == [
        ("meter-2", "2024-03-01T12:02:00.000Z"),
        ("meter-1", "2024-03-01T12:01:00.000Z"),
    ]


async def test_list_shape(fleet: Fleet) -> None:
    listed = await fleet.ok("user@globex", "thing.list")
    assert listed == {
        "count": 1,
        "fields": ["key", "name", "orgId", "tags", "createdOn", "lastSeen"],
        "result": [
            {
                "key": "pump-9",
                "name": "pump-9",
                "orgId": listed["result"][0]["orgId"],
                "tags": [],
                "createdOn": "2024-03-01T12:00:00.000Z",
                "lastSeen": "2024-03-01T12:00:00.000Z",
            }
        ],
    }


async def test_list_sorted_by_key_descending(fleet: Fleet) -> None:
    listed = await fleet.ok("admin@acme", "thing.list", sort="-key")
    assert [thing["key"] for thing in listed["result"]] == ["meter-2", "meter-1"]


async def test_list_pages_and_counts_all(fleet: Fleet) -> None:
    listed = await fleet.ok("admin@acme", "thing.list", sort="+key", offset=1, limit=1)
    assert (listed["count"], [t["key"] for t in listed["result"]]) == (2, ["meter-2"])


async def test_list_by_keys(fleet: Fleet) -> None:
    listed = await fleet.ok("admin@acme", "thing.list", keys=["meter-2", "pump-9"])
    assert [thing["key"] for thing in listed["result"]] == ["meter-2"]


async def test_list_has_loc(fleet: Fleet) -> None:
    await fleet.ok("meter-2", "location.publish", lat=1.0, lng=2.0)
    listed = await fleet.ok("admin@acme", "thing.list", hasLoc=True)
    assert [thing["key"] for thing in listed["result"]] == ["meter-2"]


async def test_list_show_and_hide_fields(fleet: Fleet) -> None:
    listed = await fleet.ok("user@globex", "thing.list", show=["key"], hideFields=True)
    assert listed == {"count": 1, "result": [{"key": "pump-9"}]}


async def test_a_thing_lists_only_itself(fleet: Fleet) -> None:
    listed = await fleet.ok("meter-1", "thing.list")
    assert [thing["key"] for thing in listed["result"]] == ["meter-1"]


async def test_a_thing_asking_for_another_key_lists_nothing(fleet: Fleet) -> None:
    assert (await fleet.ok("meter-1", "thing.list", keys=["meter-2"]))["count"] == 0


@pytest.mark.parametrize(
    ("who", "key", "expected"),
    [
        ("meter-1", None, 0),
        ("meter-1", "meter-2", -90003),
        ("meter-1", "pump-9", -90003),
        ("user@acme", "meter-1", 0),
        ("user@acme", "pump-9", -90008),
        ("user@acme", None, -90002),
        ("admin@acme", "meter-2", 0),
        ("ops@acme", "pump-9", -90008),
        ("user@globex", "meter-1", -90008),
    ],
)
async def test_find_tenancy(fleet: Fleet, who: str, key: str | None, expected: int) -> None:
    outcome = await fleet.call(who, "thing.find", **({} if key is None else {"key": key}))
    if expected == 0:
        assert outcome["success"] is True, outcome
    else:
        assert outcome["errorCodes"] == [expected], outcome


@pytest.mark.parametrize("who", ["user@acme", "admin@acme", "ops@acme"])
async def test_a_user_lists_its_orgs_things_only(fleet: Fleet, who: str) -> None:
    listed = await fleet.ok(who, "thing.list", sort="key")
    assert [thing["key"] for thing in listed["result"]] == ["meter-1", "meter-2"]


@pytest.mark.parametrize(
    "params",
    [
        {"sort": "colour"},
        {"limit": 0},
        {"limit": 2001},
        {"offset": -1},
        {"keys": []},
        {"keys": "meter-1"},
        {"show": ["secret"]},
        {"hasLoc": 1},
        {"tags": ["a"]},
    ],
)
async def test_bad_list_params_are_90002(fleet: Fleet, params: dict[str, Any]) -> None:
    assert await fleet.code("user@acme", "thing.list", **params) == -90002


@pytest.mark.parametrize("params", [{"key": ""}, {"key": 5}, {"iccid": "8901"}])
async def test_bad_find_params_are_90002(fleet: Fleet, params: dict[str, Any]) -> None:
    assert await fleet.code("user@acme", "thing.find", **params) == -90002
