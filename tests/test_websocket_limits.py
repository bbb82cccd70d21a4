"""WebSocket admission and memory limits, against real servers through real sockets.

The Origin allow-list and the connection limit run against in-process gateways (the
`start_gateway` fixture). The slow-client test runs `tr50gw serve` as a subprocess so that its
resident memory can be read from /proc while clients that never read their replies are connected.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import queue
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.sync.client import ClientConnection, connect

from tests.support import GatewayThread, WsClient

CONSOLE = "https://console.example"
PING = json.dumps({"1": {"command": "diag.ping"}})
LISTEN_LINE = re.compile(r"websocket listening on ws://[\d.]+:(?P<port>\d+)/api$")


def ping_works(connection: ClientConnection) -> bool:
    connection.send(PING)
    return json.loads(connection.recv(timeout=10)) == {"1": {"success": True}}


def refused_status(url: str, **options: Any) -> int:
    with pytest.raises(InvalidStatus) as refused, connect(url, open_timeout=5, **options):
        pass
    return refused.value.response.status_code


# -- 1. Origin allow-list ------------------------------------------------------------------------
def test_an_allowed_origin_connects_and_others_are_refused_403(
    start_gateway: Callable[..., GatewayThread], caplog: pytest.LogCaptureFixture
) -> None:
    # Configured with a trailing slash and capitals: matched as an Origin header is written.
    url = start_gateway(ws_allowed_origins=["https://Console.example/"]).ws_url
    with connect(url, origin=CONSOLE, open_timeout=5) as allowed:
        assert ping_works(allowed)

    with caplog.at_level(logging.WARNING, logger="tr50gw.websocket"):
        assert refused_status(url, origin="https://evil.example") == 403
        assert refused_status(url, origin=CONSOLE + ".evil.example") == 403
        assert refused_status(url, origin="null") == 403
        # Non-browser clients send no Origin: with an allow-list they are refused too.
        assert refused_status(url) == 403
        assert (
            refused_status(url, additional_headers=[("Origin", CONSOLE), ("Origin", CONSOLE)])
            == 403
        )
    refusals = [r.getMessage() for r in caplog.records if "refused (403)" in r.getMessage()]
    assert refusals == [
        "websocket handshake from 127.0.0.1 refused (403): Origin 'https://evil.example'",
        f"websocket handshake from 127.0.0.1 refused (403): Origin '{CONSOLE}.evil.example'",
        "websocket handshake from 127.0.0.1 refused (403): Origin 'null'",
        "websocket handshake from 127.0.0.1 refused (403): no Origin header",
        "websocket handshake from 127.0.0.1 refused (403): 2 Origin headers",
    ]


def test_an_empty_entry_admits_clients_without_an_origin(
    start_gateway: Callable[..., GatewayThread],
) -> None:
    url = start_gateway(ws_allowed_origins=[CONSOLE, ""]).ws_url
    with connect(url, open_timeout=5) as device, connect(url, origin=CONSOLE, open_timeout=5) as ui:
        assert ping_works(device) and ping_works(ui)
    assert refused_status(url, origin="https://evil.example") == 403


def test_without_an_allow_list_any_origin_connects(
    start_gateway: Callable[..., GatewayThread],
) -> None:
    url = start_gateway().ws_url
    for origin in (None, CONSOLE, "https://anything.example", "null"):
        with connect(url, origin=origin, open_timeout=5) as connection:
            assert ping_works(connection)


# -- 2. connection limit -------------------------------------------------------------------------
def connect_when_a_place_is_free(url: str, within: float = 5.0) -> WsClient:
    """A place is given back when the server sees the TCP connection close: poll until it has."""
    deadline = time.monotonic() + within
    while True:
        try:
            return WsClient(url)
        except InvalidStatus as refused:
            if refused.response.status_code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_the_connection_after_the_limit_is_refused_503_until_one_closes(
    start_gateway: Callable[..., GatewayThread], caplog: pytest.LogCaptureFixture
) -> None:
    url = start_gateway(ws_max_connections=3).ws_url
    clients = [WsClient(url) for _ in range(3)]
    try:
        for client in clients:
            assert client.send(PING) == {"1": {"success": True}}
        with caplog.at_level(logging.WARNING, logger="tr50gw.websocket"):
            for _ in range(5):
                with pytest.raises(InvalidStatus) as refused, connect(url, open_timeout=5):
                    pass
                response = refused.value.response
                assert response.status_code == 503
                assert response.body == b"Too many connections, try again later\n"
                assert response.headers["Retry-After"] == "5"
        # Five refusals in a row: one log line, not five.
        lines = [r.getMessage() for r in caplog.records if "connection limit" in r.getMessage()]
        assert lines == [
            "websocket connection limit (3) reached: 1 handshake(s) refused (503) since the last "
            "report, the latest from 127.0.0.1"
        ]
        # The refused ones took no place: the three are still served.
        for client in clients:
            assert client.send(PING) == {"1": {"success": True}}

        clients.pop().close()
        clients.append(connect_when_a_place_is_free(url))
        assert clients[-1].send(PING) == {"1": {"success": True}}
        assert refused_status(url) == 503
    finally:
        for client in clients:
            client.close()


def raw_handshake(port: int, version: str = "13", path: str = "/api") -> bytes:
    """Send an opening handshake by hand; returns the status line the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: {version}\r\n\r\n".encode()
        )
        return sock.makefile("rb").readline().rstrip()


