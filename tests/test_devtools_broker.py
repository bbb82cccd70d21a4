"""The broker the other integration tests rely on: the shipped ACL really isolates clients,
and a restart keeps the port and a persistent session's queued QoS 1 message."""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from devtools.broker import Broker, choose_port, free_port, port_is_free
from gateway.transports.mqtt.identity import broker_identity

TIMEOUT = 5.0


class Client:
    """A paho client whose received messages land in a queue; every step waits for its ack."""

    def __init__(
        self,
        broker: Broker,
        client_id: str,
        *,
        gateway: bool = False,
        clean_session: bool = True,
    ) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._connected = threading.Event()
        self._acks: dict[int, threading.Event] = {}
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=clean_session,
        )
        if gateway:
            self._client.username_pw_set("tr50gw", broker.gateway_password)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        assert self._connected.wait(TIMEOUT), f"{client_id} did not connect"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        assert not reason.is_failure, reason
        self._connected.set()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # The broker plugin puts its identity header in front of a request's payload
        # (broker/README.md); these tests are about topics, so the gateway reads past it.
        _, payload = broker_identity(message.payload)
        self.messages.put((message.topic, payload))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        self._acks.setdefault(mid, threading.Event()).set()

    def subscribe(self, *topics: str) -> None:
        result, mid = self._client.subscribe([(topic, 1) for topic in topics])
        assert result == mqtt.MQTT_ERR_SUCCESS
        assert self._acks.setdefault(mid, threading.Event()).wait(TIMEOUT)

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT)

    def next_message(self) -> tuple[str, bytes]:
        return self.messages.get(timeout=TIMEOUT)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def broker() -> Iterator[Broker]:
    with Broker() as running:
        yield running


def test_acl_confines_each_client_to_its_own_topics(broker: Broker) -> None:
    assert broker.port != 1883
    gateway = Client(broker, "gateway", gateway=True)
    alice = Client(broker, "alice")
    bob = Client(broker, "bob")
    try:
        gateway.subscribe("api/#", "apiz/#")
        alice.subscribe("reply/#", "api/#")  # granted, but only her own topics are delivered
        bob.subscribe("reply/bob/#")

        # Alice cannot speak for Bob (dropped silently) but can speak for herself.
        alice.publish("api/bob/1", b"spoofed")
        alice.publish("api", b"bare")
        alice.publish("api/alice/2", b"hers")
        assert gateway.next_message() == ("api/alice/2", b"hers")

        # Alice cannot read Bob's replies; Bob can. Messages from one publisher arrive in order,
        # so the marker reaching Alice proves the earlier reply to Bob was never delivered.
        gateway.publish("reply/bob/1", b"for bob")
        gateway.publish("reply/alice/2", b"marker")
        assert bob.next_message() == ("reply/bob/1", b"for bob")
        assert alice.next_message() == ("reply/alice/2", b"marker")

        # Nor can Alice forge a reply to Bob.
        alice.publish("reply/bob/3", b"forged")
        gateway.publish("reply/bob/4", b"real")
        assert bob.next_message() == ("reply/bob/4", b"real")
        assert alice.messages.empty()
        assert gateway.messages.empty()
    finally:
        for client in (gateway, alice, bob):
            client.close()


def test_classic_mode_lets_anyone_use_any_topic() -> None:
    with Broker(acl=False, persistence=False) as broker:
        gateway = Client(broker, "gateway", gateway=True)
        device = Client(broker, "device")
        try:
            gateway.subscribe("api/#")
            device.publish("api", b"legacy")
            assert gateway.next_message() == ("api", b"legacy")
        finally:
            gateway.close()
            device.close()


def test_restart_keeps_port_and_queued_qos1_message(broker: Broker) -> None:
    port = broker.port
    gateway = Client(broker, "gateway-persistent", gateway=True, clean_session=False)
    gateway.subscribe("api/#")
    gateway.close()

    device = Client(broker, "dev1")
    device.publish("api/dev1/7", b"queued while away")
    device.close()

    broker.restart()
    assert broker.port == port

    gateway = Client(broker, "gateway-persistent", gateway=True, clean_session=False)
    try:
        assert gateway.next_message() == ("api/dev1/7", b"queued while away")
    finally:
        gateway.close()


def test_choose_port_falls_back_when_the_preferred_port_is_taken() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        assert not port_is_free(taken)
        chosen = choose_port(taken)
        assert chosen != taken
        assert port_is_free(chosen)
    preferred = free_port()
    assert choose_port(preferred) == preferred
