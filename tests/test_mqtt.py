"""The MQTT transport end to end (SPEC §1, §3, §4 MQTT): a real Mosquitto with the shipped
mosquitto.conf and ACL, the real gateway, paho clients and Mosquitto's own command-line clients.

Waits for messages that must arrive use generous timeouts; waits for messages that must NOT
arrive are short (`QUIET`), and always come after something that proves the path is live.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any

import paho.mqtt.client as mqtt
import pytest

from devtools.broker import Broker
from tests.support import (
    GatewayThread,
    MqttClient,
    Tenants,
    client_command,
    response_properties,
    run_client,
    user_auth,
    ws_client,
)

TIMEOUT = 10.0
QUIET = 0.4  # how long we listen for a message that must not come
SUPER_OPS = "ops@acme.test"
PING = {"command": "diag.ping"}
SESSION_INFO = {"command": "session.info"}
SUBSCRIBE_ONCE = "-t reply/17 -q 1 -C 1 -W 10 -d -F >>%t|%p"

Connect = Callable[..., MqttClient]


# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def connect() -> Iterator[Connect]:
    """Open paho clients (`connect(port, client_id=None, v5=False)`); all closed at teardown."""
    clients: list[MqttClient] = []

    def open_client(port: int, client_id: str | None = None, *, v5: bool = False) -> MqttClient:
        client = MqttClient(port, client_id, v5=v5)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def classic_broker() -> Iterator[Broker]:
    """Mosquitto from the shipped config but without the ACL: every client may use every topic."""
    with Broker(acl=False) as running:
        yield running


@pytest.fixture
def classic_gateway(
    classic_broker: Broker, start_gateway: Callable[..., GatewayThread]
) -> GatewayThread:
    return start_gateway(mqtt_url=classic_broker.url_for_gateway, mqtt_classic=True)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def decode(message: mqtt.MQTTMessage, *, compressed: bool = False) -> Any:
    payload = zlib.decompress(message.payload) if compressed else message.payload
    return json.loads(payload)


def thing_auth(tenants: Tenants, thing_key: str) -> dict[str, Any]:
    app_id, app_token = tenants.apps["acme"]
    return {
        "command": "api.authenticate",
        "params": {"appId": app_id, "appToken": app_token, "thingKey": thing_key},
    }


def all_usage(gateway: GatewayThread, **params: Any) -> dict[str, Any]:
    """`usage.api.list` with showAll as Super-Ops, over the WebSocket: it adds no MQTT record."""
    with ws_client(gateway.ws_url) as ws:
        login = ws.login(SUPER_OPS)
        assert login["auth"]["success"], login
        reply = ws.send(
            {
                "l": {
                    "command": "usage.api.list",
                    "params": {"showAll": True, "limit": 2000, **params},
                }
            }
        )
    assert reply["l"]["success"], reply
    result: dict[str, Any] = reply["l"]["params"]
    return result


def usage_of(gateway: GatewayThread, client_id: str) -> list[dict[str, Any]]:
    """Every usage record whose clientId is `client_id`, oldest first."""
    records = all_usage(gateway)["result"] or []
    return [record for record in reversed(records) if record["clientId"] == client_id]


def read_until(stream: IO[str], marker: str, deadline: float) -> list[str]:
    """Lines of a subprocess's output up to and including the first one containing `marker`."""
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} not seen; got {lines}")


# -- 1. isolation ------------------------------------------------------------------------------