def test_failed_and_abandoned_handshakes_give_their_place_back(
    start_gateway: Callable[..., GatewayThread],
) -> None:
    thread = start_gateway(ws_max_connections=2)
    url = thread.ws_url
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    for _ in range(5):
        # Admitted, then refused by the library's own checks (wrong protocol version).
        assert raw_handshake(port, version="12").startswith(b"HTTP/1.1 400")
        # Admitted, then the client goes away before reading its answer.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                b"GET /api HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
        # Opened and closed properly.
        WsClient(url).close()
    first = connect_when_a_place_is_free(url)
    second = connect_when_a_place_is_free(url)
    try:
        assert first.send(PING) == second.send(PING) == {"1": {"success": True}}
        assert refused_status(url) == 503
    finally:
        first.close()
        second.close()


# -- 3. clients that never read --------------------------------------------------------------------
class ServeProcess:
    """`python -m gateway serve` on a free port, its stderr read by a thread."""

    def __init__(self, db: Path) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("TR50GW_")}
        # Records capped small: what is measured is the transport's buffering, not DuckDB's
        # cache filling with the 16 KB ids of logged calls (a CI run grew +56 MB that way).
        env["TR50GW_LOG_CAP"] = "1024"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--mqtt-url", "none", "--ws-port", "0",
             "--db", str(db), "--instance-name", f"limits-{secrets.token_hex(3)}"],
            cwd=Path(__file__).resolve().parent.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = self._wait_for_port(timeout=30)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))

    def _wait_for_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            seen.append(line)
            if match := LISTEN_LINE.search(line):
                return int(match.group("port"))
        self.process.kill()
        raise AssertionError("gateway did not start:\n" + "\n".join(seen))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api"

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match, status
        return int(match.group(1)) / 1024

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def stalled_client(port: int) -> Iterator[socket.socket]:
    """A WebSocket client that completes the handshake and then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    try:
        yield sock
    finally:
        sock.close()


def send_until_blocked(sock: socket.socket, frames: Iterable[bytes], within: float) -> int:
    """Send frames until the peer stops taking them (one second without progress): how many."""
    sock.settimeout(1.0)
    deadline = time.monotonic() + within
    sent = 0
    for frame in frames:
        try:
            sock.sendall(frame)
        except TimeoutError:
            return sent
        sent += 1
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"the gateway kept reading: {sent} frames sent, never blocked")


def test_clients_that_never_read_cannot_grow_the_gateways_memory(tmp_path: Path) -> None:
    gateway = ServeProcess(tmp_path / "usage.duckdb")
    try:
        # Each reply echoes its 16 KB command id: replies fill the client's side quickly.
        big_ping = json.dumps({"k" * 16_000: {"command": "diag.ping"}})
        with connect(gateway.url, max_size=None, open_timeout=5) as warm:
            for _ in range(300):  # the same work first, so that lazy set-up is not counted
                warm.send(big_ping)
                warm.recv(timeout=10)
        # ... including the writer's first commit of the file, which comes up to a flush
        # interval (200 ms) after the replies: counted, it was most of a 70 MB "growth".
        time.sleep(1.0)
        before = gateway.rss_mb()

        envelope = Frame(Opcode.TEXT, big_ping.encode()).serialize(mask=True)
        ping_frame = Frame(Opcode.PING, b"p" * 125).serialize(mask=True)
        with stalled_client(gateway.port) as envelopes, stalled_client(gateway.port) as pings:
            # 5,000 envelopes (80 MB) and, as fast as it goes, Ping frames (each answered by a
            # Pong): the gateway must stop reading both long before they are all sent.
            sent_envelopes = send_until_blocked(envelopes, [envelope] * 5_000, within=10)
            sent_pings = send_until_blocked(pings, iter(lambda: ping_frame, b""), within=5)
            after = gateway.rss_mb()
            with connect(gateway.url, open_timeout=5) as other:
                assert ping_works(other)
            print(
                f"\nstalled clients: {sent_envelopes} envelopes of 16 KB and {sent_pings} Pings "
                f"sent before blocking; gateway RSS {before:.1f} -> {after:.1f} MB "
                f"(+{after - before:.1f})"
            )
        assert sent_envelopes < 5_000
        assert after - before < 50, (before, after)
    finally:
        gateway.stop()
