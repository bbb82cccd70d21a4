"""The tr50gw_auth Mosquitto plugin (broker/README.md) through a real broker.

Each test starts Mosquitto from the shipped mosquitto.conf + ACL with the plugin loaded
(devtools.broker.Broker), writes the plugin's credentials file by hand, and talks to it with paho:
MQTT 3.1.1 for devices as deviceWISE clients do (v5 where a test needs properties), and a v5
client with the gateway's account playing the gateway. No real gateway runs here.

Where a test shows that something did NOT arrive, it sends a marker afterwards on a path that
is delivered in order and waits for it: what was not received by then was never delivered.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from devtools.broker import CREDENTIALS_HEADER, GATEWAY_USERNAME, Broker

# The plugin's identity header starts with this (broker/README.md); written out here rather than
# imported from the gateway, so that these tests check the contract, not the gateway's copy.
MAGIC = b"\x00tr50gw "

TIMEOUT = 5.0
NOT_AUTHORIZED = 135  # CONNACK reason code (paho maps MQTT 3.1.1's return code 5 to it)


# -- the credentials file ----------------------------------------------------------------------


@dataclass(frozen=True)
class App:
    app_id: str = field(default_factory=lambda: secrets.token_hex(16))
    org_id: str = field(default_factory=lambda: secrets.token_hex(16))
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def line(self) -> str:
        digest = hashlib.sha256(self.token.encode()).hexdigest()
        return f"app {self.app_id} {self.org_id} {digest}"


def write_credentials(broker: Broker, apps: Sequence[App], things: Sequence[str] = ()) -> None:
    """Replace the credentials file atomically, as the gateway does (broker/README.md)."""
    lines = [CREDENTIALS_HEADER, "# written by tests/test_broker_plugin.py"]
    lines += [app.line() for app in apps]
    lines += [f"thing {key.encode().hex()}" for key in things]
    temporary = broker.credentials_path.with_name(f".credentials-{secrets.token_hex(4)}")
    temporary.write_text("\n".join(lines) + "\n")
    temporary.chmod(0o644)  # read by the broker's account, which may not be ours
    os.replace(temporary, broker.credentials_path)


# -- clients ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    pairs: list[tuple[str, str]]  # the user properties, in order
    correlation: bytes | None

    @property
    def user(self) -> dict[str, str]:
        return dict(self.pairs)

    @property
    def identity(self) -> list[str]:
        """The fields of the plugin's header in front of the payload: connection, client id,
        and for a thing its org, app and key (broker/README.md)."""
        assert self.payload.startswith(MAGIC), self.payload
        return self.payload[len(MAGIC) : self.payload.index(b"\n")].decode().split("/", 4)

    @property
    def body(self) -> bytes:
        """The payload after the plugin's header: what the client sent."""
        assert self.payload.startswith(MAGIC), self.payload
        return self.payload[self.payload.index(b"\n") + 1 :]

    @property
    def client(self) -> str:
        return self.identity[1]


def user_properties(*pairs: tuple[str, str]) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = list(pairs)
    return properties


class Refused(Exception):
    def __init__(self, reason: ReasonCode) -> None:
        super().__init__(str(reason))
        self.reason = reason


class Client:
    """A paho client: `connect()` waits for CONNACK (raising Refused), messages land in a queue."""

    def __init__(
        self,
        broker: Broker,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        v5: bool = False,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.client_id = client_id
        self.messages: queue.Queue[Received] = queue.Queue()
        self.disconnected = threading.Event()
        self._connack: queue.Queue[ReasonCode] = queue.Queue()
        self._subscribed: queue.Queue[int] = queue.Queue()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1)
        self._client.on_connect = lambda c, u, flags, reason, p: self._connack.put(reason)
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda c, u, mid, codes, p: self._subscribed.put(mid)
        self._broker = broker

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, p: Any) -> None:
        self.disconnected.set()
        client.disconnect()  # stay disconnected: paho would otherwise reconnect by itself

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        properties = getattr(message, "properties", None)
        pairs = getattr(properties, "UserProperty", [])
        correlation = getattr(properties, "CorrelationData", None)
        self.messages.put(Received(message.topic, bytes(message.payload), list(pairs), correlation))

    def connect(self) -> Client:
        self._client.connect(self._broker.host, self._broker.port)
        self._client.loop_start()
        reason = self._connack.get(timeout=TIMEOUT)
        if reason.is_failure:
            self.close()  # or paho would keep reconnecting
            raise Refused(reason)
        return self

    def subscribe(self, *topics: str) -> None:
        result, mid = self._client.subscribe([(topic, 1) for topic in topics])
        assert result == mqtt.MQTT_ERR_SUCCESS
        assert self._subscribed.get(timeout=TIMEOUT) == mid

    def publish(
        self, topic: str, payload: bytes = b"{}", properties: Properties | None = None
    ) -> None:
        self._client.publish(topic, payload, qos=1, properties=properties).wait_for_publish(TIMEOUT)

    def next_message(self) -> Received:
        return self.messages.get(timeout=TIMEOUT)

    def messages_until(self, topic: str) -> list[Received]:
        """Everything received up to and including the first message on `topic`."""
        received = [self.next_message()]
        while received[-1].topic != topic:
            received.append(self.next_message())
        return received

    def drop_connection(self) -> None:
        """Vanish without DISCONNECT, as a device losing power does (so its will is sent)."""
        sock = self._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # paho notices, closes it and stays disconnected
        self._client.loop_stop()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()


