"""What `make run` executes: a local broker, a development user, the gateway in the foreground,
and a demo fleet (devtools/demo.py) publishing through it, so the usage log fills at once.

Credentials are generated on the first run and kept in .run/credentials.json (mode 0600), so the
dev user created in data/usage.duckdb keeps matching them; so is the demo application's token.
The gateway's broker password and the app token are never printed; the dev user's password is
printed once, in the banner, because it is a development convenience account that exists only
on this machine. `DEMO=0 make run` starts no fleet (and creates no demo application).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from devtools.broker import (
    DEFAULT_WEBSOCKETS_PORT,
    REPO_ROOT,
    Broker,
    BrokerError,
    choose_port,
    stop_process,
)
from devtools.demo import TOKEN_VARIABLE, thing_keys
from gateway.transports.client import call_mqtt

__all__ = ["banner", "demo_enabled", "main"]

RUN_DIR = REPO_ROOT / ".run"
CREDENTIALS_PATH = RUN_DIR / "credentials.json"
DB = "data/usage.duckdb"  # relative to the repo root, where every command runs
DEV_ORG = "dev"
DEV_USER = "admin@dev.local"
WS_PORT = 8765
HTTP_PORT = 8080
EXIT_ALREADY_EXISTS = 3  # `tr50gw admin ...-create` when the org or user is already there
DEMO_APP = "demo fleet"
DEMO_THINGS = 4
DEMO_INTERVAL_S = 5
DEMO_OFF = frozenset({"0", "false", "no", "off"})
GATEWAY_WAIT_S = 60.0  # how long the fleet waits for the gateway's first answer
PROBE_CLIENT_ID = "make-run-probe"


def demo_enabled(environ: Mapping[str, str]) -> bool:
    """`DEMO=0` (or false, no, off) turns the demo fleet off; unset or anything else, on."""
    return environ.get("DEMO", "1").strip().lower() not in DEMO_OFF


def load_credentials() -> tuple[dict[str, str], bool]:
    """The saved credentials, or new ones written with mode 0600; and whether they are new."""
    try:
        return json.loads(CREDENTIALS_PATH.read_text()), False
    except FileNotFoundError:
        pass
    credentials = {
        "gateway_broker_password": secrets.token_urlsafe(24),
        "dev_user": DEV_USER,
        "dev_user_password": secrets.token_urlsafe(18),
    }
    save_credentials(credentials, replace=False)
    return credentials, True


def save_credentials(credentials: dict[str, str], *, replace: bool = True) -> None:
    """Written with mode 0600 from the start (never readable by others, not even briefly); an
    update goes through a new file renamed over the old one."""
    path = CREDENTIALS_PATH.with_suffix(".new") if replace else CREDENTIALS_PATH
    if replace:
        path.unlink(missing_ok=True)  # left over from an interrupted update
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(credentials, file, indent=2)
        file.write("\n")
    if replace:
        path.replace(CREDENTIALS_PATH)


def tr50gw_executable() -> str:
    """The tr50gw script installed in the same venv as this interpreter."""
    path = Path(sys.executable).parent / "tr50gw"
    if not path.exists():
        sys.exit(f"{path} not found; run `make venv` first")
    return str(path)


def create_if_missing(what: str, command: list[str]) -> bool:
    """Run an `admin ...-create` command; True if it created the object, False if it existed."""
    result = subprocess.run(
        command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    if result.returncode == EXIT_ALREADY_EXISTS:
        return False
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        sys.exit(f"could not create the {what} (exit code {result.returncode})")
    return True


def bootstrap(tr50gw: str, dev_password: str, credentials_are_new: bool) -> bool:
    """Create the dev org and user when missing; whether the org was new (a new database)."""
    (REPO_ROOT / "data").mkdir(exist_ok=True)
    org_created = create_if_missing(
        "dev organization",
        [tr50gw, "admin", "org-create", DEV_ORG, "--name", "Development", "--db", DB, "--json"],
    )
    created = create_if_missing(
        "dev user",
        [
            tr50gw, "admin", "user-create", DEV_USER, "--org", DEV_ORG,
            f"--password={dev_password}", "--role", "super-ops", "--db", DB, "--json",
        ],
    )  # fmt: skip
    if not created and credentials_are_new:
        print(
            f"warning: {DEV_USER} already exists in {DB} with an older password than the one in "
            f"{CREDENTIALS_PATH.relative_to(REPO_ROOT)}; `make distclean` starts over",
            file=sys.stderr,
        )
    return org_created


def demo_app(tr50gw: str, credentials: dict[str, str], org_is_new: bool) -> tuple[str, str]:
    """The demo application's `(appId, appToken)`, created when the credentials have none or
    the dev org is new (the database was removed, and the saved app with it).

    The token is read from `tr50gw admin app-create --json` and goes only into the credentials
    file and the fleet's environment, never to the terminal.
    """
    if not org_is_new and "demo_app_id" in credentials and "demo_app_token" in credentials:
        return credentials["demo_app_id"], credentials["demo_app_token"]
    result = subprocess.run(
        [tr50gw, "admin", "app-create", "--org", DEV_ORG, "--name", DEMO_APP, "--db", DB, "--json"],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        sys.stderr.write(result.stderr)  # not stdout: it would hold the token had it succeeded
        sys.exit(f"could not create the demo application (exit code {result.returncode})")
    app: dict[str, Any] = json.loads(result.stdout)
    credentials["demo_app_id"] = app["appId"]
    credentials["demo_app_token"] = app["appToken"]
    save_credentials(credentials)
    return app["appId"], app["appToken"]


def _as_dev_user(dev_password: str, name: str, params: dict[str, Any]) -> str:
    """An envelope that logs the dev user in and runs one command."""
    return json.dumps(
        {
            "auth": {
                "command": "api.authenticate",
                "params": {"username": DEV_USER, "password": dev_password},
            },
            "1": {"command": name, "params": params},
        },
        separators=(",", ":"),
    )


def banner(broker: Broker, ws_port: int, http_port: int, dev_password: str, demo: bool) -> str:
    ws_url = f"ws://127.0.0.1:{ws_port}/api"
    rest_url = f"http://127.0.0.1:{http_port}"
    http_url = f"{rest_url}/api"
    envelope = _as_dev_user(dev_password, "usage.api.list", {"limit": 5})
    if demo:
        fleet = f"""  Demo fleet {", ".join(thing_keys(DEMO_THINGS))}: MQTT things of org {DEV_ORG}
             publishing every {DEMO_INTERVAL_S} s once the gateway answers; DEMO=0 make run: none
