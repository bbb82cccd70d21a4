from __future__ import annotations

import contextlib
import itertools
import os
import queue
import secrets
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from devtools.broker import Broker
from devtools.postgres import PostgresServer
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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL (devtools/postgres.py) for the whole run: each test that needs one
    gets a database of its own on it (`lake`)."""
    with PostgresServer() as server:
        yield server


_lakes = itertools.count()


class LakePool:
    """Empty lakes made ahead on a thread of their own, while tests run: each a copy of a
    template database holding an empty lake's catalog and identity tables (`CREATE DATABASE
    ... TEMPLATE`, 0.2-0.3 s, a tenth of making the tables again), with a data directory of its
    own: a copy of the template's (the few files the template's set-up wrote: a test that
    compacts the lake deletes its files, which no other lake may share), named in the copy's
    catalog (`ducklake_metadata`'s `data_path`)."""

    AHEAD = 3

    def __init__(self, postgres: PostgresServer, data_path: Path) -> None:
        from storage.ducklake import LakeDatabase

        self.postgres = postgres
        self.root = data_path
        self.template_path = data_path / "template"
        dsn = postgres.create_database("lake_template")
        LakeDatabase(f"ducklake:postgres:{dsn}", self.template_path).close()
        self._ready: queue.Queue[str | BaseException] = queue.Queue(maxsize=self.AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._make, daemon=True)
        self._thread.start()

    def _make(self) -> None:
        while not self._stop.is_set():
            name = f"lake_{os.getpid()}_{next(_lakes)}"
            try:
                self.postgres.psql(
                    f'CREATE DATABASE "{name}" TEMPLATE lake_template STRATEGY FILE_COPY'
                )
                shutil.copytree(self.template_path, self.root / name)
                self.postgres.psql(  # psql takes no parameters: the path is our own temp dir
                    f"UPDATE ducklake_metadata SET value = '{self.root / name}/'"  # noqa: S608
                    " WHERE key = 'data_path'",
                    database=name,
                )
                made: str | BaseException = name
            except BaseException as error:  # handed to the test that takes it
                made = error
            while not self._stop.is_set():
                with contextlib.suppress(queue.Full):
                    self._ready.put(made, timeout=0.2)
                    break

    def take(self) -> dict[str, Any]:
        made = self._ready.get(timeout=60)
        if isinstance(made, BaseException):
            raise made
        dsn = f"dbname={made} host=127.0.0.1 port={self.postgres.port} user=postgres"
        return {"db": f"ducklake:postgres:{dsn}", "data_path": str(self.root / made)}

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="session")
def lakes(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LakePool]:
    pool = LakePool(postgres, tmp_path_factory.mktemp("lakes"))
    yield pool
    pool.close()


@pytest.fixture
def lake(lakes: LakePool) -> dict[str, Any]:
    """The settings of a new, empty DuckLake (storage/ducklake/): its catalog and identity
    tables in a PostgreSQL database of its own."""
    return lakes.take()


@pytest.fixture(params=["duckdb", "ducklake"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The storage settings of each backend in turn (issue 15: the core, analytics,
    device-data and bad-input tests run against both): a DuckDB file, a DuckLake."""
    if request.param == "duckdb":
        return {"db": tmp_path / "usage.duckdb"}
    lake: dict[str, Any] = request.getfixturevalue("lake")
    return lake


@pytest.fixture
async def fleet(backend: dict[str, Any]) -> AsyncIterator[Fleet]:
    """Two orgs (acme: meter-1, meter-2; globex: pump-9) with users of each role, all logged in,
    on each backend in turn."""
    h = Harness(**backend)
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


BACKEND_MATRIX = os.environ.get("TR50GW_BACKEND_MATRIX", "bounded")
"""`full` (`make test-backends`, about eight more minutes): every test that takes `backend` runs
every one of its cases on the DuckLake too. `bounded` (`make test`, which must stay within ten
minutes): per module, `LAKE_SAMPLE` of those tests, spread evenly through the module, run their
first case on the DuckLake (the DuckDB file gets every case either way): a lake's set-up (a
PostgreSQL database, its extensions, its catalog) costs about a second a test."""

LAKE_SAMPLE = 3

BOUNDED_ELSEWHERE = frozenset({"tests.test_admin_effects", "tests.test_bruteforce"})
"""Modules whose lake cases run only in `make test-backends`: administration's effects and the
brute-force guard (issue 15 names the core, analytics, device-data and bad-input tests; the
shared guard has its own two-gateway test in tests/test_ducklake.py)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if BACKEND_MATRIX == "full":
        return
    functions: dict[str, list[str]] = {}  # per module, its lake-taking tests in file order
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend") == "ducklake":
            names = functions.setdefault(item.module.__name__ if item.module else "", [])
            if item.originalname not in names:  # type: ignore[attr-defined]
                names.append(item.originalname)  # type: ignore[attr-defined]
    sampled = {
        (module, name)
        for module, names in functions.items()
        if module not in BOUNDED_ELSEWHERE
        for name in names[:: max(1, -(-len(names) // LAKE_SAMPLE))]
    }
    seen: set[tuple[str, str]] = set()
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("backend") != "ducklake":
            kept.append(item)
            continue
        function = (item.module.__name__ if item.module else "", item.originalname)  # type: ignore[attr-defined]
        (dropped if function in seen or function not in sampled else kept).append(item)
        seen.add(function)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
