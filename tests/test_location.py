"""location.publish / .batch / .current / .history (SPEC §6) over a real DuckDB file."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import Fleet

FIX = {"lat": 26.394056, "lng": -80.11554}


async def test_a_thing_publishes_its_location_and_reads_it_back(fleet: Fleet) -> None:
    await fleet.ok(
        "meter-1",
        "location.publish",
        **FIX,
        heading=90,
        speed=45,
        fixAcc=8,
        fixType="gps",
        city="Boca Raton",
        corrId="c1",
    )
    assert await fleet.ok("meter-1", "location.current") == {
        **FIX,
        "heading": 90.0,
        "speed": 45.0,
        "fixAcc": 8.0,
        "fixType": "gps",
        "city": "Boca Raton",
        "ts": "2024-03-01T12:00:00.000Z",
        "corrId": "c1",
    }


async def test_current_is_the_latest_location_by_ts(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "location.publish", lat=1, lng=1, ts="2024-03-01T10:00:00Z")
    await fleet.ok("meter-1", "location.publish", lat=2, lng=2, ts="2024-03-01T09:00:00Z")
    current = await fleet.ok("meter-1", "location.current")
    assert (current["lat"], current["ts"]) == (1.0, "2024-03-01T10:00:00.000Z")


async def test_a_batch_and_the_history_newest_first(fleet: Fleet) -> None:
    await fleet.ok(
        "meter-1",
        "location.batch",
        ts="2024-03-01T10:00:00Z",
        data=[{"lat": 1, "lng": 1}, {"lat": 2, "lng": 2, "ts": "2024-03-01T11:00:00Z"}],
    )
    history = await fleet.ok("meter-1", "location.history", records=5)
    assert [(value["lat"], value["ts"]) for value in history["values"]] == [
        (2.0, "2024-03-01T11:00:00.000Z"),
        (1.0, "2024-03-01T10:00:00.000Z"),
    ]


async def test_device_cloud_pythons_batch_is_stored(fleet: Fleet) -> None:
    """As Wind River's device-cloud-python sends it: labels as the batch's `lat`/`lng`, every
    optional field of an entry present, null when unset, `debounce` included."""
    entry = dict.fromkeys(
        ("city", "corrId", "country", "debounce", "state", "street", "streetNumber", "zipCode")
    )
    entry |= {"lat": 45.5, "lng": -73.6, "heading": 90.0, "altitude": 30.0, "speed": 12.0,
              "fixAcc": 5.0, "fixType": "gps", "ts": "2024-03-01T10:00:00.100000Z"}  # fmt: skip
    await fleet.ok(
        "meter-1",
        "location.batch",
        lat="location_batch",
        lng="Location Batch",
        ts="2024-03-01T10:00:00.500000Z",
        data=[entry],
    )
    current = await fleet.ok("meter-1", "location.current")
    assert (current["lat"], current["lng"], current["fixType"]) == (45.5, -73.6, "gps")


async def test_a_thing_without_a_location_has_no_current_one(fleet: Fleet) -> None:
    assert await fleet.code("meter-1", "location.current") == -90008


@pytest.mark.parametrize(
    ("who", "thing", "expected"),
    [
        ("meter-1", "meter-2", -90003),
        ("user@acme", "meter-1", 0),
        ("user@acme", "pump-9", -90008),
        ("user@globex", "meter-1", -90008),
    ],
)
async def test_tenancy(fleet: Fleet, who: str, thing: str, expected: int) -> None:
    outcome = await fleet.call(who, "location.publish", thingKey=thing, **FIX)
    if expected == 0:
        assert outcome["success"] is True, outcome
    else:
        assert outcome["errorCodes"] == [expected], outcome


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"lat": 1}, "lng"),
        ({"lat": 91, "lng": 0}, "lat"),
        ({"lat": 0, "lng": -181}, "lng"),
        ({"lat": "1", "lng": 0}, "lat: Input should be a valid number"),
        ({"lat": 0, "lng": 0, "mcc": 310}, "mcc"),
        ({"lat": 0, "lng": 0, "city": "x" * 300}, "city"),
    ],
)
async def test_bad_locations_are_90002(
    fleet: Fleet,
    params: dict[str, Any],
    fragment: str,
) -> None:
    outcome = await fleet.call("meter-1", "location.publish", **params)
    assert outcome["errorCodes"] == [-90002], outcome
    assert fragment in outcome["errorMessages"][0], outcome


async def test_a_bad_batch_entry_is_named_and_nothing_is_stored(fleet: Fleet) -> None:
    outcome = await fleet.call(
        "meter-1", "location.batch", data=[{"lat": 1, "lng": 1}, {"lat": 1, "lng": 999}]
    )
    assert outcome["errorCodes"] == [-90002], outcome
    assert "data.1.lng" in outcome["errorMessages"][0], outcome
    assert await fleet.code("meter-1", "location.current") == -90008
