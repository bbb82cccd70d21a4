"""Minimal TR50 clients for `tr50gw call`: one envelope over WebSocket or MQTT, one reply back.

It imports the MQTT link's helpers and the core, never storage: sending one message loads
neither DuckDB nor pyarrow."""

from __future__ import annotations

import queue
import secrets

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from websockets.sync.client import connect

from gateway.transports.mqtt.link import parse_mqtt_url, set_nodelay

__all__ = ["call_mqtt", "call_websocket"]


def call_websocket(url: str, envelope: str, *, timeout: float) -> str | bytes:
    with connect(url, open_timeout=timeout, max_size=None) as websocket:
        websocket.send(envelope)
        return websocket.recv(timeout=timeout)


def call_mqtt(url: str, envelope: bytes, *, client_id: str | None, timeout: float) -> bytes:
    """Publish on `api/<client id>/call` at QoS 1 and wait for `reply/<client id>/call`."""
    target = parse_mqtt_url(url)
    client_id = client_id or f"cli-{secrets.token_hex(4)}"
    replies: queue.Queue[bytes] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if target.username:
        client.username_pw_set(target.username, target.password)
    client.on_socket_open = set_nodelay
    client.on_connect = lambda c, u, f, reason, p: c.subscribe(f"reply/{client_id}/call", qos=1)
    client.on_subscribe = lambda c, u, mid, codes, p: subscribed.put(True)
    client.on_message = lambda c, u, message: replies.put(bytes(message.payload))
    client.connect(target.host, target.port, keepalive=30)
    client.loop_start()
    try:
        try:
            subscribed.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no connection to {target.host}:{target.port}") from None
        client.publish(f"api/{client_id}/call", envelope, qos=1)
        try:
            return replies.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no reply within {timeout} s") from None
    finally:
        client.disconnect()
        client.loop_stop()
