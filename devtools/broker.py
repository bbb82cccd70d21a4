"""Run a real Mosquitto for the tests and for `make run`.

The broker is configured from the repo's own mosquitto.conf and mosquitto.acl, so the tests
exercise the isolation that ships rather than a look-alike, tr50gw's plugin included
(broker/README.md; `make broker-plugin` builds it). Only the listener port and the paths change:
everything the broker reads or writes lives in one work directory, which also gets a copy of the
plugin (so a rebuild never changes a running broker's code) and an empty credentials file (the
gateway fills it; `Broker.credentials_path`). The template's MQTT over WebSocket listener (SPEC
§7.3) gets a port of its own (`Broker.websockets_port`, `Broker.websockets_url`).

Mosquitto started as root drops to the `mosquitto` user before it reads the password and ACL
files and before it writes its persistence database, so in that case the work directory is
handed to that user. Every directory above it must be traversable by that user (/tmp is,
pytest's tmp_path is not, which is why `Broker()` without a workdir makes its own directory in
/tmp); when one is not, as for a checkout under /root, the broker keeps running as root.

    python -m devtools.broker [--port auto|N] [--websockets-port auto|N] [--workdir DIR]
                              [--classic] [--no-persistence]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote

__all__ = [
    "CREDENTIALS_HEADER",
    "DEFAULT_PORT",
    "DEFAULT_WEBSOCKETS_PORT",
    "GATEWAY_USERNAME",
    "PLUGIN_BUILD",
    "REPO_ROOT",
    "WEBSOCKETS_PATH",
    "Broker",
    "BrokerError",
    "choose_port",
    "free_port",
    "main",
    "port_is_free",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_TEMPLATE = REPO_ROOT / "mosquitto.conf"
ACL_TEMPLATE = REPO_ROOT / "mosquitto.acl"
PLUGIN_BUILD = REPO_ROOT / "broker" / "build" / "tr50gw_auth.so"
# The first line of a credentials file (broker/README.md); alone, it is a valid empty file.
CREDENTIALS_HEADER = "tr50gw-credentials 1"
GATEWAY_USERNAME = "tr50gw"
DEFAULT_PORT = 1883
# Mosquitto's customary MQTT over WebSocket port. The broker accepts the upgrade on any path;
# `/mqtt` is the one deviceWISE and most browser clients use (MQTT.js defaults to `/`).
DEFAULT_WEBSOCKETS_PORT = 9001
WEBSOCKETS_PATH = "/mqtt"
HOST = "127.0.0.1"
BROKER_USER = "mosquitto"


class BrokerError(RuntimeError):
    """The broker could not be set up or did not come up."""


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM a child still running, then SIGKILL it if it has not exited within `grace`
    seconds; it is reaped either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a listener could bind `port` now.

    SO_REUSEADDR as Mosquitto sets it, so connections lingering in TIME_WAIT do not count as
    taken, but another listener (on this address or on 0.0.0.0) does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def choose_port(preferred: int = DEFAULT_PORT) -> int:
    """`preferred` when it is free, otherwise any free port (a system Mosquitto often has 1883)."""
    return preferred if port_is_free(preferred) else free_port()


def _websockets_listeners(lines: list[str]) -> set[int]:
    """The indexes of the `listener` lines whose block holds `protocol websockets`."""
    found: set[int] = set()
    current: int | None = None
    for index, line in enumerate(lines):
        words = line.split()
        if words[:1] == ["listener"]:
            current = index
        elif words[:2] == ["protocol", "websockets"] and current is not None:
            found.add(current)
    return found


def _find_executable(name: str) -> str:
    # Debian puts mosquitto in /usr/sbin, which is not on a normal user's PATH.
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise BrokerError(f"{name} not found; run `make mosquitto` (apt: mosquitto-clients)")
    return found


def _broker_account() -> pwd.struct_passwd | None:
    """The account Mosquitto will run as when it is not ours, i.e. when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(BROKER_USER)
    except KeyError:
        return None


