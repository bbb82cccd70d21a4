"""A soak run: hundreds of MQTT and WebSocket clients, a broker restart halfway, nothing lost.

    python -m bench.soak --duration SECONDS [--mqtt-clients N] [--ws-clients N] [--rate R]
                            [--out DIR]                                 (`make soak DURATION=...`)

Starts its own Mosquitto (the repo's config and ACL, a free port) and one `tr50gw serve` on a
fresh DuckDB file with an org and a user, then drives it from a few load processes of its own
(so the measuring never competes with the gateway's event loop, and a 2-core machine copes):

- MQTT devices (default 200, up to 100 per process): paho, QoS 1, persistent sessions (clean
  session off), each publishing `--rate` envelopes/s on `api/<its id>/r`: mostly `diag.ping`,
  some `diag.ping` + `diag.time`, and a few `usage.api.list` without a session, whose -90005 is
  an *expected* failure. Requests published while the broker is down are queued by paho and sent
  again when it reconnects.
- WebSocket devices (default 100, up to 200 per process): the same mix (the expected failure is
  an unknown command, -90001). Four of them are consoles instead: one envelope a second,
  alternating `usage.api.list` and `usage.api.activity` on their connection's session, with an
  `api.authenticate` in the first envelope and every tenth one after it.

Every command carries an envelope key that is unique in the run (`m<process>.<client>.<n>`), so
afterwards the usage log tells exactly which commands were run and how often. Halfway through
the broker is stopped (SIGTERM: it saves its persistent sessions) and started again on the same
port; the gateway reconnects and resubscribes, the devices reconnect and re-send.

Every 5 s one progress line (stderr): elapsed, sent, answered, errors, p99 of the last interval,
gateway RSS. At the end new requests stop, outstanding replies are awaited (30 s at most), the
gateway gets SIGTERM, and the DuckDB file is read: every answered key must have exactly one
record. The summary (stdout) counts

- lost: sent, never answered and not in the log;
- unanswered: in the log but the reply never arrived; unlogged: answered but not in the log;
- duplicates: keys with more than one record;
- errors: TR50 failures that were not expected, plus client-side exceptions,

and the exit status is 1 when any of those is not zero (or the gateway did not exit cleanly).
Latency is reported overall and "steady" (without the seconds around the restart), next to how
busy the machine was: on a shared machine, other processes explain many a slow second.
It writes `soak.json` and a chart, `soak.png` (answered/s per transport, p99, RSS over time,
the restart marked), into `--out` (default bench/results; the chart needs the `bench` extra).

Load processes are this module run with `--worker`: their configuration arrives as the first
line on stdin, then `go` and `stop`; they report on stdout as JSON lines (`ready`, a `tick` every
half second, `final` with every answered key). End of stdin (the runner went away) stops them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import heapq
import json
import math
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from devtools.broker import stop_process  # the standard library only

__all__ = ["Config", "Report", "SoakError", "main", "render_chart", "render_summary", "run"]

# The heavy imports (paho, websockets, duckdb, the gateway's CLI, matplotlib) happen where they are
# used, so a load process only loads what it drives.

TICK = 0.5  # seconds between a load process's reports
PROGRESS_EVERY = 5.0
DRAIN_TIMEOUT = 30.0
CONSOLES = 4  # WebSocket clients that are consoles (listings, analytics, logins)
CONSOLE_RATE = 1.0  # a console's envelopes per second
CONSOLE_REAUTH_EVERY = 10  # a console logs in again every this many envelopes
MQTT_PER_PROCESS = 100
WS_PER_PROCESS = 200
KINDS = ("mqtt", "ws", "console")
RESTART_SETTLE = 2  # seconds after MQTT answers resume that still count as the restart's

# status of one answered command
OK, EXPECTED, UNEXPECTED = 0, 1, 2


# -- what runs in a load process -----------------------------------------------------------------
@dataclass
class WorkerConfig:
    index: int
    transport: str  # "mqtt" or "ws"
    clients: int
    consoles: int
    rate: float
    mqtt_host: str
    mqtt_port: int
    ws_url: str
    username: str
    password: str
    run_id: str
    drain_timeout: float


class _Out:
    """JSON lines on stdout, from any thread; a closed pipe means the runner is gone."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, document: dict[str, Any]) -> None:
        line = json.dumps(document, separators=(",", ":"))
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except OSError:
                pass  # the runner went away; end of stdin stops us