class FakeGateway(Client):
    """The gateway's account (v5), subscribed to every request as tr50gw is."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(
            broker,
            f"gateway-{secrets.token_hex(3)}",
            username=GATEWAY_USERNAME,
            password=broker.gateway_password,
            v5=True,
        )
        self.connect()
        self.subscribe("api", "api/#", "apiz", "apiz/#")

    def answer(
        self, request: Received, payload: bytes = b'{"1":{"success":true}}', to: str | None = None
    ) -> None:
        """Reply as the gateway does: on the request's topic with api -> reply (the plugin
        delivers it to a thing alone), Correlation Data copied; `to`: a Response Topic the
        device asked for, which the plugin is told with `tr50gw-deliver`."""
        properties = Properties(PacketTypes.PUBLISH)
        if to is not None:
            properties.UserProperty = [("tr50gw-deliver", f"{request.client}/{to}")]
        if request.correlation is not None:
            properties.CorrelationData = request.correlation
        self.publish("reply" + request.topic[3:], payload, properties)


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def broker() -> Iterator[Broker]:
    with Broker(persistence=False) as running:
        yield running


@pytest.fixture
def app(broker: Broker) -> App:
    app = App()
    write_credentials(broker, [app], ["therm-1", "therm-2"])
    return app


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Clients to close at teardown, whatever the test did with them."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


@pytest.fixture
def gateway(broker: Broker, clients: list[Client]) -> FakeGateway:
    gateway = FakeGateway(broker)
    clients.append(gateway)
    return gateway


def thing(
    broker: Broker,
    clients: list[Client],
    key: str,
    token: str,
    *,
    client_id: str | None = None,
    v5: bool = False,
) -> Client:
    """A deviceWISE-style device: client id = username = thing key, password = app token."""
    client = Client(broker, client_id or key, username=key, password=token, v5=v5)
    clients.append(client)
    return client


def anonymous(broker: Broker, clients: list[Client], client_id: str, *, v5: bool = False) -> Client:
    client = Client(broker, client_id, v5=v5)
    clients.append(client)
    return client


def wait_for_log(broker: Broker, line: str) -> None:
    """Poll the broker's log until `line` appears (what it logs is all we can see of it)."""
    deadline = time.monotonic() + TIMEOUT
    while line not in broker.log_text():
        assert time.monotonic() < deadline, f"{line!r} not logged within {TIMEOUT}s"
        time.sleep(0.01)


def refusal(client: Client) -> int:
    """The CONNACK reason code of a refused CONNECT (fails the test if it was accepted)."""
    with pytest.raises(Refused) as refused:
        client.connect()
    return int(refused.value.reason.value)


# -- CONNECT authentication ------------------------------------------------------------------


def test_thing_with_a_valid_app_token_is_accepted(
    broker: Broker, app: App, clients: list[Client]
) -> None:
    device = thing(broker, clients, "therm-1", app.token).connect()
    assert device._client.is_connected()


def test_thing_with_a_wrong_token_is_refused(
    broker: Broker, app: App, clients: list[Client]
) -> None:
    assert refusal(thing(broker, clients, "therm-1", "not-" + app.token)) == NOT_AUTHORIZED