class Broker:
    """One Mosquitto process with its own generated config, password file, ACL and data.

    `port=None` picks a free port once; `restart()` keeps it, and keeps the persistence
    directory, so persistent sessions and their queued QoS 1 messages survive a restart.
    `acl=False` is classic mode: no ACL file, every client may use every topic, and no plugin
    either (with no acl_file to defer to, the plugin would see every publish refused; and
    classic clients need no identity from the broker, since every envelope carries its `auth`).
    `plugin=False` leaves the plugin out in isolated mode too (to measure what it costs).
    `websockets_port=None` picks a free port for the template's websockets listener, if it has
    one; the plugin, ACL and password file apply to it as to the MQTT listener
    (per_listener_settings is off).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        websockets_port: int | None = None,
        gateway_password: str | None = None,
        acl: bool = True,
        plugin: bool = True,
        persistence: bool = True,
        config_template: Path = CONFIG_TEMPLATE,
        acl_template: Path = ACL_TEMPLATE,
        plugin_build: Path = PLUGIN_BUILD,
    ) -> None:
        self._owns_workdir = workdir is None
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="tr50gw-mosquitto-"))
        self.workdir = workdir.resolve()
        self._port_was_chosen = port is None
        self._port = free_port() if port is None else port
        self._has_websockets = bool(_websockets_listeners(config_template.read_text().splitlines()))
        self._websockets_port_was_chosen = websockets_port is None
        self._websockets_port = free_port() if websockets_port is None else websockets_port
        self.gateway_password = gateway_password or secrets.token_urlsafe(24)
        self.acl = acl
        self.plugin = plugin and acl
        self.persistence = persistence
        self._config_template = config_template
        self._acl_template = acl_template
        self._plugin_build = plugin_build
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- addresses ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self._port

    @property
    def websockets_port(self) -> int | None:
        """The MQTT over WebSocket listener's port; None when the template opens none."""
        return self._websockets_port if self._has_websockets else None

    @property
    def websockets_url(self) -> str | None:
        port = self.websockets_port
        return None if port is None else f"ws://{HOST}:{port}{WEBSOCKETS_PATH}"

    def _ports(self) -> list[int]:
        return [self._port] + ([self._websockets_port] if self._has_websockets else [])

    @property
    def url_for_gateway(self) -> str:
        password = quote(self.gateway_password, safe="")
        return f"mqtt://{GATEWAY_USERNAME}:{password}@{HOST}:{self._port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def plugin_path(self) -> Path:
        """The broker's own copy of the plugin (`make broker-plugin` builds the original)."""
        return self.workdir / "tr50gw_auth.so"

    @property
    def credentials_path(self) -> Path:
        """The plugin's credentials file (broker/README.md), for the gateway to write.

        Replace it atomically (write a temporary file in the same directory, rename it over this
        one) and keep it readable by the broker's account: started as root, Mosquitto reads it
        as the `mosquitto` user.
        """
        return self.workdir / "broker-credentials"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- files ----------------------------------------------------------------------------

    def _render_config(self) -> str:
        """The template with our ports and absolute paths; every other line kept as is."""
        replacements = {
            "password_file": f"password_file {self.workdir / 'mosquitto.passwd'}",
            "acl_file": f"acl_file {self.workdir / 'mosquitto.acl'}" if self.acl else None,
            "persistence": f"persistence {'true' if self.persistence else 'false'}",
            "persistence_location": f"persistence_location {self.data_dir}/",
            "log_dest": "log_dest stderr",
            "plugin": f"plugin {self.plugin_path}" if self.plugin else None,
            "plugin_opt_credentials": f"plugin_opt_credentials {self.credentials_path}"
            if self.plugin
            else None,
        }
        lines = [f"# Generated by devtools/broker.py from {self._config_template}; do not edit."]
        if self._stays_root():
            lines.append("user root")
        template = self._config_template.read_text().splitlines()
        websockets = _websockets_listeners(template)
        for index, line in enumerate(template):
            words = line.split()
            key = words[0] if words and not words[0].startswith("#") else None
            if key is not None and key.startswith("plugin_opt_") and not self.plugin:
                continue
            if key == "listener":
                port = self._websockets_port if index in websockets else self._port
                line = f"listener {port} {HOST}"
            elif key in replacements:
                replacement = replacements[key]
                if replacement is None:
                    continue
                line = replacement
            lines.append(line)
        if not self.acl:
            lines.append("# Classic mode: no acl_file, so every client may use every topic.")
            lines.append("# No tr50gw_auth plugin either: its deferred checks would find no ACL.")
        elif not self.plugin:
            lines.append("# Without the tr50gw_auth plugin (Broker(plugin=False)).")
        return "\n".join(lines) + "\n"

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.config_path.write_text(self._render_config())
        if self.acl:
            shutil.copyfile(self._acl_template, self.workdir / "mosquitto.acl")
        if self.plugin:
            if not self._plugin_build.is_file():
                raise BrokerError(
                    f"{self._plugin_build} not found; run `make broker-plugin` (gcc, mosquitto-dev)"
                )
            shutil.copyfile(self._plugin_build, self.plugin_path)
            if not self.credentials_path.exists():
                self.credentials_path.write_text(CREDENTIALS_HEADER + "\n")
        password_file = self.workdir / "mosquitto.passwd"
        password_file.unlink(missing_ok=True)
        subprocess.run(
            [
                _find_executable("mosquitto_passwd"),
                "-b",
                "-c",
                str(password_file),
                GATEWAY_USERNAME,
                self.gateway_password,
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        self._set_permissions()

    def _set_permissions(self) -> None:
        """Private to the broker's account: 0700 directories, 0600 files.

        The credentials file is 0644 as the gateway writes it: it holds no secret.
        """
        account = _broker_account()
        for directory, _subdirs, files in os.walk(self.workdir):
            paths = [Path(directory)] + [Path(directory) / name for name in files]
            for path in paths:
                if path == self.log_path:
                    continue  # opened by us, not by the broker
                if path.is_dir():
                    path.chmod(0o700)
                else:
                    path.chmod(0o644 if path == self.credentials_path else 0o600)
                if account is not None:
                    os.chown(path, account.pw_uid, account.pw_gid)

    def _blocked_parent(self, account: pwd.struct_passwd) -> Path | None:
        """The first folder above the workdir that the broker's account cannot traverse."""
        for parent in self.workdir.parents:
            mode = parent.stat()
            traversable = mode.st_mode & 0o001 or (
                mode.st_uid == account.pw_uid and mode.st_mode & 0o100
            )
            if not traversable:
                return parent
        return None

    def _stays_root(self) -> bool:
        """Started as root, Mosquitto drops to its own account, which must reach the workdir.

        A checkout under /root (0700) is out of its reach; then, for this development broker
        only, it keeps running as root (`user root`) instead of failing to read its files.
        """
        account = _broker_account()
        if os.geteuid() != 0 or account is None:
            return False
        blocked = self._blocked_parent(account)
        if blocked is None:
            return False
        print(
            f"note: {blocked} is not traversable by the {account.pw_name} account; "
            "running this development broker as root",
            file=sys.stderr,
        )
        return True

    # -- process --------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Write the files, start Mosquitto and wait until it accepts connections."""
        if self.is_running():
            return
        self._write_files()
        for _attempt in range(3):
            self._spawn()
            try:
                self.wait_ready(timeout)
                return
            except BrokerError:
                # A free port picked by free_port() can be taken before Mosquitto binds it.
                log = self.log_text()
                lost_race = (
                    "Address already in use" in log or "Unable to create websockets listener" in log
                )
                self.kill()
                if not (lost_race and (self._port_was_chosen or self._websockets_port_was_chosen)):
                    raise
            if self._port_was_chosen:
                self._port = free_port()
            if self._websockets_port_was_chosen:
                self._websockets_port = free_port()
            self.config_path.write_text(self._render_config())
            self._set_permissions()
        raise BrokerError(f"could not find a free port for mosquitto; see {self.log_path}")

    def _spawn(self) -> None:
        self._log_file = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [_find_executable("mosquitto"), "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal goes to the runner, which stops us
        )

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll the ports until each accepts a TCP connection; fail early if Mosquitto exits.

        Every listener, not only the first: Mosquitto opens them in order and exits when a
        later one cannot be bound, after the first already accepted a connection.
        """
        deadline = time.monotonic() + timeout
        waiting = self._ports()
        while True:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise BrokerError(
                    f"mosquitto exited (code {code}) before accepting connections on port "
                    f"{waiting[0]}; log {self.log_path}:\n{self.log_text()[-2000:]}"
                )
            with contextlib.suppress(OSError):
                socket.create_connection((HOST, waiting[0]), timeout=0.5).close()
                waiting.pop(0)
                if not waiting:
                    return
                continue
            if time.monotonic() > deadline:
                raise BrokerError(f"mosquitto did not accept connections within {timeout}s")
            with contextlib.suppress(subprocess.TimeoutExpired):
                # The poll interval, which also notices at once when the broker exits.
                self._process.wait(timeout=0.02)

    def stop(self) -> None:
        """SIGTERM (Mosquitto saves its persistence file), then SIGKILL after 5 s."""
        if self._process is not None:
            stop_process(self._process, 5)
        self._close_log()

    def kill(self) -> None:
        """SIGKILL: a crash; nothing is saved since the last autosave."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._close_log()

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start on the same port with the same persistence directory."""
        self.stop()
        if not self.config_path.exists():
            self.start(timeout)
            return
        self._spawn()
        self.wait_ready(timeout)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for Mosquitto to exit on its own; its exit code."""
        if self._process is None:
            raise BrokerError("mosquitto was never started")
        return self._process.wait(timeout)

    def close(self) -> None:
        """Stop, and remove the work directory if this object created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Broker(port={self._port}, websockets_port={self.websockets_port}, "
            f"workdir={self.workdir}, pid={self.pid}, acl={self.acl}, plugin={self.plugin})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.broker",
        description="Run Mosquitto with the repo's mosquitto.conf until interrupted.",
    )
    parser.add_argument(
        "--port",
        default="auto",
        help="a port number, or 'auto' (1883, or a free port when 1883 is taken; default)",
    )
    parser.add_argument(
        "--websockets-port",
        default="auto",
        help="the MQTT over WebSocket listener's port, or 'auto' (9001, or a free port; default)",
    )
    parser.add_argument("--workdir", type=Path, help="default: a new directory in /tmp")
    parser.add_argument("--password", help="the gateway account's password (default: random)")
    parser.add_argument(
        "--classic", action="store_true", help="no ACL and no plugin (classic TR50 mode)"
    )
    parser.add_argument("--no-persistence", action="store_true")
    args = parser.parse_args(argv)

    port = choose_port() if args.port == "auto" else int(args.port)
    websockets_port = (
        choose_port(DEFAULT_WEBSOCKETS_PORT)
        if args.websockets_port == "auto"
        else int(args.websockets_port)
    )
    broker = Broker(
        args.workdir,
        port=port,
        websockets_port=websockets_port,
        gateway_password=args.password,
        acl=not args.classic,
        persistence=not args.no_persistence,
    )
    # SIGTERM takes the same way out as Ctrl-C, so the broker is always stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with broker:
        print(f"mosquitto listening on {broker.host}:{broker.port} (pid {broker.pid})")
        if broker.websockets_url is not None:
            print(f"MQTT over WebSocket: {broker.websockets_url}")
        print(f"gateway: tr50gw serve --mqtt-url '{broker.url_for_gateway}'")
        if broker.plugin:
            print(f"plugin credentials file (the gateway writes it): {broker.credentials_path}")
        print(f"log: {broker.log_path}; Ctrl-C to stop", flush=True)
        try:
            code = broker.wait()
        except KeyboardInterrupt:
            return 0
        print(f"mosquitto exited with code {code}:\n{broker.log_text()[-2000:]}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
