"""attribute.publish and thing.attr.set / .get / .unset (SPEC §6) over a real DuckDB file."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import Fleet


async def test_set_then_get(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "thing.attr.set", key="boardid", value="102")
    assert await fleet.ok("meter-1", "thing.attr.get", key="boardid") == {
        "value": "102",
        "ts": "2024-03-01T12:00:00.000Z",
    }


async def test_unset_makes_get_90008(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "thing.attr.set", key="boardid", value="102")
    fleet.h.clock.advance(seconds=1)
    await fleet.ok("meter-1", "thing.attr.unset", key="boardid")
    assert await fleet.code("meter-1", "thing.attr.get", key="boardid") == -90008


async def test_publish_with_null_unsets(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "attribute.publish", key="fw", value="1.0", ts="2024-03-01T10:00:00Z")
    await fleet.ok("meter-1", "attribute.publish", key="fw", value=None, ts="2024-03-01T11:00:00Z")
    assert await fleet.code("meter-1", "thing.attr.get", key="fw") == -90008


async def test_the_value_is_the_setting_with_the_latest_ts(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "attribute.publish", key="fw", value="2.0", ts="2024-03-01T11:00:00Z")
    await fleet.ok("meter-1", "attribute.publish", key="fw", value="1.0", ts="2024-03-01T10:00:00Z")
    assert (await fleet.ok("meter-1", "thing.attr.get", key="fw"))["value"] == "2.0"


async def test_a_user_sets_an_attribute_of_a_thing_of_its_org(fleet: Fleet) -> None:
    await fleet.ok("admin@acme", "thing.attr.set", thingKey="meter-2", key="site", value="north")
    assert (await fleet.ok("meter-2", "thing.attr.get", key="site"))["value"] == "north"


@pytest.mark.parametrize(
    ("who", "thing", "expected"),
    [
        ("meter-1", "meter-2", -90003),
        ("user@acme", "pump-9", -90008),
        ("user@globex", "pump-9", 0),
    ],
)
async def test_tenancy(fleet: Fleet, who: str, thing: str, expected: int) -> None:
    outcome = await fleet.call(who, "thing.attr.set", thingKey=thing, key="k", value="v")
    if expected == 0:
        assert outcome["success"] is True, outcome
    else:
        assert outcome["errorCodes"] == [expected], outcome


@pytest.mark.parametrize(
    ("command", "params", "fragment"),
    [
        ("thing.attr.set", {"key": "k", "value": 1}, "value"),
        ("thing.attr.set", {"key": "k"}, "value"),
        ("thing.attr.set", {"key": "k", "value": "x" * 5000}, "value"),
        ("attribute.publish", {"key": "k"}, "value"),
        ("thing.attr.get", {"key": ""}, "key"),
    ],
)
async def test_bad_params_are_90002(
    fleet: Fleet, command: str, params: dict[str, Any], fragment: str
) -> None:
    outcome = await fleet.call("meter-1", command, **params)
    assert outcome["errorCodes"] == [-90002], outcome
    assert fragment in outcome["errorMessages"][0], outcome
