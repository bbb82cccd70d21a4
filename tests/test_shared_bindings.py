"""A session bound to an isolated-mode MQTT namespace, on every gateway of a lake (SPEC §4, §8).

Real parts, as in tests/test_several_gateways.py: Mosquitto from the repo's config, a private
PostgreSQL holding the lake's catalog and identity tables, and two gateways sharing the requests
through `$share/pool/...`. A device logs in once by envelope; its later envelopes, without a
`sessionId`, land on either gateway, and each must know the namespace's session (or know that
it ended, or that another one replaced it) from the binding stored in PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools.broker import Broker, free_port
from gateway.core.context import Connection
from gateway.core.dispatcher import Dispatcher
from storage.ducklake.bindings import SharedBindings
from tests.harness import Harness
from tests.support import GatewayThread, MqttClient, Tenants
from tests.test_several_gateways import PASSWORD, provisioned_lake, two_gateway_pool

__all__ = ["provisioned_lake"]  # the fixture, imported for pytest

ENVELOPES = 60
STALE_FOR = 1.0  # seconds a gateway may act on a binding changed through another (the contract)
SESSION_INFO = {"command": "session.info"}
OTHER_USER = "user@acme"


@pytest.fixture
def two_users_lake(provisioned_lake: dict[str, Any]) -> dict[str, Any]:
    """The lake with a second user of acme, to log in as instead of ops@acme."""
    h = Harness(**provisioned_lake)
    try:
        h.identity.create_user(OTHER_USER, "acme", PASSWORD, "user")
    finally:
        h.close()
    return provisioned_lake


@pytest.fixture
def pool(broker: Broker, two_users_lake: dict[str, Any]) -> Iterator[list[GatewayThread]]:
    """Two gateways on the lake, sharing the requests (`--shared-group pool`)."""
    with two_gateway_pool(broker, two_users_lake) as running:
        yield running


@pytest.fixture
def device(broker: Broker) -> Iterator[MqttClient]:
    client = MqttClient(broker.port, f"dev-{secrets.token_hex(3)}")
    client.subscribe(f"reply/{client.client_id}/#")
    try:
        yield client
    finally:
        client.close()


def login(device: MqttClient, username: str) -> str:
    reply = device.login(username, PASSWORD)
    assert reply["auth"]["success"], reply
    session_id: str = reply["auth"]["params"]["sessionId"]
    return session_id


def burst(device: MqttClient, prefix: str, count: int = ENVELOPES) -> dict[str, dict[str, Any]]:
    """`count` session.info envelopes without an auth block, all in flight at once (QoS 1), and
    each one's outcome by its marker."""
    markers = [f"{prefix}{number}" for number in range(count)]
    for marker in markers:
        device.publish(f"api/{device.client_id}/req", {marker: SESSION_INFO})
    outcomes: dict[str, dict[str, Any]] = {}
    for _ in markers:
        outcomes.update(json.loads(device.receive().payload))
    assert sorted(outcomes) == sorted(markers)
    return outcomes


def answered_by(lake: dict[str, Any], prefix: str) -> Counter[str]:
    """How many session.info envelopes whose marker starts with `prefix` each gateway logged."""
    h = Harness(**lake)
    try:
        rows = (
            h.database.cursor()
            .execute(
                "SELECT processed_by, request FROM usage_log"
                " WHERE service = 'session' AND command = 'info'"
            )
            .fetchall()
        )
    finally:
        h.close()
    return Counter(
        str(by) for by, request in rows if next(iter(json.loads(request))).startswith(prefix)
    )


def stop_all(gateways: list[GatewayThread]) -> None:
    for thread in gateways:
        thread.stop()  # every record committed


def user_of(outcome: dict[str, Any]) -> str:
    assert outcome["success"], outcome
    name: str = outcome["params"]["userName"]
    return name


def test_a_session_bound_by_envelope_holds_on_every_gateway(
    pool: list[GatewayThread], device: MqttClient, two_users_lake: dict[str, Any]
) -> None:
    session_id = login(device, "ops@acme")
    outcomes = burst(device, "m")
    stop_all(pool)

    assert {user_of(outcome) for outcome in outcomes.values()} == {"ops@acme"}
    # The id only where the token is known (the gateway that opened it); the other has its hash.
    assert {outcome["params"]["id"] for outcome in outcomes.values()} <= {session_id, None}
    by = answered_by(two_users_lake, "m")
    assert sum(by.values()) == ENVELOPES
    assert set(by) == {"gw-a", "gw-b"}  # the broker spread them: both knew the session


