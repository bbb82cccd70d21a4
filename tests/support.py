"""Test helpers: a real gateway in a background thread, and small TR50 clients.

The gateway runs on its own event loop in its own thread so that tests can be plain synchronous
code talking to it over real sockets (paho, websockets' sync client, subprocesses).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from websockets.sync.client import ClientConnection, connect

from devtools.broker import Broker
from gateway.app import Gateway
from gateway.cli import main as cli_main
from gateway.settings import Settings

PASSWORD = "correct horse battery staple"


def run_cli(*argv: str) -> tuple[int, str]:
    """Run `tr50gw ...` in-process; returns (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(list(argv))
    return code, out.getvalue()


@dataclass
class Tenants:
    """Two orgs, each with a user, an org-admin and an application; plus a Super-Ops user."""

    db: Path
    org_ids: dict[str, str] = field(default_factory=dict)
    apps: dict[str, tuple[str, str]] = field(default_factory=dict)

    def user(self, org: str, role: str = "user") -> str:
        return f"{role}@{org}.test"


def provision(db: Path) -> Tenants:
    tenants = Tenants(db)
    for org in ("acme", "globex"):
        code, out = run_cli(
            "admin", "org-create", org, "--name", org.title(), "--db", str(db), "--json"
        )
        assert code == 0, out
        tenants.org_ids[org] = json.loads(out)["orgId"]
        for role in ("user", "org-admin"):
            code, out = run_cli(
                "admin",
                "user-create",
                tenants.user(org, role),
                "--org",
                org,
                "--password",
                PASSWORD,
                "--role",
                role,
                "--db",
                str(db),
                "--json",
            )
            assert code == 0, out
        code, out = run_cli(
            "admin", "app-create", "--org", org, "--name", "fleet", "--db", str(db), "--json"
        )
        assert code == 0, out
        app = json.loads(out)
        tenants.apps[org] = (app["appId"], app["appToken"])
    code, out = run_cli(
        "admin",
        "user-create",
        "ops@acme.test",
        "--org",
        "acme",
        "--password",
        PASSWORD,
        "--role",
        "super-ops",
        "--db",
        str(db),
        "--json",
    )
    assert code == 0, out
    return tenants


class GatewayThread:
    """A real `Gateway` serving from a background thread until `stop()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gateway: Gateway | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self.gateway = Gateway(self.settings)
            task = asyncio.create_task(self.gateway.serve())
            ready = asyncio.create_task(self.gateway.ready.wait())
            await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
            if self.gateway.mqtt is not None and not task.done():
                await asyncio.wait_for(self.gateway.mqtt.subscribed.wait(), 10)
            self._started.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as error:  # surfaced to the test by start()
            self._error = error
            self._started.set()

    def start(self) -> GatewayThread:
        self._thread.start()
        if not self._started.wait(15):
            raise TimeoutError("gateway did not start")
        if self._error is not None:
            raise self._error
        return self

    @property
    def ws_url(self) -> str:
        assert self.gateway is not None and self.gateway.ws_port is not None
        return f"ws://127.0.0.1:{self.gateway.ws_port}/api"

    def mqtt_connected(self, timeout: float = 15) -> None:
        """Block until the gateway is (re)connected to its broker and subscribed."""
        assert self.gateway is not None and self.gateway.mqtt is not None and self._loop
        event = self.gateway.mqtt.subscribed
        future = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(event.wait(), timeout), self._loop
        )
        future.result(timeout + 1)

    def stop(self) -> None:
        if self._loop is not None and self.gateway is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.gateway.stop)
        self._thread.join(20)


@contextlib.contextmanager
def trusting_stack(
    folder: Path, *, persistence: bool = True
) -> Iterator[tuple[Tenants, Broker, GatewayThread]]:
    """A provisioned file in `folder`, a broker with the plugin, and a gateway behind it as
    `make run` has them: trusting the plugin (`mqtt_broker_identity`) and writing the
    credentials file it checks. Stopped on leaving."""
    tenants = provision(folder / "usage.duckdb")
    with Broker(persistence=persistence) as broker:
        gateway = GatewayThread(
            Settings(
                db=tenants.db,
                mqtt_url=broker.url_for_gateway,
                ws_port=0,
                instance_name=f"gw-{secrets.token_hex(3)}",
                mqtt_broker_identity=True,
                broker_credentials=broker.credentials_path,
            )
        ).start()
        try:
            yield tenants, broker, gateway
        finally:
            gateway.stop()


def user_auth(username: str, password: str = PASSWORD) -> dict[str, Any]:
    """The `api.authenticate` command of a user's login."""
    return {"command": "api.authenticate", "params": {"username": username, "password": password}}


class WsClient:
    """A TR50 client over the gateway's WebSocket."""

    def __init__(self, url: str) -> None:
        self._stack = contextlib.ExitStack()
        self.connection: ClientConnection = self._stack.enter_context(connect(url, max_size=None))

    def send(self, envelope: dict[str, Any] | str | bytes) -> Any:
        if isinstance(envelope, dict):
            envelope = json.dumps(envelope)
        self.connection.send(envelope)
        return json.loads(self.connection.recv(timeout=10))

    def login(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        return self.send({"auth": user_auth(username, password)})

    def close(self) -> None:
        self._stack.close()


class MqttClient:
    """A paho client that publishes on api/<client id>/... and collects what it receives."""

    def __init__(
        self,
        port: int,
        client_id: str | None = None,
        *,
        v5: bool = False,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.client_id = client_id or f"dev-{secrets.token_hex(3)}"
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._subscribed: queue.Queue[Any] = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_socket_open = lambda c, u, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self.client.on_message = lambda c, u, message: self.messages.put(message)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self._subscribed.put(codes)
        connected = threading.Event()
        refused: list[Any] = []

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                refused.append(reason)
            connected.set()

        self.client.on_connect = on_connect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not connected.wait(10):
            raise TimeoutError("mqtt client could not connect")
        if refused:
            self.client.loop_stop()
            raise ConnectionRefusedError(f"CONNECT refused: {refused[0]}")

    def subscribe(self, topic: str, qos: int = 1) -> list[Any]:
        self.client.subscribe(topic, qos=qos)
        return self._subscribed.get(timeout=10)

    def publish(
        self,
        topic: str,
        payload: bytes | str | dict[str, Any],
        qos: int = 1,
        properties: Properties | None = None,
    ) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos, properties=properties)
        if qos:
            info.wait_for_publish(10)

    def receive(self, timeout: float = 10) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def nothing_received(self, within: float) -> bool:
        try:
            self.messages.get(timeout=within)
        except queue.Empty:
            return True
        return False

    def call(
        self,
        envelope: dict[str, Any] | bytes,
        *,
        qos: int = 1,
        topic: str | None = None,
        compressed: bool = False,
    ) -> Any:
        """Publish on api/<id>/req (or apiz/) and return the decoded reply."""
        prefix = "apiz" if compressed else "api"
        topic = topic or f"{prefix}/{self.client_id}/req"
        payload = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
        if compressed:
            payload = zlib.compress(payload)
        self.publish(topic, payload, qos=qos)
        message = self.receive()
        data = zlib.decompress(message.payload) if compressed else message.payload
        return json.loads(data)

    def login(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        """Log in by envelope (in isolated mode the session is bound to the namespace)."""
        return self.call({"auth": user_auth(username, password)})

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def response_properties(topic: str, correlation: bytes) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = topic
    properties.CorrelationData = correlation
    return properties


@contextlib.contextmanager
def ws_client(url: str) -> Iterator[WsClient]:
    client = WsClient(url)
    try:
        yield client
    finally:
        client.close()


def client_command(tool: str, port: int, *args: str) -> list[str]:
    return [tool, "-h", "127.0.0.1", "-p", str(port), *args]


def run_client(tool: str, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one of Mosquitto's command-line clients to completion."""
    command = client_command(tool, port, *args)
    return subprocess.run(command, capture_output=True, text=True, timeout=15, check=False)


def kill_writer_repeatedly(
    script: str, path: Path, delays: tuple[float, ...] = (0.3, 0.55, 0.8)
) -> None:
    """Run `python -c script path` (a writer that prints "ready" once its storage is open, then
    writes until killed) once per delay, each killed with SIGKILL that long after "ready"."""
    repository = Path(__file__).resolve().parent.parent
    for delay in delays:
        process = subprocess.Popen(
            [sys.executable, "-c", script, str(path)],
            cwd=repository,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(repository)},
        )
        assert process.stdout is not None
        ready = process.stdout.readline().strip()
        assert ready == b"ready", process.communicate()[1].decode()[:3000]
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