class _Stats:
    """What a load process has seen since its last tick, and in all (answered keys)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[str, tuple[float, str, int | None]] = {}  # key -> (sent, kind, code)
        self.sent_keys: dict[str, int] = {}  # key prefix -> commands sent under it
        self.answered: list[str] = []
        self.auth_sent = 0
        self.auth_answered = 0
        self.reply_copies = 0  # replies for keys already answered (a QoS 1 redelivery)
        self._sent = dict.fromkeys(KINDS, 0)
        self._answers: list[tuple[float, float, str, int]] = []
        self._exceptions = 0
        self._samples: list[str] = []

    def issue(self, prefix: str, kind: str, commands: Sequence[tuple[str, int | None]]) -> None:
        """Record commands about to be sent: `(key suffix, expected error code or None)`."""
        now = time.perf_counter()
        with self.lock:
            for suffix, code in commands:
                self.pending[prefix + suffix] = (now, kind, code)
            if commands:
                self.sent_keys[prefix] = self.sent_keys.get(prefix, 0) + len(commands)
            self._sent[kind] += len(commands)

    def issue_login(self, key: str) -> None:
        """An `auth` block about to be sent; `key` stands for it until its answer."""
        with self.lock:
            self.pending[key] = (time.perf_counter(), "console", None)
            self.auth_sent += 1
            self._sent["console"] += 1

    def reply(self, reply: Any, auth_key: str | None = None) -> None:
        """Account one reply document (all its commands)."""
        now_perf, now_wall = time.perf_counter(), time.time()
        with self.lock:
            if not isinstance(reply, dict) or isinstance(reply.get("success"), bool):
                self._exceptions_locked(f"root-level reply: {str(reply)[:300]}")
                return
            for key, result in reply.items():
                lookup = auth_key if key == "auth" and auth_key else key
                entry = self.pending.pop(lookup, None)
                if entry is None:
                    self.reply_copies += 1
                    continue
                sent, kind, expected = entry
                codes = result.get("errorCodes") if isinstance(result, dict) else None
                if isinstance(result, dict) and result.get("success") is True:
                    status = OK
                elif expected is not None and isinstance(codes, list) and expected in codes:
                    status = EXPECTED
                else:
                    status = UNEXPECTED
                    if len(self._samples) < 20:
                        self._samples.append(f"{key}: {json.dumps(result)[:300]}")
                if key == "auth":
                    self.auth_answered += 1
                else:
                    self.answered.append(key)
                self._answers.append((now_wall, (now_perf - sent) * 1000, kind, status))

    def exception(self, text: str) -> None:
        with self.lock:
            self._exceptions_locked(text)

    def _exceptions_locked(self, text: str) -> None:
        self._exceptions += 1
        if len(self._samples) < 20:
            self._samples.append(text[:300])

    def tick(self) -> dict[str, Any]:
        with self.lock:
            document = {
                "type": "tick",
                "sent": self._sent,
                "answers": [[round(t, 4), round(ms, 3), k, s] for t, ms, k, s in self._answers],
                "exceptions": self._exceptions,
                "samples": self._samples,
            }
            self._sent = dict.fromkeys(KINDS, 0)
            self._answers = []
            self._exceptions = 0
            self._samples = []
        return document

    def final(self) -> dict[str, Any]:
        with self.lock:
            return {
                "type": "final",
                "sent_keys": self.sent_keys,
                "answered": self.answered,
                "auth_sent": self.auth_sent,
                "auth_answered": self.auth_answered,
                "reply_copies": self.reply_copies,
                "outstanding": len(self.pending),
            }


def _ticker(stats: _Stats, out: _Out, stop: threading.Event) -> None:
    while not stop.wait(TICK):
        out.send(stats.tick())
    out.send(stats.tick())


def _control(events: dict[str, threading.Event]) -> None:
    """`go` and `stop` from stdin; end of stdin stops everything (the runner went away)."""
    for line in sys.stdin:
        word = line.strip()
        if word in events:
            events[word].set()
    events["go"].set()
    events["stop"].set()
    events["gone"].set()


def _device_commands(seq: int, transport: str) -> list[tuple[str, dict[str, Any], int | None]]:
    """A device envelope's commands: `(key suffix, command, expected error code)`."""
    draw = random.random()
    if draw < 0.02:  # an expected failure, logged like any other call
        if transport == "mqtt":
            return [(str(seq), {"command": "usage.api.list", "params": {"limit": 1}}, -90005)]
        return [(str(seq), {"command": "soak.unknown"}, -90001)]
    if draw < 0.12:
        return [
            (str(seq), {"command": "diag.ping"}, None),
            (str(seq + 1), {"command": "diag.time"}, None),
        ]
    return [(str(seq), {"command": "diag.ping"}, None)]


def _schedule(rate: float, count: int) -> list[float]:
    """Each client's first send, spread over one period so the load is even from the start."""
    period = 1.0 / rate
    return [random.uniform(0, period) for _ in range(count)]


def _next_interval(rate: float) -> float:
    return random.uniform(0.8, 1.2) / rate


def _run_mqtt_worker(config: WorkerConfig, out: _Out, events: dict[str, threading.Event]) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    stats = _Stats()
    subscribed = threading.Semaphore(0)
    clients: list[tuple[Any, str, str]] = []  # (paho client, topic, key prefix)

    def nodelay(client: Any, userdata: Any, sock: Any) -> None:
        if isinstance(sock, socket.socket) and sock.family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        try:
            reply = json.loads(message.payload)
        except ValueError:
            stats.exception(f"undecodable reply on {message.topic}: {message.payload[:200]!r}")
            return
        stats.reply(reply)

    for number in range(config.clients):
        client_id = f"soak{config.run_id}-m{config.index}-{number}"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        client.max_queued_messages_set(0)  # unbounded: every request waits for the broker
        client.reconnect_delay_set(0.2, 2)
        client.on_socket_open = nodelay
        client.on_connect = _subscriber(f"reply/{client_id}/#")
        client.on_subscribe = lambda *args: subscribed.release()
        client.on_message = on_message
        client.connect(config.mqtt_host, config.mqtt_port, keepalive=30)
        client.loop_start()
        clients.append((client, f"api/{client_id}/r", f"m{config.index}.{number}."))
    try:
        deadline = time.monotonic() + 60
        for _ in clients:
            if not subscribed.acquire(timeout=max(0.1, deadline - time.monotonic())):
                raise TimeoutError("mqtt: subscriptions not acknowledged within 60 s")
        out.send({"type": "ready"})
        events["go"].wait()
        if events["gone"].is_set():
            return
        stop_ticker = threading.Event()
        ticker = threading.Thread(target=_ticker, args=(stats, out, stop_ticker), daemon=True)
        ticker.start()
        started = time.monotonic()
        due = [
            (started + offset, n) for n, offset in enumerate(_schedule(config.rate, len(clients)))
        ]
        heapq.heapify(due)
        seqs = [0] * len(clients)
        while not events["stop"].is_set():
            at, number = due[0]
            wait = at - time.monotonic()
            if wait > 0 and events["stop"].wait(wait):
                break
            client, topic, prefix = clients[number]
            commands = _device_commands(seqs[number], "mqtt")
            seqs[number] += len(commands)
            stats.issue(prefix, "mqtt", [(suffix, code) for suffix, _, code in commands])
            envelope = {prefix + suffix: command for suffix, command, _ in commands}
            client.publish(topic, json.dumps(envelope, separators=(",", ":")), qos=1)
            next_at = max(at + _next_interval(config.rate), time.monotonic() - 1)
            heapq.heapreplace(due, (next_at, number))
        _drain(stats, config.drain_timeout, events["gone"])
        stop_ticker.set()
        ticker.join(5)
        out.send(stats.final())
    finally:
        for client, _, _ in clients:
            client.disconnect()
        for client, _, _ in clients:
            client.loop_stop()


def _subscriber(topic: str) -> Callable[..., None]:
    """An on_connect callback that (re)subscribes to the client's replies."""

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            client.subscribe(topic, qos=1)

    return on_connect


