"""The gateway's side of the broker plugin (broker/README.md), without the plugin: a v5 client
plays the plugin by sending the `tr50gw` property itself, which is exactly why the gateway
believes them only with `--mqtt-broker-identity` (tests/test_broker_plugin.py runs the real
plugin). Also: the credentials file the plugin reads, and `tr50gw admin app-revoke`."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devtools.broker import Broker
from gateway.transports.mqtt.identity import MAGIC, BrokerIdentity, broker_identity
from storage.duckdb.broker import HEADER
from tests.support import GatewayThread, MqttClient, Tenants, run_cli, ws_client


# -- the header, parsed ---------------------------------------------------------------------------
def header(*fields: str) -> bytes:
    """The plugin's identity header: connection and client id, then a thing's org, app and key."""
    return MAGIC + "/".join(fields).encode() + b"\n"


def test_a_thing_identity_has_five_fields() -> None:
    found = broker_identity(header("c1", "dev1", "o", "a", "t") + b"{}")
    assert found == (BrokerIdentity("c1", "dev1", "o", "a", "t"), b"{}")


def test_a_thing_key_may_hold_slashes() -> None:
    found, _ = broker_identity(header("c1", "dev1", "o", "a", "site/7/t") + b"{}")
    assert found == BrokerIdentity("c1", "dev1", "o", "a", "site/7/t")


def test_an_anonymous_identity_has_two_fields() -> None:
    assert broker_identity(header("c1", "d") + b"{}") == (BrokerIdentity("c1", "d"), b"{}")


def test_the_payload_after_the_header_is_left_exactly_as_sent() -> None:
    sent = b'\x00tr50gw fake/x\n{"1":\n{}}'  # a client's own look-alike stays its payload
    assert broker_identity(header("c1", "d") + sent) == (BrokerIdentity("c1", "d"), sent)


@pytest.mark.parametrize(
    "value",
    ["c1", "c1/d/o", "c1/d/o/a", "/d", "c1/", "c1/d//a/t", "c1/d/o/a/"],
    ids=["one", "three", "four", "no-connection", "no-client", "no-org", "no-thing"],
)
def test_any_other_shape_is_no_identity(value: str) -> None:
    payload = MAGIC + value.encode() + b"\n{}"
    assert broker_identity(payload) == (None, payload)


@pytest.mark.parametrize(
    "payload",
    [b"{}", b"tr50gw c1/d\n{}", MAGIC + b"c1/d", MAGIC + b"c1/\xff\n{}"],
    ids=["none", "no-magic-byte", "no-end", "not-utf8"],
)
def test_a_payload_without_a_whole_header_is_no_identity(payload: bytes) -> None:
    assert broker_identity(payload) == (None, payload)


# -- through a real broker and gateway ------------------------------------------------------------
def ask_once(
    broker: Broker,
    envelope: dict[str, Any],
    says: Callable[[str], bytes],
    client_id: str | None = None,
    properties: Properties | None = None,
) -> tuple[mqtt.MQTTMessage, str]:
    """One request on a new v5 connection subscribed to its replies, its payload preceded by the
    header `says(client id)`; the reply and the client id."""
    client = MqttClient(broker.port, client_id, v5=True)
    try:
        client.subscribe(f"reply/{client.client_id}/#")
        payload = says(client.client_id) + json.dumps(envelope).encode()
        client.publish(f"api/{client.client_id}/1", payload, properties=properties)
        return client.receive(), client.client_id
    finally:
        client.close()


@pytest.fixture
def plain_broker() -> Iterator[Broker]:
    """The shipped config and ACL without the plugin: here the test clients play it (with the
    plugin loaded, their own header would come after the plugin's, as their payload)."""
    with Broker(plugin=False) as running:
        running.start()
        yield running


@pytest.fixture
def trusting(plain_broker: Broker, start_gateway: Callable[..., GatewayThread]) -> GatewayThread:
    return start_gateway(mqtt_url=plain_broker.url_for_gateway, mqtt_broker_identity=True)


def thing_says(
    tenants: Tenants, thing: str, conn: str, app: str | None = None
) -> Callable[[str], bytes]:
    """What the plugin says of a request from a thing of acme authenticated at CONNECT."""
    app_id = app or tenants.apps["acme"][0]
    org = tenants.org_ids["acme"]
    return lambda client_id: header(conn, client_id, org, app_id, thing)


def test_a_thing_authenticated_by_the_broker_needs_no_auth_block(
    plain_broker: Broker, trusting: GatewayThread, tenants: Tenants
) -> None:
    thing = f"therm-{secrets.token_hex(3)}"
    reply, _ = ask_once(
        plain_broker, {"1": {"command": "session.info"}}, thing_says(tenants, thing, "conn-1")
    )
    info = json.loads(reply.payload)["1"]["params"]
    assert (info["thingKey"], info["orgKey"]) == (thing, "acme")


def test_a_things_reply_goes_to_its_namespace_for_the_plugin_to_deliver(
    plain_broker: Broker, trusting: GatewayThread, tenants: Tenants
) -> None:
    reply, client_id = ask_once(
        plain_broker, {"1": {"command": "diag.ping"}}, thing_says(tenants, "therm-1", "conn-2")
    )
    assert (reply.topic, getattr(reply.properties, "UserProperty", None)) == (
        f"reply/{client_id}/1",
        None,
    )


def test_a_response_topic_asks_the_plugin_to_deliver_there(
    plain_broker: Broker, trusting: GatewayThread, tenants: Tenants
) -> None:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ResponseTopic = "reply/mine/7"
    reply, client_id = ask_once(
        plain_broker,
        {"1": {"command": "diag.ping"}},
        thing_says(tenants, "therm-1", "conn-6"),
        properties=properties,
    )
    assert reply.properties.UserProperty == [("tr50gw-deliver", f"{client_id}/reply/mine/7")]


def test_the_calls_are_logged_as_the_thing(
    plain_broker: Broker, trusting: GatewayThread, tenants: Tenants
) -> None:
    thing = f"meter-{secrets.token_hex(3)}"
    publish = {"1": {"command": "property.publish", "params": {"key": "k", "value": 1}}}
    _, client_id = ask_once(plain_broker, publish, thing_says(tenants, thing, "conn-3"))
    with ws_client(trusting.ws_url) as operator:
        operator.login(tenants.user("acme", "org-admin"))
        listed = operator.send({"l": {"command": "usage.api.list", "params": {"who": thing}}})
    (record,) = listed["l"]["params"]["result"]
    assert (record["command"], record["clientId"], record["success"]) == (
        "publish",
        client_id,
        True,
    )


def test_an_anonymous_session_is_bound_to_its_connection_not_its_client_id(
    plain_broker: Broker, trusting: GatewayThread, tenants: Tenants
) -> None:
    """The impersonation of issue 11: a later connection with the same client id must not
    inherit the session a thing opened on the namespace."""
    app_id, token = tenants.apps["acme"]
    namespace = f"dev-{secrets.token_hex(3)}"
    login = {"appId": app_id, "appToken": token, "thingKey": "therm-1"}
    opened, _ = ask_once(
        plain_broker,
        {"auth": {"command": "api.authenticate", "params": login}},
        lambda client_id: header("first", client_id),
        namespace,
    )
    assert json.loads(opened.payload)["auth"]["success"] is True
    reply, _ = ask_once(
        plain_broker,
        {"1": {"command": "session.info"}},
        lambda client_id: header("second", client_id),
        namespace,
    )
    assert json.loads(reply.payload)["1"]["errorCodes"] == [-90005]


def test_without_broker_identity_a_header_is_removed_and_not_believed(
    plain_broker: Broker, start_gateway: Callable[..., GatewayThread], tenants: Tenants
) -> None:
    start_gateway(mqtt_url=plain_broker.url_for_gateway)  # not told the plugin is there
    reply, _ = ask_once(
        plain_broker, {"1": {"command": "session.info"}}, thing_says(tenants, "therm-1", "conn-4")
    )
    assert json.loads(reply.payload)["1"]["errorCodes"] == [-90005]


def test_without_broker_identity_a_header_is_reported_once(
    plain_broker: Broker,
    start_gateway: Callable[..., GatewayThread],
    tenants: Tenants,
    caplog: pytest.LogCaptureFixture,
) -> None:
    start_gateway(mqtt_url=plain_broker.url_for_gateway)
    for conn in ("conn-7", "conn-8"):
        ask_once(plain_broker, {"1": {"command": "diag.ping"}}, thing_says(tenants, "t", conn))
    warnings = [r for r in caplog.records if "--mqtt-broker-identity is off" in r.getMessage()]
    assert len(warnings) == 1


def test_a_revoked_apps_thing_gets_no_session(
    plain_broker: Broker, trusting: GatewayThread, tenants: Tenants
) -> None:
    says = thing_says(tenants, "t", "conn-5", app="0" * 32)
    reply, _ = ask_once(plain_broker, {"1": {"command": "session.info"}}, says)
    assert json.loads(reply.payload)["1"]["errorCodes"] == [-90005]


# -- the credentials file -------------------------------------------------------------------------
def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_the_gateway_writes_the_credentials_at_start(
    tmp_path: Path, start_gateway: Callable[..., GatewayThread], tenants: Tenants
) -> None:
    path = tmp_path / "broker" / "credentials"
    start_gateway(broker_credentials=path)
    lines = read_lines(path)
    apps = [line.split() for line in lines if line.startswith("app ")]
    assert (lines[0], sorted(app[1] for app in apps)) == (
        HEADER,
        sorted(app_id for app_id, _ in tenants.apps.values()),
    )


def test_the_credentials_hold_digests_not_tokens(
    tmp_path: Path, start_gateway: Callable[..., GatewayThread], tenants: Tenants
) -> None:
    path = tmp_path / "credentials"
    start_gateway(broker_credentials=path)
    text = path.read_text()
    assert not any(token in text for _, token in tenants.apps.values())


def test_a_new_thing_reaches_the_credentials_within_seconds(
    tmp_path: Path, start_gateway: Callable[..., GatewayThread], tenants: Tenants
) -> None:
    path = tmp_path / "credentials"
    served = start_gateway(broker_credentials=path)
    app_id, token = tenants.apps["acme"]
    with ws_client(served.ws_url) as device:
        login = {"appId": app_id, "appToken": token, "thingKey": "new thing/1"}
        device.send({"auth": {"command": "api.authenticate", "params": login}})
    wanted = f"thing {b'new thing/1'.hex()}"
    deadline = time.monotonic() + 5
    while wanted not in read_lines(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wanted in read_lines(path)


def test_app_revoke_ends_the_token_and_rewrites_the_credentials(
    tmp_path: Path, start_gateway: Callable[..., GatewayThread], tenants: Tenants
) -> None:
    path = tmp_path / "credentials"
    app_id, token = tenants.apps["acme"]
    code, out = run_cli(
        "admin", "app-revoke", app_id, "--db", str(tenants.db), "--broker-credentials", str(path),
        "--json",
    )  # fmt: skip
    assert (code, json.loads(out)) == (0, {"appId": app_id, "revoked": True})
    assert not any(line.startswith(f"app {app_id} ") for line in read_lines(path))
    served = start_gateway()
    with ws_client(served.ws_url) as device:
        login = {"appId": app_id, "appToken": token, "thingKey": "t"}
        reply = device.send({"auth": {"command": "api.authenticate", "params": login}})
    assert reply["auth"]["errorCodes"] == [-90004]


def test_app_revoke_of_an_unknown_app_exits_4(tenants: Tenants) -> None:
    code, _ = run_cli("admin", "app-revoke", "f" * 32, "--db", str(tenants.db))
    assert code == 4
