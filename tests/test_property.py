"""property.publish / .current / .history (SPEC §6): shapes, tenancy, ordering by `ts`, bad input,
and the usage record of each call, over a real DuckDB file."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import Fleet


async def test_a_thing_publishes_and_reads_its_own_value(fleet: Fleet) -> None:
    assert await fleet.ok("meter-1", "property.publish", key="temp", value=21.5) is None
    current = await fleet.ok("meter-1", "property.current", key="temp")
    assert current == {"value": 21.5, "ts": "2024-03-01T12:00:00.000Z"}


async def test_current_is_the_latest_by_ts_not_by_arrival(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "property.publish", key="temp", value=2, ts="2024-03-01T10:00:00Z")
    await fleet.ok("meter-1", "property.publish", key="temp", value=1, ts="2024-03-01T09:00:00Z")
    current = await fleet.ok("meter-1", "property.current", key="temp")
    assert current == {"value": 2.0, "ts": "2024-03-01T10:00:00.000Z"}


async def test_current_at_a_timestamp_is_the_value_at_or_before_it(fleet: Fleet) -> None:
    for hour, value in ((8, 1), (9, 2), (10, 3)):
        await fleet.ok(
            "meter-1", "property.publish", key="k", value=value, ts=f"2024-03-01T{hour:02}:00:00Z"
        )
    current = await fleet.ok("meter-1", "property.current", key="k", ts="2024-03-01T09:30:00Z")
    assert current == {"value": 2.0, "ts": "2024-03-01T09:00:00.000Z"}


async def test_corr_id_comes_back_with_the_value(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "property.publish", key="k", value=7, corrId="xyz")
    assert (await fleet.ok("meter-1", "property.current", key="k"))["corrId"] == "xyz"


async def test_history_is_newest_first_and_capped_by_records(fleet: Fleet) -> None:
    for minute in range(5):
        await fleet.ok(
            "meter-1", "property.publish", key="k", value=minute, ts=f"2024-03-01T11:0{minute}:00Z"
        )
    history = await fleet.ok("meter-1", "property.history", key="k", records=3)
    assert history == {
        "values": [
            {"value": 4.0, "ts": "2024-03-01T11:04:00.000Z"},
            {"value": 3.0, "ts": "2024-03-01T11:03:00.000Z"},
            {"value": 2.0, "ts": "2024-03-01T11:02:00.000Z"},
        ]
    }


async def test_history_split_gives_two_arrays(fleet: Fleet) -> None:
    for minute in range(2):
        await fleet.ok(
            "meter-1", "property.publish", key="k", value=minute, ts=f"2024-03-01T11:0{minute}:00Z"
        )
    history = await fleet.ok("meter-1", "property.history", key="k", split=True)
    assert history == {
        "values": [1.0, 0.0],
        "timestamps": ["2024-03-01T11:01:00.000Z", "2024-03-01T11:00:00.000Z"],
    }


async def test_history_window_by_start_end_and_by_last(fleet: Fleet) -> None:
    for hour in (9, 10, 11):
        await fleet.ok(
            "meter-1", "property.publish", key="k", value=hour, ts=f"2024-03-01T{hour:02}:30:00Z"
        )
    window = await fleet.ok(
        "meter-1",
        "property.history",
        key="k",
        start="2024-03-01T10:00:00Z",
        end="2024-03-01T11:00:00Z",
    )
    assert [value["value"] for value in window["values"]] == [10.0]
    last = await fleet.ok("meter-1", "property.history", key="k", last="1h")  # clock: 12:00
    assert [value["value"] for value in last["values"]] == [11.0]


async def test_an_unknown_property_has_no_current_value(fleet: Fleet) -> None:
    assert await fleet.code("meter-1", "property.current", key="nothing") == -90008


# Tenancy (SPEC §6): who x whose thing x publish/read. meter-1 and meter-2 are acme's things,
# pump-9 is globex's; "ghost" is no thing at all.
TENANCY = [
    ("meter-1", None, 0),
    ("meter-1", "meter-1", 0),
    ("meter-1", "meter-2", -90003),
    ("meter-1", "pump-9", -90003),
    ("user@acme", "meter-1", 0),
    ("user@acme", "pump-9", -90008),
    ("user@acme", "ghost", -90008),
    ("user@acme", None, -90002),
    ("admin@acme", "meter-2", 0),
    ("admin@acme", "pump-9", -90008),
    ("ops@acme", "meter-1", 0),
    ("ops@acme", "pump-9", -90008),
    ("user@globex", "pump-9", 0),
    ("user@globex", "meter-1", -90008),
]


@pytest.mark.parametrize(("who", "thing", "expected"), TENANCY)
@pytest.mark.parametrize("command", ["property.publish", "property.history"])
async def test_tenancy(
    fleet: Fleet, who: str, thing: str | None, expected: int, command: str
) -> None:
    params: dict[str, Any] = {"key": "k"}
    if command == "property.publish":
        params["value"] = 1
    if thing is not None:
        params["thingKey"] = thing
    outcome = await fleet.call(who, command, **params)
    if expected == 0:
        assert outcome["success"] is True, outcome
    else:
        assert outcome["errorCodes"] == [expected], outcome


async def test_a_value_published_by_a_user_is_the_things_value(fleet: Fleet) -> None:
    await fleet.ok("user@acme", "property.publish", thingKey="meter-2", key="k", value=5)
    assert (await fleet.ok("meter-2", "property.current", key="k"))["value"] == 5.0


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"key": "k"}, "value"),
        ({"key": "k", "value": "7"}, "value: Input should be a valid number"),
        ({"key": "k", "value": True}, "value: Input should be a valid number"),
        ({"key": "k", "value": 1, "ts": "1969-12-31T23:59:59Z"}, "out of range"),
        ({"key": "k", "value": 1, "ts": "9001-01-01T00:00:00Z"}, "out of range"),
        ({"key": "k" * 10_000, "value": 1}, "key"),
        ({"key": "", "value": 1}, "key"),
        ({"key": "k", "value": 1, "bogus": 1}, "bogus"),
    ],
)
async def test_bad_publishes_are_90002(fleet: Fleet, params: dict[str, Any], fragment: str) -> None:
    outcome = await fleet.call("meter-1", "property.publish", **params)
    assert outcome["errorCodes"] == [-90002], outcome
    assert fragment in outcome["errorMessages"][0], outcome


@pytest.mark.parametrize("value", [b"1e400", b"NaN", b"Infinity"])
async def test_a_value_json_cannot_hold_is_a_malformed_envelope(fleet: Fleet, value: bytes) -> None:
    """JSON has no NaN or Infinity and 1e400 overflows a double: the whole payload is refused
    (-90010 at the root, logged), before any command could see the value."""
    reply = await fleet.h.raw(
        b'{"auth":{"sessionId":"%s"},"x":{"command":"property.publish",'
        b'"params":{"key":"k","value":%s}}}' % (fleet.sessions["meter-1"].encode(), value)
    )
    assert reply["errorCodes"] == [-90010], reply


async def test_history_records_are_capped_at_5000(fleet: Fleet) -> None:
    assert await fleet.code("meter-1", "property.history", key="k", records=5001) == -90002


async def test_every_property_call_is_a_usage_record(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "property.publish", key="k", value=1)
    await fleet.code("meter-1", "property.publish", key="k", value=1, thingKey="meter-2")
    await fleet.ok("meter-1", "property.history", key="k")
    listing = await fleet.ok(
        "admin@acme", "usage.api.list", who="meter-1", service="property", limit=10
    )
    assert [(r["command"], r["errorCode"]) for r in listing["result"]] == [
        ("history", None),
        ("publish", -90003),
        ("publish", None),
    ]


async def test_a_batch_takes_its_defaults_for_entries_that_omit_them(fleet: Fleet) -> None:
    await fleet.ok(
        "meter-1",
        "property.batch",
        key="temp",
        ts="2024-03-01T10:00:00Z",
        corrId="batch-1",
        data=[
            {"value": 1},
            {"value": 2, "ts": "2024-03-01T11:00:00Z"},
            {"key": "hum", "value": 40, "corrId": "own"},
        ],
    )
    temp = await fleet.ok("meter-1", "property.history", key="temp")
    assert temp["values"] == [
        {"value": 2.0, "ts": "2024-03-01T11:00:00.000Z", "corrId": "batch-1"},
        {"value": 1.0, "ts": "2024-03-01T10:00:00.000Z", "corrId": "batch-1"},
    ]
    hum = await fleet.ok("meter-1", "property.current", key="hum")
    assert hum == {"value": 40.0, "ts": "2024-03-01T10:00:00.000Z", "corrId": "own"}


async def test_device_cloud_pythons_batch_is_stored(fleet: Fleet) -> None:
    """As Wind River's device-cloud-python sends it: a label as `value`, `corrid` per entry."""
    await fleet.ok(
        "meter-1",
        "property.batch",
        key="property_batch",
        value="Property Batch",
        corrId="2024-03-01T10:00:00.500000Z",
        ts="2024-03-01T10:00:00.500000Z",
        data=[
            {"corrid": None, "key": "temp", "ts": "2024-03-01T10:00:00.100000Z", "value": 21.5},
            {"corrid": "c-7", "key": "hum", "ts": "2024-03-01T10:00:00.200000Z", "value": 40},
        ],
    )
    temp = await fleet.ok("meter-1", "property.current", key="temp")
    hum = await fleet.ok("meter-1", "property.current", key="hum")
    assert (temp["corrId"], hum["corrId"]) == ("2024-03-01T10:00:00.500000Z", "c-7")


