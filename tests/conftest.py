from __future__ import annotations

import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from devtools.broker import Broker
from gateway.settings import Settings
from tests.harness import Fleet, Harness, thing_login
from tests.support import GatewayThread, Tenants, provision


@pytest.fixture(autouse=True, scope="session")
def cheap_password_hashing() -> Iterator[None]:
    """Passwords hashed in this process at scrypt N=2^10 instead of 2^14 (2 ms instead of 45:
    about a minute and a half of the suite, which logs in and creates users thousands of times).
    A hash carries its parameters, so either cost verifies; subprocesses (`tr50gw serve`) keep
    the real cost, and tests/test_security.py checks it in a process of its own."""
    from storage.duckdb import identity

    real = identity._SCRYPT_N
    identity._SCRYPT_N = 2**10
    yield
    identity._SCRYPT_N = real


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A real Mosquitto from the repo's mosquitto.conf + ACL, on a free port."""
    with Broker() as running:
        running.start()
        yield running


@pytest.fixture(scope="session")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Tenants:
    """The orgs, users and apps, provisioned once through `tr50gw admin` (about a second: scrypt
    for each password); each test gets a copy of the file."""
    return provision(tmp_path_factory.mktemp("provisioned") / "usage.duckdb")


@pytest.fixture
def tenants(tmp_path: Path, provisioned: Tenants) -> Tenants:
    """A DuckDB file of this test's own, holding what `provision` creates (a copy of the
    session's; nothing a test writes reaches another test)."""
    db = tmp_path / "usage.duckdb"
    shutil.copyfile(provisioned.db, db)
    return replace(
        provisioned, db=db, org_ids=dict(provisioned.org_ids), apps=dict(provisioned.apps)
    )


@pytest.fixture
def start_gateway(tenants: Tenants) -> Iterator[Callable[..., GatewayThread]]:
    """Start gateways against the provisioned DuckDB file; all are stopped at teardown."""
    running: list[GatewayThread] = []

    def start(**overrides: Any) -> GatewayThread:
        values: dict[str, Any] = {
            "db": tenants.db,
            "mqtt_url": "none",
            "ws_port": 0,
            "instance_name": f"gw-{secrets.token_hex(3)}",
        }
        values.update(overrides)
        thread = GatewayThread(Settings(**values)).start()
        running.append(thread)
        return thread

    yield start
    for thread in reversed(running):
        thread.stop()


@pytest.fixture
def gateway(broker: Broker, start_gateway: Callable[..., GatewayThread]) -> GatewayThread:
    """A gateway serving WebSocket on a free port and MQTT through `broker` (isolated mode).

    `broker` comes first so that it is torn down after the gateway, not under it.
    """
    return start_gateway(mqtt_url=broker.url_for_gateway)


FLEET_PASSWORD = "pw-for-tests"


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """Two orgs (acme: meter-1, meter-2; globex: pump-9) with users of each role, all logged in."""
    h = Harness(tmp_path / "usage.duckdb")
    fleet = Fleet(h)
    apps = {}
    for org in ("acme", "globex"):
        h.identity.create_org(org)
        h.identity.create_user(f"user@{org}", org, FLEET_PASSWORD, "user")
        h.identity.create_user(f"admin@{org}", org, FLEET_PASSWORD, "org-admin")
        apps[org] = h.identity.create_app(org, "fleet")
    h.identity.create_user("ops@acme", "acme", FLEET_PASSWORD, "super-ops")
    for who in ("user@acme", "admin@acme", "ops@acme", "user@globex"):
        fleet.sessions[who] = await h.login(who, FLEET_PASSWORD)
    fleet.sessions["meter-1"] = await thing_login(h, apps["acme"], "meter-1")
    fleet.sessions["meter-2"] = await thing_login(h, apps["acme"], "meter-2")
    fleet.sessions["pump-9"] = await thing_login(h, apps["globex"], "pump-9")
    yield fleet
    h.close()
