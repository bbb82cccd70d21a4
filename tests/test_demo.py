"""The demo fleet of `make run` (devtools/demo.py) against a real Mosquitto (the shipped config and
ACL) and a real gateway: every thing is its own MQTT client, its data arrives, its calls are in
the usage log, its deliberate bad calls too, and SIGTERM stops it cleanly.

One fleet run (`--cycles`, a short interval) is shared by the module's read-only checks; each
check reads back one thing through TR50 commands over the gateway's WebSocket.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import pytest

from devtools.broker import REPO_ROOT, Broker
from devtools.demo import KINDS, TOKEN_VARIABLE, thing_keys
from tests.support import GatewayThread, Tenants, trusting_stack, ws_client

CYCLES = 6
GLITCH_EVERY = 3  # every thing sends a bad call in cycles 2 and 5
FLEET_TIMEOUT = 120.0  # seconds for a whole run; generous, others share the machine's 2 cores
THINGS = thing_keys(len(KINDS))
FIRMWARE = {key: kind.firmware for key, kind in zip(THINGS, KINDS, strict=True)}
ALARM = {key: kind.ALARM.key for key, kind in zip(THINGS, KINDS, strict=True)}
# A property each kind publishes every cycle, and the commands each kind's calls include.
PROPERTY = {
    "thermostat-1": "temperature",
    "truck-1": "fuel",
    "pump-1": "pressure",
    "meter-1": "battery",
}
BOOT = {"session.info", "attribute.publish", "alarm.publish", "log.publish"}
COMMANDS = {
    "thermostat-1": BOOT | {"property.publish"},
    "truck-1": BOOT | {"location.publish", "property.batch"},
    "pump-1": BOOT | {"property.batch"},
    "meter-1": BOOT | {"property.publish"},
}
USER = "user@acme.test"


def fleet_command(broker: Broker, tenants: Tenants, *extra: str) -> list[str]:
    app_id, _token = tenants.apps["acme"]
    return [
        sys.executable, "-m", "devtools.demo",
        "--mqtt-url", f"mqtt://127.0.0.1:{broker.port}",
        "--app-id", app_id, "--interval", "0.2", "--seed", "7", *extra,
    ]  # fmt: skip


def fleet_env(tenants: Tenants) -> dict[str, str]:
    """The app token travels in the environment, as `make run` passes it."""
    return {**os.environ, TOKEN_VARIABLE: tenants.apps["acme"][1]}


@dataclass
class World:
    broker: Broker
    gateway: GatewayThread
    tenants: Tenants
    fleet: subprocess.CompletedProcess[str]

    def call(self, command: str, **params: Any) -> dict[str, Any]:
        """One command as an org user of the fleet's org, over the WebSocket; its outcome."""
        with ws_client(self.gateway.ws_url) as ws:
            login = ws.login(USER)
            assert login["auth"]["success"], login
            reply = ws.send({"1": {"command": command, "params": params}})
        outcome: dict[str, Any] = reply["1"]
        return outcome

    def usage(self, **params: Any) -> list[dict[str, Any]]:
        outcome = self.call("usage.api.list", limit=2000, **params)
        assert outcome["success"], outcome
        return outcome["params"]["result"] or []


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A broker, a provisioned gateway, and one finished fleet run of CYCLES cycles."""
    # As `make run` has it: the things authenticate in their CONNECT, which the broker plugin
    # checks against the credentials the gateway writes.
    with trusting_stack(tmp_path_factory.mktemp("demo")) as (tenants, broker, gateway):
        fleet = subprocess.run(
            fleet_command(
                broker, tenants, "--cycles", str(CYCLES), "--glitch-every", str(GLITCH_EVERY)
            ),
            cwd=REPO_ROOT,
            env=fleet_env(tenants),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=FLEET_TIMEOUT,
        )
        yield World(broker, gateway, tenants, fleet)


def test_the_fleet_runs_its_cycles_and_exits_0(world: World) -> None:
    assert world.fleet.returncode == 0, world.fleet.stderr


@pytest.mark.parametrize("thing", THINGS)
def test_each_thing_published_its_readings(world: World, thing: str) -> None:
    outcome = world.call("property.current", thingKey=thing, key=PROPERTY[thing])
    assert outcome["success"], outcome


def test_the_truck_published_where_it_is(world: World) -> None:
    outcome = world.call("location.current", thingKey="truck-1")
    assert outcome["success"], outcome


@pytest.mark.parametrize("thing", THINGS)
def test_each_thing_reported_its_firmware_at_boot(world: World, thing: str) -> None:
    outcome = world.call("thing.attr.get", thingKey=thing, key="firmware")
    assert outcome["params"]["value"] == FIRMWARE[thing], outcome


@pytest.mark.parametrize("thing", THINGS)
def test_each_thing_reported_its_alarm_state(world: World, thing: str) -> None:
    outcome = world.call("alarm.current", thingKey=thing, key=ALARM[thing])
    assert outcome["success"], outcome


@pytest.mark.parametrize("thing", THINGS)
def test_each_thing_logged_its_boot(world: World, thing: str) -> None:
    outcome = world.call("log.list", thingKey=thing)
    messages = [entry["msg"] for entry in outcome["params"]["result"] or []]
    assert f"booted, firmware {FIRMWARE[thing]}" in messages, outcome


@pytest.mark.parametrize("thing", THINGS)
def test_each_thing_s_calls_are_in_the_usage_log(world: World, thing: str) -> None:
    logged = {f"{r['service']}.{r['command']}" for r in world.usage(who=thing)}
    assert COMMANDS[thing] <= logged, logged


@pytest.mark.parametrize("thing", THINGS)
def test_each_thing_is_its_own_mqtt_client(world: World, thing: str) -> None:
    channels = {(r["transport"], r["clientId"]) for r in world.usage(who=thing)}
    assert channels == {("mqtt", thing)}


def test_every_thing_s_bad_calls_are_logged_as_invalid_params(world: World) -> None:
    refused = {r["whoami"] for r in world.usage(hasFailure=True) if r["errorCode"] == -90002}
    assert refused == set(THINGS)


def test_the_app_token_is_never_printed(world: World) -> None:
    token = world.tenants.apps["acme"][1]
    assert token not in world.fleet.stdout + world.fleet.stderr


def _lines(stream: IO[str]) -> queue.Queue[str]:
    """The stream's lines as they come, read by a thread, so a test can wait with a timeout."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_sigterm_stops_a_running_fleet_with_exit_code_0(world: World) -> None:
    fleet = subprocess.Popen(
        fleet_command(world.broker, world.tenants),  # no --cycles: runs until stopped
        cwd=REPO_ROOT,
        env=fleet_env(world.tenants),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert fleet.stderr is not None
        lines = _lines(fleet.stderr)
        deadline = time.monotonic() + FLEET_TIMEOUT
        while "publishing every" not in lines.get(timeout=max(0.0, deadline - time.monotonic())):
            pass
        fleet.send_signal(signal.SIGTERM)
        assert fleet.wait(timeout=30) == 0
    finally:
        if fleet.poll() is None:
            fleet.kill()
            fleet.wait()