def test_token_added_after_the_broker_started_is_accepted(
    broker: Broker, clients: list[Client]
) -> None:
    app = App()
    write_credentials(broker, [app])
    deadline = time.monotonic() + 2.0
    while True:  # poll by connecting: the plugin re-reads the file when it changed
        try:
            thing(broker, clients, "therm-1", app.token).connect()
            break
        except Refused:
            assert time.monotonic() < deadline, "token not accepted within 2 s"
    assert time.monotonic() < deadline


def test_connect_is_refused_once_the_app_is_removed(
    broker: Broker, app: App, clients: list[Client]
) -> None:
    thing(broker, clients, "therm-1", app.token).connect()
    write_credentials(broker, [App()], ["therm-1"])
    assert refusal(thing(broker, clients, "therm-1", app.token)) == NOT_AUTHORIZED


def test_connected_thing_is_disconnected_once_its_app_is_removed(
    broker: Broker, app: App, clients: list[Client]
) -> None:
    device = thing(broker, clients, "therm-1", app.token).connect()
    write_credentials(broker, [App()], ["therm-1"])
    assert device.disconnected.wait(3.0)  # the plugin checks the file once a second


def test_user_of_another_app_stays_connected_when_an_app_is_removed(
    broker: Broker, app: App, clients: list[Client]
) -> None:
    other = App()
    write_credentials(broker, [app, other])
    staying = thing(broker, clients, "therm-2", other.token).connect()
    leaving = thing(broker, clients, "therm-1", app.token).connect()
    write_credentials(broker, [other])
    assert leaving.disconnected.wait(3.0)
    assert not staying.disconnected.is_set()


def test_thing_keys_may_hold_any_character(broker: Broker, clients: list[Client]) -> None:
    write_credentials(broker, [App()], ["pompe n°7 / étage 2"])
    assert refusal(anonymous(broker, clients, "pompe n°7 / étage 2")) == NOT_AUTHORIZED


def test_a_malformed_line_is_skipped_and_the_rest_read(
    broker: Broker, clients: list[Client]
) -> None:
    app = App()
    broker.credentials_path.write_text(
        f"{CREDENTIALS_HEADER}\napp not-hex {app.org_id} 00\nfuture-record x\n{app.line()}\n"
    )
    assert thing(broker, clients, "therm-1", app.token).connect()._client.is_connected()


def test_a_file_without_the_header_lets_no_thing_connect(
    broker: Broker, clients: list[Client]
) -> None:
    app = App()
    broker.credentials_path.write_text(f"{app.line()}\n")
    assert refusal(thing(broker, clients, "therm-1", app.token)) == NOT_AUTHORIZED


def test_classic_mode_loads_no_plugin() -> None:
    """With no acl_file to defer to, every publish the plugin passes on would be refused."""
    with Broker(acl=False, persistence=False) as classic:
        lines = classic.config_path.read_text().splitlines()
        assert [line for line in lines if line.startswith("plugin")] == []


# -- requests and replies --------------------------------------------------------------------


def test_request_reaches_the_gateway_in_the_things_namespace_with_its_identity(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client]
) -> None:
    device = thing(broker, clients, "therm-1", app.token).connect()
    device.publish("api/0001", b'{"1":{"command":"diag.ping"}}')
    request = gateway.next_message()
    conn, *identity = request.identity
    assert (request.topic, request.body, identity, bool(conn)) == (
        "api/therm-1/0001",
        b'{"1":{"command":"diag.ping"}}',
        ["therm-1", app.org_id, app.app_id, "therm-1"],
        True,
    )


@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [
        ("api", "api/therm-1"),
        ("api/0001", "api/therm-1/0001"),
        ("api/a/b", "api/therm-1/a/b"),
        ("apiz", "apiz/therm-1"),
        ("apiz/0001", "apiz/therm-1/0001"),
        ("api/therm-1/7", "api/therm-1/therm-1/7"),  # always moved: one rule, both ways
    ],
)
def test_request_topics_move_into_the_namespace(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client], sent: str, forwarded: str
) -> None:
    device = thing(broker, clients, "therm-1", app.token).connect()
    device.publish(sent)
    assert gateway.next_message().topic == forwarded


