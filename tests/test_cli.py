"""`tr50gw` as its users run it (SPEC §5): real subprocesses of the installed console script.

Every process runs in a temporary working directory with no `TR50GW_*` variables inherited, so
defaults (such as ./data/usage.duckdb) land there and settings come only from what a test gives.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from devtools.broker import Broker, free_port
from gateway.settings import Settings
from tests.support import PASSWORD, run_cli

TR50GW = Path(sys.executable).parent / "tr50gw"
SUPER_OPS = "ops@cli.test"
START_LINE = r"tr50gw starting as (?P<name>\S+), usage log (?P<db>.+), event loop (?P<loop>\w+)$"
MQTT_LINE = r"mqtt connected to "
LISTEN_LINE = r"websocket listening on ws://(?P<host>[\d.]+):(?P<port>\d+)/api$"
STOP_LINE = r"tr50gw stopped \("
PING = '{"1":{"command":"diag.ping"}}'


def clean_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TR50GW_")}
    env.update(overrides or {})
    return env


def tr50gw(
    *argv: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TR50GW), *argv],
        cwd=cwd,
        env=clean_env(env),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def provision_super_ops(db: Path) -> None:
    """One org and a Super-Ops user (in-process: setup, not what these tests are about)."""
    code, out = run_cli("admin", "org-create", "cli", "--name", "Cli", "--db", str(db), "--json")
    assert code == 0, out
    code, out = run_cli(
        "admin", "user-create", SUPER_OPS, "--org", "cli", "--password", PASSWORD,
        "--role", "super-ops", "--db", str(db), "--json",
    )  # fmt: skip
    assert code == 0, out


def list_envelope(**params: Any) -> str:
    return json.dumps({
        "auth": {"command": "api.authenticate",
                 "params": {"username": SUPER_OPS, "password": PASSWORD}},
        "l": {"command": "usage.api.list", "params": {"showAll": True, "limit": 2000, **params}},
    })  # fmt: skip


def listed_records(ws_url: str, cwd: Path) -> list[dict[str, Any]]:
    done = tr50gw("call", "--ws", ws_url, "--json", list_envelope(), cwd=cwd)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["auth"]["success"] is True, reply
    assert reply["l"]["success"] is True, reply
    records: list[dict[str, Any]] = reply["l"]["params"]["result"] or []
    # Not the provisioning's own records: the admin CLI ran it without a gateway (transport cli).
    return [record for record in records if record["transport"] != "cli"]


class ServeProcess:
    """`tr50gw serve` in a subprocess; its stderr lines collected by a thread as they come."""

    def __init__(self, *argv: str, cwd: Path, env: Mapping[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [str(TR50GW), "serve", *argv],
            cwd=cwd,
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._ended = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _take(self, timeout: float) -> bool:
        """Move one line from the reader to `lines`; False at end of output or on timeout."""
        if self._ended:
            return False
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            return False
        if line is None:
            self._ended = True
            return False
        self.lines.append(line)
        return True

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """The first stderr line matching `pattern`, waiting for it until a deadline."""
        regex = re.compile(pattern)
        seen = 0
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[seen:]:
                if match := regex.search(line):
                    return match
            seen = len(self.lines)
            remaining = deadline - time.monotonic()
            if self._ended or remaining <= 0:
                raise AssertionError(
                    f"no stderr line matching {pattern!r} (exit code {self.process.poll()}):\n"
                    + "\n".join(self.lines)
                )
            self._take(remaining)

    def drain(self) -> None:
        """Collect whatever the process has written so far, without waiting for more."""
        while self._take(0):
            pass

    def matching(self, pattern: str) -> list[str]:
        return [line for line in self.lines if re.search(pattern, line)]

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait for the exit, and collect the rest of stderr; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        self.drain()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


# -- 1 and 6. help -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        ((), "serve"),
        (("serve",), "--mqtt-url"),
        (("call",), "--client-id"),
        (("admin",), "org-create"),
    ],
)
def test_help_exits_zero(workdir: Path, argv: tuple[str, ...], mentions: str) -> None:
    done = tr50gw(*argv, "--help", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: tr50gw")
    assert mentions in done.stdout


def test_serve_help_lists_every_setting_with_its_description_and_default(workdir: Path) -> None:
    # Wide enough that argparse wraps nothing; whitespace is normalized anyway.
    done = tr50gw("serve", "--help", cwd=workdir, env={"COLUMNS": "400"})
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    missing = []
    for name, field in Settings.model_fields.items():
        flag = (
            "--ws-allowed-origin" if name == "ws_allowed_origins" else "--" + name.replace("_", "-")
        )
        # The flag, its metavar or its --no- twin, then the description and the default.
        entry = re.escape(flag) + r"(,? \S+)? " + re.escape(f"{field.description} (default: ")
        if not re.search(entry, text):
            missing.append(flag)
    assert missing == [], text
    for default in ("(default: 8765)", "(default: mqtt://127.0.0.1:1883)", "(default: false)"):
        assert default in text
    assert "--log-level" in text
    assert "TR50GW_<NAME>" in text


def test_python_dash_m_gateway(workdir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"],
        cwd=Path(__file__).resolve().parent.parent,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: tr50gw")
    assert all(command in done.stdout for command in ("serve", "call", "admin"))


def test_no_command_is_a_usage_error(workdir: Path) -> None:
    done = tr50gw(cwd=workdir)
    assert done.returncode == 2
    assert "usage: tr50gw" in done.stderr


# -- 2. admin ------------------------------------------------------------------------------------
def test_admin_provisioning(workdir: Path) -> None:
    db = workdir / "admin.duckdb"
    key = f"org{secrets.token_hex(3)}"

    created = tr50gw("admin", "org-create", key, "--name", "Org Name", "--db", str(db), "--json",
                     cwd=workdir)  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert len(created.stdout.splitlines()) == 1
    org = json.loads(created.stdout)
    assert org["orgKey"] == key
    assert isinstance(org["orgId"], str) and org["orgId"]

    again = tr50gw("admin", "org-create", key, "--name", "Again", "--db", str(db), "--json",
                   cwd=workdir)  # fmt: skip
    assert again.returncode == 3
    assert again.stdout == ""
    assert key in again.stderr
    assert "Traceback" not in again.stderr

    stray = tr50gw("admin", "user-create", "who@nowhere.test", "--org", "no-such-org",
                   "--password", "whatever-1", "--db", str(db), "--json", cwd=workdir)  # fmt: skip
    assert stray.returncode == 4  # no such org
    assert stray.stderr.strip() and "Traceback" not in stray.stderr

    password = f"pw-{secrets.token_urlsafe(24)}"
    email = f"someone-{secrets.token_hex(4)}@{key}.test"
    user = tr50gw("admin", "user-create", email, "--org", key, "--password", password,
                  "--db", str(db), "--json", cwd=workdir)  # fmt: skip
    assert user.returncode == 0, user.stderr
    assert json.loads(user.stdout)["email"] == email

    app = tr50gw("admin", "app-create", "--org", key, "--name", "fleet", "--db", str(db), "--json",
                 cwd=workdir)  # fmt: skip
    assert app.returncode == 0, app.stderr
    credentials = json.loads(app.stdout)
    assert set(credentials) == {"appId", "appToken"}
    assert all(isinstance(value, str) and value for value in credentials.values())

    stored = b"".join(path.read_bytes() for path in workdir.glob(db.name + "*"))
    # The scan can see what is stored in clear (so its silence about secrets means something)...
    assert email.encode() in stored
    assert credentials["appId"].encode() in stored
    # ...and the secrets are not among it.
    assert password.encode() not in stored
    assert credentials["appToken"].encode() not in stored


# -- 3. serve + call -----------------------------------------------------------------------------
def test_serve_then_call_over_ws_and_mqtt_then_sigterm(broker: Broker, workdir: Path) -> None:
    db = workdir / "usage.duckdb"
    provision_super_ops(db)
    name = f"cli-gw-{secrets.token_hex(3)}"
    port = free_port()
    server = ServeProcess(
        "--mqtt-url", broker.url_for_gateway, "--db", str(db), "--ws-port", str(port),
        "--instance-name", name, cwd=workdir,
    )  # fmt: skip
    try:
        started = server.wait_for(START_LINE)
        assert started["name"] == name
        assert started["db"] == str(db)
        server.wait_for(MQTT_LINE + re.escape(f"127.0.0.1:{broker.port}"))
        listening = server.wait_for(LISTEN_LINE)
        assert int(listening["port"]) == port
        ws_url = f"ws://127.0.0.1:{port}/api"

        readable = tr50gw("call", "--ws", ws_url, PING, cwd=workdir)
        assert readable.returncode == 0, readable.stderr
        assert readable.stdout == "1: ok\n"

        raw = tr50gw("call", "--ws", ws_url, "--json", PING, cwd=workdir)
        assert raw.returncode == 0, raw.stderr
        assert len(raw.stdout.splitlines()) == 1
        assert json.loads(raw.stdout) == {"1": {"success": True}}

        from_stdin = tr50gw("call", "--ws", ws_url, "--json", "-", stdin=PING, cwd=workdir)
        assert from_stdin.returncode == 0, from_stdin.stderr
        assert json.loads(from_stdin.stdout) == {"1": {"success": True}}

        device = f"devX-{secrets.token_hex(3)}"
        over_mqtt = tr50gw(
            "call", "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--client-id", device, "--json",
            '{"m":{"command":"diag.time"}}', cwd=workdir,
        )  # fmt: skip
        assert over_mqtt.returncode == 0, over_mqtt.stderr
        reply = json.loads(over_mqtt.stdout)
        assert reply["m"]["success"] is True
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", reply["m"]["params"]["time"])

        records = listed_records(ws_url, workdir)
        assert records, "no usage records"
        assert {record["processedBy"] for record in records} == {name}
        by_transport = {(r["transport"], r["service"], r["command"]) for r in records}
        assert ("ws", "diag", "ping") in by_transport
        assert ("ws", "api", "authenticate") in by_transport
        mqtt_records = [r for r in records if r["transport"] == "mqtt"]
        assert [r["clientId"] for r in mqtt_records] == [device]
        assert mqtt_records[0]["command"] == "time"

        assert server.stop() == 0
    finally:
        server.kill()
    assert len(server.matching(START_LINE)) == 1
    assert len(server.matching(MQTT_LINE)) == 1
    assert len(server.matching(LISTEN_LINE)) == 1
    assert len(server.matching(STOP_LINE)) == 1
    assert re.search(STOP_LINE, server.lines[-1]), server.lines  # the last word
    assert not any("Traceback" in line for line in server.lines), server.lines


def test_serve_logs_each_event_once_and_a_clean_stop_quietly(broker: Broker, workdir: Path) -> None:
    server = ServeProcess(
        "--mqtt-url", broker.url_for_gateway, "--db", str(workdir / "quiet.duckdb"),
        "--ws-port", "0", "--instance-name", "quiet", cwd=workdir,
    )  # fmt: skip
    try:
        server.wait_for(MQTT_LINE)
        port = server.wait_for(LISTEN_LINE)["port"]
        ping = tr50gw("call", "--ws", f"ws://127.0.0.1:{port}/api", PING, cwd=workdir)
        assert ping.stdout == "1: ok\n"
        assert server.stop() == 0
    finally:
        server.kill()
    # Both checks are reported together, so one does not hide the other.
    problems = [
        f"a requested stop logged trouble: {line}"
        for line in server.matching(r" (WARNING|ERROR|CRITICAL) ")
    ]
    listening = server.matching(r"(?i)\blistening\b")
    if len(listening) != 1:
        problems.append(f"{len(listening)} lines say the server is listening: {listening}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_serve_runs_on_the_event_loop_asked_for(workdir: Path, loop: str) -> None:
    server = ServeProcess(
        "--mqtt-url", "none", "--db", str(workdir / f"{loop}.duckdb"), "--ws-port", "0",
        "--event-loop", loop, cwd=workdir,
    )  # fmt: skip
    try:
        assert server.wait_for(START_LINE)["loop"] == loop
        port = server.wait_for(LISTEN_LINE)["port"]
        ping = tr50gw("call", "--ws", f"ws://127.0.0.1:{port}/api", PING, cwd=workdir)
        assert (ping.stdout, server.stop()) == ("1: ok\n", 0)
    finally:
        server.kill()


def test_call_without_a_server_fails_cleanly(workdir: Path) -> None:
    done = tr50gw("call", "--ws", f"ws://127.0.0.1:{free_port()}/api", "--timeout", "3", PING,
                  cwd=workdir)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("tr50gw call: ")
    assert "Traceback" not in done.stderr


def test_a_bad_mqtt_url_is_a_usage_error_that_hides_the_password(workdir: Path) -> None:
    for url in ("mqtt://gw:hunter2@127.0.0.1:notaport", "http://gw:hunter2@127.0.0.1"):
        done = tr50gw("serve", "--ws-port", "-1", "--db", "x.duckdb", cwd=workdir,
                      env={"TR50GW_MQTT_URL": url})  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("tr50gw: bad setting mqtt_url: ")
        assert "hunter2" not in done.stderr + done.stdout


# -- 4 and 5. settings from the environment; one gateway per DuckDB file ------------------------
@pytest.mark.parametrize(
    ("argv", "env", "name"),
    [
        (("--ws-port", "port-q8x9"), {}, "ws_port"),
        (("--db-memory-limit", "lots-q8x9"), {}, "db_memory_limit"),
        ((), {"TR50GW_MAX_PAYLOAD": "size-q8x9"}, "max_payload"),
        ((), {"TR50GW_WS_ALLOWED_ORIGINS": "[https://q8x9.test"}, "ws_allowed_origins"),
    ],
    ids=["flag", "flag-pattern", "variable", "variable-not-json"],
)
def test_a_bad_value_is_a_usage_error_that_does_not_echo_it(
    workdir: Path, argv: tuple[str, ...], env: dict[str, str], name: str
) -> None:
    done = tr50gw("serve", *argv, cwd=workdir, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"tr50gw: bad setting {name}: ")
    assert "q8x9" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


@dataclass
class EnvServer:
    process: ServeProcess
    workdir: Path
    db: Path
    port: int
    name: str

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api"


@pytest.fixture(scope="module")
def env_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvServer]:
    """A gateway configured by `TR50GW_*` variables alone (no flags at all)."""
    workdir = tmp_path_factory.mktemp("env")
    db = workdir / "from-env.duckdb"
    provision_super_ops(db)
    port = free_port()
    name = f"env-gw-{secrets.token_hex(3)}"
    env = {
        "TR50GW_WS_PORT": str(port),
        "TR50GW_INSTANCE_NAME": name,
        "TR50GW_DB": str(db),
        "TR50GW_MQTT_URL": "none",
    }
    server = ServeProcess(cwd=workdir, env=env)
    try:
        server.wait_for(LISTEN_LINE)
        yield EnvServer(server, workdir, db, port, name)
    finally:
        server.kill()


def test_settings_come_from_the_environment(env_server: EnvServer) -> None:
    server = env_server.process
    listening = server.wait_for(LISTEN_LINE)
    assert int(listening["port"]) == env_server.port
    started = server.wait_for(START_LINE)
    assert started["name"] == env_server.name
    assert started["db"] == str(env_server.db)

    # The login works only against the provisioned file the environment named.
    records = listed_records(env_server.url, env_server.workdir)
    assert records
    assert {record["processedBy"] for record in records} == {env_server.name}
    assert not (env_server.workdir / "data").exists(), "the default ./data/usage.duckdb was used"
    server.drain()
    assert not server.matching(r"(?i)mqtt"), server.lines


def test_a_second_gateway_on_the_same_file_is_refused(env_server: EnvServer) -> None:
    db = env_server.db
    # A second gateway that did start would serve until the timeout fails the test.
    done = tr50gw("serve", "--db", str(db), "--mqtt-url", "none", "--ws-port", "0",
                  cwd=env_server.workdir, timeout=20)  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(db) in lines[0]
    assert "in use" in lines[0]
    # The first gateway is unaffected.
    assert env_server.process.process.poll() is None
    ping = tr50gw("call", "--ws", env_server.url, PING, cwd=env_server.workdir)
    assert ping.stdout == "1: ok\n"


def test_flags_beat_the_environment(workdir: Path) -> None:
    db = workdir / "flags.duckdb"
    provision_super_ops(db)
    env_port, flag_port = free_port(), free_port()
    flag_name = f"flag-gw-{secrets.token_hex(3)}"
    env = {
        "TR50GW_WS_PORT": str(env_port),
        "TR50GW_INSTANCE_NAME": "from-the-environment",
        "TR50GW_DB": str(workdir / "not-this.duckdb"),
        # Nothing listens on port 1: were this used, the gateway would log MQTT trouble.
        "TR50GW_MQTT_URL": "mqtt://127.0.0.1:1",
    }
    server = ServeProcess(
        "--ws-port", str(flag_port), "--instance-name", flag_name, "--db", str(db),
        "--mqtt-url", "none", cwd=workdir, env=env,
    )  # fmt: skip
    try:
        listening = server.wait_for(LISTEN_LINE)
        assert int(listening["port"]) == flag_port
        records = listed_records(f"ws://127.0.0.1:{flag_port}/api", workdir)
        assert {record["processedBy"] for record in records} == {flag_name}
        assert server.stop() == 0
    finally:
        server.kill()
    assert not (workdir / "not-this.duckdb").exists()
    assert not server.matching(r"(?i)mqtt"), server.lines


def test_flags_not_given_leave_the_environment_alone(workdir: Path) -> None:
    db = workdir / "mixed.duckdb"
    port = free_port()
    name = f"env-name-{secrets.token_hex(3)}"
    env = {"TR50GW_WS_PORT": str(port), "TR50GW_INSTANCE_NAME": name}
    server = ServeProcess("--mqtt-url", "none", "--db", str(db), cwd=workdir, env=env)
    try:
        started = server.wait_for(START_LINE)
        assert (started["name"], started["db"]) == (name, str(db))
        assert int(server.wait_for(LISTEN_LINE)["port"]) == port
        assert server.stop() == 0
    finally:
        server.kill()


def test_ws_allowed_origin_repeats(workdir: Path) -> None:
    console = "https://console.test"
    server = ServeProcess(
        "--mqtt-url", "none", "--db", str(workdir / "origins.duckdb"), "--ws-port", "0",
        "--ws-allowed-origin", console, "--ws-allowed-origin", "", cwd=workdir,
    )  # fmt: skip
    try:
        url = f"ws://127.0.0.1:{server.wait_for(LISTEN_LINE)['port']}/api"
        with connect(url, origin=console, open_timeout=5) as browser:
            browser.send(PING)
            assert json.loads(browser.recv(timeout=10)) == {"1": {"success": True}}
        # The empty entry admits clients that send no Origin, such as `tr50gw call`.
        assert tr50gw("call", "--ws", url, PING, cwd=workdir).stdout == "1: ok\n"
        with pytest.raises(InvalidStatus) as refused:
            connect(url, origin="https://evil.test", open_timeout=5)
        assert refused.value.response.status_code == 403
        assert server.stop() == 0
    finally:
        server.kill()