"""
        endpoints = _as_dev_user(dev_password, "usage.api.endpoints", {"last": "1h"})
        see_fleet = f"""  # the demo fleet's traffic, per command:
  .venv/bin/tr50gw call --ws {ws_url} \\
      '{endpoints}'
"""
        stops = "the demo fleet, the gateway and the broker"
    else:
        fleet = "  Demo fleet off (DEMO=0)\n"
        see_fleet = ""
        stops = "the gateway and the broker"
    return f"""
tr50gw development gateway
  Console    {rest_url}/  (open it in a browser; log in as the dev user below)
  MQTT       {broker.host}:{broker.port}  (isolated mode: client <id> publishes to api/<id>,
                                 reads reply/<id>; broker log .run/mosquitto/mosquitto.log)
  MQTT/WS    {broker.websockets_url}  (MQTT over WebSocket, same broker and rules)
  WebSocket  {ws_url}
  HTTP       POST {http_url}  (a sessionId header stands in for an auth block)
  REST       {rest_url}/usage, /usage/export?format=csv, /auditlogs/usage, ...
             (Authorization: Bearer <sessionId>; all of them in {rest_url}/openapi.json)
  Health     {rest_url}/healthz   Metrics {rest_url}/metrics
  Dev user   {DEV_USER} / {dev_password}  (Super-Ops, org {DEV_ORG}; kept in .run/credentials.json)
{fleet}
Try:
  mosquitto_rr -h 127.0.0.1 -p {broker.port} -i dev1 -t api/dev1 -e reply/dev1 -V mqttv311 \\
      -m '{{"1":{{"command":"diag.ping"}}}}'
  .venv/bin/tr50gw call --ws {ws_url} \\
      '{envelope}'
  curl -s {http_url} -d '{{"1":{{"command":"diag.time"}}}}'
{see_fleet}
Ctrl-C stops {stops}.
"""


@dataclass(frozen=True)
class FleetLaunch:
    command: list[str]
    env: dict[str, str]  # carries the app token: the command line would show it to `ps`
    mqtt_url: str  # where to ask whether the gateway answers


def demo_fleet(
    broker: Broker, tr50gw: str, credentials: dict[str, str], org_is_new: bool
) -> FleetLaunch:
    app_id, app_token = demo_app(tr50gw, credentials, org_is_new)
    # No account in the URL: each thing authenticates in its CONNECT with its key and the app
    # token (from the environment), which the broker plugin checks.
    devices_url = f"mqtt://{broker.host}:{broker.port}"
    options = {"--mqtt-url": devices_url, "--app-id": app_id, "--things": str(DEMO_THINGS)}
    options["--interval"] = str(DEMO_INTERVAL_S)
    return FleetLaunch(
        command=[sys.executable, "-m", "devtools.demo", *(f"{k}={v}" for k, v in options.items())],
        env={**os.environ, TOKEN_VARIABLE: app_token},
        mqtt_url=devices_url,
    )


def gateway_answers(mqtt_url: str, gateway: subprocess.Popen[bytes]) -> bool:
    """Poll with diag.ping over MQTT, the fleet's way in, until the gateway answers; False when it
    exits or does not answer within GATEWAY_WAIT_S."""
    ping = b'{"1":{"command":"diag.ping"}}'
    deadline = time.monotonic() + GATEWAY_WAIT_S
    while gateway.poll() is None:
        try:
            call_mqtt(mqtt_url, ping, client_id=PROBE_CLIENT_ID, timeout=1.0)
            return True
        except (OSError, TimeoutError):
            if time.monotonic() > deadline:
                print(
                    f"the gateway did not answer over MQTT within {GATEWAY_WAIT_S:g} s; "
                    "no demo fleet",
                    file=sys.stderr,
                )
                return False
    return False


def serve(command: list[str], env: dict[str, str], fleet: FleetLaunch | None) -> int:
    """Run the gateway in the foreground and, once it answers, the demo fleet beside it, passing
    SIGINT/SIGTERM on to both; the gateway's exit code. The fleet ends with the gateway."""
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    # Installed before the children start, so they inherit default signal handling even when we
    # were started with SIGINT ignored (as background jobs of a non-interactive shell are).
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    # Their own sessions, so a Ctrl-C in the terminal reaches them once (from us), not twice.
    gateway = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True)
    children.append(gateway)
    if fleet is not None and gateway_answers(fleet.mqtt_url, gateway):
        children.append(
            subprocess.Popen(fleet.command, cwd=REPO_ROOT, env=fleet.env, start_new_session=True)
        )
    code = gateway.wait()
    for child in children[1:]:
        stop_process(child, 10)
    return 0 if code in (-signal.SIGINT, -signal.SIGTERM) else code


