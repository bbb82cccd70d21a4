"""alarm.publish / .batch / .current / .history (SPEC §6) over a real DuckDB file."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import Fleet


async def test_a_thing_publishes_an_alarm_state_and_reads_it_back(fleet: Fleet) -> None:
    await fleet.ok(
        "meter-1", "alarm.publish", key="door", state=1, msg="open", corrId="c", lat=1, lng=2
    )
    assert await fleet.ok("meter-1", "alarm.current", key="door") == {
        "state": 1,
        "ts": "2024-03-01T12:00:00.000Z",
        "msg": "open",
        "corrId": "c",
        "lat": 1.0,
        "lng": 2.0,
    }


async def test_a_repeated_state_is_not_stored_unless_republished(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "alarm.publish", key="door", state=1, ts="2024-03-01T10:00:00Z")
    await fleet.ok("meter-1", "alarm.publish", key="door", state=1, ts="2024-03-01T10:05:00Z")
    await fleet.ok("meter-1", "alarm.publish", key="door", state=0, ts="2024-03-01T10:10:00Z")
    await fleet.ok(
        "meter-1", "alarm.publish", key="door", state=0, ts="2024-03-01T10:15:00Z", republish=True
    )
    history = await fleet.ok("meter-1", "alarm.history", key="door")
    assert [(v["state"], v["ts"][11:16]) for v in history["values"]] == [
        (0, "10:15"),
        (0, "10:10"),
        (1, "10:00"),
    ]


async def test_current_is_the_latest_state_by_ts(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "alarm.publish", key="k", state=2, ts="2024-03-01T10:00:00Z")
    await fleet.ok("meter-1", "alarm.publish", key="k", state=5, ts="2024-03-01T09:00:00Z")
    assert (await fleet.ok("meter-1", "alarm.current", key="k"))["state"] == 2
    at_nine = await fleet.ok("meter-1", "alarm.current", key="k", ts="2024-03-01T09:30:00Z")
    assert at_nine["state"] == 5


async def test_a_batch_takes_its_defaults(fleet: Fleet) -> None:
    await fleet.ok(
        "meter-1",
        "alarm.batch",
        key="door",
        ts="2024-03-01T10:00:00Z",
        data=[{"state": 1}, {"state": 0, "ts": "2024-03-01T11:00:00Z"}, {"key": "fan", "state": 3}],
    )
    assert (await fleet.ok("meter-1", "alarm.current", key="door"))["state"] == 0
    assert (await fleet.ok("meter-1", "alarm.current", key="fan"))["state"] == 3


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"key": "k"}, "state"),
        ({"key": "k", "state": 1.5}, "state"),
        ({"key": "k", "state": "1"}, "state"),
        ({"key": "k", "state": 2**40}, "state"),
        ({"key": "k", "state": 1, "lat": 100}, "lat"),
        ({"key": "k" * 300, "state": 1}, "key"),
    ],
)
async def test_bad_alarms_are_90002(fleet: Fleet, params: dict[str, Any], fragment: str) -> None:
    outcome = await fleet.call("meter-1", "alarm.publish", **params)
    assert outcome["errorCodes"] == [-90002], outcome
    assert fragment in outcome["errorMessages"][0], outcome


async def test_device_cloud_pythons_batch_is_stored(fleet: Fleet) -> None:
    """As Wind River's device-cloud-python sends it: `state: 0` beside the entries (ignored)
    and `republish` in each entry."""
    await fleet.ok(
        "meter-1",
        "alarm.batch",
        key="alarm_batch",
        state=0,
        ts="2024-03-01T10:00:00.500000Z",
        republish=False,
        data=[{"key": "door", "state": 1, "ts": "2024-03-01T10:00:00.100000Z", "msg": "open",
               "republish": False}],
    )  # fmt: skip
    current = await fleet.ok("meter-1", "alarm.current", key="door")
    assert (current["state"], current["msg"]) == (1, "open")


async def test_an_entrys_republish_overrides_the_batchs(fleet: Fleet) -> None:
    entry = {"key": "door", "state": 1}
    await fleet.ok("meter-1", "alarm.batch", ts="2024-03-01T10:00:00Z", data=[entry])
    await fleet.ok(
        "meter-1",
        "alarm.batch",
        ts="2024-03-01T10:05:00Z",
        data=[entry, {**entry, "ts": "2024-03-01T10:06:00Z", "republish": True}],
    )
    history = await fleet.ok("meter-1", "alarm.history", key="door")
    assert [v["ts"][11:16] for v in history["values"]] == ["10:06", "10:00"]


async def test_a_batch_entry_without_a_key_is_named(fleet: Fleet) -> None:
    outcome = await fleet.call(
        "meter-1", "alarm.batch", data=[{"key": "k", "state": 1}, {"state": 2}]
    )
    assert outcome["errorCodes"] == [-90002], outcome
    assert "data.1 has no key" in outcome["errorMessages"][0], outcome
    assert await fleet.code("meter-1", "alarm.current", key="k") == -90008


@pytest.mark.parametrize(
    ("who", "thing", "expected"),
    [
        ("meter-1", "meter-2", -90003),
        ("admin@acme", "meter-2", 0),
        ("admin@acme", "pump-9", -90008),
        ("user@globex", "meter-1", -90008),
    ],
)
async def test_tenancy(fleet: Fleet, who: str, thing: str, expected: int) -> None:
    outcome = await fleet.call(who, "alarm.publish", thingKey=thing, key="k", state=1)
    if expected == 0:
        assert outcome["success"] is True, outcome
    else:
        assert outcome["errorCodes"] == [expected], outcome
