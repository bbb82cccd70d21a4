"""The floors: what a round trip costs with no gateway work at all.

    python -m bench.echo mqtt --url mqtt://user:pass@127.0.0.1:PORT
    python -m bench.echo ws --port N

`mqtt` is a bare paho responder with the gateway's client settings (MQTT v5, TCP_NODELAY, manual
acknowledgement after the reply is published, 100 messages in flight, the same paho network
thread): it subscribes to `api/#` at QoS 1 and publishes every payload back on the derived
`reply/...` topic at the request's QoS, unchanged but for the broker plugin's identity header,
which it removes as the gateway does (`gateway.transports.mqtt.identity.broker_identity`). It
answers from paho's thread with no hop onto an event loop, which is the least any paho-based
responder can do.

Behind a broker running tr50gw's plugin (broker/README.md) the same answer is what the gateway
does for a device authenticated at CONNECT: it publishes on `api/0001`, the plugin moves the
request to `api/<client id>/0001` and puts its header in front of the payload, and delivers the
reply published on `reply/<client id>/0001` to that client alone, as `reply/0001`.

`ws` is a bare `websockets` server on `/api` with the gateway's server settings that sends every
message back as it came.

Both print a line starting with "ready" once they listen (ws: with its URL) or are subscribed,
and run until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from gateway.transports.mqtt.identity import broker_identity
from gateway.transports.websocket import server_options

__all__ = ["main", "reply_topic", "run_mqtt_echo", "run_ws_echo"]


def reply_topic(topic: str) -> str:
    """`api/x/y` -> `reply/x/y`, bare `api` -> `reply` (the gateway's derived reply topic)."""
    return "reply" + topic[3:]


def _nodelay(client: Any, userdata: Any, sock: Any) -> None:
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def run_mqtt_echo(url: str, client_id: str = "bench-echo") -> int:
    parts = urlsplit(url)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=True,
    )
    if parts.username:
        client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
    client.on_socket_open = _nodelay
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    stop = threading.Event()

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            print(f"echo: connection refused: {reason}", file=sys.stderr, flush=True)
            stop.set()
            return
        c.subscribe("api/#", qos=1)

    def on_subscribe(c: Any, userdata: Any, mid: Any, codes: Any, props: Any) -> None:
        if any(code.is_failure for code in codes):
            print(f"echo: subscription refused: {codes}", file=sys.stderr, flush=True)
            stop.set()
            return
        print("ready", flush=True)

    def on_message(c: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        _, sent = broker_identity(message.payload)
        c.publish(reply_topic(message.topic), sent, qos=min(message.qos, 1))
        if message.qos:
            c.ack(message.mid, message.qos)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=30)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()
    return 0


async def _serve_ws(host: str, port: int, max_payload: int) -> None:
    async def echo(websocket: ServerConnection) -> None:
        try:
            async for message in websocket:
                await websocket.send(message)
        except ConnectionClosed:
            pass

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # The gateway's server settings (gateway/websocket.py), so only the work per message differs.
    async with serve(echo, host, port, **server_options(max_payload)) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"ready ws://{host}:{bound}/api", flush=True)
        await stop.wait()


def run_ws_echo(port: int, host: str = "127.0.0.1", max_payload: int = 256 * 1024) -> int:
    asyncio.run(_serve_ws(host, port, max_payload))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    mqtt_parser = sub.add_parser("mqtt", help="bare paho echo responder on api/#")
    mqtt_parser.add_argument("--url", required=True, help="mqtt://[user:pass@]host:port")
    mqtt_parser.add_argument("--client-id", default="bench-echo")
    ws_parser = sub.add_parser("ws", help="bare websockets echo server on /api")
    ws_parser.add_argument("--port", type=int, default=0, help="0: any free port")
    ws_parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    if args.mode == "mqtt":
        return run_mqtt_echo(args.url, args.client_id)
    return run_ws_echo(args.port, args.host)


if __name__ == "__main__":
    sys.exit(main())