async def test_a_batch_of_one_value_is_accepted(fleet: Fleet) -> None:
    await fleet.ok("meter-1", "property.batch", data=[{"key": "k", "value": 3}])
    assert (await fleet.ok("meter-1", "property.current", key="k"))["value"] == 3.0


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"data": []}, "data"),
        ({"data": [{"key": "k", "value": 1}] * 5001}, "data"),
        ({"data": [{"key": "k", "value": 1}, {"value": 2}]}, "data.1 has no key"),
        ({"key": "k", "data": [{"value": 1}, {"value": "x"}]}, "data.1.value"),
        (
            {"key": "k", "data": [{"value": 1}, {"value": 2, "ts": "1900-01-01T00:00:00Z"}]},
            "data.1.ts",
        ),
        ({"key": "k", "data": [{"value": 1, "unit": "C"}]}, "data.0.unit"),
    ],
)
async def test_a_bad_batch_names_its_entry_and_stores_nothing(
    fleet: Fleet, params: dict[str, Any], fragment: str
) -> None:
    outcome = await fleet.call("meter-1", "property.batch", **params)
    assert outcome["errorCodes"] == [-90002], outcome
    assert fragment in outcome["errorMessages"][0], outcome
    assert await fleet.code("meter-1", "property.current", key="k") == -90008