def main() -> int:
    RUN_DIR.mkdir(exist_ok=True)
    # Traversable (not listable) so Mosquitto, which drops to its own user, reaches its files.
    RUN_DIR.chmod(0o711)
    credentials, credentials_are_new = load_credentials()
    dev_password = credentials["dev_user_password"]
    tr50gw = tr50gw_executable()

    broker = Broker(
        RUN_DIR / "mosquitto",
        port=choose_port(),
        websockets_port=choose_port(DEFAULT_WEBSOCKETS_PORT),
        gateway_password=credentials["gateway_broker_password"],
    )
    try:
        broker.start()
    except BrokerError as error:
        sys.exit(str(error))
    demo = demo_enabled(os.environ)
    # The broker plugin's credentials (broker/README.md) follow the database: `tr50gw admin`
    # rewrites them after app-create, the gateway at start and whenever a thing appears.
    os.environ["TR50GW_BROKER_CREDENTIALS"] = str(broker.credentials_path)
    try:
        org_is_new = bootstrap(tr50gw, dev_password, credentials_are_new)
        fleet = demo_fleet(broker, tr50gw, credentials, org_is_new) if demo else None
        ws_port = choose_port(WS_PORT)
        http_port = choose_port(HTTP_PORT)
        print(banner(broker, ws_port, http_port, dev_password, demo), flush=True)
        # The broker password travels in the environment, not on a command line `ps` can show.
        gateway_env = {
            **os.environ,
            "TR50GW_MQTT_URL": broker.url_for_gateway,
            "TR50GW_MQTT_BROKER_IDENTITY": "true",  # the shipped broker runs tr50gw's plugin
        }
        return serve(
            [tr50gw, "serve", "--ws-port", str(ws_port), "--http-port", str(http_port), "--db", DB],
            gateway_env,
            fleet,
        )
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
