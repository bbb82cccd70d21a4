"""Several gateways behind one broker on one DuckLake (issue 15, SPEC §8).

Real parts: a Mosquitto from the repo's config on a free port, a private PostgreSQL holding the
lake's catalog and the identity tables, the lake's Parquet files in a shared directory, and
gateways subscribed with `--shared-group` (`$share/NAME/...`), each its own `Gateway` with its
own in-memory DuckDB, as separate processes would be.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.common import GatewayProcess, free_port
from devtools.broker import Broker
from gateway.settings import Settings
from tests.conftest import LakePool
from tests.harness import Harness
from tests.support import GatewayThread, MqttClient, ws_client
from tests.test_faults import Device

PASSWORD = "correct horse battery"
REQUESTS = 200
KILLED_LOAD = 900  # requests sent while a gateway is killed and restarted
DEVICES = 10  # the load's senders, each its own MQTT namespace (answered in order)


@pytest.fixture
def provisioned_lake(lake: dict[str, Any]) -> dict[str, Any]:
    """The lake with an org and a super-ops user, made through the identity port."""
    h = Harness(**lake)
    try:
        h.identity.create_org("acme")
        h.identity.create_user("ops@acme", "acme", PASSWORD, "super-ops")
    finally:
        h.close()
    return lake


@contextlib.contextmanager
def two_gateway_pool(broker: Broker, lake: dict[str, Any]) -> Iterator[list[GatewayThread]]:
    """gw-a and gw-b on the lake, sharing the requests (`--shared-group pool`), each with a
    WebSocket listener of its own; stopped (every record committed) at the end."""
    running: list[GatewayThread] = []
    try:
        for name in ("gw-a", "gw-b"):
            settings = Settings(
                mqtt_url=broker.url_for_gateway,
                ws_port=0,
                instance_name=name,
                shared_group="pool",
                **lake,
            )
            running.append(GatewayThread(settings).start())
        yield running
    finally:
        for thread in running:
            thread.stop()


@pytest.fixture
def gateways(broker: Broker, provisioned_lake: dict[str, Any]) -> Iterator[list[GatewayThread]]:
    with two_gateway_pool(broker, provisioned_lake) as running:
        yield running


def stored_calls(lake: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(id, processed_by, request) of every `diag` record in the lake, read afresh."""
    h = Harness(**lake)
    try:
        rows = (
            h.database.cursor()
            .execute(
                "SELECT CAST(id AS VARCHAR), processed_by, request FROM usage_log"
                " WHERE service = 'diag'"
            )
            .fetchall()
        )
    finally:
        h.close()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def load_two_gateways(broker: Broker, gateways: list[GatewayThread]) -> tuple[str, Counter[str]]:
    """REQUESTS QoS 1 requests in flight at once through the pool; the session used, and how
    often each marker was answered successfully."""
    client = MqttClient(broker.port, f"dev-{secrets.token_hex(3)}")
    try:
        client.subscribe(f"reply/{client.client_id}/#")
        login = client.login("ops@acme", PASSWORD)
        session = login["auth"]["params"]["sessionId"]
        markers = [f"m{i}" for i in range(REQUESTS)]
        for marker in markers:  # all in flight at once, QoS 1
            client.publish(
                f"api/{client.client_id}/req",
                {"auth": {"sessionId": session}, marker: {"command": "diag.ping"}},
            )
        answered: Counter[str] = Counter()
        for _ in markers:
            reply = json.loads(client.receive().payload)
            answered.update(key for key, outcome in reply.items() if outcome.get("success"))
        assert client.nothing_received(0.5)
    finally:
        client.close()
    return session, answered


def test_two_gateways_answer_and_log_every_request_once(
    broker: Broker, gateways: list[GatewayThread], provisioned_lake: dict[str, Any]
) -> None:
    _, answered = load_two_gateways(broker, gateways)
    for thread in gateways:
        thread.stop()  # every record committed

    markers = [f"m{i}" for i in range(REQUESTS)]
    assert answered == Counter(markers)  # each answered once, successfully
    calls = stored_calls(provisioned_lake)
    logged = Counter(
        marker for _, _, request in calls for marker in markers if f'"{marker}"' in request
    )
    assert logged == Counter(markers)  # each logged once
    assert len({record_id for record_id, _, _ in calls}) == len(calls)
    assert {by for _, by, _ in calls} == {"gw-a", "gw-b"}  # the broker spread them


def test_every_gateway_lists_the_same_count_once_the_writers_committed(
    broker: Broker, gateways: list[GatewayThread]
) -> None:
    session, _ = load_two_gateways(broker, gateways)
    for thread in gateways:
        assert thread.gateway is not None
        assert thread.gateway.assembly.storage.usage.flush()
    counts = []
    for thread in gateways:  # each asked over its own WebSocket
        with ws_client(thread.ws_url) as client:
            reply = client.send(
                {
                    "auth": {"sessionId": session},
                    "l": {"command": "usage.api.list", "params": {"service": "diag"}},
                }
            )
        counts.append(reply["l"]["params"]["count"])
    assert counts == [REQUESTS, REQUESTS]


# -- a gateway killed mid-load ------------------------------------------------------------------