def test_a_thing_key_with_slashes_is_the_last_field(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client]
) -> None:
    device = thing(broker, clients, "site/7/meter", app.token, client_id="meter-7").connect()
    device.publish("api/1")
    assert gateway.next_message().identity[1:] == [
        "meter-7",
        app.org_id,
        app.app_id,
        "site/7/meter",
    ]


FORGED = MAGIC + b"someone-else/boiler-9/" + b"0" * 32 + b"/" + b"1" * 32 + b"/boiler-9\n{}"


def test_a_header_a_thing_forges_stays_part_of_its_payload(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client]
) -> None:
    device = thing(broker, clients, "therm-1", app.token).connect()
    device.publish("api/0001", FORGED)
    request = gateway.next_message()
    assert (request.identity[1:], request.body) == (
        ["therm-1", app.org_id, app.app_id, "therm-1"],
        FORGED,
    )


def test_a_devices_properties_reach_the_gateway_as_sent(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client]
) -> None:
    """The identity is in the payload: the plugin leaves properties alone (the gateway reads
    none but Response Topic and Correlation Data)."""
    device = thing(broker, clients, "therm-1", app.token, v5=True).connect()
    properties = user_properties(("tr50gw", "whatever"), ("trace", "kept"))
    properties.CorrelationData = b"17"
    device.publish("api/0001", properties=properties)
    request = gateway.next_message()
    assert (request.pairs, request.correlation) == (
        [("tr50gw", "whatever"), ("trace", "kept")],
        b"17",
    )


@pytest.mark.parametrize("sent", ["api", "api/0001", "apiz", "apiz/0001"])
def test_reply_reaches_the_device_that_never_subscribed_exactly_once(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client], sent: str
) -> None:
    device = thing(broker, clients, "therm-1", app.token).connect()
    device.publish(sent, b"request")
    gateway.answer(gateway.next_message(), b"answer")
    expected = sent.replace("api", "reply", 1)
    # A second request's answer arrives after the first: any duplicate would come in between.
    device.publish("api/marker", b"request")
    gateway.answer(gateway.next_message(), b"marker")
    received = [(m.topic, m.payload) for m in device.messages_until("reply/marker")]
    assert received == [(expected, b"answer"), ("reply/marker", b"marker")]


def test_reply_reaches_no_other_subscriber(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client]
) -> None:
    device = thing(broker, clients, "therm-1", app.token).connect()
    # The device itself may read reply/therm-1/#, where the gateway publishes the original;
    # another client subscribes to everything the ACL lets it.
    device.subscribe("reply/therm-1/#")
    snooper = anonymous(broker, clients, "snooper").connect()
    snooper.subscribe("reply/#", "reply", "replyz/#", "#")
    device.publish("api/0001", b"request")
    gateway.answer(gateway.next_message(), b"answer")
    gateway.publish("reply/snooper/marker", b"marker")
    gateway.publish("reply/therm-1/marker", b"marker")  # delivered as reply/marker
    seen = [m.topic for m in device.messages_until("reply/marker")]
    seen += [m.topic for m in snooper.messages_until("reply/snooper/marker")]
    assert sorted(seen) == ["reply/0001", "reply/marker", "reply/snooper/marker"]


@pytest.mark.parametrize(
    "value", ["therm-1", "therm-1/", "/reply/0001"], ids=["no-topic", "empty-topic", "no-client"]
)
def test_a_malformed_delivery_is_refused_and_reaches_nobody(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client], value: str
) -> None:
    device = thing(broker, clients, "therm-1", app.token).connect()
    device.subscribe("reply/therm-1/#")  # where the original would land if it passed
    gateway.publish("reply/therm-1/0001", b"malformed", user_properties(("tr50gw-deliver", value)))
    gateway.publish("reply/therm-1/marker", b"marker")
    assert [m.payload for m in device.messages_until("reply/marker")] == [b"marker"]


def test_a_reply_on_the_response_topic_a_thing_asked_for_reaches_it_alone(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client]
) -> None:
    device = thing(broker, clients, "therm-1", app.token, v5=True).connect()
    snooper = anonymous(broker, clients, "snooper").connect()
    snooper.subscribe("#")
    device.publish("api/0001", b"request")
    gateway.answer(gateway.next_message(), b"answer", to="reply/mine/7")
    gateway.publish("reply/snooper/marker", b"marker")
    reply = device.next_message()
    seen = [m.topic for m in snooper.messages_until("reply/snooper/marker")]
    assert ((reply.topic, reply.payload), seen) == (
        ("reply/mine/7", b"answer"),
        ["reply/snooper/marker"],
    )


