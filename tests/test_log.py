"""log.publish and log.list (SPEC §6): shapes, defaults, filters, tenancy, bad input."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import Fleet


async def test_a_published_entry_is_listed_with_its_defaults(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "log.publish", msg="booted")
    listed = await fleet.ok("meter-1", "log.list")
    entry = listed["result"][0]
    assert (listed["count"], {k: v for k, v in entry.items() if k != "id"}) == (
        1,
        {"ts": "2024-03-01T12:00:00.000Z", "thingKey": "meter-1", "level": 2, "msg": "booted"},
    )


async def test_entries_are_newest_first_by_ts(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "log.publish", msg="later", ts="2024-03-01T11:00:00Z")
    await fleet.ok("meter-1", "log.publish", msg="earlier", ts="2024-03-01T10:00:00Z")
    listed = await fleet.ok("meter-1", "log.list")
    assert [entry["msg"] for entry in listed["result"]] == ["later", "earlier"]


async def test_level_and_corr_id_are_kept_and_filter(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "log.publish", msg="disk full", level=0, corrId="c-1")
    await fleet.ok("meter-1", "log.publish", msg="all good")
    listed = await fleet.ok("meter-1", "log.list", level=0)
    assert [(e["msg"], e["level"], e["corrId"]) for e in listed["result"]] == [
        ("disk full", 0, "c-1")
    ]


async def test_corr_id_filter(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "log.publish", msg="a", corrId="job-7")
    await fleet.ok("meter-1", "log.publish", msg="b", corrId="job-8")
    listed = await fleet.ok("meter-1", "log.list", corrId="job-8")
    assert [entry["msg"] for entry in listed["result"]] == ["b"]


async def test_window_filter(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "log.publish", msg="old", ts="2024-02-01T00:00:00Z")
    await fleet.ok("meter-1", "log.publish", msg="new", ts="2024-03-01T11:30:00Z")
    listed = await fleet.ok("meter-1", "log.list", last="1h")  # clock: 12:00
    assert [entry["msg"] for entry in listed["result"]] == ["new"]


async def test_paging_counts_every_match(fleet: Fleet) -> None:
    for n in range(5):
        await fleet.ok("meter-1", "log.publish", msg=f"m{n}", ts=f"2024-03-01T10:0{n}:00Z")
    page = await fleet.ok("meter-1", "log.list", offset=1, limit=2)
    assert (page["count"], [entry["msg"] for entry in page["result"]]) == (5, ["m3", "m2"])


async def test_an_empty_listing_has_a_null_result(fleet: Fleet) -> None:
    assert await fleet.ok("meter-1", "log.list") == {"count": 0, "result": None}


async def test_a_user_lists_its_orgs_entries_including_global_ones(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "log.publish", msg="from meter-1", ts="2024-03-01T10:00:00Z")
    await fleet.ok("meter-2", "log.publish", msg="from meter-2", ts="2024-03-01T10:01:00Z")
    await fleet.ok(
        "admin@acme", "log.publish", msg="site", ts="2024-03-01T10:02:00Z", **{"global": True}
    )
    await fleet.ok("pump-9", "log.publish", msg="globex's")
    listed = await fleet.ok("user@acme", "log.list")
    assert [(e["thingKey"], e["msg"]) for e in listed["result"]] == [
        (None, "site"),
        ("meter-2", "from meter-2"),
        ("meter-1", "from meter-1"),
    ]


async def test_a_global_entry_is_marked_global(fleet: Fleet) -> None:
    await fleet.ok("admin@acme", "log.publish", msg="maintenance", **{"global": True})
    entry = (await fleet.ok("admin@acme", "log.list"))["result"][0]
    assert entry["global"] is True


async def test_a_thing_does_not_see_another_things_entries(fleet: Fleet) -> None:
    await fleet.ok("meter-2", "log.publish", msg="mine")
    assert (await fleet.ok("meter-1", "log.list"))["count"] == 0


async def test_a_user_lists_one_things_entries(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "log.publish", msg="one")
    await fleet.ok("meter-2", "log.publish", msg="two")
    listed = await fleet.ok("user@acme", "log.list", thingKey="meter-2")
    assert [entry["msg"] for entry in listed["result"]] == ["two"]


async def test_a_publish_is_a_usage_record(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "log.publish", msg="hello")
    listed = await fleet.ok("meter-1", "usage.api.list", service="log")
    assert [record["command"] for record in listed["result"]] == ["publish"]


TENANCY = [
    ("meter-1", None, 0),
    ("meter-1", "meter-2", -90003),
    ("meter-1", "pump-9", -90003),
    ("user@acme", "meter-1", 0),
    ("user@acme", "pump-9", -90008),
    ("user@acme", "ghost", -90008),
    ("admin@acme", "meter-2", 0),
    ("ops@acme", "pump-9", -90008),
    ("user@globex", "pump-9", 0),
]


@pytest.mark.parametrize(("who", "thing", "expected"), TENANCY)
@pytest.mark.parametrize("command", ["log.publish", "log.list"])
async def test_tenancy(
    fleet: Fleet, who: str, thing: str | None, expected: int, command: str
) -> None:
    params: dict[str, Any] = {"msg": "m"} if command == "log.publish" else {}
    if thing is not None:
        params["thingKey"] = thing
    outcome = await fleet.call(who, command, **params)
    if expected == 0:
        assert outcome["success"] is True, outcome
    else:
        assert outcome["errorCodes"] == [expected], outcome


@pytest.mark.parametrize(
    "params",
    [
        {},  # msg is required
        {"msg": ""},
        {"msg": 5},
        {"msg": "x" * 8193},
        {"msg": "m", "level": 3},
        {"msg": "m", "level": "2"},
        {"msg": "m", "level": True},
        {"msg": "m", "ts": "yesterday"},
        {"msg": "m", "ts": "9999-01-01T00:00:00Z"},
        {"msg": "m", "global": "yes"},
        {"msg": "m", "colour": "red"},
    ],
)
async def test_bad_publish_params_are_90002(fleet: Fleet, params: dict[str, Any]) -> None:
    assert await fleet.code("meter-1", "log.publish", **params) == -90002


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 2001},
        {"offset": -1},
        {"level": 5},
        {"last": "1h", "start": "2024-01-01T00:00:00Z"},
    ],
)
async def test_bad_list_params_are_90002(fleet: Fleet, params: dict[str, Any]) -> None:
    assert await fleet.code("meter-1", "log.list", **params) == -90002
