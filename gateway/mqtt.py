"""The MQTT transport: paho-mqtt against Mosquitto, classic TR50 topics.

`api/<rest>` is answered on `reply/<rest>`, `apiz/<rest>` (zlib) on `replyz/<rest>`. paho is
driven from the asyncio loop, as aiomqtt does: its socket is registered with the loop for reads
and (while it has packets queued) writes, so messages are dispatched and replies written without
a thread hop; only the blocking TCP connect runs in an executor. Envelopes of one namespace are
handled in order.
QoS 1 requests are acknowledged only after their reply is published (paho's manual ack), and the
gateway keeps a persistent session, so requests that wait in the broker while it is away are
answered when it returns.

Exactly once, as far as the gateway can tell: a request answered but whose acknowledgement was
lost with the connection comes back with the DUP flag and the same packet id after a reconnect.
Such a duplicate of a request this process already answered is acknowledged without being run
or logged again (paho itself re-sends the reply if the broker had not acknowledged it). On stop,
the gateway stops taking requests, finishes those in flight, writes out their replies and
acknowledgements, and only then disconnects; what it did not take waits in its broker session.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import threading
import time
import zlib
from collections import OrderedDict
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
_REMEMBERED = 50_000  # answered QoS 1 requests kept to recognise redeliveries (~6 MB)


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


_Identity = tuple[int, str, bytes]


def _identity(message: mqtt.MQTTMessage) -> _Identity:
    """What a redelivery repeats: the broker's packet id, the topic and the payload."""
    return message.mid, message.topic, hashlib.blake2b(message.payload, digest_size=16).digest()


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
        max_reply: int = 1_000_000,
    ) -> None:
        self._dispatcher = dispatcher
        self._target = target
        self._client_id = client_id
        self._classic = classic
        self._max_payload = max_payload
        self._max_reply = max_reply
        prefix = f"$share/{shared_group}/" if shared_group else ""
        # `api/#` also matches bare `api`; subscribing to both would deliver a bare-`api` request
        # twice under MQTT v5 (one copy per matching subscription).
        self._subscriptions = [(prefix + topic, 1) for topic in ("api/#", "apiz/#")]
        self._connections: dict[str, Connection] = {}
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._stopping = False
        self._draining = False
        self._answered: OrderedDict[_Identity, None] = OrderedDict()
        self._in_progress: set[_Identity | None] = set()
        self.duplicates = 0  # redelivered requests acknowledged without running them again
        self._connected_once = False
        self._connecting = False
        self._session_ok = False
        self.connected = asyncio.Event()
        self._lost = asyncio.Event()
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
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        return client

    # -- paho callbacks: on the loop thread, except socket ones during the executor's connect ---
    def _in_loop(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        assert loop is not None
        if threading.get_ident() == self._loop_thread:
            callback(*args)
        else:
            loop.call_soon_threadsafe(callback, *args)

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        set_nodelay(client, userdata, sock)
        assert self._loop is not None
        self._in_loop(self._loop.add_reader, sock, self._read)

    def _on_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._in_loop(self._loop.remove_reader, sock)
        self._in_loop(self._loop.remove_writer, sock)

    def _on_socket_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._in_loop(self._loop.add_writer, sock, self._client.loop_write)

    def _on_socket_unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._in_loop(self._loop.remove_writer, sock)

    def _read(self) -> None:
        self._client.loop_read()

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
        self._session_ok = True
        self.connected.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected.clear()
        self._lost.set()
        if not self._stopping:
            logger.warning(
                "mqtt disconnected from %s:%s (%s); reconnecting",
                self._target.host,
                self._target.port,
                reason,
            )

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._draining:
            return  # not acknowledged: the broker keeps it for our session's next connection
        identity = _identity(message) if message.qos else None
        if identity is not None and message.dup and identity in self._in_progress:
            # Redelivered while the first copy is still being handled (the link dropped and
            # came back meanwhile): that copy will answer and acknowledge it.
            self.duplicates += 1
            return
        if identity is not None and message.dup and identity in self._answered:
            self.duplicates += 1
            logger.info(
                "mqtt: redelivered request %d on %s already answered", message.mid, message.topic
            )
            self._client.ack(message.mid, message.qos)
            return
        if identity is not None:
            self._in_progress.add(identity)
        self._schedule(message, identity)

    # -- asyncio side ------------------------------------------------------------------------
    def _schedule(self, message: mqtt.MQTTMessage, identity: _Identity | None) -> None:
        route = reply_route(message.topic)
        if route is None:  # not one of ours (cannot happen with our subscriptions)
            self._in_progress.discard(identity)
            self._client.ack(message.mid, message.qos)
            return
        key = route.namespace
        previous = self._tails.get(key)
        task = asyncio.create_task(self._process(message, route, previous, identity))
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

    @staticmethod
    def _wire(route: Route, reply: bytes | dict[str, Any]) -> bytes:
        """A reply as published: encoded if it is a document, zlib-compressed on `replyz`."""
        data = reply if isinstance(reply, bytes) else encode(reply)
        return zlib.compress(data) if route.compressed else data

    async def _process(
        self,
        message: mqtt.MQTTMessage,
        route: Route,
        previous: asyncio.Task[None] | None,
        identity: _Identity | None,
    ) -> None:
        """`identity`: the QoS 1 request's, computed once when it arrived (None for QoS 0)."""
        try:
            await self._answer(message, route, previous, identity)
        finally:  # answered or not, a later redelivery must not be ignored as "in progress"
            self._in_progress.discard(identity)

    async def _answer(
        self,
        message: mqtt.MQTTMessage,
        route: Route,
        previous: asyncio.Task[None] | None,
        identity: _Identity | None,
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        connection = self._connection_for(route)
        payload = self._unpack(message, route)
        if isinstance(payload, TR50Error):
            await self._dispatcher.record_rejected(connection, payload, "")
            reply = self._wire(route, failure(payload.code, payload.message))
        else:
            reply = self._wire(route, await self._dispatcher.handle(payload, connection))
        topic, correlation = self._response_topic(message, route)
        if len(reply) > self._max_reply:
            # The broker would drop the connection over it, and the unacknowledged request would
            # come back on reconnect, forever; answer -90011 instead.
            logger.warning(
                "mqtt reply of %d bytes on %s exceeds %d", len(reply), topic, self._max_reply
            )
            too_large = PayloadTooLarge(
                f"payload too large: the reply has {len(reply)} bytes, MQTT allows "
                f"{self._max_reply}; ask for less (a smaller limit)"
            )
            reply = self._wire(route, failure(too_large.code, too_large.message))
        properties = None
        if correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation
        self._client.publish(topic, reply, qos=min(message.qos, 1), properties=properties)
        if identity is not None:
            self._client.ack(message.mid, message.qos)
            self._answered[identity] = None
            if len(self._answered) > _REMEMBERED:
                self._answered.popitem(last=False)

    async def _connect(self) -> None:
        """Open the TCP connection and send CONNECT; blocking, so it runs in an executor."""
        self._connecting = True
        try:
            await self._connect_in_executor()
        finally:
            self._connecting = False

    async def _connect_in_executor(self) -> None:
        if self._connected_once:
            await asyncio.to_thread(self._client.reconnect)
            return
        connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect_props.SessionExpiryInterval = _SESSION_EXPIRY
        await asyncio.to_thread(
            self._client.connect,
            self._target.host,
            self._target.port,
            keepalive=30,
            clean_start=False,
            properties=connect_props,
        )
        self._connected_once = True

    async def _keep_connected(self) -> None:
        """Connect, and reconnect with backoff (1 s doubling to 30 s) whenever the link drops."""
        delay = 1.0
        while True:
            self._lost.clear()
            try:
                await self._connect()
            except OSError as error:
                logger.warning(
                    "mqtt cannot reach %s:%s (%s); retrying in %.0f s",
                    self._target.host,
                    self._target.port,
                    error.strerror or error,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            await self._lost.wait()
            # Back off further only when the link never got as far as a CONNACK.
            delay = 1.0 if self._session_ok else min(delay * 2, 30.0)
            self._session_ok = False
            await asyncio.sleep(delay)

    async def _housekeeping(self) -> None:
        """paho's keep-alive pings and timeouts, which its own loop would otherwise run."""
        while True:
            await asyncio.sleep(1)
            if not self._connecting:  # paho's state belongs to the executor meanwhile
                self._client.loop_misc()

    async def run(self) -> None:
        """Connect (retrying in the background) and serve until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._keep_connected())
                group.create_task(self._housekeeping())
        finally:
            self._draining = True
            while self._tails:  # requests in flight finish and publish their replies
                await asyncio.gather(*self._tails.values(), return_exceptions=True)
            self._stopping = True
            deadline = time.monotonic() + 5
            while self.connected.is_set() and self._client.want_write():
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.005)  # the loop's writer flushes replies and acks
            if self.connected.is_set():
                self._client.disconnect()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lost.wait(), 5)
            logger.info("mqtt stopped")