def test_session_end_through_the_namespace_unbinds_it_on_every_gateway(
    pool: list[GatewayThread], device: MqttClient, two_users_lake: dict[str, Any]
) -> None:
    login(device, "ops@acme")
    before = burst(device, "b")  # both gateways now hold the binding in memory
    assert {user_of(outcome) for outcome in before.values()} == {"ops@acme"}

    ended = device.call({"e": {"command": "session.end"}})
    assert ended == {"e": {"success": True}}
    time.sleep(STALE_FOR)
    after = burst(device, "a")
    stop_all(pool)

    assert {tuple(outcome.get("errorCodes", ())) for outcome in after.values()} == {(-90005,)}
    assert set(answered_by(two_users_lake, "b")) == {"gw-a", "gw-b"}
    assert set(answered_by(two_users_lake, "a")) == {"gw-a", "gw-b"}


def test_a_new_login_through_the_namespace_is_seen_by_every_gateway(
    pool: list[GatewayThread], device: MqttClient, two_users_lake: dict[str, Any]
) -> None:
    login(device, "ops@acme")
    before = burst(device, "b")
    assert {user_of(outcome) for outcome in before.values()} == {"ops@acme"}

    login(device, OTHER_USER)
    time.sleep(STALE_FOR)
    after = burst(device, "a")
    stop_all(pool)

    assert {user_of(outcome) for outcome in after.values()} == {OTHER_USER}
    assert set(answered_by(two_users_lake, "a")) == {"gw-a", "gw-b"}


def test_a_failed_lookup_is_not_remembered(
    pool: list[GatewayThread], device: MqttClient, two_users_lake: dict[str, Any]
) -> None:
    """Envelopes before any login fail on both gateways; the login that follows is seen by
    both at once (a gateway with no binding in memory looks it up for each envelope)."""
    refused = burst(device, "r", 20)
    assert {tuple(outcome.get("errorCodes", ())) for outcome in refused.values()} == {(-90005,)}
    login(device, "ops@acme")
    outcomes = burst(device, "m")
    stop_all(pool)

    assert {user_of(outcome) for outcome in outcomes.values()} == {"ops@acme"}
    assert set(answered_by(two_users_lake, "r")) == {"gw-a", "gw-b"}
    assert set(answered_by(two_users_lake, "m")) == {"gw-a", "gw-b"}


def test_on_a_file_a_session_end_through_the_namespace_unbinds_it(
    broker: Broker, start_gateway: Callable[..., GatewayThread], tenants: Tenants
) -> None:
    """One gateway on a DuckDB file: bindings stay in its memory, as before."""
    start_gateway(mqtt_url=broker.url_for_gateway)
    client = MqttClient(broker.port, f"dev-{secrets.token_hex(3)}")
    try:
        client.subscribe(f"reply/{client.client_id}/#")
        reply = client.login(tenants.user("acme"))
        assert reply["auth"]["success"], reply
        assert client.call({"i": SESSION_INFO})["i"]["success"]
        assert client.call({"e": {"command": "session.end"}}) == {"e": {"success": True}}
        assert client.call({"i": SESSION_INFO})["i"]["errorCodes"] == [-90005]
    finally:
        client.close()


async def test_with_postgresql_out_of_reach_a_held_binding_stays_and_nothing_fails(
    two_users_lake: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The lake's gateway, its bindings pointed at a port where no PostgreSQL listens: the
    login's binding cannot be stored, yet the login succeeds and its namespace stays bound on
    this gateway through a recheck that fails; a namespace with nothing held answers -90005,
    not -90099."""
    h = Harness(**two_users_lake)
    unreachable = SharedBindings(
        f"host=127.0.0.1 port={free_port()} dbname=none user=postgres", h.identity
    )
    services = dataclasses.replace(h.services, bindings=unreachable)
    dispatcher = Dispatcher(h.assembly.registry, services)

    def namespace(name: str) -> Connection:
        return Connection("mqtt", name, binds_sessions=True, shared_as=name)

    async def call(envelope: dict[str, Any], connection: Connection) -> Any:
        return json.loads(await dispatcher.handle(json.dumps(envelope), connection))

    try:
        device = namespace("dev-1")
        params = {"username": "ops@acme", "password": PASSWORD}
        with caplog.at_level(logging.WARNING, logger="tr50gw.bindings"):
            logged_in = await call(
                {"auth": {"command": "api.authenticate", "params": params}}, device
            )
        assert logged_in["auth"]["success"], logged_in
        assert "could not be stored" in caplog.text
        device.binding_checked = 0.0  # due for a recheck: it fails
        info = await call({"i": SESSION_INFO}, device)
        assert user_of(info["i"]) == "ops@acme"
        stranger = await call({"i": SESSION_INFO}, namespace("dev-2"))
        assert stranger["i"]["errorCodes"] == [-90005]
    finally:
        unreachable.close()
        h.close()
