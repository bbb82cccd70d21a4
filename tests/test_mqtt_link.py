"""The gateway's MQTT link writes every queued packet in one send and parses every packet one
read brought (gateway/transports/mqtt/link.py): nothing may be lost, reordered or cut on the way,
also when a send is partial and the rest waits for the socket to drain."""

from __future__ import annotations

import asyncio
import hashlib
import queue

import pytest

from devtools.broker import Broker
from gateway.transports.mqtt.link import Message, MqttLink, parse_mqtt_url
from tests.support import MqttClient

MESSAGES = 300
PAYLOAD = 200 * 1024  # 300 x 200 KiB queued at once: far beyond a socket's send buffer


def payload(index: int) -> bytes:
    seed = hashlib.sha256(str(index).encode()).digest()
    return (seed * (PAYLOAD // len(seed) + 1))[:PAYLOAD]


async def _publish_burst(broker: Broker, sink: MqttClient, qos: int) -> None:
    link = MqttLink(
        parse_mqtt_url(broker.url_for_gateway),
        client_id="link-test",
        subscriptions=[("api/#", 1)],
        on_message=lambda message: None,
    )
    link.start()
    await asyncio.wait_for(link.subscribed.wait(), 10)
    for index in range(MESSAGES):  # all queued within one turn of the loop
        link.publish(f"reply/sink/{index}", payload(index), qos=qos)
    # QoS 1 beyond the in-flight window waits in paho for acknowledgements: stay connected
    # until the sink has had everything (or 20 s).
    for _ in range(200):
        if sink.messages.qsize() >= MESSAGES:
            break
        await asyncio.sleep(0.1)
    await link.close(grace=30)


def _received(sink: MqttClient) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    while len(got) < MESSAGES:
        try:
            message = sink.messages.get(timeout=20)
        except queue.Empty:
            break
        got.append((message.topic, bytes(message.payload)))
    return got


@pytest.mark.parametrize("qos", [0, 1])
def test_a_burst_of_large_publishes_arrives_whole_and_in_order(broker: Broker, qos: int) -> None:
    sink = MqttClient(broker.port, "sink")
    sink.subscribe("reply/sink/#", qos=qos)
    asyncio.run(_publish_burst(broker, sink, qos=qos))
    expected = [(f"reply/sink/{index}", payload(index)) for index in range(MESSAGES)]
    assert _received(sink) == expected


async def _receive_burst(broker: Broker, sender: MqttClient) -> list[Message]:
    got: list[Message] = []
    done = asyncio.Event()

    def on_message(message: Message) -> None:
        got.append(message)
        link.ack(message.packet_id, message.qos)
        if len(got) == MESSAGES:
            done.set()

    link = MqttLink(
        parse_mqtt_url(broker.url_for_gateway),
        client_id="link-test",
        subscriptions=[("api/#", 1)],
        on_message=on_message,
    )
    link.start()
    await asyncio.wait_for(link.subscribed.wait(), 10)
    for index in range(MESSAGES):
        sender.client.publish(f"api/{sender.client_id}/{index}", b"%d" % index * 50, qos=1)
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        await link.close()
    return got


def test_many_small_requests_read_together_are_each_delivered_once_in_order(
    broker: Broker,
) -> None:
    sender = MqttClient(broker.port, "dev-burst")
    got = asyncio.run(_receive_burst(broker, sender))
    # The broker's plugin puts its stamp in front of each request (broker/README.md).
    assert [(m.topic, m.payload.rpartition(b"\n")[2]) for m in got] == [
        (f"api/dev-burst/{index}", b"%d" % index * 50) for index in range(MESSAGES)
    ]
