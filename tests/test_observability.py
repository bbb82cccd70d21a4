"""`GET /healthz` and `GET /metrics` (SPEC §7) against a real gateway: the metrics parsed with
prometheus_client's own parser, the health turned bad by a real storage fault."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import GatewayThread, Tenants, ws_client


@pytest.fixture
def gateway(start_gateway: Callable[..., GatewayThread]) -> GatewayThread:
    return start_gateway(http_port=0)


def get(gateway: GatewayThread, path: str, **headers: str) -> tuple[int, str, bytes]:
    """Status, content type and body of a GET."""
    assert gateway.gateway is not None and gateway.gateway.http_port
    url = f"http://127.0.0.1:{gateway.gateway.http_port}{path}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http only
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def samples(gateway: GatewayThread) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `/metrics`: (name, sorted labels) -> value."""
    _, _, body = get(gateway, "/metrics")
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def calls(command: str, transport: str, outcome: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"command": command, "transport": transport, "outcome": outcome}
    return ("tr50gw_calls_total", tuple(sorted(labels.items())))


def flushed(gateway: GatewayThread) -> None:
    assert gateway.gateway is not None
    assert gateway.gateway.assembly.storage.usage.flush()


# -- /healthz -------------------------------------------------------------------------------------
def test_healthz_is_ok_while_the_writers_store(gateway: GatewayThread) -> None:
    status, content_type, body = get(gateway, "/healthz")
    assert (status, content_type, json.loads(body)) == (
        200,
        "application/json",
        {"status": "ok"},
    )


def test_healthz_is_503_naming_the_writer_that_cannot_store(
    gateway: GatewayThread, tenants: Tenants
) -> None:
    """A real fault: the usage log's table is gone, so the writer's next batch fails."""
    assert gateway.gateway is not None
    storage = gateway.gateway.assembly.storage
    storage.database.cursor().execute("DROP TABLE usage_log")
    with ws_client(gateway.ws_url) as client:
        client.send({"1": {"command": "diag.ping"}})
    storage.usage.flush()
    status, _, body = get(gateway, "/healthz")
    assert (status, json.loads(body)) == (503, {"status": "unhealthy", "failing": ["usage_log"]})


# -- /metrics -------------------------------------------------------------------------------------
def test_metrics_are_prometheus_text(gateway: GatewayThread) -> None:
    status, content_type, _ = get(gateway, "/metrics")
    assert (status, content_type.split(";")[0]) == (200, "text/plain")  # the version: the library's


def test_each_call_is_counted_by_command_transport_and_outcome(gateway: GatewayThread) -> None:
    with ws_client(gateway.ws_url) as client:
        for _ in range(3):
            client.send({"1": {"command": "diag.ping"}, "2": {"command": "session.info"}})
    found = samples(gateway)
    assert (
        found[calls("diag.ping", "ws", "success")],
        found[calls("session.info", "ws", "failure")],
    ) == (3.0, 3.0)


def test_failures_are_counted_by_error_code(gateway: GatewayThread) -> None:
    with ws_client(gateway.ws_url) as client:
        client.send({"1": {"command": "session.info"}, "2": {"command": "diag.ping", "x": 1}})
    labels = (("code", "-90005"), ("transport", "ws"))
    assert samples(gateway)[("tr50gw_call_errors_total", labels)] == 1.0


def test_a_made_up_command_name_is_counted_as_unknown(gateway: GatewayThread) -> None:
    """Label values never come from what a client sent: every name would be a new series."""
    with ws_client(gateway.ws_url) as client:
        client.send({"1": {"command": "made.up"}, "2": {"command": "also.made.up"}})
    names = {labels for (name, labels) in samples(gateway) if name == "tr50gw_calls_total"}
    assert names == {tuple(sorted(calls("unknown", "ws", "failure")[1]))}


def test_a_payload_that_is_no_envelope_is_counted_as_malformed(gateway: GatewayThread) -> None:
    with ws_client(gateway.ws_url) as client:
        client.send("not json")
    assert samples(gateway)[calls("malformed", "ws", "failure")] == 1.0


