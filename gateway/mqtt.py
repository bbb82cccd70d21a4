"""The MQTT transport: paho-mqtt against Mosquitto, classic TR50 topics.

`api/<rest>` is answered on `reply/<rest>`, `apiz/<rest>` (zlib) on `replyz/<rest>`. paho runs its
network loop in its own thread (which also reconnects with backoff); received messages hop onto
the asyncio loop with `call_soon_threadsafe`, and envelopes of one namespace are handled in order.
QoS 1 requests are acknowledged only after their reply is published (paho's manual ack), and the
gateway keeps a persistent session, so requests that wait in the broker while it is away are
answered when it returns.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import zlib
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.codec import encode
from gateway.context import Connection
from gateway.dispatcher import Dispatcher
from gateway.errors import MalformedEnvelope, PayloadTooLarge, TR50Error, failure
from gateway.settings import MqttTarget

__all__ = ["MqttTransport", "reply_route", "set_nodelay"]

logger = logging.getLogger("tr50gw.mqtt")
_SESSION_EXPIRY = 7 * 86400


@dataclass(frozen=True, slots=True)
class Route:
    namespace: str
    reply_topic: str
    compressed: bool


def reply_route(topic: str) -> Route | None:
    """Where a request on `topic` is answered: `api/17` -> `reply/17`, `apiz/x` -> `replyz/x`."""
    for prefix, reply_prefix, compressed in (("api", "reply", False), ("apiz", "replyz", True)):
        if topic == prefix:
            return Route("", reply_prefix, compressed)
        if topic.startswith(prefix + "/"):
            rest = topic[len(prefix) + 1 :]
            return Route(rest.split("/", 1)[0], f"{reply_prefix}/{rest}", compressed)
    return None


def set_nodelay(client: Any, userdata: Any, sock: Any) -> None:
    """Disable Nagle: without it QoS 1 round trips stall 40-90 ms on delayed ACKs."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class MqttTransport:
    def __init__(
        self,
        dispatcher: Dispatcher,
        target: MqttTarget,
        *,
        client_id: str,
        classic: bool,
        shared_group: str,
        max_payload: int,
    ) -> None:
        self._dispatcher = dispatcher
        self._target = target
        self._client_id = client_id
        self._classic = classic
        self._max_payload = max_payload
        prefix = f"$share/{shared_group}/" if shared_group else ""
        # `api/#` also matches bare `api`; subscribing to both would deliver a bare-`api` request
        # twice under MQTT v5 (one copy per matching subscription).
        self._subscriptions = [(prefix + topic, 1) for topic in ("api/#", "apiz/#")]
        self._connections: dict[str, Connection] = {}
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.connected = asyncio.Event()
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if self._target.username:
            client.username_pw_set(self._target.username, self._target.password)
        client.on_socket_open = set_nodelay
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        return client

    # -- paho thread callbacks ---------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            logger.warning(
                "mqtt connection to %s:%s refused: %s", self._target.host, self._target.port, reason
            )
            return
        client.subscribe(self._subscriptions)
        logger.info(
            "mqtt connected to %s:%s as %s (%s mode, session %s)",
            self._target.host,
            self._target.port,
            self._client_id,
            "classic" if self._classic else "isolated",
            "resumed" if flags.session_present else "new",
        )
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.connected.set)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self._stopping:
            return
        logger.warning(
            "mqtt disconnected from %s:%s (%s); reconnecting",
            self._target.host,
            self._target.port,
            reason,
        )
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.connected.clear)

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._schedule, message)

    # -- asyncio side ------------------------------------------------------------------------
    def _schedule(self, message: mqtt.MQTTMessage) -> None:
        route = reply_route(message.topic)
        if route is None:  # not one of ours (cannot happen with our subscriptions)
            self._client.ack(message.mid, message.qos)
            return
        key = route.namespace
        previous = self._tails.get(key)
        task = asyncio.create_task(self._process(message, route, previous))
        self._tails[key] = task
        task.add_done_callback(lambda done: self._forget_tail(key, done))

    def _forget_tail(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]

    def _connection_for(self, route: Route) -> Connection:
        if self._classic or not route.namespace:
            return Connection(transport="mqtt", client_id=route.namespace)
        connection = self._connections.get(route.namespace)
        if connection is None:
            connection = Connection(
                transport="mqtt", client_id=route.namespace, binds_sessions=True
            )
            self._connections[route.namespace] = connection
        return connection

    def _response_topic(self, message: mqtt.MQTTMessage, route: Route) -> tuple[str, Any]:
        props = getattr(message, "properties", None)
        wanted = getattr(props, "ResponseTopic", None) if props is not None else None
        if not wanted:
            return route.reply_topic, None
        allowed_roots = (
            ("reply", "replyz")
            if self._classic
            else (f"reply/{route.namespace}", f"replyz/{route.namespace}")
        )
        ok = (
            "+" not in wanted
            and "#" not in wanted
            and any(wanted == root or wanted.startswith(root + "/") for root in allowed_roots)
        )
        if not ok:
            return route.reply_topic, None
        return wanted, getattr(props, "CorrelationData", None)

    def _unpack(self, message: mqtt.MQTTMessage, route: Route) -> bytes | TR50Error:
        if not route.compressed:
            return bytes(message.payload)
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(message.payload, self._max_payload + 1)
        except zlib.error:
            return MalformedEnvelope("malformed envelope: apiz payload is not zlib data")
        if len(data) > self._max_payload or inflater.unconsumed_tail:
            return PayloadTooLarge(f"payload too large: inflates beyond {self._max_payload} bytes")
        return data

    async def _process(
        self, message: mqtt.MQTTMessage, route: Route, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        connection = self._connection_for(route)
        payload = self._unpack(message, route)
        if isinstance(payload, TR50Error):
            await self._dispatcher.record_rejected(connection, payload, "")
            reply = encode(failure(payload.code, payload.message))
        else:
            reply = await self._dispatcher.handle(payload, connection)
        topic, correlation = self._response_topic(message, route)
        if route.compressed:
            reply = zlib.compress(reply)
        properties = None
        if correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation
        self._client.publish(topic, reply, qos=min(message.qos, 1), properties=properties)
        if message.qos:
            self._client.ack(message.mid, message.qos)

    async def run(self) -> None:
        """Connect (retrying in the background) and serve until cancelled."""
        self._loop = asyncio.get_running_loop()
        connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect_props.SessionExpiryInterval = _SESSION_EXPIRY
        self._client.connect_async(
            self._target.host,
            self._target.port,
            keepalive=30,
            clean_start=False,
            properties=connect_props,
        )
        self._client.loop_start()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.gather(*self._tails.values(), return_exceptions=True)
            self._stopping = True
            self._client.disconnect()
            self._client.loop_stop()
            logger.info("mqtt stopped")
