"""The load generator: a window of TR50 requests kept in flight, in a process of its own.

    python -m bench.load mqtt --url mqtt://127.0.0.1:PORT --client-id X --qos 1 --window 100 \\
        --duration 5 --warmup 1 --payload '{"1":{"command":"diag.ping"}}'
    python -m bench.load ws --url ws://127.0.0.1:PORT/api --window 100 --duration 5 ...

It prints one JSON line: `requests` answered inside the measured interval, `errors` among them
(replies carrying `"success":false`), `seconds`, `rps`, `p50_ms`/`p90_ms`/`p99_ms`, and the
totals a caller needs to check the usage log: `sent`, `answered` (warm-up and drain included),
`lost` (never answered) and `auth_calls`.

Closed loop: every answer sends the next request, so `--window` requests are always in flight.
The first `--warmup` seconds are not measured: an answer (and its latency) counts when it arrives
inside the measured interval, which ends after `--duration` seconds or `--requests` answers.
Then no new request is sent and the outstanding ones are drained, so every request sent is
answered before the process exits and the usage log can be checked against `answered`.

MQTT: paho (v5, TCP_NODELAY, its network thread), client id X publishing to `api/X/<slot>` and
subscribing to `reply/X/#`; slot s in 0..window-1 is the request's correlation, its answer comes
back on `reply/X/<slot>`. With `--auth`, that envelope is published once on `api/X/auth` before
timing starts: in isolated mode the gateway binds the session to the namespace X.
With `--device`, it talks as a deviceWISE device authenticated at CONNECT (the URL's username =
thing key, password = app token; tr50gw's broker plugin, broker/README.md): it publishes to
`api/<slot>` and never subscribes; the plugin moves each request into the client's namespace and
delivers its answer to this client alone on `reply/<slot>`.

WebSocket: websockets' asyncio client. The window is spread over `--connections` connections
(default: as many as the window, one request in flight on each, which is how a fleet of devices
talks to a gateway); fewer connections pipeline several requests per connection, answered in
order. With `--auth`, every connection authenticates once before timing starts (the session is
bound to the connection).

The same code drives the floor (bench.echo) and the gateway, so the ratio compares like with like.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from websockets.asyncio.client import ClientConnection, connect

from bench.common import percentile
from devtools.broker import REPO_ROOT

__all__ = ["LoadError", "main", "merge", "spawn", "wait_result"]

_FAILED = b'"success":false'
_FAILED_TEXT = _FAILED.decode()
_MAX_SAMPLES = 20_000


class LoadError(RuntimeError):
    """The load could not be generated (no connection, the auth call failed, ...)."""


class _Tally:
    """Counts and latencies, with the warm-up / measure / drain phases decided by time."""

    def __init__(self, warmup: float, duration: float, requests: int | None) -> None:
        self.warmup = warmup
        self.duration = duration
        self.max_requests = requests
        self.latencies: list[float] = []
        self.measured = 0
        self.sent = 0
        self.answered = 0
        self.errors = 0
        self.measured_errors = 0
        self.issuing = True
        self.started = 0.0
        self.measure_from = 0.0
        self.measure_until = 0.0
        self.measured_end = 0.0
        self.wall_first_send = 0.0
        self.wall_last_answer = 0.0

    def begin(self) -> None:
        self.started = time.perf_counter()
        self.wall_first_send = time.time()
        self.measure_from = self.started + self.warmup
        self.measure_until = self.measure_from + self.duration

    def answer(self, sent_at: float, payload: bytes | str) -> bool:
        """Account one answer; whether the caller should send the next request."""
        now = time.perf_counter()
        self.answered += 1
        marker = _FAILED if isinstance(payload, bytes) else _FAILED_TEXT
        failed = marker in payload  # type: ignore[operator]
        if failed:
            self.errors += 1
        if self.issuing and now >= self.measure_from:
            self.measured += 1
            self.latencies.append(now - sent_at)
            if failed:
                self.measured_errors += 1
        if self.issuing and (
            now >= self.measure_until
            or (self.max_requests is not None and self.measured >= self.max_requests)
        ):
            self.issuing = False
            self.measured_end = now
        return self.issuing

    def report(self, mode: str, window: int, auth_calls: int, emit_samples: bool) -> dict[str, Any]:
        self.wall_last_answer = time.time()
        end = self.measured_end or time.perf_counter()
        seconds = max(1e-9, end - self.measure_from)
        ms = [value * 1000 for value in self.latencies]
        result: dict[str, Any] = {
            "mode": mode,
            "window": window,
            "requests": self.measured,
            "errors": self.measured_errors,
            "seconds": round(seconds, 4),
            "rps": round(self.measured / seconds, 1),
            "p50_ms": round(percentile(ms, 0.50), 4),
            "p90_ms": round(percentile(ms, 0.90), 4),
            "p99_ms": round(percentile(ms, 0.99), 4),
            "sent": self.sent,
            "answered": self.answered,
            "answered_errors": self.errors,
            "lost": self.sent - self.answered,
            "auth_calls": auth_calls,
            "wall_first_send": self.wall_first_send,
            "wall_last_answer": self.wall_last_answer,
        }
        if emit_samples:
            step = max(1, len(ms) // _MAX_SAMPLES)
            result["samples_ms"] = [round(value, 4) for value in ms[::step]]
        return result


# -- MQTT ----------------------------------------------------------------------------------------
def _nodelay(client: Any, userdata: Any, sock: Any) -> None:
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def run_mqtt(args: argparse.Namespace, payload: bytes, auth: bytes | None) -> dict[str, Any]:
    parts = urlsplit(args.url)
    client_id: str = args.client_id
    qos: int = args.qos
    window: int = args.window
    tally = _Tally(args.warmup, args.duration, args.requests)
    sent_at = [0.0] * window
    connected = threading.Event()
    subscribed = threading.Event()
    auth_reply: list[bytes] = []
    auth_done = threading.Event()
    drained = threading.Event()
    outstanding = [0]
    lock = threading.Lock()  # the first window is sent from the main thread

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if parts.username:
        client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
    client.on_socket_open = _nodelay
    client.max_inflight_messages_set(max(20, window + 1))
    client.max_queued_messages_set(0)
    refused: list[str] = []

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
            c.disconnect()  # no reconnect attempts: the caller reports the refusal
        connected.set()

    client.on_connect = on_connect
    client.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
    prefix = "api/" if args.device else f"api/{client_id}/"
    slot_from = len("reply/" if args.device else f"reply/{client_id}/")

    def on_message(c: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        slot_text = message.topic[slot_from:]
        if slot_text == "auth":
            auth_reply.append(message.payload)
            auth_done.set()
            return
        slot = int(slot_text)
        with lock:
            if tally.answer(sent_at[slot], message.payload):
                sent_at[slot] = time.perf_counter()
                tally.sent += 1
                c.publish(prefix + slot_text, payload, qos=qos)
            else:
                outstanding[0] -= 1
                if outstanding[0] == 0:
                    drained.set()

    client.on_message = on_message
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=60)
    client.loop_start()
    try:
        if not connected.wait(10) or refused:
            why = f" (refused: {refused[0]})" if refused else ""
            raise LoadError(f"mqtt: could not connect to {parts.hostname}:{parts.port}{why}")
        if not args.device:  # a device's replies are delivered by the plugin unasked
            client.subscribe(f"reply/{client_id}/#", qos=1)
            if not subscribed.wait(10):
                raise LoadError("mqtt: subscription not acknowledged")
        auth_calls = 0
        if auth is not None:
            client.publish(prefix + "auth", auth, qos=1)
            if not auth_done.wait(10):
                raise LoadError("mqtt: no answer to the auth envelope")
            if _FAILED in auth_reply[0]:
                raise LoadError(f"mqtt: auth failed: {auth_reply[0][:300]!r}")
            auth_calls = 1
        with lock:
            tally.begin()
            outstanding[0] = window
            for slot in range(window):
                sent_at[slot] = time.perf_counter()
                tally.sent += 1
                client.publish(prefix + str(slot), payload, qos=qos)
        limit = args.warmup + args.duration + args.drain_timeout
        drained.wait(limit)
        with lock:
            tally.issuing = False
            return tally.report("mqtt", window, auth_calls, args.emit_samples)
    finally:
        client.disconnect()
        client.loop_stop()


# -- WebSocket -----------------------------------------------------------------------------------
async def _ws_connection(
    connection: ClientConnection, tally: _Tally, payload: str, depth: int
) -> None:
    times: deque[float] = deque()
    for _ in range(depth):
        times.append(time.perf_counter())
        tally.sent += 1
        await connection.send(payload)
    while times:
        message = await connection.recv()
        if tally.answer(times.popleft(), message):
            times.append(time.perf_counter())
            tally.sent += 1
            await connection.send(payload)


async def _ws_main(args: argparse.Namespace, payload: str, auth: str | None) -> dict[str, Any]:
    window: int = args.window
    count = min(window, args.connections or window)
    depths = [window // count + (1 if index < window % count else 0) for index in range(count)]
    connections: list[ClientConnection] = []
    try:
        for _ in range(count):
            connections.append(await connect(args.url, max_size=None, open_timeout=10))
        auth_calls = 0
        if auth is not None:
            for connection in connections:
                await connection.send(auth)
                reply = await asyncio.wait_for(connection.recv(), 10)
                if '"success":false' in str(reply):
                    raise LoadError(f"ws: auth failed: {str(reply)[:300]}")
                auth_calls += 1
        tally = _Tally(args.warmup, args.duration, args.requests)
        tally.begin()
        limit = args.warmup + args.duration + args.drain_timeout
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    _ws_connection(connection, tally, payload, depth)
                    for connection, depth in zip(connections, depths, strict=True)
                )
            ),
            limit,
        )
        return tally.report("ws", window, auth_calls, args.emit_samples)
    finally:
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)


def run_ws(args: argparse.Namespace, payload: bytes, auth: bytes | None) -> dict[str, Any]:
    return asyncio.run(_ws_main(args, payload.decode(), auth.decode() if auth else None))


# -- driving load processes from a benchmark -----------------------------------------------------
def spawn(argv: Sequence[str]) -> subprocess.Popen[str]:
    """Start `python -m bench.load ARGV...` (its own process, never the gateway's)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.load", *argv],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_result(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The JSON line a load process printed; LoadError when it failed."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise LoadError(f"load process timed out after {timeout}s: {err[-1500:]}") from None
    if process.returncode != 0:
        raise LoadError(f"load process failed ({process.returncode}): {err[-1500:]}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise LoadError(f"load process printed no result: {out[-500:]} {err[-1500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def merge(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result from several load processes run side by side (latency from their samples)."""
    if len(results) == 1:
        return dict(results[0])
    samples = list(itertools.chain.from_iterable(r.get("samples_ms", []) for r in results))
    merged: dict[str, Any] = {
        "mode": results[0]["mode"],
        "window": sum(r["window"] for r in results),
        "processes": len(results),
        "seconds": max(r["seconds"] for r in results),
        "rps": round(sum(r["rps"] for r in results), 1),
        "p50_ms": round(percentile(samples, 0.50), 4),
        "p90_ms": round(percentile(samples, 0.90), 4),
        "p99_ms": round(percentile(samples, 0.99), 4),
        "wall_first_send": min(r["wall_first_send"] for r in results),
        "wall_last_answer": max(r["wall_last_answer"] for r in results),
    }
    for key in ("requests", "errors", "sent", "answered", "answered_errors", "lost", "auth_calls"):
        merged[key] = sum(r[key] for r in results)
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description="Keep a window of TR50 requests in flight; print one JSON line.",
    )
    parser.add_argument("mode", choices=["mqtt", "ws"])
    parser.add_argument("--url", required=True, help="mqtt://[user:pass@]host:port or ws://...")
    parser.add_argument("--client-id", default=f"load-{os.getpid()}", help="MQTT client id")
    parser.add_argument("--qos", type=int, choices=[0, 1], default=1, help="MQTT request QoS")
    parser.add_argument(
        "--device",
        action="store_true",
        help="MQTT: as a device authenticated at CONNECT (thing key and app token in the URL): "
        "publish to api/<slot>, read replies the broker plugin delivers, subscribe to nothing",
    )
    parser.add_argument("--window", type=int, default=1, help="requests in flight")
    parser.add_argument(
        "--connections", type=int, default=0, help="ws: connections (default: one per request)"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--requests", type=int, help="stop measuring after this many answers")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--drain-timeout", type=float, default=15.0)
    payload_group = parser.add_mutually_exclusive_group()
    payload_group.add_argument("--payload", default='{"1":{"command":"diag.ping"}}')
    payload_group.add_argument("--payload-file", type=Path)
    parser.add_argument("--auth", help="an envelope sent once before timing (api.authenticate)")
    parser.add_argument(
        "--emit-samples", action="store_true", help="add latency samples (for merging)"
    )
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error("--window must be >= 1")
    if args.device and (args.mode != "mqtt" or not urlsplit(args.url).username):
        parser.error("--device needs mqtt and a username (thing key) in --url")
    payload = args.payload_file.read_bytes() if args.payload_file else args.payload.encode()
    auth = args.auth.encode() if args.auth else None
    try:
        run = run_mqtt if args.mode == "mqtt" else run_ws
        result = run(args, payload, auth)
    except (LoadError, OSError, TimeoutError) as error:
        print(f"bench.load: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
