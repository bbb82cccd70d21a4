"""Issue 11 end to end: the shipped broker configuration with tr50gw's plugin, a real gateway
trusting it, and devices that authenticate in their MQTT CONNECT as deviceWISE devices do
(username = thing key, password = app token), publish to `api` or `api/<anything>` without an
auth block and never subscribe. Also: no client acts in another's name."""

from __future__ import annotations

import json
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from devtools.broker import Broker
from tests.support import (
    GatewayThread,
    MqttClient,
    Tenants,
    response_properties,
    run_client,
    ws_client,
)


@pytest.fixture
def served(broker: Broker, start_gateway: Callable[..., GatewayThread]) -> GatewayThread:
    return start_gateway(
        mqtt_url=broker.url_for_gateway,
        mqtt_broker_identity=True,
        broker_credentials=broker.credentials_path,
    )


@pytest.fixture
def devices(broker: Broker, tenants: Tenants) -> Iterator[Callable[..., MqttClient]]:
    """Devices of acme authenticated at CONNECT; closed at teardown."""
    opened: list[MqttClient] = []

    def connect(thing: str | None = None, *, v5: bool = False) -> MqttClient:
        thing = thing or f"therm-{secrets.token_hex(3)}"
        device = MqttClient(
            broker.port, thing, v5=v5, username=thing, password=tenants.apps["acme"][1]
        )
        opened.append(device)
        return device

    yield connect
    for device in opened:
        device.close()


def send(device: MqttClient, topic: str, envelope: dict[str, Any]) -> mqtt.MQTTMessage:
    device.publish(topic, envelope)
    return device.receive()


PUBLISH = {"1": {"command": "property.publish", "params": {"key": "temp", "value": 21.5}}}


def test_a_device_that_never_subscribed_gets_its_reply_on_reply_0001(
    served: GatewayThread, devices: Callable[..., MqttClient]
) -> None:
    reply = send(devices(), "api/0001", PUBLISH)
    assert (reply.topic, json.loads(reply.payload)) == ("reply/0001", {"1": {"success": True}})


def test_bare_api_is_answered_on_bare_reply(
    served: GatewayThread, devices: Callable[..., MqttClient]
) -> None:
    reply = send(devices(), "api", {"1": {"command": "diag.ping"}})
    assert reply.topic == "reply"


def test_apiz_is_answered_compressed_on_replyz(
    served: GatewayThread, devices: Callable[..., MqttClient]
) -> None:
    device = devices()
    device.publish("apiz/9", zlib.compress(json.dumps({"1": {"command": "diag.ping"}}).encode()))
    reply = device.receive()
    assert (reply.topic, json.loads(zlib.decompress(reply.payload))) == (
        "replyz/9",
        {"1": {"success": True}},
    )


def test_the_device_runs_as_its_thing_with_no_auth_block(
    served: GatewayThread, devices: Callable[..., MqttClient]
) -> None:
    reply = send(devices("boiler-7"), "api/1", {"1": {"command": "session.info"}})
    info = json.loads(reply.payload)["1"]["params"]
    assert (info["thingKey"], info["orgKey"], info["whoAmI"]) == ("boiler-7", "acme", "boiler-7")


def test_its_calls_and_data_are_the_things(
    served: GatewayThread, devices: Callable[..., MqttClient], tenants: Tenants
) -> None:
    thing = f"meter-{secrets.token_hex(3)}"
    send(devices(thing), "api/0001", PUBLISH)
    with ws_client(served.ws_url) as operator:
        operator.login(tenants.user("acme", "org-admin"))
        reply = operator.send(
            {
                "c": {"command": "property.current", "params": {"thingKey": thing, "key": "temp"}},
                "u": {"command": "usage.api.list", "params": {"who": thing}},
            }
        )
    (record,) = reply["u"]["params"]["result"]
    assert (reply["c"]["params"]["value"], record["command"], record["clientId"]) == (
        21.5,
        "publish",
        thing,
    )


def test_a_v5_response_topic_and_correlation_data_are_honoured(
    served: GatewayThread, devices: Callable[..., MqttClient]
) -> None:
    device = devices(v5=True)
    device.publish(
        "api/1",
        {"1": {"command": "diag.ping"}},
        properties=response_properties("reply/inbox", b"c-7"),
    )
    reply = device.receive()
    assert (reply.topic, reply.properties.CorrelationData) == ("reply/inbox", b"c-7")


def test_a_wrong_token_is_refused_at_connect(broker: Broker, served: GatewayThread) -> None:
    with pytest.raises(ConnectionRefusedError):
        MqttClient(broker.port, "therm-x", username="therm-x", password="not-a-token")


