"""What the round-trip benchmark measures of the broker plugin (bench/roundtrip.py), in small.

The echo responder and the load generator through real brokers: anonymous clients with and
without the plugin, and a device authenticated at CONNECT whose replies the plugin delivers
(bench.echo answering on reply/<client id>/..., as the gateway does); and the rows the suite
makes of the floors' runs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from bench import load
from bench.roundtrip import (
    BARE_GATEWAY,
    FLOOR,
    GATEWAY,
    PLUGIN_FLOOR,
    PLUGIN_GATEWAY,
    THING_FLOOR,
    THING_GATEWAY,
    Case,
    EchoProcess,
    _compare,
    allow_things,
)
from devtools.broker import Broker


def run(url: str, client_id: str, qos: int, *extra: str) -> dict[str, Any]:
    argv = ["mqtt", "--url", url, "--client-id", client_id, "--qos", str(qos), "--window", "10"]
    argv += ["--requests", "200", "--warmup", "0", "--duration", "20", *extra]
    return load.wait_result(load.spawn(argv), 60)


def assert_all_answered(result: dict[str, Any]) -> None:
    assert result["requests"] == 200, result
    assert result["answered"] == result["sent"] >= 200, result
    assert result["lost"] == 0 and result["errors"] == 0, result


@pytest.mark.parametrize("plugin", [False, True], ids=["without-plugin", "with-plugin"])
def test_anonymous_clients_are_answered_with_or_without_the_plugin(plugin: bool) -> None:
    with (
        Broker(plugin=plugin) as broker,
        EchoProcess("mqtt", "--url", broker.url_for_gateway),
    ):
        for qos in (0, 1):
            assert_all_answered(run(f"mqtt://127.0.0.1:{broker.port}", f"anon{qos}", qos))


def test_a_device_authenticated_at_connect_gets_its_replies_unsubscribed() -> None:
    with Broker() as broker, EchoProcess("mqtt", "--url", broker.url_for_gateway):
        token = quote(allow_things(broker), safe="")
        for qos in (0, 1):
            thing = f"thing-{qos}"
            url = f"mqtt://{thing}:{token}@127.0.0.1:{broker.port}"
            assert_all_answered(run(url, thing, qos, "--device"))
        with pytest.raises(load.LoadError, match="refused"):
            run(f"mqtt://thing-x:wrong@127.0.0.1:{broker.port}", "thing-x", 1, "--device")


def side(rps: float, p50: float = 1.0) -> dict[str, Any]:
    """A side as `_mean_runs` makes it."""
    return {
        "rps": rps,
        "p50_ms": p50,
        "p90_ms": p50,
        "p99_ms": p50,
        "requests": 100,
        "errors": 0,
        "lost": 0,
        "others_cpu": 0.0,
        "broker_cpu_us": 30.0,
        "responder_cpu_us": 90.0,
        "spread": 0.0,
        "rps_min": rps,
        "rps_max": rps,
        "runs_used": 2,
        "runs": 2,
    }


PING = Case("mqtt", "diag.ping", 100, qos=1)
PING_SIDES = {
    PLUGIN_FLOOR: side(960),
    FLOOR: side(1000),
    THING_FLOOR: side(900),
    BARE_GATEWAY: side(500),
    GATEWAY: side(480),
    THING_GATEWAY: side(470),
}


def ping_rows() -> dict[str, Any]:
    return {row.side: row for row in _compare(PING, PING_SIDES)}


def test_a_ping_case_has_a_row_per_side_and_the_gateways_plugin_cost() -> None:
    assert list(ping_rows()) == [
        FLOOR,
        PLUGIN_FLOOR,
        THING_FLOOR,
        BARE_GATEWAY,
        PLUGIN_GATEWAY,
        THING_GATEWAY,
        GATEWAY,
    ]


@pytest.mark.parametrize(
    ("row", "ratio", "met", "base"),
    [
        (PLUGIN_FLOOR, 0.96, True, FLOOR),
        (THING_FLOOR, 0.9, False, FLOOR),
        (PLUGIN_GATEWAY, 0.96, True, BARE_GATEWAY),
        (THING_GATEWAY, 0.94, False, BARE_GATEWAY),
    ],
)
def test_the_plugins_cost_is_a_ratio_to_the_same_side_without_it(
    row: str, ratio: float, met: bool, base: str
) -> None:
    found = ping_rows()[row]
    assert (found.metrics["ratio"], found.met, found.target) == (
        ratio,
        met,
        f"ratio to {base} >= 0.95",
    )


def test_the_gateway_is_compared_with_the_floor_behind_its_own_kind_of_broker() -> None:
    gateway = ping_rows()[GATEWAY]
    assert (gateway.metrics["ratio"], gateway.target) == (0.5, "ratio >= 0.70")


def test_the_gateway_without_the_plugin_is_compared_with_the_floor_without_it() -> None:
    bare = ping_rows()[BARE_GATEWAY]
    assert (bare.metrics["ratio"], bare.met) == (0.5, None)


def test_cases_without_the_plugin_comparison_keep_one_floor() -> None:
    listing = Case("mqtt", "usage.api.list", 1, qos=0)
    rows = _compare(listing, {PLUGIN_FLOOR: side(1000, 0.4), GATEWAY: side(100, 0.6)})
    assert [(row.side, row.metrics.get("p50_diff_ms")) for row in rows] == [
        (PLUGIN_FLOOR, None),
        (GATEWAY, pytest.approx(0.2)),
    ]


def test_a_listing_case_runs_its_floor_around_the_gateway() -> None:
    listing = Case("mqtt", "usage.api.list", 1, qos=0)
    assert listing.turns(quick=False) == (PLUGIN_FLOOR, GATEWAY, PLUGIN_FLOOR)


def test_a_ping_case_runs_its_sides_symmetrically_around_the_gateway_thing() -> None:
    turns = Case("mqtt", "diag.ping", 1, qos=0).turns(quick=False)
    assert (turns == turns[::-1], turns[len(turns) // 2]) == (True, THING_GATEWAY)


def test_a_quick_ping_case_runs_every_side_once_and_the_first_again() -> None:
    turns = Case("mqtt", "diag.ping", 1, qos=0).turns(quick=True)
    assert sorted(turns) == sorted([*PING_SIDES, PLUGIN_FLOOR])


def test_a_websocket_case_runs_its_floor_around_the_gateway() -> None:
    assert Case("ws", "diag.ping", 1).turns(quick=True) == (FLOOR, GATEWAY, FLOOR)