def test_a_gateway_reply_for_an_id_no_thing_holds_passes_as_it_is(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client]
) -> None:
    device = anonymous(broker, clients, "dev-1").connect()
    device.subscribe("reply/dev-1/#")
    gateway.publish("reply/dev-1", b"answer")
    assert device.next_message().topic == "reply/dev-1"


def test_correlation_data_of_the_reply_reaches_a_v5_device(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client]
) -> None:
    device = thing(broker, clients, "therm-1", app.token, v5=True).connect()
    properties = Properties(PacketTypes.PUBLISH)
    properties.CorrelationData = b"\x00request-17"
    device.publish("api/0001", b"request", properties)
    request = gateway.next_message()
    gateway.answer(request, b"answer")
    reply = device.next_message()
    assert (reply.topic, reply.correlation) == ("reply/0001", b"\x00request-17")


def test_a_thing_subscribed_to_every_reply_reads_only_its_own(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client]
) -> None:
    """The plugin grants no READ: subscriptions stay as the acl_file allows them."""
    device = thing(broker, clients, "therm-1", app.token).connect()
    device.subscribe("reply/#", "#")
    other = anonymous(broker, clients, "dev-7").connect()
    other.subscribe("reply/dev-7/#")
    gateway.publish("reply/dev-7/1", b"for dev-7")
    gateway.publish("reply/therm-1/marker", b"marker")
    assert [m.topic for m in device.messages_until("reply/marker")] == ["reply/marker"]


# -- no takeover -----------------------------------------------------------------------------


def test_anonymous_client_cannot_take_over_a_connected_things_id(
    broker: Broker, app: App, clients: list[Client]
) -> None:
    thing(broker, clients, "therm-1", app.token, client_id="device-X").connect()
    assert refusal(anonymous(broker, clients, "device-X")) == NOT_AUTHORIZED


def test_another_thing_cannot_take_over_a_connected_things_id(
    broker: Broker, app: App, clients: list[Client]
) -> None:
    thing(broker, clients, "therm-1", app.token, client_id="device-X").connect()
    intruder = thing(broker, clients, "therm-2", app.token, client_id="device-X")
    assert refusal(intruder) == NOT_AUTHORIZED


def test_the_same_key_from_another_org_cannot_take_over(
    broker: Broker, app: App, clients: list[Client]
) -> None:
    other_org = App()
    write_credentials(broker, [app, other_org])
    thing(broker, clients, "therm-1", app.token).connect()
    assert refusal(thing(broker, clients, "therm-1", other_org.token)) == NOT_AUTHORIZED


def test_thing_stays_connected_through_takeover_attempts(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client]
) -> None:
    device = thing(broker, clients, "therm-1", app.token, client_id="device-X").connect()
    for intruder in (
        anonymous(broker, clients, "device-X"),
        thing(broker, clients, "therm-2", app.token, client_id="device-X"),
    ):
        with contextlib.suppress(Refused):
            intruder.connect()
    device.publish("api/still-here")
    assert gateway.next_message().topic == "api/device-X/still-here"


def test_the_same_thing_reconnecting_with_its_id_is_accepted(
    broker: Broker, app: App, clients: list[Client]
) -> None:
    first = thing(broker, clients, "therm-1", app.token).connect()
    thing(broker, clients, "therm-1", app.token).connect()
    assert first.disconnected.wait(TIMEOUT)  # taken over by itself, as MQTT says


def test_gateway_account_cannot_take_over_a_things_id(
    broker: Broker, app: App, clients: list[Client]
) -> None:
    thing(broker, clients, "therm-1", app.token).connect()
    impostor = Client(
        broker, "therm-1", username=GATEWAY_USERNAME, password=broker.gateway_password
    )
    clients.append(impostor)
    assert refusal(impostor) == NOT_AUTHORIZED


# -- anonymous clients -----------------------------------------------------------------------


def test_anonymous_client_with_a_registered_thing_key_as_id_is_refused(
    broker: Broker, app: App, clients: list[Client]
) -> None:
    assert refusal(anonymous(broker, clients, "therm-2")) == NOT_AUTHORIZED


