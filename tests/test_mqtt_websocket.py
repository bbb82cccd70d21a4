"""MQTT over WebSocket (SPEC §7.3, issue 12): the shipped mosquitto.conf's `protocol websockets`
listener, path `/mqtt`, subprotocols `mqtt` and `mqttv3.1`, with TR50 driven through it by
MQTT.js (npm, pinned in package.json) as a browser console would, anonymous, in isolated mode,
under the same ACL as TCP clients; the broker's plugin and the gateway as `make run` has them."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.sync.client import connect

from devtools.broker import REPO_ROOT, Broker
from tests.support import PASSWORD, GatewayThread, Tenants, trusting_stack, ws_client

SUBPROTOCOLS = ["mqtt", "mqttv3.1"]
USER = "user@acme.test"


@dataclass
class World:
    broker: Broker
    gateway: GatewayThread
    tenants: Tenants


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("mqtt-ws")
    with trusting_stack(folder, persistence=False) as (tenants, broker, gateway):
        yield World(broker, gateway, tenants)


@dataclass
class ConsoleRun:
    client_id: str
    other: str
    process: subprocess.CompletedProcess[str]

    @property
    def report(self) -> dict[str, Any]:
        lines = self.process.stdout.strip().splitlines()
        report: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        return report

    def explain(self) -> str:
        return f"exit {self.process.returncode}\n{self.process.stdout}\n{self.process.stderr}"


@pytest.fixture(scope="module", params=SUBPROTOCOLS)
def console(request: pytest.FixtureRequest, world: World) -> ConsoleRun:
    node = shutil.which("node")
    assert node is not None, "node not found; `make node_modules` installs it (apt: nodejs npm)"
    assert (REPO_ROOT / "node_modules" / "mqtt").is_dir(), "run `make node_modules` (npm ci)"
    assert world.broker.websockets_url is not None
    client_id = f"console-{secrets.token_hex(3)}"
    other = f"victim-{secrets.token_hex(3)}"
    envelope = {
        "auth": {"command": "api.authenticate", "params": {"username": USER, "password": PASSWORD}},
        "1": {"command": "session.info"},
    }
    process = subprocess.run(
        [node, str(REPO_ROOT / "tests" / "clients" / "mqttjs_console.js"),
         "--url", world.broker.websockets_url, "--client-id", client_id,
         "--subprotocol", request.param, "--other", other],
        input=json.dumps(envelope), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    return ConsoleRun(client_id, other, process)


def test_the_listener_is_on_path_mqtt() -> None:
    with Broker(persistence=False) as broker:
        assert broker.websockets_url is not None and broker.websockets_url.endswith("/mqtt")


@pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
def test_the_listener_answers_each_subprotocol(world: World, subprotocol: str) -> None:
    assert world.broker.websockets_url is not None
    with connect(world.broker.websockets_url, subprotocols=[subprotocol]) as websocket:  # type: ignore[list-item]
        assert websocket.subprotocol == subprotocol


def test_a_console_gets_its_reply_through_the_broker(console: ConsoleRun) -> None:
    assert console.process.returncode == 0, console.explain()


def test_the_reply_runs_as_the_user_who_logged_in(console: ConsoleRun) -> None:
    (reply,) = [m for m in console.report["received"] if m["topic"].endswith("/1")]
    info = json.loads(reply["payload"])["1"]["params"]
    assert info["userName"] == USER, console.explain()


def test_the_acl_lets_it_read_only_its_own_replies(console: ConsoleRun) -> None:
    """Subscribed to reply/# too; published into another client's namespace first."""
    topics = {message["topic"] for message in console.report["received"]}
    assert topics == {f"reply/{console.client_id}/1"}, console.explain()


def test_what_it_published_in_another_clients_name_never_reached_the_gateway(
    world: World, console: ConsoleRun
) -> None:
    """It sent the same envelope (2 commands) twice: only the one in its own namespace ran.
    (The plugin stamps the sender's own client id, so a spoof would be logged under it too.)"""
    wanted = {"clientId": console.client_id, "showAll": True}
    with ws_client(world.gateway.ws_url) as ws:
        ws.login("ops@acme.test")
        reply = ws.send({"1": {"command": "usage.api.list", "params": wanted}})
    assert reply["1"]["params"]["count"] == 2