def gateway_process(
    broker: Broker, lake: dict[str, Any], name: str, http_port: int = -1
) -> GatewayProcess:
    return GatewayProcess(
        lake["db"],
        mqtt_url=broker.url_for_gateway,
        instance_name=name,
        extra_env={
            "TR50GW_DATA_PATH": lake["data_path"],
            "TR50GW_SHARED_GROUP": "pool",
            "TR50GW_DURABLE_REPLIES": "true",
            "TR50GW_HTTP_PORT": str(http_port),
        },
    )


def catalog_rollbacks(http_port: int) -> float:
    """`tr50gw_lake_catalog_rollbacks_total` from a gateway's /metrics."""
    url = f"http://127.0.0.1:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read().decode()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "tr50gw_lake_catalog_rollbacks_total":
                return float(sample.value)
    raise AssertionError("no tr50gw_lake_catalog_rollbacks_total on /metrics")


def logged_keys(lake: dict[str, Any]) -> Counter[str]:
    """How often each envelope key of a `diag` record is in the lake."""
    return Counter(next(iter(json.loads(request))) for _, _, request in stored_calls(lake))


@pytest.fixture(scope="module", params=[2, 3], ids=["2-gateways", "3-gateways"])
def killed_mid_load(request: pytest.FixtureRequest, lakes: LakePool) -> Iterator[dict[str, Any]]:
    """Two, then three gateways with --durable-replies share the requests of several devices;
    gw-2 is SIGKILLed a third of the way through and started again (same instance name, so the
    same persistent MQTT session) two thirds of the way through. What was answered, what was
    logged (once per count for the module's tests: about ten seconds each)."""
    with Broker() as broker:
        broker.start()
        yield kill_mid_load(broker, lakes.take(), request.param)


def kill_mid_load(broker: Broker, lake: dict[str, Any], count: int) -> dict[str, Any]:
    http_port = free_port()
    gateways = {
        name: gateway_process(broker, lake, name, http_port if name == "gw-1" else -1)
        for name in [f"gw-{number}" for number in range(1, count + 1)]
    }
    for process in gateways.values():
        process.wait_ready()
    devices = [Device(broker.port) for _ in range(DEVICES)]
    rollbacks_before = catalog_rollbacks(http_port)
    keys = [f"k{n}" for n in range(KILLED_LOAD)]
    restarted: list[GatewayProcess] = []
    missing: set[str] = set()
    try:
        for number, key in enumerate(keys):
            devices[number % DEVICES].send(key)
            if number == KILLED_LOAD // 3:
                gateways["gw-2"].process.send_signal(signal.SIGKILL)
                gateways["gw-2"].process.wait(10)
            if number == 2 * KILLED_LOAD // 3:
                restarted.append(gateway_process(broker, lake, "gw-2"))
            time.sleep(0.004)
        restarted[0].wait_ready()
        for index, device in enumerate(devices):
            missing |= device.wait_for(set(keys[index::DEVICES]), timeout=60)
        time.sleep(0.5)  # a reply sent twice, were there one
        answered = Counter(key for device in devices for key, _ in device.replies)
        time.sleep(1.0)  # PostgreSQL's statistics are reported about once a second
        rollbacks = catalog_rollbacks(http_port) - rollbacks_before
    finally:
        for device in devices:
            device.close()
        for process in [*gateways.values(), *restarted]:
            process.stop()  # every record committed
    logged = logged_keys(lake)
    print(
        f"answered {len(answered)} of {len(keys)}, logged {len(logged)},"
        f" {sum(logged.values()) - len(logged)} twice, {rollbacks:.0f} catalog rollbacks"
    )
    return {
        "keys": set(keys),
        "missing": missing,
        "answered": answered,
        "logged": logged,
        "restarted lines": restarted[0].lines,
        "catalog rollbacks": rollbacks,
    }


def test_every_request_is_answered_though_a_gateway_is_killed_and_restarted(
    killed_mid_load: dict[str, Any],
) -> None:
    """Those the broker had handed the dead gateway and it had not acknowledged wait in its
    session and are answered by it after the restart."""
    assert killed_mid_load["missing"] == set()


def test_every_request_is_logged_though_a_gateway_is_killed_and_restarted(
    killed_mid_load: dict[str, Any],
) -> None:
    """--durable-replies: a request is acknowledged only once its record is committed, so the
    broker hands every request the killed gateway had not logged to it again."""
    assert set(killed_mid_load["logged"]) == killed_mid_load["keys"]


def test_no_request_is_logged_twice_though_a_gateway_is_killed_and_restarted(
    killed_mid_load: dict[str, Any],
) -> None:
    """A request logged by the killed gateway and redelivered to it after the restart is
    recognised (tests/test_redelivery_after_restart.py shows that case alone)."""
    assert [key for key, count in killed_mid_load["logged"].items() if count > 1] == []


def test_commits_lost_to_another_gateway_are_counted(killed_mid_load: dict[str, Any]) -> None:
    """Gateways committing per reply race for the catalog: DuckLake retries the losing commits
    inside the COMMIT (the writers never see them), and /metrics counts them as the catalog
    database's rolled-back transactions (tr50gw_lake_catalog_rollbacks_total)."""
    assert killed_mid_load["catalog rollbacks"] > 0