def test_broker_isolates_namespaces(
    broker: Broker, gateway: GatewayThread, connect: Connect
) -> None:
    alice = connect(broker.port, new_id("alice"))
    bob = connect(broker.port, new_id("bob"))
    assert not bob.subscribe(f"reply/{bob.client_id}/#")[0].is_failure
    assert not alice.subscribe(f"reply/{alice.client_id}/#")[0].is_failure
    # Mosquitto grants the subscription to someone else's replies, but never delivers on it.
    assert not alice.subscribe(f"reply/{bob.client_id}/#")[0].is_failure

    assert bob.call({"b": PING}, topic=f"api/{bob.client_id}/x") == {"b": {"success": True}}
    assert alice.nothing_received(QUIET), "alice saw bob's reply"

    # Alice speaks in bob's namespace: the broker drops it before the gateway sees it, so bob
    # gets no reply and the usage log has no such call.
    marker = new_id("spoof")
    alice.publish(f"api/{bob.client_id}/x", {marker: PING})
    assert bob.nothing_received(QUIET), "a request published by alice was answered to bob"
    assert alice.nothing_received(0)

    records = all_usage(gateway, service="diag")["result"] or []
    assert [r["clientId"] for r in records] == [bob.client_id]  # bob's own ping is logged
    assert not [r for r in records if marker in r["request"]]


# -- 2. a session belongs to its namespace -------------------------------------------------------


def test_session_is_bound_to_the_namespace(
    broker: Broker, gateway: GatewayThread, tenants: Tenants, connect: Connect
) -> None:
    device = connect(broker.port, new_id("dev"))
    other = connect(broker.port, new_id("other"))
    device.subscribe(f"reply/{device.client_id}/#")
    other.subscribe(f"reply/{other.client_id}/#")
    thing_key = new_id("pump")

    login = device.call(
        {"auth": thing_auth(tenants, thing_key)}, topic=f"api/{device.client_id}/login"
    )
    assert login["auth"]["success"], login

    # Later envelopes on any topic of the same namespace need no auth block.
    for topic in (f"api/{device.client_id}/login", f"api/{device.client_id}/status"):
        reply = device.call({"i": SESSION_INFO}, topic=topic)
        assert reply["i"]["success"], reply
        assert reply["i"]["params"]["thingKey"] == thing_key
        assert reply["i"]["params"]["orgId"] == tenants.org_ids["acme"]

    stranger = other.call({"i": SESSION_INFO})
    assert stranger["i"]["success"] is False
    assert stranger["i"]["errorCodes"] == [-90005]


# -- 3. Mosquitto's own command-line clients ------------------------------------------------------