def _drain(stats: _Stats, timeout: float, gone: threading.Event) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not gone.is_set():
        with stats.lock:
            if not stats.pending:
                return
        time.sleep(0.05)


def _run_ws_worker(config: WorkerConfig, out: _Out, events: dict[str, threading.Event]) -> None:
    import asyncio

    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed

    stats = _Stats()
    login = {
        "command": "api.authenticate",
        "params": {"username": config.username, "password": config.password},
    }

    async def receive(connection: ClientConnection, auth_key: str | None) -> None:
        try:
            async for message in connection:
                try:
                    reply = json.loads(message)
                except ValueError:
                    stats.exception(f"undecodable reply: {str(message)[:200]}")
                    continue
                stats.reply(reply, auth_key)
        except ConnectionClosed as error:
            if not events["stop"].is_set():
                stats.exception(f"websocket closed: {error}")
        else:  # closed cleanly, but not by us
            if not events["stop"].is_set():
                stats.exception(f"websocket closed by the gateway: {connection.close_reason!r}")

    go = asyncio.Event()  # set from `events["go"]`, a thread's event, by one waiting thread

    async def client(
        number: int, console: bool, first_send: float, ready: Callable[[], None]
    ) -> None:
        prefix = f"{'c' if console else 'w'}{config.index}.{number}."
        auth_key = f"auth@{prefix}"
        rate = CONSOLE_RATE if console else config.rate
        try:
            connection = await connect(config.ws_url, max_size=None, open_timeout=30)
        except (OSError, TimeoutError) as error:
            stats.exception(f"websocket connect: {error!r}")
            ready()
            return
        receiver = asyncio.create_task(receive(connection, auth_key if console else None))
        ready()
        try:
            await go.wait()
            next_at = time.monotonic() + first_send
            seq = 0
            sent = 0
            while not events["stop"].is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(min(delay, 0.25))
                    continue
                envelope: dict[str, Any] = {}
                commands: list[tuple[str, dict[str, Any], int | None]]
                if console:
                    if receiver.done():
                        break
                    if sent % CONSOLE_REAUTH_EVERY == 0:
                        envelope["auth"] = login
                        stats.issue_login(auth_key)
                    if sent % 2 == 0:
                        params = {"limit": 10, "service": "diag", "last": "1m"}
                        command = {"command": "usage.api.list", "params": params}
                    else:
                        params = {"last": "2m", "interval": "second"}
                        command = {"command": "usage.api.activity", "params": params}
                    commands = [(str(seq), command, None)]
                else:
                    if receiver.done():
                        break  # the connection is gone
                    commands = _device_commands(seq, "ws")
                seq += len(commands)
                sent += 1
                stats.issue(
                    prefix,
                    "console" if console else "ws",
                    [(suffix, code) for suffix, _, code in commands],
                )
                envelope.update({prefix + suffix: command for suffix, command, _ in commands})
                await connection.send(json.dumps(envelope, separators=(",", ":")))
                next_at = max(next_at + _next_interval(rate), time.monotonic() - 1)
            deadline = time.monotonic() + config.drain_timeout
            while time.monotonic() < deadline and not events["gone"].is_set():
                with stats.lock:
                    mine = any(key.startswith(prefix) or key == auth_key for key in stats.pending)
                if not mine or receiver.done():
                    break
                await asyncio.sleep(0.05)
        except ConnectionClosed as error:
            stats.exception(f"websocket send: {error}")
        finally:
            await connection.close()
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver

    async def main() -> None:
        remaining = [config.clients]
        all_ready = asyncio.Event()

        def ready() -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                all_ready.set()

        offsets = _schedule(config.rate, config.clients)
        tasks = [
            asyncio.create_task(
                client(
                    number,
                    number < config.consoles,
                    random.uniform(0, 1 / CONSOLE_RATE) if number < config.consoles else offset,
                    ready,
                )
            )
            for number, offset in enumerate(offsets)
        ]
        await asyncio.wait_for(all_ready.wait(), 60)
        out.send({"type": "ready"})
        await asyncio.to_thread(events["go"].wait)
        go.set()
        stop_ticker = threading.Event()
        ticker = threading.Thread(target=_ticker, args=(stats, out, stop_ticker), daemon=True)
        ticker.start()
        await asyncio.gather(*tasks, return_exceptions=True)
        stop_ticker.set()
        ticker.join(5)
        out.send(stats.final())

    asyncio.run(main())