def test_the_latency_histogram_counts_every_call(gateway: GatewayThread) -> None:
    with ws_client(gateway.ws_url) as client:
        for _ in range(5):
            client.send({"1": {"command": "diag.ping"}})
    count = ("tr50gw_call_duration_seconds_count", (("transport", "ws"),))
    assert samples(gateway)[count] == 5.0


def test_open_websocket_connections_are_a_gauge(gateway: GatewayThread) -> None:
    with ws_client(gateway.ws_url) as first, ws_client(gateway.ws_url) as second:
        first.send({"1": {"command": "diag.ping"}})
        second.send({"1": {"command": "diag.ping"}})
        open_now = samples(gateway)[("tr50gw_open_connections", (("transport", "ws"),))]
    assert open_now == 2.0


def test_the_writers_backlog_is_a_gauge_per_table(gateway: GatewayThread) -> None:
    flushed(gateway)
    tables = {
        dict(labels)["table"]
        for (name, labels) in samples(gateway)
        if name == "tr50gw_writer_backlog"
    }
    assert tables == {
        "usage_log",
        "property_values",
        "location_values",
        "alarm_values",
        "attribute_values",
        "log_entries",
    }


def test_the_writers_commits_are_counted_per_table(gateway: GatewayThread) -> None:
    with ws_client(gateway.ws_url) as client:
        client.send({"1": {"command": "diag.ping"}})
    flushed(gateway)
    assert samples(gateway)[("tr50gw_writer_commits_total", (("table", "usage_log"),))] >= 1.0


def test_one_gateway_on_a_file_counts_no_commit_conflicts(gateway: GatewayThread) -> None:
    with ws_client(gateway.ws_url) as client:
        client.send({"1": {"command": "diag.ping"}})
    flushed(gateway)
    conflicts = ("tr50gw_writer_commit_conflicts_total", (("table", "usage_log"),))
    assert samples(gateway)[conflicts] == 0.0


def test_a_file_has_no_catalog_rollbacks_series(gateway: GatewayThread) -> None:
    """Only a lake has a catalog (tests/test_several_gateways.py counts its rollbacks)."""
    names = {name for name, _ in samples(gateway)}
    assert "tr50gw_lake_catalog_rollbacks_total" not in names


# -- every route is logged ------------------------------------------------------------------------
def records_of(gateway: GatewayThread, command: str) -> list[tuple[Any, ...]]:
    flushed(gateway)
    assert gateway.gateway is not None
    cursor = gateway.gateway.assembly.storage.database.cursor()
    return cursor.execute(
        "SELECT transport, success, request FROM usage_log WHERE service = 'rest' AND command = ?",
        [command],
    ).fetchall()


@pytest.mark.parametrize("route", ["healthz", "metrics"])
def test_each_route_call_is_a_usage_record(gateway: GatewayThread, route: str) -> None:
    get(gateway, f"/{route}?probe=1")
    ((transport, success, request),) = records_of(gateway, route)
    assert (transport, success, json.loads(request)) == (
        "http",
        True,
        {"method": "GET", "path": f"/{route}", "query": {"probe": "1"}},
    )


@pytest.mark.parametrize("route", ["healthz", "no/such/route"])
def test_a_secret_in_a_query_string_stays_out_of_the_log(
    gateway: GatewayThread, route: str
) -> None:
    get(gateway, f"/{route}?token=s3cr3t-value&sessionId=s3cr3t-too")
    flushed(gateway)
    assert gateway.gateway is not None
    cursor = gateway.gateway.assembly.storage.database.cursor()
    ((found,),) = cursor.execute(
        "SELECT count(*) FROM usage_log WHERE contains(request, 's3cr3t')"
    ).fetchall()
    assert found == 0


def test_route_calls_are_counted_in_the_metrics_too(gateway: GatewayThread) -> None:
    get(gateway, "/healthz")
    assert samples(gateway)[calls("rest.healthz", "http", "success")] == 1.0
