"""paho-mqtt driven from asyncio, as aiomqtt does; it knows nothing of TR50.

paho's socket is registered with the loop for reads and (while it has packets queued) writes, so
messages arrive and publishes leave without a thread hop; only the blocking TCP connect runs in
an executor. The link keeps a persistent session (clean start off, a week's expiry), reconnects
with backoff and resubscribes, and hands each message over as its own `Message` type. QoS 1
messages are acknowledged only when the owner says so (`ack`), after its reply is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["Message", "MqttLink", "MqttTarget", "parse_mqtt_url", "set_nodelay"]

logger = logging.getLogger("tr50gw.mqtt")
_SESSION_EXPIRY = 7 * 86400


@dataclass(frozen=True, slots=True)
class MqttTarget:
    host: str
    port: int
    username: str | None
    password: str | None

    def __repr__(self) -> str:  # never show the password
        user = f"{self.username}@" if self.username else ""
        return f"MqttTarget(mqtt://{user}{self.host}:{self.port})"


def parse_mqtt_url(url: str) -> MqttTarget:
    """`mqtt://[user:pass@]host[:port]`; user and password may be percent-encoded."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp"):
        raise ValueError("MQTT URL must look like mqtt://[user:pass@]host:port")
    return MqttTarget(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 1883,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def set_nodelay(client: Any, userdata: Any, sock: Any) -> None:
    """Disable Nagle: without it QoS 1 round trips stall 40-90 ms on delayed ACKs."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _close_gracefully(sock: socket.socket, grace: float = 2.0) -> None:
    """Half-close, then read and discard until the broker closes its side (paho closes the
    socket right after this returns).

    Closing a TCP socket with unread bytes in its receive buffer sends a RST instead of a FIN,
    and a broker that sees the RST first drops what it had not read yet: the acknowledgements
    and the DISCONNECT written just before. While stopping, requests keep arriving (and are left
    unacknowledged on purpose), so the buffer is rarely empty: under CPU load, requests answered
    by a stopping gateway came back to its successor and ran twice (seen in 1 run of 20 here).
    Once the broker has read the DISCONNECT it closes the connection, so this waits for that.
    """
    deadline = time.monotonic() + grace
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.1)
        while time.monotonic() < deadline:
            try:
                if not sock.recv(65536):
                    return
            except TimeoutError:
                continue
    except OSError:
        return  # already reset or closed: nothing more to save


_READ_SIZE = 256 * 1024


class _Client(mqtt.Client):
    """paho's client with fewer system calls, for a socket driven by the event loop.

    - Reads: paho asks the socket for one byte (the packet type), then each byte of the length,
      then the rest, a `recv` each. Here one `recv` of up to 256 KiB fills a buffer the parser
      takes those bytes from; the link's reader drains it (`buffered`).
    - Writes: paho sends each queued packet with its own `send`. Here every packet queued when
      the socket is written to goes out in one `send`, and paho's own bookkeeping then walks the
      packets against the bytes already sent (`_sent_ahead`), so its completion rules (QoS 0
      `on_publish`, DISCONNECT) are unchanged.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_buffer = b""
        self._read_pos = 0
        self._sent_ahead = 0

    @property
    def buffered(self) -> bool:
        """Bytes read from the socket that paho has not parsed yet."""
        return self._read_pos < len(self._read_buffer)

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_pos >= len(self._read_buffer):
            data = super()._sock_recv(_READ_SIZE)  # BlockingIOError when nothing is there
            if not data:
                return data  # the broker closed the connection
            self._read_buffer, self._read_pos = data, 0
        start = self._read_pos
        self._read_pos = min(start + bufsize, len(self._read_buffer))
        return self._read_buffer[start : self._read_pos]

    def _packet_write(self) -> MQTTErrorCode:
        queued = self._out_packet
        if len(queued) > 1 and self._sock is not None and not self._sent_ahead:
            joined = b"".join(memoryview(item["packet"])[item["pos"] :] for item in queued)
            try:
                self._sent_ahead = super()._sock_send(joined)
            except BlockingIOError:
                return MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError:
                pass  # paho's own send below meets the same error and handles it
        return super()._packet_write()

    def _sock_send(self, buf: bytes | bytearray) -> int:
        if self._sent_ahead:
            taken = min(self._sent_ahead, len(buf))
            self._sent_ahead -= taken
            return taken
        return super()._sock_send(buf)

    def _sock_close(self) -> None:
        self._read_buffer, self._read_pos, self._sent_ahead = b"", 0, 0
        super()._sock_close()


@dataclass(frozen=True, slots=True)
class Message:
    """One PUBLISH as received; `packet_id` is what `ack` takes back."""

    topic: str
    payload: bytes
    qos: int
    dup: bool
    packet_id: int
    response_topic: str | None
    correlation_data: bytes | None


class MqttLink:
    """One MQTT v5 connection from the event loop: `start`, `publish`, `ack`, `close`."""

    def __init__(
        self,
        target: MqttTarget,
        *,
        client_id: str,
        subscriptions: list[tuple[str, int]],
        on_message: Callable[[Message], None],
        description: str = "",
        max_inflight: int = 100,
    ) -> None:
        """`on_message` runs on the event loop for every message; `description` goes into the
        connect log line."""
        self._target = target
        self._client_id = client_id
        self._subscriptions = subscriptions
        self._on_message_cb = on_message
        self._description = description
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._stopping = False
        self._connected_once = False
        self._connecting = False
        self._session_ok = False
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()  # CONNACK received: replies and acks may be written
        self.subscribed = asyncio.Event()  # SUBACK received too: requests published now arrive
        self._subscribe_mid: int | None = None
        self._session_present = False
        self._lost = asyncio.Event()
        self._flush_scheduled = False
        self._client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if target.username:
            self._client.username_pw_set(target.username, target.password)
        self._client.on_socket_open = self._on_socket_open
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_socket_register_write
        self._client.on_socket_unregister_write = self._on_socket_unregister_write
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)

    # -- what the owner calls ------------------------------------------------------------------
    def start(self) -> None:
        """Connect (retrying in the background) until `close`."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task = asyncio.create_task(self._run(), name=f"mqtt-link-{self._client_id}")

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        correlation_data: bytes | None = None,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> None:
        properties = None
        if correlation_data is not None or user_properties:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if correlation_data is not None:
                properties.CorrelationData = correlation_data
            if user_properties:
                properties.UserProperty = user_properties
        self._client.publish(topic, payload, qos=qos, properties=properties)

    def ack(self, packet_id: int, qos: int) -> None:
        self._client.ack(packet_id, qos)

    def socket(self) -> socket.socket | None:
        """The current TCP socket (None while disconnected)."""
        sock = self._client.socket()
        return sock if isinstance(sock, socket.socket) else None

    async def close(self, grace: float = 5.0) -> None:
        """Stop reconnecting, write out what is queued (replies, acks), then disconnect; each
        step waits at most `grace` seconds."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._stopping = True
        deadline = time.monotonic() + grace
        while self.connected.is_set() and self._client.want_write():
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.005)  # the loop's writer flushes replies and acks
        if self.connected.is_set():
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), grace)

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
        if self._stopping and isinstance(sock, socket.socket):
            _close_gracefully(sock)

    def _read(self) -> None:
        """The socket is readable: parse every packet one `recv` brought."""
        client = self._client
        client.loop_read()
        while client.buffered and client.socket() is not None:
            client.loop_read()

    def _on_socket_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        """Packets are queued: write them once the loop has run what is ready now, so every
        reply and ack queued meanwhile goes out in the same `send`."""
        self._in_loop(self._schedule_flush)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            assert self._loop is not None
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._client.loop_write()
        sock = self._client.socket()
        if self._client.want_write() and sock is not None:  # the socket's buffer is full
            assert self._loop is not None
            self._loop.add_writer(sock, self._client.loop_write)

    def _on_socket_unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._in_loop(self._loop.remove_writer, sock)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            logger.warning(
                "mqtt connection to %s:%s refused: %s", self._target.host, self._target.port, reason
            )
            return
        _, self._subscribe_mid = client.subscribe(self._subscriptions)
        self._session_present = bool(flags.session_present)
        self._session_ok = True
        self.connected.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [str(reason) for reason in reasons if reason.is_failure]
        if refused:  # the broker's ACL: the gateway would never hear a request
            logger.error(
                "mqtt subscriptions refused by %s:%s: %s (is the gateway's broker account the "
                "one the ACL grants api/#?)",
                self._target.host,
                self._target.port,
                ", ".join(refused),
            )
            return
        # Logged only now: a request published before the SUBACK might have gone nowhere.
        logger.info(
            "mqtt connected to %s:%s as %s (%s, session %s)",
            self._target.host,
            self._target.port,
            self._client_id,
            self._description,
            "resumed" if self._session_present else "new",
        )
        self.subscribed.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected.clear()
        self.subscribed.clear()
        self._lost.set()
        if not self._stopping:
            logger.warning(
                "mqtt disconnected from %s:%s (%s); reconnecting",
                self._target.host,
                self._target.port,
                reason,
            )

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        self._on_message_cb(
            Message(
                topic=message.topic,
                payload=bytes(message.payload),
                qos=message.qos,
                dup=bool(message.dup),
                packet_id=message.mid,
                response_topic=getattr(props, "ResponseTopic", None) or None,
                correlation_data=getattr(props, "CorrelationData", None),
            )
        )

    # -- connecting ------------------------------------------------------------------------------
    async def _connect(self) -> None:
        """Open the TCP connection and send CONNECT; blocking, so it runs in an executor."""
        self._connecting = True
        try:
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
        finally:
            self._connecting = False

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

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._keep_connected())
            group.create_task(self._housekeeping())
