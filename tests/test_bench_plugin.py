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
    FLOOR,
    GATEWAY,
    PLUGIN_FLOOR,
    THING_FLOOR,
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
    """A floor as `_mean_floor` makes it, or a gateway run."""
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


def test_plugin_rows_compare_with_the_floor_and_the_gateway_with_floor_plugin() -> None:
    case = Case("mqtt", "diag.ping", 100, qos=1)
    floors = {PLUGIN_FLOOR: side(960), FLOOR: side(1000), THING_FLOOR: side(900)}
    rows = {row.side: row for row in _compare(case, floors, side(480))}
    assert list(rows) == [FLOOR, PLUGIN_FLOOR, THING_FLOOR, GATEWAY]
    assert "ratio" not in rows[FLOOR].metrics
    assert rows[PLUGIN_FLOOR].metrics["ratio"] == 0.96 and rows[PLUGIN_FLOOR].met
    assert rows[THING_FLOOR].metrics["ratio"] == 0.9 and rows[THING_FLOOR].met is False
    assert rows[PLUGIN_FLOOR].target == rows[THING_FLOOR].target == "ratio to floor >= 0.95"
    assert rows[GATEWAY].metrics["ratio"] == 0.5  # to floor+plugin: the gateway's own broker
    assert rows[GATEWAY].metrics["broker_cpu_us"] == 30.0


def test_cases_without_the_plugin_comparison_keep_one_floor() -> None:
    listing = Case("mqtt", "usage.api.list", 1, qos=0)
    assert listing.turns(quick=False) == (PLUGIN_FLOOR, GATEWAY, PLUGIN_FLOOR)
    rows = _compare(listing, {PLUGIN_FLOOR: side(1000, 0.4)}, side(100, 0.6))
    assert [row.side for row in rows] == [PLUGIN_FLOOR, GATEWAY]
    assert rows[1].metrics["p50_diff_ms"] == pytest.approx(0.2) and rows[1].met
    ping = Case("mqtt", "diag.ping", 1, qos=0)
    turns = ping.turns(quick=False)
    assert turns == turns[::-1] and turns[len(turns) // 2] == GATEWAY  # symmetric
    assert Case("ws", "diag.ping", 1).turns(quick=True) == (FLOOR, GATEWAY, FLOOR)