async def test_a_batch_for_another_thing_is_refused(fleet: Fleet) -> None:
    params = {"thingKey": "meter-2", "data": [{"key": "k", "value": 1}]}
    assert await fleet.code("meter-1", "property.batch", **params) == -90003


async def test_aggregate_per_hour(fleet: Fleet) -> None:
    for minute, value in ((0, 1), (30, 3), (70, 10)):  # 10:00, 10:30 and 11:10
        ts = f"2024-03-01T{10 + minute // 60:02}:{minute % 60:02}:00Z"
        await fleet.ok("meter-1", "property.publish", key="k", value=value, ts=ts)
    window = {"start": "2024-03-01T09:00:00Z", "end": "2024-03-01T11:59:00Z"}
    avg = await fleet.ok(
        "meter-1", "property.aggregate", key="k", calc="avg", series="hour", **window
    )
    assert avg == {
        "values": [
            {"value": 2.0, "ts": "2024-03-01T10:00:00.000Z"},
            {"value": 10.0, "ts": "2024-03-01T11:00:00.000Z"},
        ]
    }
    count = await fleet.ok(
        "meter-1", "property.aggregate", key="k", calc="count", series="hour", split=True, **window
    )
    assert count == {
        "values": [2.0, 1.0],
        "timestamps": ["2024-03-01T10:00:00.000Z", "2024-03-01T11:00:00.000Z"],
    }


async def test_aggregate_per_day_in_a_zone(fleet: Fleet) -> None:
    # 23:30 UTC on Feb 29 is already March 1 (00:30) in Berlin (UTC+1).
    await fleet.ok("meter-1", "property.publish", key="k", value=5, ts="2024-02-29T23:30:00Z")
    await fleet.ok("meter-1", "property.publish", key="k", value=7, ts="2024-03-01T10:00:00Z")
    total = await fleet.ok(
        "meter-1",
        "property.aggregate",
        key="k",
        calc="sum",
        series="day",
        timezone="Europe/Berlin",
        last="2d",
    )
    assert total == {"values": [{"value": 12.0, "ts": "2024-03-01T00:00:00.000+01:00"}]}


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"calc": "median", "series": "hour"}, "calc"),
        ({"calc": "avg", "series": "minute"}, "series"),
        ({"calc": "avg", "series": "hour", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"calc": "avg", "series": "hour", "start": "1970-01-01T00:00:00Z"}, "too many buckets"),
    ],
)
async def test_bad_aggregates_are_90002(
    fleet: Fleet, params: dict[str, Any], fragment: str
) -> None:
    outcome = await fleet.call("meter-1", "property.aggregate", key="k", **params)
    assert outcome["errorCodes"] == [-90002], outcome
    assert fragment in outcome["errorMessages"][0], outcome


async def test_current_values_are_rebuilt_for_a_file_written_before_they_were_kept(
    fleet: Fleet,
) -> None:
    """A file whose history has values but whose `property_current` is empty (written by an
    older version) gets its current values from the history when opened."""
    await fleet.ok("meter-1", "property.publish", key="k", value=1, ts="2024-03-01T10:00:00Z")
    await fleet.ok("meter-1", "property.publish", key="k", value=2, ts="2024-03-01T11:00:00Z")
    await fleet.ok("meter-1", "property.publish", key="k", value=0, ts="2024-03-01T09:00:00Z")
    fleet.h.database.cursor().execute("DELETE FROM property_current")
    fleet.h.restart()
    session = await fleet.h.login("user@acme", "pw-for-tests")
    reply = await fleet.h.as_session(
        session, c={"command": "property.current", "params": {"thingKey": "meter-1", "key": "k"}}
    )
    assert reply["c"]["params"] == {"value": 2.0, "ts": "2024-03-01T11:00:00.000Z"}
