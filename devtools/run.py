"""What `make run` executes: a local broker, a development user, and the gateway in the foreground.

Credentials are generated on the first run and kept in .run/credentials.json (mode 0600), so the
dev user created in data/usage.duckdb keeps matching them. The gateway's broker password is
never printed; the dev user's password is printed once, in the banner, because it is a
development convenience account that exists only on this machine.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from devtools.broker import REPO_ROOT, Broker, BrokerError, choose_port

__all__ = ["main"]

RUN_DIR = REPO_ROOT / ".run"
CREDENTIALS_PATH = RUN_DIR / "credentials.json"
DB = "data/usage.duckdb"  # relative to the repo root, where every command runs
DEV_ORG = "dev"
DEV_USER = "admin@dev.local"
WS_PORT = 8765
HTTP_PORT = 8080
EXIT_ALREADY_EXISTS = 3  # `tr50gw admin ...-create` when the org or user is already there


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
    fd = os.open(CREDENTIALS_PATH, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(credentials, file, indent=2)
        file.write("\n")
    return credentials, True


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


def bootstrap(tr50gw: str, dev_password: str, credentials_are_new: bool) -> None:
    (REPO_ROOT / "data").mkdir(exist_ok=True)
    create_if_missing(
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


def banner(broker: Broker, ws_port: int, http_port: int, dev_password: str) -> str:
    ws_url = f"ws://127.0.0.1:{ws_port}/api"
    http_url = f"http://127.0.0.1:{http_port}/api"
    envelope = json.dumps(
        {
            "auth": {
                "command": "api.authenticate",
                "params": {"username": DEV_USER, "password": dev_password},
            },
            "1": {"command": "usage.api.list", "params": {"limit": 5}},
        },
        separators=(",", ":"),
    )
    return f"""
tr50gw development gateway
  MQTT       {broker.host}:{broker.port}  (isolated mode: client <id> publishes to api/<id>,
                                 reads reply/<id>; broker log .run/mosquitto/mosquitto.log)
  WebSocket  {ws_url}
  HTTP       POST {http_url}  (a sessionId header stands in for an auth block)
  Dev user   {DEV_USER} / {dev_password}  (Super-Ops, org {DEV_ORG}; kept in .run/credentials.json)

Try:
  mosquitto_rr -h 127.0.0.1 -p {broker.port} -i dev1 -t api/dev1 -e reply/dev1 -V mqttv311 \\
      -m '{{"1":{{"command":"diag.ping"}}}}'
  .venv/bin/tr50gw call --ws {ws_url} \\
      '{envelope}'
  curl -s {http_url} -d '{{"1":{{"command":"diag.time"}}}}'

Ctrl-C stops the gateway and the broker.
"""


def serve(command: list[str]) -> int:
    """Run the gateway in the foreground, passing SIGINT/SIGTERM on; its exit code."""
    gateway: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        if gateway is not None:
            gateway.send_signal(signum)

    # Installed before the gateway starts, so it inherits default signal handling even when we
    # were started with SIGINT ignored (as background jobs of a non-interactive shell are).
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    # Its own session, so a Ctrl-C in the terminal reaches it once (from us), not twice.
    gateway = subprocess.Popen(command, cwd=REPO_ROOT, start_new_session=True)
    code = gateway.wait()
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
        gateway_password=credentials["gateway_broker_password"],
    )
    try:
        broker.start()
    except BrokerError as error:
        sys.exit(str(error))
    try:
        bootstrap(tr50gw, dev_password, credentials_are_new)
        ws_port = choose_port(WS_PORT)
        http_port = choose_port(HTTP_PORT)
        print(banner(broker, ws_port, http_port, dev_password), flush=True)
        # The broker password travels in the environment, not on a command line `ps` can show.
        os.environ["TR50GW_MQTT_URL"] = broker.url_for_gateway
        return serve(
            [tr50gw, "serve", "--ws-port", str(ws_port), "--http-port", str(http_port), "--db", DB]
        )
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