def test_mosquitto_rr_gets_its_reply(broker: Broker, gateway: GatewayThread) -> None:
    # mosquitto_rr is the natural TR50 client under the ACL: one connection that both publishes
    # to api/<id>/... and reads reply/<id>/..., both granted by the client id alone (%c).
    client_id = new_id("rr")
    request = json.dumps({"1": PING, "2": {"command": "diag.time"}})

    # MQTT 3.1.1 has no Response Topic: mosquitto_rr listens on the derived reply topic.
    options = f"-V mqttv311 -i {client_id} -q 1 -W 10 -t api/{client_id}/req"
    done = run_client(
        "mosquitto_rr", broker.port, *options.split(), "-e", f"reply/{client_id}/req",
        "-m", request, "-F", "%t %p",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    topic, payload = done.stdout.strip().split(" ", 1)
    assert topic == f"reply/{client_id}/req"
    reply = json.loads(payload)
    assert reply["1"] == {"success": True}
    assert reply["2"]["success"] is True

    # MQTT v5 (mosquitto_rr's default): the Response Topic differs from the derived reply topic,
    # so the answer only reaches mosquitto_rr if the gateway honours it, correlation data and all.
    inbox = f"reply/{client_id}/inbox"
    options = f"-V 5 -i {client_id} -q 1 -W 10 -t api/{client_id}/req"
    done = run_client(
        "mosquitto_rr", broker.port, *options.split(), "-e", inbox,
        "-D", "publish", "correlation-data", "corr-42", "-m", request, "-F", "%t|%D|%p",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    topic, correlation, payload = done.stdout.strip().split("|", 2)
    assert (topic, correlation) == (inbox, "corr-42")
    assert json.loads(payload)["1"] == {"success": True}


def test_mosquitto_pub_and_sub_in_classic_mode(
    classic_broker: Broker, classic_gateway: GatewayThread
) -> None:
    # A separate mosquitto_pub and mosquitto_sub only work together without the ACL: under it
    # both would need the namespace as client id (write api/%c/#, read reply/%c/#), and a second
    # connection with the same client id takes the first one over, kicking the subscriber.
    # Isolated mode therefore uses mosquitto_rr (above); legacy TR50 clients use classic mode.
    port = classic_broker.port
    # One QoS 1 message on reply/17 (or give up after 10 s); -d shows the SUBACK, -F tags the
    # message line so it stands out among the debug lines.
    deadline = time.monotonic() + TIMEOUT
    subscriber = subprocess.Popen(
        # stdbuf: -d lines reach the pipe at once, so we see the SUBACK before publishing.
        ["stdbuf", "-oL", *client_command("mosquitto_sub", port, *SUBSCRIBE_ONCE.split())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert subscriber.stdout is not None
        read_until(subscriber.stdout, "received SUBACK", deadline)
        published = run_client(
            "mosquitto_pub", port, "-t", "api/17", "-q", "1", "-m", json.dumps({"7": PING})
        )
        assert published.returncode == 0, published.stderr
        output, _ = subscriber.communicate(timeout=TIMEOUT)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.communicate()
    assert subscriber.returncode == 0, output
    received = [line[2:] for line in output.splitlines() if line.startswith(">>")]
    assert received == ['reply/17|{"7":{"success":true}}']


# -- 4. compressed topics -------------------------------------------------------------------------


def test_apiz_requests_are_answered_compressed(
    broker: Broker, gateway: GatewayThread, connect: Connect
) -> None:
    device = connect(broker.port, new_id("z"))
    device.subscribe(f"replyz/{device.client_id}/#")
    device.subscribe(f"reply/{device.client_id}/#")  # an uncompressed reply would land here
    topic = f"apiz/{device.client_id}/z"

    device.publish(topic, zlib.compress(json.dumps({"1": PING}).encode()))
    message = device.receive()
    assert message.topic == f"replyz/{device.client_id}/z"
    assert decode(message, compressed=True) == {"1": {"success": True}}

    device.publish(topic, b"this is not zlib data")
    message = device.receive()
    assert message.topic == f"replyz/{device.client_id}/z"
    failure = decode(message, compressed=True)
    assert failure["success"] is False
    assert failure["errorCodes"] == [-90010]
    assert set(failure) == {"success", "errorCodes", "errorMessages"}
    assert device.nothing_received(QUIET)


# -- 5. MQTT v5 request/response ------------------------------------------------------------------


def test_v5_response_topic_only_within_own_reply_namespace(
    broker: Broker, gateway: GatewayThread, connect: Connect
) -> None:
    device = connect(broker.port, new_id("v5"), v5=True)
    neighbour = connect(broker.port, new_id("nb"))
    device.subscribe(f"reply/{device.client_id}/#")
    neighbour.subscribe(f"reply/{neighbour.client_id}/#")
    request_topic = f"api/{device.client_id}/req"

    inbox = f"reply/{device.client_id}/inbox/7"
    device.publish(request_topic, {"1": PING}, properties=response_properties(inbox, b"corr-1"))
    message = device.receive()
    assert message.topic == inbox
    assert getattr(message.properties, "CorrelationData", None) == b"corr-1"
    assert decode(message) == {"1": {"success": True}}

    for outside in ("elsewhere/x", f"reply/{neighbour.client_id}/x"):
        device.publish(
            request_topic, {"2": PING}, properties=response_properties(outside, b"corr-2")
        )
        message = device.receive()
        assert message.topic == f"reply/{device.client_id}/req", outside
        assert decode(message) == {"2": {"success": True}}
    assert neighbour.nothing_received(QUIET), "the gateway answered into another namespace"


# -- 6. reply QoS ---------------------------------------------------------------------------------


def test_reply_qos_follows_request_qos(
    broker: Broker, gateway: GatewayThread, connect: Connect
) -> None:
    device = connect(broker.port, new_id("qos"))
    device.subscribe(f"reply/{device.client_id}/#", qos=1)  # so the broker downgrades nothing
    for qos in (0, 1, 0):
        device.publish(f"api/{device.client_id}/q", {"q": PING}, qos=qos)
        message = device.receive()
        assert decode(message) == {"q": {"success": True}}
        assert message.qos == qos


# -- 7. classic mode ------------------------------------------------------------------------------


def test_classic_mode_answers_bare_and_numbered_topics_once(
    classic_broker: Broker, classic_gateway: GatewayThread, connect: Connect
) -> None:
    legacy = connect(classic_broker.port, new_id("legacy"))
    legacy.subscribe("reply/#")  # matches the bare `reply` too

    for request_topic, reply_topic in (("api/17", "reply/17"), ("api", "reply")):
        legacy.publish(request_topic, {"1": PING})
        message = legacy.receive()
        assert message.topic == reply_topic
        assert decode(message) == {"1": {"success": True}}
        assert legacy.nothing_received(QUIET), f"{request_topic} was answered more than once"

    diag = all_usage(classic_gateway, service="diag")
    assert diag["count"] == 2, "each request is logged exactly once"


def test_classic_mode_sessions_are_not_bound(
    classic_broker: Broker, classic_gateway: GatewayThread, connect: Connect
) -> None:
    legacy = connect(classic_broker.port, new_id("legacy"))
    legacy.subscribe("reply/17")

    login = legacy.call({"auth": user_auth("user@acme.test"), "i": SESSION_INFO}, topic="api/17")
    assert login["auth"]["success"], login
    assert login["i"]["params"]["userName"] == "user@acme.test"
    session_id = login["auth"]["params"]["sessionId"]

    # Topics say nothing about identity here, so nothing remembers that login...
    again = legacy.call({"i": SESSION_INFO}, topic="api/17")
    assert again["i"]["success"] is False
    assert again["i"]["errorCodes"] == [-90005]
    # ...and every envelope carries its own auth block.
    reused = legacy.call({"auth": {"sessionId": session_id}, "i": SESSION_INFO}, topic="api/17")
    assert reused["i"]["success"], reused
    assert reused["i"]["params"]["userName"] == "user@acme.test"


# -- 8. broker restart ----------------------------------------------------------------------------


def test_requests_after_broker_restart_are_answered_once(
    broker: Broker, gateway: GatewayThread, connect: Connect
) -> None:
    broker.restart()
    restarted = time.monotonic()
    assert gateway.gateway is not None and gateway.gateway.mqtt is not None
    assert not gateway.gateway.mqtt.connected.is_set(), "gateway did not notice the restart"
    # The gateway waits at least a second before reconnecting, so these requests are most likely
    # queued in its persistent session (clean start off) when it comes back; queued or live,
    # each must be answered exactly once.
    device = connect(broker.port, new_id("dev"))
    device.subscribe(f"reply/{device.client_id}/#")
    keys = [f"r{number}" for number in range(20)]
    for key in keys:
        device.publish(f"api/{device.client_id}/req", {key: PING}, qos=1)

    replies = [decode(device.receive(timeout=15)) for _ in keys]
    answered_after = time.monotonic() - restarted
    assert sorted(key for reply in replies for key in reply) == sorted(keys)
    assert all(next(iter(reply.values())) == {"success": True} for reply in replies)
    assert device.nothing_received(QUIET), "a request was answered twice"
    assert answered_after < 10, f"gateway took {answered_after:.1f}s to come back"

    gateway.mqtt_connected(timeout=1)
    usage = all_usage(gateway, service="diag")
    assert usage["count"] == len(keys)
    assert {record["clientId"] for record in usage["result"]} == {device.client_id}


def test_requests_queued_while_the_gateway_is_away_are_answered(
    broker: Broker, start_gateway: Callable[..., GatewayThread], connect: Connect
) -> None:
    """QoS 1 requests published while no gateway runs wait in its persistent broker session."""
    first = start_gateway(mqtt_url=broker.url_for_gateway, instance_name="gw-persistent")
    first.stop()
    device = connect(broker.port, new_id("dev"))
    device.subscribe(f"reply/{device.client_id}/#")
    keys = [f"q{number}" for number in range(10)]
    for key in keys:
        device.publish(f"api/{device.client_id}/req", {key: PING}, qos=1)
    assert device.nothing_received(QUIET)  # nobody is there to answer yet

    second = start_gateway(mqtt_url=broker.url_for_gateway, instance_name="gw-persistent")
    replies = [decode(device.receive(timeout=15)) for _ in keys]
    assert [key for reply in replies for key in reply] == keys  # answered once each, in order
    assert device.nothing_received(QUIET)
    usage = all_usage(second, service="diag")
    assert usage["count"] == len(keys)
    assert {record["processedBy"] for record in usage["result"]} == {"gw-persistent"}


def test_both_ends_of_the_gateway_connection_disable_nagle(
    broker: Broker, gateway: GatewayThread
) -> None:
    """Nagle + delayed ACK made QoS 1 round trips 44-88 ms here; speed itself is benchmarked."""
    assert "set_tcp_nodelay true" in broker.config_path.read_text()
    assert gateway.gateway is not None and gateway.gateway.mqtt is not None
    sock = gateway.gateway.mqtt.link.socket()
    assert sock is not None
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_reply_too_large_for_the_broker_is_answered_90011_and_serving_goes_on(
    broker: Broker, start_gateway: Callable[..., GatewayThread], tenants: Tenants, connect: Connect
) -> None:
    """Published as is, it would get the gateway disconnected and the request redelivered."""
    start_gateway(mqtt_url=broker.url_for_gateway, mqtt_max_reply=4096)
    device = connect(broker.port, new_id("dev"))
    device.subscribe(f"reply/{device.client_id}/#")
    assert device.call({"auth": thing_auth(tenants, new_id("meter"))})["auth"]["success"]
    pings = {f"p{number}": PING for number in range(40)}
    assert all(outcome["success"] for outcome in device.call(pings).values())

    too_large = device.call({"l": {"command": "usage.api.list", "params": {"limit": 40}}})
    assert too_large["success"] is False and too_large["errorCodes"] == [-90011]
    assert "a smaller limit" in too_large["errorMessages"][0]
    small = device.call({"l": {"command": "usage.api.list", "params": {"limit": 2}}})
    assert small["l"]["success"] and len(small["l"]["params"]["result"]) == 2
    assert device.nothing_received(QUIET)  # the refused request did not come back around


# -- 9. the usage log -----------------------------------------------------------------------------


def test_every_mqtt_call_is_logged_with_its_namespace(
    broker: Broker, gateway: GatewayThread, connect: Connect
) -> None:
    device = connect(broker.port, new_id("dev"))
    device.subscribe(f"reply/{device.client_id}/#")
    device.subscribe(f"replyz/{device.client_id}/#")

    assert device.call({"p": PING}) == {"p": {"success": True}}
    assert device.call(b"not json")["errorCodes"] == [-90010]
    assert device.call({"u": {"command": "nope.nothing"}})["u"]["errorCodes"] == [-90001]
    device.publish(f"apiz/{device.client_id}/req", b"not zlib either")  # refused before dispatch
    assert decode(device.receive(), compressed=True)["errorCodes"] == [-90010]

    records = usage_of(gateway, device.client_id)
    assert sorted(
        (r["service"], r["command"], r["success"], r["errorCode"] or 0) for r in records
    ) == [
        ("", "", False, -90010),
        ("", "", False, -90010),
        ("diag", "ping", True, 0),
        ("nope", "nothing", False, -90001),
    ]
    assert {r["transport"] for r in records} == {"mqtt"}
    assert "not json" in [r["request"] for r in records]
