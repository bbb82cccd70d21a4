"""Plugins (SPEC §6, Extension): third-party packages add services through `tr50gw.commands`.

The packages in tests/plugins/ are built and pip-installed for real into throwaway virtual
environments that also see the project's own (a .pth file runs `site.addsitedir` on the
project's site-packages, so its editable install of tr50gw works there too). `tr50gw serve` runs
from such an environment as a subprocess, against a real Mosquitto and a real DuckDB file. The
project's .venv is never touched, so no other test, and no `make run`, sees these plugins.

The unit tests at the end build registries from hand-made entry points naming tables in this
module: no installation, no storage.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import re
import secrets
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from commands import build_registry
from commands.diag import COMMANDS as DIAG_COMMANDS
from commands.plugins import ENTRY_POINT_GROUP, PluginError, load_plugins
from devtools.broker import Broker
from gateway.core.context import CallContext
from gateway.core.registry import Command
from tests.support import PASSWORD, MqttClient, run_cli

PLUGINS = Path(__file__).resolve().parent / "plugins"
OPS = "ops@plugins.test"
MQTT_LINE = r"mqtt connected to "
LOADED_LINE = r"INFO tr50gw: plugin echo loaded from tr50gw-echo-plugin 0\.1\.0: echo\.say$"
STOP_LINE = r"tr50gw stopped \("
SAY = {"command": "echo.say", "params": {"text": "hello", "times": 2}}


# -- the environments --------------------------------------------------------------------------
def plugin_environment(root: Path, package: str) -> Path:
    """A virtual environment at `root` with `package` (a folder of tests/plugins) installed and
    the project's packages visible; returns its python."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    python = root / "bin" / "python"
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    # After the environment's own site-packages: the project's (tr50gw, pip, flit_core, ...).
    # addsitedir, not a bare path line, so the .pth files there (the editable install) run too.
    ours = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    lines = [f"import site; site.addsitedir({path!r})" for path in sorted(ours)]
    (Path(site_packages) / "tr50gw-project.pth").write_text("\n".join(lines) + "\n")
    # pip and the build backend come from the project's environment: no index, no download.
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--no-cache-dir", str(PLUGINS / package)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python


@pytest.fixture(scope="module")
def echo_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An environment with tr50gw-echo-plugin (echo.say) installed."""
    return plugin_environment(tmp_path_factory.mktemp("echo") / "venv", "tr50gw-echo-plugin")


@pytest.fixture(scope="module")
def ping_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An environment with tr50gw-ping-plugin installed: it claims the built-in diag.ping."""
    return plugin_environment(tmp_path_factory.mktemp("ping") / "venv", "tr50gw-ping-plugin")


def clean_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TR50GW_")}
    env.pop("PYTHONPATH", None)  # what the environment sees is its site-packages and ours
    env.update(overrides or {})
    return env


