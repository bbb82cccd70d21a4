"""Several gateways behind one broker on one DuckLake (issue 15, SPEC §8).

Real parts: a Mosquitto from the repo's config on a free port, a private PostgreSQL holding the
lake's catalog and the identity tables, the lake's Parquet files in a shared directory, and
gateways subscribed with `--shared-group` (`$share/NAME/...`), each its own `Gateway` with its
own in-memory DuckDB, as separate processes would be.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.broker import Broker
from gateway.settings import Settings
from tests.harness import Harness
from tests.support import GatewayThread, MqttClient

PASSWORD = "correct horse battery"
REQUESTS = 200


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


@pytest.fixture
def gateways(broker: Broker, provisioned_lake: dict[str, Any]) -> Iterator[list[GatewayThread]]:
    running: list[GatewayThread] = []
    try:
        for name in ("gw-a", "gw-b"):
            settings = Settings(
                mqtt_url=broker.url_for_gateway,
                ws_port=-1,
                instance_name=name,
                shared_group="pool",
                **provisioned_lake,
            )
            running.append(GatewayThread(settings).start())
        yield running
    finally:
        for thread in running:
            thread.stop()


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


def test_two_gateways_answer_and_log_every_request_once(
    broker: Broker, gateways: list[GatewayThread], provisioned_lake: dict[str, Any]
) -> None:
    client = MqttClient(broker.port, f"dev-{secrets.token_hex(3)}")
    try:
        client.subscribe(f"reply/{client.client_id}/#")
        login = client.call(
            {
                "auth": {
                    "command": "api.authenticate",
                    "params": {"username": "ops@acme", "password": PASSWORD},
                }
            }
        )
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
    for thread in gateways:
        thread.stop()  # every record committed

    assert answered == Counter(markers)  # each answered once, successfully
    calls = stored_calls(provisioned_lake)
    logged = Counter(
        marker for _, _, request in calls for marker in markers if f'"{marker}"' in request
    )
    assert logged == Counter(markers)  # each logged once
    assert len({record_id for record_id, _, _ in calls}) == len(calls)
    assert {by for _, by, _ in calls} == {"gw-a", "gw-b"}  # the broker spread them