@pytest.mark.parametrize("client_id", ["truck-7/x", "a+b", "a#"])
def test_anonymous_client_with_an_id_that_is_not_one_topic_level_is_refused(
    broker: Broker, clients: list[Client], client_id: str
) -> None:
    assert refusal(anonymous(broker, clients, client_id)) == NOT_AUTHORIZED


def test_thing_with_a_slash_in_its_client_id_is_refused(
    broker: Broker, app: App, clients: list[Client]
) -> None:
    device = thing(broker, clients, "therm-1", app.token, client_id="therm-1/x")
    assert refusal(device) == NOT_AUTHORIZED


def test_anonymous_client_works_as_before_with_its_identity_stamped(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client]
) -> None:
    device = anonymous(broker, clients, "dev-1").connect()
    device.subscribe("reply/dev-1/#")
    device.publish("api/dev-1/req", b"request")
    request = gateway.next_message()
    gateway.publish("reply/dev-1/req", b"answer")  # isolated mode as it was: no delivery asked
    reply = device.next_message()
    assert (request.topic, request.identity[1:], reply.topic, reply.payload) == (
        "api/dev-1/req",
        ["dev-1"],
        "reply/dev-1/req",
        b"answer",
    )


def test_anonymous_client_still_cannot_publish_outside_its_namespace(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client]
) -> None:
    device = anonymous(broker, clients, "dev-1").connect()
    device.publish("api/0001", b"refused by the acl_file")
    device.publish("api/dev-1/marker", b"marker")
    assert [m.topic for m in gateway.messages_until("api/dev-1/marker")] == ["api/dev-1/marker"]


def test_each_anonymous_connection_gets_its_own_conn_id(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client]
) -> None:
    conn_ids = []
    for _ in range(2):
        device = anonymous(broker, clients, "dev-1").connect()
        device.publish("api/dev-1/req")
        conn_ids.append(gateway.next_message().identity[0])
        device.close()
    assert conn_ids[0] != conn_ids[1]


def test_a_header_an_anonymous_client_forges_stays_part_of_its_payload(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client]
) -> None:
    device = anonymous(broker, clients, "dev-1").connect()
    device.publish("api/dev-1/req", FORGED)
    request = gateway.next_message()
    assert (request.identity[1:], request.body) == (["dev-1"], FORGED)


# -- the gateway and last wills --------------------------------------------------------------


def test_gateway_publishes_are_not_rewritten_or_stripped(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client]
) -> None:
    device = anonymous(broker, clients, "dev-1", v5=True).connect()
    device.subscribe("reply/dev-1/#")
    gateway.publish(
        "reply/dev-1/req", b"answer", user_properties(("tr50gw-thing", "kept"), ("x", "y"))
    )
    reply = device.next_message()
    assert (reply.topic, reply.user) == ("reply/dev-1/req", {"tr50gw-thing": "kept", "x": "y"})


@pytest.mark.parametrize("kind", ["thing", "anonymous"])
def test_a_last_will_on_a_request_topic_never_reaches_the_gateway(
    broker: Broker, app: App, gateway: FakeGateway, clients: list[Client], kind: str
) -> None:
    """A will skips MOSQ_EVT_MESSAGE, so it would arrive with no header, or the client's own."""
    forged = FORGED
    if kind == "thing":
        device = Client(
            broker,
            "therm-1",
            username="therm-1",
            password=app.token,
            v5=True,
            will=("api/therm-1/will", forged),
        )
    else:
        device = Client(broker, "dev-1", v5=True, will=("api/dev-1/will", forged))
    clients.append(device)
    device.connect()
    device.drop_connection()
    wait_for_log(broker, f"Client {device.client_id} closed its connection.")
    marker = anonymous(broker, clients, "dev-marker").connect()
    marker.publish("api/dev-marker/m", b"marker")
    assert [m.topic for m in gateway.messages_until("api/dev-marker/m")] == ["api/dev-marker/m"]


def test_a_refused_connect_holds_no_client_id(
    broker: Broker, app: App, clients: list[Client]
) -> None:
    """The plugin remembers a CONNECT it defers; when the password_file refuses it after all,
    MOSQ_EVT_DISCONNECT must forget it, or its id would stay locked."""
    wrong = Client(broker, "dev-9", username=GATEWAY_USERNAME, password="wrong")
    clients.append(wrong)
    with contextlib.suppress(Refused):
        wrong.connect()
    assert anonymous(broker, clients, "dev-9").connect()._client.is_connected()
