"""Real device clients nobody here wrote, used unchanged against tr50gw through the shipped broker
configuration (issue 11): Wind River's device-cloud-python and MQTT.js, over TCP and over MQTT
over WebSocket. Each authenticates in its CONNECT (username = thing key, password = app token),
publishes TR50 envelopes on `api/<n>` with no auth block, never subscribes, and must get its
replies; its calls must be in the usage log as that thing.

The broker is the shipped mosquitto.conf + ACL with the tr50gw_auth plugin (devtools.broker);
the gateway trusts the plugin (`mqtt_broker_identity`) and writes its credentials file, as
`make run` has it. Each client runs once per module in its own process (device-cloud-python in
a virtual environment of its own, MQTT.js with `node` from `npm ci`); the tests read back what
it did through TR50 commands over the gateway's WebSocket, as an org user.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.broker import REPO_ROOT, Broker
from tests.support import GatewayThread, Tenants, trusting_stack, ws_client

CLIENTS = REPO_ROOT / "tests" / "clients"
ORG = "acme"
USER = "user@acme.test"
# device-cloud-python pins 2017 versions of its dependencies; it runs with `--no-deps` and
# these, which are all it imports on the way used here.
DEVICE_CLOUD = "device-cloud==18.6.19"
DEVICE_CLOUD_NEEDS = ("paho-mqtt==1.6.1", "requests>=2,<3", "certifi", "websocket-client>=1,<2")
# Its app id: the last part of its key (`<device_id>-<app_id>`) and its config file's name.
DEVICE_CLOUD_APP = "tr50gw-test"
# What tests/clients/device_cloud_device.py publishes, as the library sends it.
DEVICE_CLOUD_COMMANDS = {"property.batch", "location.batch", "alarm.batch", "log.publish"}
TIMEOUT = 60.0


@dataclass
class World:
    broker: Broker
    gateway: GatewayThread
    tenants: Tenants

    @property
    def token(self) -> str:
        return self.tenants.apps[ORG][1]

    def call(self, command: str, **params: Any) -> dict[str, Any]:
        """One command as an org user, over the gateway's WebSocket; its outcome."""
        with ws_client(self.gateway.ws_url) as ws:
            login = ws.login(USER)
            assert login["auth"]["success"], login
            reply = ws.send({"1": {"command": command, "params": params}})
        outcome: dict[str, Any] = reply["1"]
        return outcome

    def ok(self, command: str, **params: Any) -> Any:
        outcome = self.call(command, **params)
        assert outcome["success"], outcome
        return outcome.get("params")

    def usage(self, thing: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self.ok("usage.api.list", who=thing)["result"] or []
        return records


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("real-clients")
    with trusting_stack(folder, persistence=False) as (tenants, broker, gateway):
        yield World(broker, gateway, tenants)


def report_of(process: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON line a client prints last; {} when it printed none."""
    lines = process.stdout.strip().splitlines()
    try:
        report: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}
    return report


def explain(process: subprocess.CompletedProcess[str], *extra: str) -> str:
    return "\n".join(
        [f"exit code {process.returncode}", process.stdout, process.stderr[-4000:], *extra]
    )


# -- device-cloud-python ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def device_cloud_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with device-cloud-python, from the package index; its Python."""
    venv = tmp_path_factory.mktemp("device-cloud-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=TIMEOUT)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for arguments in (["--no-deps", DEVICE_CLOUD], list(DEVICE_CLOUD_NEEDS)):
        installed = subprocess.run(
            [*pip, *arguments], capture_output=True, text=True, timeout=300, check=False
        )
        assert installed.returncode == 0, installed.stdout + installed.stderr
    return python


@dataclass
class DeviceCloudRun:
    key: str
    process: subprocess.CompletedProcess[str]
    log: Path

    @property
    def report(self) -> dict[str, Any]:
        return report_of(self.process)

    def explain(self) -> str:
        log = self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""
        return explain(self.process, log)


@pytest.fixture(scope="module")
def device_cloud(
    world: World, device_cloud_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> DeviceCloudRun:
    """One run of tests/clients/device_cloud_device.py with the library's own config files."""
    config_dir = tmp_path_factory.mktemp("device-cloud-config")
    device_id = f"dc-{secrets.token_hex(4)}"
    log = config_dir / "device.log"
    config = {
        # Plain MQTT: the library turns TLS on only for ports 443 and 8883.
        "cloud": {"host": world.broker.host, "port": world.broker.port, "token": world.token},
        "validate_cloud_cert": False,
        "qos_level": 1,
        "quiet": True,  # no log on stderr; the log file instead
        "log_file": str(log),
    }
    (config_dir / f"{DEVICE_CLOUD_APP}-connect.cfg").write_text(json.dumps(config))
    (config_dir / "device_id").write_text(device_id)
    process = subprocess.run(
        [str(device_cloud_python), str(CLIENTS / "device_cloud_device.py"), str(config_dir),
         DEVICE_CLOUD_APP],
        cwd=config_dir, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=TIMEOUT, check=False,
    )  # fmt: skip
    return DeviceCloudRun(f"{device_id}-{DEVICE_CLOUD_APP}", process, log)


def test_device_cloud_python_gets_a_success_reply_for_every_command(
    device_cloud: DeviceCloudRun,
) -> None:
    assert device_cloud.process.returncode == 0, device_cloud.explain()


def test_device_cloud_python_sends_batches_and_a_log(device_cloud: DeviceCloudRun) -> None:
    sent = {command["command"] for command in device_cloud.report["sent"].values()}
    assert sent == DEVICE_CLOUD_COMMANDS, device_cloud.explain()


def test_device_cloud_pythons_calls_are_logged_as_the_thing(
    world: World, device_cloud: DeviceCloudRun
) -> None:
    channels = {(r["whoami"], r["transport"], r["clientId"]) for r in world.usage(device_cloud.key)}
    assert channels == {(device_cloud.key, "mqtt", device_cloud.key)}


def test_device_cloud_pythons_calls_are_all_in_the_usage_log_and_succeeded(
    world: World, device_cloud: DeviceCloudRun
) -> None:
    records = world.usage(device_cloud.key)
    logged = {(f"{r['service']}.{r['command']}", r["success"]) for r in records}
    assert logged == {(command, True) for command in DEVICE_CLOUD_COMMANDS}


def test_device_cloud_pythons_properties_are_current(
    world: World, device_cloud: DeviceCloudRun
) -> None:
    values = [
        world.ok("property.current", thingKey=device_cloud.key, key=key)["value"]
        for key in ("temperature", "humidity")
    ]
    assert values == [21.5, 40.0]


def test_device_cloud_pythons_location_is_current(
    world: World, device_cloud: DeviceCloudRun
) -> None:
    location = world.ok("location.current", thingKey=device_cloud.key)
    assert (location["lat"], location["lng"], location["fixType"]) == (45.5017, -73.5673, "gps")


def test_device_cloud_pythons_alarm_is_current(world: World, device_cloud: DeviceCloudRun) -> None:
    alarm = world.ok("alarm.current", thingKey=device_cloud.key, key="door")
    assert (alarm["state"], alarm["msg"]) == (1, "open")


def test_device_cloud_pythons_event_is_in_its_log(
    world: World, device_cloud: DeviceCloudRun
) -> None:
    entries = world.ok("log.list", thingKey=device_cloud.key)["result"] or []
    assert [entry["msg"] for entry in entries] == ["device-cloud-python booted"]


# -- MQTT.js ----------------------------------------------------------------------------------


def mqttjs_envelopes() -> list[dict[str, Any]]:
    """What the MQTT.js device publishes, one envelope per `api/<n>`, none with an auth block."""
    return [
        {"1": {"command": "session.info"}},
        {"1": {"command": "property.publish", "params": {"key": "temperature", "value": 19.5}}},
        {"1": {"command": "location.publish", "params": {"lat": 48.8584, "lng": 2.2945}}},
        {"1": {"command": "alarm.publish", "params": {"key": "door", "state": 2, "msg": "ajar"}}},
        {"1": {"command": "log.publish", "params": {"msg": "MQTT.js booted"}}},
    ]


@dataclass
class MqttJsRun:
    transport: str
    key: str
    process: subprocess.CompletedProcess[str]

    @property
    def report(self) -> dict[str, Any]:
        return report_of(self.process)


@pytest.fixture(scope="module", params=["tcp", "websockets"])
def mqttjs(request: pytest.FixtureRequest, world: World) -> MqttJsRun:
    """One run of tests/clients/mqttjs_device.js over TCP, one over MQTT over WebSocket."""
    node = shutil.which("node")
    assert node is not None, "node not found; `make node_modules` installs it (apt: nodejs npm)"
    assert (REPO_ROOT / "node_modules" / "mqtt").is_dir(), "run `make node_modules` (npm ci)"
    transport: str = request.param
    url = world.broker.websockets_url if transport == "websockets" else None
    url = url or f"mqtt://{world.broker.host}:{world.broker.port}"
    key = f"mqttjs-{transport}-{secrets.token_hex(3)}"
    process = subprocess.run(
        [node, str(CLIENTS / "mqttjs_device.js"), "--url", url, "--key", key],
        input=json.dumps(mqttjs_envelopes()), env={**os.environ, "TR50_APP_TOKEN": world.token},
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    return MqttJsRun(transport, key, process)


def test_mqttjs_gets_every_reply_on_its_own_topic_with_success(mqttjs: MqttJsRun) -> None:
    assert mqttjs.process.returncode == 0, explain(mqttjs.process)


def test_mqttjs_runs_as_the_thing_of_its_connect(mqttjs: MqttJsRun) -> None:
    info = mqttjs.report["replies"]["1"]["1"]["params"]
    assert (info["thingKey"], info["orgKey"]) == (mqttjs.key, ORG), explain(mqttjs.process)


def test_mqttjs_calls_are_logged_as_the_thing(world: World, mqttjs: MqttJsRun) -> None:
    channels = {(r["whoami"], r["transport"], r["clientId"]) for r in world.usage(mqttjs.key)}
    assert channels == {(mqttjs.key, "mqtt", mqttjs.key)}


def test_mqttjs_data_is_stored_for_the_thing(world: World, mqttjs: MqttJsRun) -> None:
    stored = (
        world.ok("property.current", thingKey=mqttjs.key, key="temperature")["value"],
        world.ok("location.current", thingKey=mqttjs.key)["lat"],
        world.ok("alarm.current", thingKey=mqttjs.key, key="door")["state"],
        [entry["msg"] for entry in world.ok("log.list", thingKey=mqttjs.key)["result"] or []],
    )
    assert stored == (19.5, 48.8584, 2, ["MQTT.js booted"])