class Serve:
    """`python -m gateway serve` from a plugin environment; stderr lines collected by a thread."""

    def __init__(
        self, python: Path, *argv: str, cwd: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.process = subprocess.Popen(
            [str(python), "-m", "gateway", "serve", *argv],
            cwd=cwd,
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> None:
        """Until a stderr line matches `pattern`; fails at the end of output or the deadline."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while not any(regex.search(line) for line in self.lines):
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(
                    f"no stderr line matching {pattern!r} (exit code {self.process.poll()}):\n"
                    + "\n".join(self.lines)
                )
            self.lines.append(line)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait, collect the rest of stderr; the exit code."""
        self.process.terminate()
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A usage log with one org and a Super-Ops user (provisioned before any gateway opens it)."""
    path = tmp_path / "usage.duckdb"
    code, out = run_cli("admin", "org-create", "plugins", "--db", str(path), "--json")
    assert code == 0, out
    code, out = run_cli(
        "admin", "user-create", OPS, "--org", "plugins", "--password", PASSWORD,
        "--role", "super-ops", "--db", str(path), "--json",
    )  # fmt: skip
    assert code == 0, out
    return path


def serve(python: Path, broker: Broker, db: Path, *argv: str, **kwargs: Any) -> Serve:
    server = Serve(
        python, "--mqtt-url", broker.url_for_gateway, "--db", str(db), "--ws-port", "-1",
        "--instance-name", "gw-under-test", *argv, cwd=db.parent, **kwargs,
    )  # fmt: skip
    try:
        server.wait_for(MQTT_LINE)
        wait_until_answering(broker)
    except BaseException:
        server.kill()
        raise
    return server


def wait_until_answering(broker: Broker, timeout: float = 30.0) -> None:
    """Ping over MQTT until a reply comes: "mqtt connected" is logged when the gateway sends its
    SUBSCRIBE, and a request the broker sees before that reaches no one."""
    probe = MqttClient(broker.port, f"probe-{secrets.token_hex(3)}")
    try:
        probe.subscribe(f"reply/{probe.client_id}/#")
        deadline = time.monotonic() + timeout
        for attempt in itertools.count():
            key = f"ready{attempt}"
            probe.publish(f"api/{probe.client_id}/req", {key: {"command": "diag.ping"}})
            with contextlib.suppress(queue.Empty):
                while key not in json.loads(probe.receive(timeout=0.5).payload):
                    pass  # the late answer to an earlier attempt
                return
            assert time.monotonic() < deadline, "the gateway never answered over MQTT"
    finally:
        probe.close()


@pytest.fixture
def device(broker: Broker) -> Iterator[MqttClient]:
    """A device on isolated-mode topics: requests to api/<id>/req, replies on reply/<id>/req."""
    client = MqttClient(broker.port, f"dev-{secrets.token_hex(3)}")
    client.subscribe(f"reply/{client.client_id}/#")
    yield client
    client.close()


# -- integration: a real pip install, a real broker, a real DuckDB file -----------------------
def test_an_installed_plugin_serves_its_commands_and_each_call_is_a_usage_record(
    echo_python: Path, broker: Broker, db: Path, device: MqttClient
) -> None:
    server = serve(echo_python, broker, db)
    try:
        reply = device.call({"1": SAY, "2": {"command": "diag.ping"}})
        assert reply == {
            "1": {"success": True, "params": {"text": "hello", "times": 2}},
            "2": {"success": True},
        }
        operator = MqttClient(broker.port, f"ops-{secrets.token_hex(3)}")
        try:
            operator.subscribe(f"reply/{operator.client_id}/#")
            listed = operator.call({
                "auth": {"command": "api.authenticate",
                         "params": {"username": OPS, "password": PASSWORD}},
                "l": {"command": "usage.api.list",
                      "params": {"showAll": True, "service": "echo"}},
            })  # fmt: skip
        finally:
            operator.close()
        assert listed["l"]["success"] is True, listed
        records = listed["l"]["params"]["result"]
        assert [
            (r["service"], r["command"], r["success"], r["transport"], r["clientId"])
            for r in records
        ] == [("echo", "say", True, "mqtt", device.client_id)]
        assert json.loads(records[0]["request"]) == {"1": SAY}
        assert json.loads(records[0]["response"]) == {"1": reply["1"]}
        assert server.stop() == 0
    finally:
        server.kill()
    assert any(re.search(LOADED_LINE, line) for line in server.lines), server.lines
    assert re.search(STOP_LINE, server.lines[-1]), server.lines


@pytest.mark.parametrize(
    ("argv", "env"),
    [(("--no-plugins",), {}), ((), {"TR50GW_PLUGINS": "false"})],
    ids=["flag", "environment"],
)
def test_no_plugins_leaves_an_installed_plugins_commands_unknown(
    echo_python: Path,
    broker: Broker,
    db: Path,
    device: MqttClient,
    argv: tuple[str, ...],
    env: dict[str, str],
) -> None:
    server = serve(echo_python, broker, db, *argv, env=env)
    try:
        reply = device.call({"1": SAY})
        assert reply["1"]["success"] is False, reply
        assert reply["1"]["errorCodes"] == [-90001]
        assert server.stop() == 0
    finally:
        server.kill()
    assert not any(re.search(r"plugin \S+ loaded", line) for line in server.lines), server.lines


def test_a_plugin_claiming_a_built_in_command_stops_the_start(
    ping_python: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [str(ping_python), "-m", "gateway", "serve", "--mqtt-url", "none", "--ws-port", "0",
         "--db", str(tmp_path / "usage.duckdb")],
        cwd=tmp_path,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        'tr50gw: not starting: plugin "ping" (tr50gw.commands entry point ping = '
        "tr50gw_ping:COMMANDS from tr50gw-ping-plugin 0.2.0) registers diag.ping, which is a "
        "built-in command (--no-plugins starts without plugins)\n"
    )
    # Refused before the usage log is opened: nothing was created.
    assert not (tmp_path / "usage.duckdb").exists()


def test_the_same_environment_starts_with_no_plugins(ping_python: Path, tmp_path: Path) -> None:
    server = Serve(
        ping_python, "--no-plugins", "--mqtt-url", "none", "--ws-port", "0",
        "--db", str(tmp_path / "usage.duckdb"), cwd=tmp_path,
    )  # fmt: skip
    try:
        server.wait_for(r"websocket listening on ")
        assert server.stop() == 0
    finally:
        server.kill()


# -- unit: registries from hand-made entry points ------------------------------------------------
class _NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


async def _nothing(params: _NoParams, ctx: CallContext) -> None:
    return None


SHOUT = (Command("shout.loud", _NoParams, _nothing), Command("shout.soft", _NoParams, _nothing))
WHISPER = (Command("whisper.say", _NoParams, _nothing),)
SECOND_PING = (Command("diag.ping", _NoParams, _nothing, needs_session=False),)
SECOND_SHOUT = (Command("shout.soft", _NoParams, _nothing),)
NOT_A_TABLE = {"shout.loud": SHOUT[0]}
NOT_COMMANDS = (SHOUT[0], "whisper.say")
NO_SERVICE = (Command("loud", _NoParams, _nothing),)
TWICE = (SHOUT[0], SHOUT[0])
EMPTY = ()


def entry_point(name: str, attribute: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"{__name__}:{attribute}", group=ENTRY_POINT_GROUP)


def origin(name: str, attribute: str) -> str:
    return (
        f'plugin "{name}" (tr50gw.commands entry point {name} = {__name__}:{attribute} '
        "from no installed distribution)"
    )


def test_plugins_commands_join_the_built_ins() -> None:
    registry = build_registry(
        load_plugins([entry_point("shout", "SHOUT"), entry_point("whisper", "WHISPER")])
    )
    names = registry.names()
    assert {"shout.loud", "shout.soft", "whisper.say"} <= set(names)
    assert registry.get("shout.loud") is SHOUT[0]
    assert set(names) - {"shout.loud", "shout.soft", "whisper.say"} == set(build_registry().names())


def test_a_plugin_may_not_replace_a_built_in_command() -> None:
    plugins = load_plugins([entry_point("ping", "SECOND_PING")])
    with pytest.raises(PluginError) as raised:
        build_registry(plugins)
    assert str(raised.value) == (
        f"{origin('ping', 'SECOND_PING')} registers diag.ping, which is a built-in command"
    )
    assert build_registry().get("diag.ping") is DIAG_COMMANDS[0]


def test_a_plugin_may_not_take_another_plugins_command() -> None:
    plugins = load_plugins([entry_point("shout", "SHOUT"), entry_point("again", "SECOND_SHOUT")])
    with pytest.raises(PluginError) as raised:
        build_registry(plugins)
    assert str(raised.value) == (
        f"{origin('again', 'SECOND_SHOUT')} registers shout.soft, which is registered by "
        f"{origin('shout', 'SHOUT')}"
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("gone", "tests.no_such_plugin:COMMANDS",
         "failed to load: ModuleNotFoundError: No module named 'tests.no_such_plugin'"),
        ("attr", f"{__name__}:NO_SUCH_TABLE", "failed to load: AttributeError: "),
        ("dict", f"{__name__}:NOT_A_TABLE",
         "is a dict, not a table of commands (a tuple of gateway.core.registry.Command)"),
        ("strs", f"{__name__}:NOT_COMMANDS",
         ": item 1 of its table is a str, not a gateway.core.registry.Command"),
        ("flat", f"{__name__}:NO_SERVICE", ": command name must be service.command: 'loud'"),
        ("twice", f"{__name__}:TWICE", " lists shout.loud twice"),
        ("empty", f"{__name__}:EMPTY", " is an empty table: it adds no command"),
    ],
)  # fmt: skip
def test_a_plugin_that_is_not_a_table_of_commands_is_refused_by_name(
    name: str, value: str, says: str
) -> None:
    found = EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)
    with pytest.raises(PluginError) as raised:
        load_plugins([found])
    message = str(raised.value)
    prefix = f'plugin "{name}" (tr50gw.commands entry point {name} = {value} from no installed'
    assert message.startswith(prefix), message
    assert says in message