def worker_main() -> int:
    """A load process: configuration from stdin's first line, then `go` / `stop`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides when we stop
    out = _Out(sys.stdout)
    first = sys.stdin.readline()
    if not first:
        return 1
    config = WorkerConfig(**json.loads(first))
    events = {name: threading.Event() for name in ("go", "stop", "gone")}
    threading.Thread(target=_control, args=(events,), daemon=True).start()
    try:
        if config.transport == "mqtt":
            _run_mqtt_worker(config, out, events)
        else:
            _run_ws_worker(config, out, events)
    except Exception as error:
        out.send({"type": "failed", "error": f"{type(error).__name__}: {error}"})
        return 1
    return 0


# -- the runner ----------------------------------------------------------------------------------
class SoakError(RuntimeError):
    """The run could not go on (the gateway died, a load process failed, ...)."""


@dataclass
class Config:
    duration: float = 120.0
    mqtt_clients: int = 200
    ws_clients: int = 100
    rate: float = 2.0
    out: Path | None = None  # None: bench/results
    drain_timeout: float = DRAIN_TIMEOUT
    chart: bool = True


def _progress(started: float, message: str) -> None:
    print(f"[soak {time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)


def _p(values: Sequence[float], fraction: float) -> float:
    from bench.common import percentile

    return percentile(values, fraction) if values else math.nan


class Worker:
    """One load process and a thread that turns its stdout into messages on a shared queue."""

    def __init__(self, config: WorkerConfig, messages: queue.Queue[tuple[int, Any]]) -> None:
        from devtools.broker import REPO_ROOT

        self.config = config
        # kept open as long as the process runs: what it printed when it failed
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.soak", "--worker"],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the runner only; it stops us
        )
        self._messages = messages
        self.final: dict[str, Any] | None = None
        self.send(json.dumps(asdict(config)))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self._messages.put((self.config.index, json.loads(line)))
        self._messages.put((self.config.index, {"type": "exited"}))

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()

    def error_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-2000:]

    def stop(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        if self.process.poll() is None:
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                stop_process(self.process, 5)
        self._reader.join(2)
        self.stderr.close()


@dataclass
class Restart:
    """When the broker went away and came back, and when MQTT answers resumed."""

    at: float = math.nan  # seconds since the start: SIGTERM sent
    down: float = math.nan  # the old broker has exited
    up: float = math.nan  # the new one accepts connections
    gateway_reconnected: float = math.nan  # from the gateway's log line
    last_answer_before: float = math.nan  # the last MQTT answer before `at`
    first_answer_after: float = math.nan  # the first MQTT answer after `down`

    @property
    def resumed_after(self) -> float:
        """Seconds from the broker accepting connections again to the first MQTT answer."""
        return self.first_answer_after - self.up

    @property
    def gap(self) -> float:
        """Seconds without any MQTT answer around the restart."""
        return self.first_answer_after - self.last_answer_before


@dataclass
class Timeline:
    """Everything the load processes reported, per second since the start (t0, wall clock)."""

    t0: float = 0.0
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    answered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    expected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    unexpected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    exceptions: int = 0
    samples: list[str] = field(default_factory=list)
    latencies: dict[str, array[float]] = field(
        default_factory=lambda: {kind: array("d") for kind in KINDS}
    )
    per_second: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    sent_per_second: dict[int, int] = field(default_factory=dict)
    recent: dict[str, list[float]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    rss: list[tuple[float, float, float]] = field(default_factory=list)  # (t, MB, CPU %)
    _cpu_last: tuple[float, float] | None = None

    def sample(self, pid: int) -> None:
        """The gateway's RSS, and its CPU use (% of a core) since the last sample."""
        from bench.common import rss_mb

        try:
            rss, cpu = rss_mb(pid), _cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            return
        now = time.monotonic()
        percent = math.nan
        if self._cpu_last is not None:
            then, cpu_then = self._cpu_last
            percent = 100 * (cpu - cpu_then) / max(1e-9, now - then)
        self._cpu_last = (now, cpu)
        self.rss.append((time.time() - self.t0, rss, percent))

    restart: Restart = field(default_factory=Restart)

    def add_tick(self, tick: dict[str, Any], now: float) -> None:
        second = int(now - self.t0)
        for kind, count in tick["sent"].items():
            self.sent[kind] += count
            self.sent_per_second[second] = self.sent_per_second.get(second, 0) + count
        for wall, ms, kind, status in tick["answers"]:
            self.answered[kind] += 1
            if status == EXPECTED:
                self.expected[kind] += 1
            elif status == UNEXPECTED:
                self.unexpected[kind] += 1
            self.latencies[kind].append(ms)
            self.recent[kind].append(ms)
            elapsed = wall - self.t0
            bucket = self.per_second.setdefault(int(elapsed), {k: [] for k in KINDS})
            bucket[kind].append(ms)
            if kind == "mqtt":
                self._restart_marks(elapsed)
        self.exceptions += tick["exceptions"]
        self.samples.extend(tick["samples"][: max(0, 20 - len(self.samples))])

    def _restart_marks(self, elapsed: float) -> None:
        restart = self.restart
        if math.isnan(restart.at) or elapsed < restart.at:
            if math.isnan(restart.last_answer_before) or elapsed > restart.last_answer_before:
                restart.last_answer_before = elapsed
        elif (
            not math.isnan(restart.down)
            and elapsed >= restart.down
            and (math.isnan(restart.first_answer_after) or elapsed < restart.first_answer_after)
        ):
            restart.first_answer_after = elapsed

    @property
    def errors(self) -> int:
        return sum(self.unexpected.values()) + self.exceptions

    def take_recent(self) -> dict[str, list[float]]:
        recent, self.recent = self.recent, {kind: [] for kind in KINDS}
        return recent


@dataclass
class Report:
    """The outcome of a run, as written to soak.json."""

    config: dict[str, Any]
    machine: dict[str, Any]
    seconds: float
    drain_seconds: float
    totals: dict[str, Any]
    transports: dict[str, dict[str, Any]]
    checks: dict[str, Any]
    restart: dict[str, Any]
    rss_mb: dict[str, float]
    timeline: dict[str, list[Any]]
    gateway: dict[str, Any]
    passed: bool
    failures: list[str]


def _check_alive(gateway: Any) -> None:
    code = gateway.process.poll()
    if code is not None:
        raise SoakError(
            f"the gateway exited during the load (code {code}); its log ends:\n"
            + "\n".join(gateway.lines[-20:])
        )


def _log_keys(db: Path) -> dict[str, int]:
    """Envelope key -> number of usage records, from the file once the gateway has exited.

    `request` is the command as `{"<key>": {...}}`, written compactly, so the key is the first
    string of it. The provisioning's own records (`tr50gw admin` ran it without a gateway,
    transport `cli`) are not the load's.
    """
    import duckdb

    with duckdb.connect(str(db), read_only=True) as connection:
        rows = connection.execute(
            """SELECT regexp_extract(request, '^\\{"([^"\\\\]*)"', 1) AS key, count(*)
               FROM usage_log WHERE transport <> 'cli' GROUP BY key"""
        ).fetchall()
    return {str(key): int(count) for key, count in rows}


def _gateway_reconnect(lines: Sequence[str], after: float) -> float:
    """Wall time of the gateway's first `mqtt connected` log line after `after`, or NaN."""
    for line in lines:
        if "mqtt connected" not in line:
            continue
        try:
            stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except ValueError:
            continue
        if stamp >= after - 0.01:
            return stamp
    return math.nan


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _MachineCpu:
    """How busy the whole machine was while the load ran, and how much of that was this run.

    From /proc/stat (every process, short-lived ones included) and /proc/<pid>/stat of this
    run's processes; in % of one core. A busy machine explains latency a quiet one would not see.
    """

    def __init__(self, pids: Callable[[], Sequence[int | None]]) -> None:
        self._pids = pids
        self.busy = self.ours = self.others = math.nan

    @staticmethod
    def _machine_busy() -> float:
        fields = [int(f) for f in Path("/proc/stat").read_text().split()[1:9]]
        idle = fields[3] + fields[4]
        return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")

    def _ours(self) -> dict[int, float]:
        found = {os.getpid(): _cpu_seconds(os.getpid())}
        for pid in self._pids():
            if pid is not None:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    found[pid] = _cpu_seconds(pid)
        return found

    def __enter__(self) -> _MachineCpu:
        self._started = time.monotonic()
        self._busy = self._machine_busy()
        self._before = self._ours()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = max(1e-9, time.monotonic() - self._started)
        after = self._ours()
        ours = sum(cpu - self._before.get(pid, 0.0) for pid, cpu in after.items())
        self.busy = 100 * (self._machine_busy() - self._busy) / elapsed
        self.ours = 100 * ours / elapsed
        self.others = max(0.0, self.busy - self.ours)