def test_a_rotated_token_disconnects_its_devices_and_opens_nothing(
    broker: Broker, served: GatewayThread, devices: Callable[..., MqttClient], tenants: Tenants
) -> None:
    """`app.token.rotate` over TR50: the gateway rewrites the credentials file, the plugin
    disconnects the things that connected with the old token and refuses it at CONNECT; the
    new token connects."""
    device = devices("rotating-1")
    kicked = threading.Event()
    device.client.on_disconnect = lambda *args: kicked.set()
    app_id, old_token = tenants.apps["acme"]
    with ws_client(served.ws_url) as admin:
        admin.login(tenants.user("acme", "org-admin"))
        rotated = admin.send({"1": {"command": "app.token.rotate", "params": {"id": app_id}}})
    new_token = rotated["1"]["params"]["token"]
    disconnected = kicked.wait(10)
    device.client.loop_stop()  # no reconnect attempts meanwhile
    with pytest.raises(ConnectionRefusedError):
        MqttClient(broker.port, "rotating-2", username="rotating-2", password=old_token)
    renewed = MqttClient(broker.port, "rotating-3", username="rotating-3", password=new_token)
    reply = renewed.call({"1": {"command": "diag.ping"}})
    renewed.close()
    assert (disconnected, reply) == (True, {"1": {"success": True}})


def test_mosquitto_rr_with_thing_credentials(
    broker: Broker, served: GatewayThread, tenants: Tenants
) -> None:
    """The command-line device: CONNECT credentials, no auth block, one request/response."""
    thing = f"rr-{secrets.token_hex(3)}"
    done = run_client(
        "mosquitto_rr", broker.port, "-V", "mqttv311", "-i", thing, "-u", thing,
        "-P", tenants.apps["acme"][1], "-q", "1", "-W", "10", "-t", f"api/{thing}/1",
        "-e", f"reply/{thing}/1", "-m", json.dumps({"1": {"command": "session.info"}}),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["1"]["params"]["thingKey"] == thing


# -- no impersonation -----------------------------------------------------------------------------
def test_an_anonymous_client_cannot_take_a_connected_devices_id(
    broker: Broker, served: GatewayThread, devices: Callable[..., MqttClient]
) -> None:
    device = devices()
    with pytest.raises(ConnectionRefusedError):
        MqttClient(broker.port, device.client_id)
    assert send(device, "api/2", {"1": {"command": "diag.ping"}}).topic == "reply/2"


def test_an_anonymous_client_cannot_use_a_registered_things_key_as_its_id(
    broker: Broker, served: GatewayThread, devices: Callable[..., MqttClient]
) -> None:
    device = devices()
    send(device, "api/1", PUBLISH)  # registered: the gateway writes it for the plugin
    device.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            MqttClient(broker.port, device.client_id).close()
        except ConnectionRefusedError:
            break  # refused: the plugin has re-read the credentials
        assert time.monotonic() < deadline, "an anonymous client took a thing's key as its id"
        time.sleep(0.1)


def test_a_session_opened_anonymously_stays_with_its_connection(
    broker: Broker, served: GatewayThread, tenants: Tenants
) -> None:
    """The measured attack of issue 11: after a thing authenticated on its namespace, another
    connection with the same client id asked for session.info and got the thing's session."""
    app_id, token = tenants.apps["acme"]
    namespace = f"dev-{secrets.token_hex(3)}"
    login = {"appId": app_id, "appToken": token, "thingKey": f"t-{namespace}"}
    first = MqttClient(broker.port, namespace)
    try:
        first.subscribe(f"reply/{namespace}/#")
        opened = first.call({"auth": {"command": "api.authenticate", "params": login}})
        assert opened["auth"]["success"] is True
    finally:
        first.close()
    intruder = MqttClient(broker.port, namespace)
    try:
        intruder.subscribe(f"reply/{namespace}/#")
        reply = intruder.call({"1": {"command": "session.info"}})
    finally:
        intruder.close()
    assert reply["1"]["errorCodes"] == [-90005]


def test_no_one_else_reads_a_devices_reply(
    broker: Broker, served: GatewayThread, devices: Callable[..., MqttClient]
) -> None:
    watcher = devices()  # even an authenticated thing, subscribed as widely as the ACL lets it
    watcher.subscribe("reply/#")
    send(devices(), "api/0001", {"1": {"command": "diag.ping"}})
    assert watcher.nothing_received(within=0.5)