def _machine() -> dict[str, Any]:
    from bench.common import machine_info

    return {
        **machine_info(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def _split(total: int, per_process: int) -> list[int]:
    if total <= 0:
        return []
    processes = math.ceil(total / per_process)
    return [total // processes + (1 if i < total % processes else 0) for i in range(processes)]


def _fmt(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _progress_line(timeline: Timeline, rss: float) -> str:
    recent = timeline.take_recent()
    p99 = ", ".join(f"{kind} {_fmt(_p(values, 0.99))}" for kind, values in recent.items() if values)
    sent = sum(timeline.sent.values())
    answered = sum(timeline.answered.values())
    return (
        f"sent {sent:,}  answered {answered:,}  errors {timeline.errors:,}  "
        f"p99 ms (last {PROGRESS_EVERY:.0f} s) {p99 or '-'}  RSS {rss:.0f} MB"
    )


def run(config: Config) -> Report:
    """One soak run; raises KeyboardInterrupt untouched (everything is cleaned up)."""
    from bench.common import RESULTS_DIR, GatewayProcess
    from bench.roundtrip import provision
    from devtools.broker import Broker

    started = time.monotonic()
    out_dir = config.out or RESULTS_DIR
    messages: queue.Queue[tuple[int, Any]] = queue.Queue()
    timeline = Timeline()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tr50gw-soak-")))
        db = workdir / "usage.duckdb"
        account = provision(db, org_key="soak")
        broker = stack.enter_context(Broker())
        _progress(started, f"mosquitto on 127.0.0.1:{broker.port} (pid {broker.pid})")
        gateway = GatewayProcess(db, mqtt_url=broker.url_for_gateway, instance_name="soak")
        stack.callback(gateway.stop)
        gateway.wait_ready()
        _progress(started, f"gateway pid {gateway.pid}, {gateway.ws_url}, usage log {db}")

        run_id = f"{os.getpid() % 100000}"
        consoles = min(CONSOLES, config.ws_clients)
        configs: list[WorkerConfig] = []
        for transport, counts in (
            ("mqtt", _split(config.mqtt_clients, MQTT_PER_PROCESS)),
            ("ws", _split(config.ws_clients, WS_PER_PROCESS)),
        ):
            for clients in counts:
                configs.append(
                    WorkerConfig(
                        index=len(configs),
                        transport=transport,
                        clients=clients,
                        consoles=consoles if transport == "ws" and consoles else 0,
                        rate=config.rate,
                        mqtt_host=broker.host,
                        mqtt_port=broker.port,
                        ws_url=gateway.ws_url,
                        username=account.username,
                        password=account.password,
                        run_id=run_id,
                        drain_timeout=config.drain_timeout,
                    )
                )
                if transport == "ws":
                    consoles = 0  # all consoles in the first WebSocket process
        workers = [Worker(worker_config, messages) for worker_config in configs]
        for worker in workers:
            stack.callback(worker.stop)
        _progress(
            started,
            f"{len(workers)} load processes: {config.mqtt_clients} MQTT + {config.ws_clients} "
            f"WebSocket clients ({min(CONSOLES, config.ws_clients)} consoles), "
            f"{config.rate:g} envelopes/s each",
        )

        def handle(index: int, message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "tick":
                timeline.add_tick(message, time.time())
            elif kind == "final":
                workers[index].final = message
            elif kind == "failed":
                raise SoakError(f"load process {index} failed: {message['error']}")
            elif kind == "exited" and workers[index].final is None:
                raise SoakError(
                    f"load process {index} exited ({workers[index].process.poll()}):\n"
                    + workers[index].error_text()
                )

        ready = 0
        deadline = time.monotonic() + 90
        while ready < len(workers):
            try:
                index, message = messages.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise SoakError("load processes not ready within 90 s") from None
            if message["type"] == "ready":
                ready += 1
            else:
                handle(index, message)
        _progress(started, "all clients connected; load on")

        with _MachineCpu(
            lambda: [gateway.pid, broker.pid, *(w.process.pid for w in workers)]
        ) as cpu:
            timeline.t0 = time.time()
            for worker in workers:
                worker.send("go")
            load_started = time.monotonic()
            next_progress = load_started + PROGRESS_EVERY
            next_rss = load_started
            restart_due = load_started + config.duration / 2
            restarted = False
            end = load_started + config.duration

            def pump(until: float) -> None:
                while True:
                    timeout = until - time.monotonic()
                    if timeout <= 0:
                        return
                    try:
                        index, message = messages.get(timeout=timeout)
                    except queue.Empty:
                        return
                    handle(index, message)

            while time.monotonic() < end:
                _check_alive(gateway)
                pump(min(next_progress, next_rss, end, restart_due if not restarted else end))
                now = time.monotonic()
                if now >= next_rss:
                    timeline.sample(gateway.pid)
                    next_rss += 1.0
                if not restarted and now >= restart_due:
                    restarted = True
                    restart = timeline.restart
                    restart.at = time.time() - timeline.t0
                    _progress(started, "restarting the broker")
                    broker.stop()
                    restart.down = time.time() - timeline.t0
                    broker.restart()
                    restart.up = time.time() - timeline.t0
                    _progress(
                        started,
                        f"broker back after {restart.up - restart.at:.2f} s "
                        f"(down {restart.down - restart.at:.2f} s after SIGTERM)",
                    )
                if now >= next_progress:
                    rss = timeline.rss[-1][1] if timeline.rss else math.nan
                    _progress(started, _progress_line(timeline, rss))
                    next_progress += PROGRESS_EVERY

            load_seconds = time.monotonic() - load_started
            _progress(started, f"load off; waiting up to {config.drain_timeout:.0f} s for replies")
            for worker in workers:
                worker.send("stop")
            drain_deadline = time.monotonic() + config.drain_timeout + 20
            while any(worker.final is None for worker in workers):
                if time.monotonic() > drain_deadline:
                    raise SoakError("load processes did not report within the drain timeout")
                pump(min(drain_deadline, time.monotonic() + 0.5))
                timeline.sample(gateway.pid)
            pump(time.monotonic() + 0.2)
            drain_seconds = time.monotonic() - load_started - load_seconds

        restart_wall = timeline.t0 + timeline.restart.up
        gateway_code = gateway.stop()
        timeline.restart.gateway_reconnected = (
            _gateway_reconnect(gateway.lines, restart_wall) - timeline.t0
        )
        _progress(started, f"gateway stopped (exit code {gateway_code}); checking the usage log")
        logged = _log_keys(db)
        report = _report(
            config, timeline, workers, logged, gateway, gateway_code, load_seconds, drain_seconds
        )
        report.machine["cpu_percent"] = {
            "all": cpu.busy,
            "this_run": cpu.ours,
            "others": cpu.others,
        }

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "soak.json").write_text(json.dumps(_clean(asdict(report)), indent=2) + "\n")
    if config.chart:
        try:
            render_chart(report, out_dir / "soak.png")
        except ImportError:
            _progress(started, "note: matplotlib is missing (pip install -e '.[bench]'); no chart")
    return report


def _report(
    config: Config,
    timeline: Timeline,
    workers: Sequence[Worker],
    logged: dict[str, int],
    gateway: Any,
    gateway_code: int,
    load_seconds: float,
    drain_seconds: float,
) -> Report:
    sent_keys: set[str] = set()
    answered: set[str] = set()
    auth_sent = auth_answered = reply_copies = 0
    for worker in workers:
        final = worker.final or {}
        for prefix, count in final.get("sent_keys", {}).items():
            if prefix:
                sent_keys.update(f"{prefix}{n}" for n in range(count))
        answered.update(final.get("answered", ()))
        auth_sent += final.get("auth_sent", 0)
        auth_answered += final.get("auth_answered", 0)
        reply_copies += final.get("reply_copies", 0)
    logins_logged = logged.pop("auth", 0)
    in_log = set(logged)
    lost = sent_keys - answered - in_log
    unanswered = (sent_keys & in_log) - answered
    unlogged = answered - in_log
    duplicates = sorted(key for key, count in logged.items() if count > 1)
    strays = sorted(in_log - sent_keys)  # records of keys nobody sent
    checks: dict[str, Any] = {
        "commands_sent": len(sent_keys),
        "commands_answered": len(answered),
        "records": sum(logged.values()) + logins_logged,
        "lost": len(lost),
        "unanswered": len(unanswered),
        "unlogged": len(unlogged),
        "duplicates": len(duplicates),
        "stray_records": len(strays),
        "logins_sent": auth_sent,
        "logins_answered": auth_answered,
        "logins_logged": logins_logged,
        "reply_copies": reply_copies,
        "examples": {
            "lost": sorted(lost)[:10],
            "unanswered": sorted(unanswered)[:10],
            "unlogged": sorted(unlogged)[:10],
            "duplicates": duplicates[:10],
            "stray_records": strays[:10],
        },
        "error_samples": timeline.samples,
    }
    failures = []
    for name in ("lost", "unanswered", "unlogged", "duplicates", "stray_records"):
        if checks[name]:
            failures.append(f"{name} {checks[name]:,}")
    if logins_logged != auth_answered:
        failures.append(f"logins answered {auth_answered:,} but logged {logins_logged:,}")
    if timeline.errors:
        failures.append(f"errors {timeline.errors:,}")
    if gateway_code != 0:
        failures.append(f"gateway exit code {gateway_code}")

    restart = timeline.restart
    quiet = range(0)  # the seconds around the restart, left out of the steady percentiles
    if not math.isnan(restart.at):
        resumed = (
            restart.first_answer_after if not math.isnan(restart.first_answer_after) else restart.up
        )
        quiet = range(int(restart.at), math.ceil(resumed) + RESTART_SETTLE)
    transports: dict[str, dict[str, Any]] = {}
    for kind in (*KINDS, "all"):
        kinds = KINDS if kind == "all" else (kind,)
        values = sorted(v for k in kinds for v in timeline.latencies[k])
        steady = sorted(
            v
            for second, bucket in timeline.per_second.items()
            if second not in quiet
            for k in kinds
            for v in bucket[k]
        )
        transports[kind] = {
            "sent": sum(timeline.sent[k] for k in kinds),
            "answered": sum(timeline.answered[k] for k in kinds),
            "expected_failures": sum(timeline.expected[k] for k in kinds),
            "unexpected_failures": sum(timeline.unexpected[k] for k in kinds),
            "p50_ms": _sorted_percentile(values, 0.50),
            "p99_ms": _sorted_percentile(values, 0.99),
            "max_ms": values[-1] if values else math.nan,
            "steady_p99_ms": _sorted_percentile(steady, 0.99),
        }
    rss_values = [value for _, value, _ in timeline.rss]
    cpu_values = [value for _, _, value in timeline.rss if not math.isnan(value)]
    seconds = sorted(timeline.per_second)
    last = max(seconds, default=0)
    series: dict[str, list[Any]] = {"t": list(range(last + 1))}
    for kind in KINDS:
        series[f"{kind}_per_s"] = [
            len(timeline.per_second.get(s, {}).get(kind, [])) for s in series["t"]
        ]
        series[f"{kind}_p99_ms"] = [
            _p(timeline.per_second.get(s, {}).get(kind, []), 0.99) for s in series["t"]
        ]
    series["sent_per_s"] = [timeline.sent_per_second.get(s, 0) for s in series["t"]]
    series["rss_t"] = [round(t, 2) for t, _, _ in timeline.rss]
    series["rss_mb"] = [round(value, 1) for value in rss_values]
    series["gateway_cpu_percent"] = [round(value, 1) for _, _, value in timeline.rss]
    restart_doc = {
        "at_s": restart.at,
        "down_s": restart.down,
        "up_s": restart.up,
        "gateway_reconnected_s": restart.gateway_reconnected,
        "last_mqtt_answer_before_s": restart.last_answer_before,
        "first_mqtt_answer_after_s": restart.first_answer_after,
        "mqtt_resumed_after_s": restart.resumed_after,
        "mqtt_gap_s": restart.gap,
        "steady_excludes_s": [quiet.start, quiet.stop] if quiet else None,
    }
    gateway_log = [
        line
        for line in gateway.lines
        if " WARNING " in line or " ERROR " in line or "Traceback" in line or "redelivered" in line
    ]
    return Report(
        config={
            "duration_s": config.duration,
            "mqtt_clients": config.mqtt_clients,
            "ws_clients": config.ws_clients,
            "consoles": min(CONSOLES, config.ws_clients),
            "rate_per_client": config.rate,
            "console_rate": CONSOLE_RATE,
            "load_processes": len(workers),
        },
        machine=_machine(),
        seconds=round(load_seconds, 2),
        drain_seconds=round(drain_seconds, 2),
        totals={
            "requests": transports["all"]["sent"],
            "answered": transports["all"]["answered"],
            "errors": timeline.errors,
            "unexpected_failures": transports["all"]["unexpected_failures"],
            "client_exceptions": timeline.exceptions,
            "expected_failures": transports["all"]["expected_failures"],
            "lost": checks["lost"],
            "duplicates": checks["duplicates"],
            "answered_per_s": round(transports["all"]["answered"] / max(1e-9, config.duration), 1),
        },
        transports=transports,
        checks=checks,
        restart=restart_doc,
        rss_mb={
            "min": min(rss_values, default=math.nan),
            "max": max(rss_values, default=math.nan),
            "last": rss_values[-1] if rss_values else math.nan,
        },
        timeline=series,
        gateway={
            "exit_code": gateway_code,
            "cpu_percent_mean": sum(cpu_values) / len(cpu_values) if cpu_values else math.nan,
            "cpu_percent_max": max(cpu_values, default=math.nan),
            "redelivered_already_answered": sum(
                "already answered" in line for line in gateway.lines
            ),
            "log_warnings": gateway_log[-50:],
        },
        passed=not failures,
        failures=failures,
    )


def _sorted_percentile(ordered: Sequence[float], fraction: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def _clean(value: Any) -> Any:
    """NaN is not JSON: null instead; numbers rounded for reading."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 3)
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def render_summary(report: Report) -> str:
    config = report.config
    lines = [
        f"soak: {report.seconds:.0f} s of load (+ {report.drain_seconds:.1f} s to drain), "
        f"{config['mqtt_clients']} MQTT + "
        f"{config['ws_clients']} WebSocket clients ({config['consoles']} consoles), "
        f"{config['rate_per_client']:g} envelopes/s each, {config['load_processes']} load "
        f"processes; commit {report.machine['commit']}, {report.machine['cores']} cores",
        "",
    ]
    header = (
        "transport",
        "requests",
        "answered",
        "exp. fail",
        "errors",
        "p50 ms",
        "p99 ms",
        "steady p99",
        "max ms",
    )
    rows = [header]
    for kind, stats in report.transports.items():
        errors = stats["unexpected_failures"] + (
            report.totals["client_exceptions"] if kind == "all" else 0
        )
        rows.append(
            (
                kind,
                f"{stats['sent']:,}",
                f"{stats['answered']:,}",
                f"{stats['expected_failures']:,}",
                f"{errors:,}",
                _fmt(stats["p50_ms"], 2),
                _fmt(stats["p99_ms"], 2),
                _fmt(stats["steady_p99_ms"], 2),
                _fmt(stats["max_ms"], 0),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for number, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    checks = report.checks
    restart = report.restart
    rss = report.rss_mb
    machine_cpu = report.machine.get("cpu_percent", {})
    lines += [
        "",
        f"usage log: {checks['records']:,} records for {checks['commands_answered']:,} answered "
        f"commands + {checks['logins_logged']:,} logins ({checks['logins_answered']:,} answered)",
        f"lost {checks['lost']:,}  unanswered {checks['unanswered']:,}  "
        f"unlogged {checks['unlogged']:,}  duplicates {checks['duplicates']:,}  "
        f"stray records {checks['stray_records']:,}  client exceptions "
        f"{report.totals['client_exceptions']:,}  (reply copies from QoS 1 redelivery: "
        f"{checks['reply_copies']:,})",
        f"gateway RSS {_fmt(rss['min'], 0)}-{_fmt(rss['max'], 0)} MB (at the end "
        f"{_fmt(rss['last'], 0)} MB); CPU {_fmt(report.gateway['cpu_percent_mean'], 0)}% of a "
        f"core on average; exit code {report.gateway['exit_code']}",
        f"machine CPU during the load, % of one core (of {report.machine['cores'] * 100}): "
        f"{_fmt(machine_cpu.get('all', math.nan), 0)} busy, this run "
        f"{_fmt(machine_cpu.get('this_run', math.nan), 0)}, other processes "
        f"{_fmt(machine_cpu.get('others', math.nan), 0)}",
        f"broker restart at {_fmt(restart['at_s'])} s: back after "
        f"{_fmt(restart['up_s'] - restart['at_s'], 2)} s; gateway reconnected "
        f"{_fmt(restart['gateway_reconnected_s'] - restart['up_s'], 2)} s later; MQTT answers "
        f"resumed {_fmt(restart['mqtt_resumed_after_s'], 2)} s after the broker was back "
        f"({_fmt(restart['mqtt_gap_s'], 2)} s without MQTT answers); the gateway acknowledged "
        f"{report.gateway['redelivered_already_answered']:,} redelivered requests it had "
        "answered already without running them again",
    ]
    if restart["steady_excludes_s"]:
        first, stop = restart["steady_excludes_s"]
        lines.append(f"steady p99: without the answers of seconds {first}-{stop - 1} (the restart)")
    odd = [line for line in report.gateway["log_warnings"] if not _expected_log(line)]
    if odd:
        lines.append(f"gateway log, unexpected warnings ({len(odd)}), first ones:")
        lines += [f"  {line[:200]}" for line in odd[:5]]
    if checks["error_samples"]:
        lines.append("errors, first ones:")
        lines += [f"  {sample}" for sample in checks["error_samples"][:5]]
    for name, keys in checks["examples"].items():
        if keys:
            lines.append(f"{name}, e.g.: {', '.join(keys[:5])}")
    lines.append("PASS" if report.passed else "FAIL: " + "; ".join(report.failures))
    return "\n".join(lines)


def _expected_log(line: str) -> bool:
    """A gateway log line the restart itself explains (disconnected, reconnecting)."""
    return any(
        marker in line for marker in ("mqtt disconnected", "mqtt cannot reach", "already answered")
    )


def render_chart(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = report.timeline
    t = series["t"]
    figure, (rate_axis, p99_axis, rss_axis) = plt.subplots(
        3, 1, figsize=(12, 9), sharex=True, height_ratios=(3, 2, 1.5)
    )
    colors = {"mqtt": "#1f77b4", "ws": "#ff7f0e", "console": "#2ca02c"}
    labels = {"mqtt": "MQTT devices", "ws": "WebSocket devices", "console": "WebSocket consoles"}
    rate_axis.plot(t, series["sent_per_s"], color="#999999", lw=1, ls=":", label="sent (all)")
    answered = [sum(series[f"{kind}_per_s"][i] for kind in KINDS) for i in range(len(t))]
    rate_axis.plot(t, answered, color="black", lw=0.8, label="answered (all)")
    for kind in KINDS:
        rate_axis.plot(t, series[f"{kind}_per_s"], color=colors[kind], lw=1.4, label=labels[kind])
        p99_axis.plot(
            t, series[f"{kind}_p99_ms"], color=colors[kind], lw=1.2, marker=".", ms=3,
            label=labels[kind],
        )  # fmt: skip
    rate_axis.set_ylabel("commands answered / s")
    rate_axis.legend(fontsize=8, loc="lower left")
    p99_axis.set_yscale("log")
    p99_axis.set_ylabel("p99 per second, ms (log)")
    rss_axis.plot(series["rss_t"], series["rss_mb"], color="#9467bd", lw=1.4, label="RSS")
    rss_axis.set_ylabel("gateway RSS, MB")
    cpu_axis = rss_axis.twinx()
    cpu_axis.plot(
        series["rss_t"], series["gateway_cpu_percent"], color="#8c564b", lw=0.8, alpha=0.7
    )
    cpu_axis.set_ylabel("gateway CPU, % of a core", color="#8c564b")
    cpu_axis.set_ylim(bottom=0)
    rss_axis.plot([], [], color="#8c564b", lw=0.8, label="CPU (right axis)")
    rss_axis.legend(fontsize=8, loc="lower right")
    rss_axis.set_xlabel("seconds since the load started")
    restart = report.restart
    for axis in (rate_axis, p99_axis, rss_axis):
        axis.grid(alpha=0.3)
        if restart["at_s"] is not None and not math.isnan(restart["at_s"]):
            axis.axvline(restart["at_s"], color="#d62728", ls="--", lw=1)
            resumed = restart["first_mqtt_answer_after_s"]
            if resumed is not None and not math.isnan(resumed):
                axis.axvspan(restart["at_s"], resumed, color="#d62728", alpha=0.08)
    if restart["at_s"] is not None and not math.isnan(restart["at_s"]):
        rate_axis.annotate(
            f"broker restart\nMQTT back after {restart['mqtt_gap_s']:.1f} s",
            (restart["at_s"], rate_axis.get_ylim()[1]),
            xytext=(4, -4),
            textcoords="offset points",
            va="top",
            fontsize=8,
            color="#d62728",
        )
    totals = report.totals
    checks = report.checks
    figure.suptitle(
        f"tr50gw soak: {report.config['mqtt_clients']} MQTT + {report.config['ws_clients']} "
        f"WebSocket clients, {report.seconds:.0f} s, broker restarted halfway\n"
        f"{totals['requests']:,} commands, {totals['answered']:,} answered, errors "
        f"{totals['errors']}, lost {checks['lost']}, duplicates {checks['duplicates']}; "
        f"p99 {report.transports['all']['p99_ms']:.1f} ms; RSS {report.rss_mb['min']:.0f}-"
        f"{report.rss_mb['max']:.0f} MB - {'PASS' if report.passed else 'FAIL'} "
        f"({report.machine['commit']}, {report.machine['cores']} cores, other processes used "
        f"{report.machine.get('cpu_percent', {}).get('others', math.nan):.0f}% of a core)",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM takes Ctrl-C's way out, so every process is cleaned up either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Mixed MQTT + WebSocket load with a broker restart halfway; checks that "
        "every request is answered and logged exactly once.",
    )
    parser.add_argument(
        "--duration", type=float, default=120.0, help="seconds of load (default 120)"
    )
    parser.add_argument("--mqtt-clients", type=int, default=200, help="default 200")
    parser.add_argument(
        "--ws-clients", type=int, default=100, help="default 100, of which 4 are consoles"
    )
    parser.add_argument(
        "--rate", type=float, default=2.0, help="envelopes per second per device (default 2)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where soak.json and soak.png go (bench/results)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=DRAIN_TIMEOUT,
        help=f"seconds to wait for outstanding replies (default {DRAIN_TIMEOUT:g})",
    )
    parser.add_argument("--no-chart", action="store_true", help="only soak.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main()
    if args.duration <= 0 or args.rate <= 0:
        parser.error("--duration and --rate must be positive")
    if args.mqtt_clients < 0 or args.ws_clients < 0 or args.mqtt_clients + args.ws_clients == 0:
        parser.error("at least one client")
    config = Config(
        duration=args.duration,
        mqtt_clients=args.mqtt_clients,
        ws_clients=args.ws_clients,
        rate=args.rate,
        out=args.out,
        drain_timeout=args.drain_timeout,
        chart=not args.no_chart,
    )
    try:
        with _sigterm_as_interrupt():
            report = run(config)
    except KeyboardInterrupt:
        print("soak: interrupted; every process stopped", file=sys.stderr)
        return 130
    except SoakError as error:
        print(f"soak: {error}", file=sys.stderr)
        return 1
    print(render_summary(report))
    out = config.out or Path("bench/results")
    print(f"\nwrote {out / 'soak.json'}" + (f" and {out / 'soak.png'}" if config.chart else ""))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
