"""The DuckLake backend (issue 15, SPEC §8): `--db ducklake:postgres:<dsn>` with `--data-path`.

Against a real PostgreSQL this suite starts itself (devtools/postgres.py: `initdb` on a free
port, never the machine's own server), each test on a database of its own, with the lake's
Parquet files in the test's temporary directory. Two gateways here are two `Harness`es in one
process: each its own in-memory DuckDB attaching the same catalog, as two processes would.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from devtools.postgres import PostgresServer
from gateway.settings import Settings
from storage.ducklake import extensions
from storage.ducklake.database import LakeDatabase, lake_ddl
from storage.ducklake.maintenance import COMPACTION_LOCK, LakeMaintenance, compact, exclusive
from tests.harness import Clock, Harness
from tests.support import run_cli

PASSWORD = "correct horse battery"


def gateway(lake: dict[str, Any], name: str = "a") -> Harness:
    """A gateway on `lake` (its `db`, `data_path` and any other settings, e.g. S3's)."""
    settings = {key: value for key, value in lake.items() if key != "db"}
    return Harness(lake["db"], Clock(datetime(2026, 11, 30, 12)), instance_name=name, **settings)


async def org_with_user(h: Harness, org: str = "acme", email: str = "ops@acme") -> str:
    h.identity.create_org(org)
    h.identity.create_user(email, org, PASSWORD, "super-ops")
    return await h.login(email, PASSWORD)


def test_the_extensions_load_from_their_wheels_into_a_private_directory(tmp_path: Path) -> None:
    connection = duckdb.connect(
        ":memory:",
        config={
            "extension_directory": str(tmp_path),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        },
    )
    extensions.load(connection)
    paths = connection.execute(
        "SELECT install_path FROM duckdb_extensions() WHERE loaded AND install_path LIKE '/%'"
    ).fetchall()
    assert sorted(Path(path).name for (path,) in paths) == [
        "ducklake.duckdb_extension",
        "httpfs.duckdb_extension",
        "postgres_scanner.duckdb_extension",
    ]
    assert all(Path(path).is_relative_to(tmp_path) for (path,) in paths)


def test_an_extension_without_its_wheel_says_which_to_install() -> None:
    with pytest.raises(extensions.ExtensionMissing, match="pip install duckdb-extension-nope=="):
        extensions.extension_file("nope")


def test_the_lake_schema_has_no_keys() -> None:
    ddl = "CREATE TABLE t (a INT PRIMARY KEY, b INT NOT NULL UNIQUE, PRIMARY KEY (a, b));"
    assert lake_ddl(ddl) == "CREATE TABLE t (a INT, b INT NOT NULL);"


def test_a_lake_needs_a_data_path() -> None:
    with pytest.raises(ValueError, match="needs --data-path"):
        Settings(db="ducklake:postgres:dbname=x", mqtt_url="none")


def test_a_lake_catalog_is_postgres() -> None:
    with pytest.raises(ValueError, match="ducklake:postgres:<libpq connection string>"):
        Settings(db="ducklake:sqlite:x.db", data_path="/tmp/x", mqtt_url="none")


def test_the_start_line_hides_the_catalog_password() -> None:
    settings = Settings(
        db="ducklake:postgres:dbname=x password=s3cret host=h", data_path="d", mqtt_url="none"
    )
    assert settings.db_shown == "ducklake:postgres:dbname=x password=*** host=h"


async def pings_listed(lake: dict[str, Any]) -> int:
    """A gateway on `lake` answers five pings (each must succeed); what its listing counts."""
    h = gateway(lake)
    try:
        session = await org_with_user(h)
        for _ in range(5):
            reply = await h.as_session(session, p={"command": "diag.ping"})
            assert reply["p"]["success"]
        reply = await h.as_session(
            session, l={"command": "usage.api.list", "params": {"service": "diag"}}
        )
        return int(reply["l"]["params"]["count"])
    finally:
        h.close()


async def test_a_lake_gateway_logs_every_call_and_lists_them(lake: dict[str, str]) -> None:
    assert await pings_listed(lake) == 5


async def test_a_record_is_stored_in_the_lake_once(lake: dict[str, str]) -> None:
    h = gateway(lake)
    try:
        session = await org_with_user(h)
        await h.as_session(session, p={"command": "diag.ping"})
        assert h.usage.flush()
        rows = h.database.cursor().execute("SELECT count(*) FROM lake.main.usage_log").fetchone()
        assert rows == (2,)  # the login and the ping
    finally:
        h.close()


async def test_two_gateways_share_identity_and_the_log(lake: dict[str, str]) -> None:
    a, b = gateway(lake, "a"), gateway(lake, "b")
    try:
        session = await org_with_user(a)  # created on a
        assert (await b.as_session(session, p={"command": "diag.ping"}))["p"]["success"]
        assert (await a.as_session(session, p={"command": "diag.ping"}))["p"]["success"]
        a.usage.flush()
        b.usage.flush()
        counts = []
        for h in (a, b):
            reply = await h.as_session(
                session, l={"command": "usage.api.list", "params": {"service": "diag"}}
            )
            counts.append(reply["l"]["params"]["count"])
        assert counts == [2, 2]
    finally:
        a.close()
        b.close()


async def test_the_current_value_is_the_newest_published(lake: dict[str, str]) -> None:
    h = gateway(lake)
    try:
        await org_with_user(h)
        app_id, token = h.identity.create_app("acme", "meters")
        reply = await h.call(
            {
                "auth": {
                    "command": "api.authenticate",
                    "params": {"appId": app_id, "appToken": token, "thingKey": "m1"},
                }
            }
        )
        thing = reply["auth"]["params"]["sessionId"]
        newer = datetime(2026, 11, 30, 11)
        for ts, value in ((newer, 2.0), (newer - timedelta(hours=1), 1.0)):
            publish = {"key": "t", "value": value, "ts": ts.isoformat() + "Z"}
            reply = await h.as_session(thing, p={"command": "property.publish", "params": publish})
            assert reply["p"]["success"], reply
            h.assembly.storage.devices.properties.flush()
        reply = await h.as_session(thing, c={"command": "property.current", "params": {"key": "t"}})
        assert reply["c"]["params"]["value"] == 2.0
    finally:
        h.close()


async def test_a_session_ended_on_one_gateway_is_ended_on_the_other(
    lake: dict[str, str],
) -> None:
    """Each gateway keeps the sessions it has seen in memory: on a lake it reads them again
    within a second (storage/duckdb/identity.py: RECHECK_EVERY, half a second)."""
    a, b = gateway(lake, "a"), gateway(lake, "b")
    try:
        session = await org_with_user(a)
        assert (await b.as_session(session, i={"command": "session.info"}))["i"]["success"]
        ended = await a.as_session(session, e={"command": "session.end"})
        assert ended["e"]["success"], ended
        await asyncio.sleep(1.0)  # the promise: ended on every gateway within a second
        reply = await b.as_session(session, i={"command": "session.info"})
        assert reply["i"]["errorCodes"] == [-90005]
    finally:
        a.close()
        b.close()


async def test_failed_logins_on_two_gateways_count_against_one_limit(
    lake: dict[str, str],
) -> None:
    """The brute-force guard lives in PostgreSQL on a lake (storage/ducklake/logins.py): two
    failures on each of two gateways reach a limit of 4, so the right password is refused on
    either; counted per process, each gateway would have seen only 2."""
    a = Harness(**lake, auth_max_failures=4, instance_name="a")  # type: ignore[arg-type]
    b = Harness(**lake, auth_max_failures=4, instance_name="b")  # type: ignore[arg-type]
    try:
        a.identity.create_org("acme")
        a.identity.create_user("ops@acme", "acme", PASSWORD, "super-ops")
        for h in (a, b, a, b):
            failed = await h.call(login_envelope("ops@acme", "wrong password"))
            assert failed["auth"]["errorCodes"] == [-90004]
        refused = await b.call(login_envelope("ops@acme", PASSWORD))
        assert refused["auth"]["errorCodes"] == [-90012]
    finally:
        a.close()
        b.close()


def login_envelope(username: str, password: str) -> dict[str, object]:
    return {
        "auth": {
            "command": "api.authenticate",
            "params": {"username": username, "password": password},
        }
    }


async def small_commits(h: Harness, session: str, commits: int, per_commit: int = 12) -> None:
    """`commits` writer commits of `per_commit` pings each: a small Parquet file each."""
    for _ in range(commits):
        for _ in range(per_commit):
            await h.as_session(session, p={"command": "diag.ping"})
        assert h.usage.flush()


def usage_files(h: Harness) -> int:
    row = (
        h.database.cursor()
        .execute("SELECT count(*) FROM ducklake_list_files('lake', 'usage_log')")
        .fetchone()
    )
    return int(row[0]) if row else 0


async def counts(h: Harness, session: str) -> tuple[int, int]:
    """What a user sees: the listing's count and the day's activity total."""
    reply = await h.as_session(
        session,
        l={"command": "usage.api.list", "params": {"service": "diag"}},
        a={"command": "usage.api.activity", "params": {"service": "diag", "interval": "day"}},
    )
    assert reply["a"]["success"], reply
    activity = sum(int(bucket["count"]) for bucket in reply["a"]["params"]["result"])
    return reply["l"]["params"]["count"], activity


async def test_compaction_merges_the_small_files(lake: dict[str, str]) -> None:
    h = gateway(lake)
    try:
        session = await org_with_user(h)
        await small_commits(h, session, 8)
        before = usage_files(h)
        compact(h.database, h.clock() + timedelta(days=1))  # type: ignore[arg-type]
        assert (before, usage_files(h)) == (8, 1)  # the login, one row, is inlined in the catalog
    finally:
        h.close()


async def test_compaction_leaves_every_count_unchanged(lake: dict[str, str]) -> None:
    """Rollups consolidated, files merged, snapshots expired and their files removed: the
    listing and the chart count what they counted."""
    h = gateway(lake)
    try:
        session = await org_with_user(h)
        await small_commits(h, session, 6)
        before = await counts(h, session)
        done = compact(h.database, h.clock() + timedelta(days=1))  # type: ignore[arg-type]
        assert done.merged and done.consolidated and done.cleaned, done
        assert await counts(h, session) == before
    finally:
        h.close()


async def test_compaction_beside_another_gateways_appends_loses_nothing(
    lake: dict[str, str],
) -> None:
    """Gateway a appends in small commits while b compacts round after round on its thread:
    every ping is counted once, by both."""
    a, b = gateway(lake, "a"), gateway(lake, "b")
    try:
        session = await org_with_user(a)
        stop = threading.Event()

        def compacting() -> None:
            while not stop.is_set():
                compact(b.database, b.clock() + timedelta(days=1))  # type: ignore[arg-type]

        thread = threading.Thread(target=compacting)
        thread.start()
        try:
            await small_commits(a, session, 20, per_commit=15)
        finally:
            stop.set()
            thread.join()
        seen = [(await counts(h, session))[0] for h in (a, b)]
        assert seen == [300, 300]
    finally:
        a.close()
        b.close()


async def test_one_gateway_compacts_at_a_time(lake: dict[str, str]) -> None:
    """While another holds the lock (here: the test), a gateway's round is skipped."""
    h = gateway(lake)
    try:
        database = h.database
        assert isinstance(database, LakeDatabase)
        maintenance = LakeMaintenance(database, h.clock, interval=3600)
        maintenance.close()  # its first round ran at start, holding the lock alone
        with exclusive(database.dsn, COMPACTION_LOCK) as held:
            assert held
            maintenance.round()
        assert (maintenance.ran, maintenance.skipped) == (1, 1)
    finally:
        h.close()


async def test_while_postgresql_is_down_calls_are_answered_and_stored_once_it_is_back(
    tmp_path: Path,
) -> None:
    """PostgreSQL stopped (on a cluster of this test's own): a held session keeps working (no
    gateway can end it meanwhile), the writer keeps the records and stores them when it is back."""
    with PostgresServer() as server:
        lake = {"db": f"ducklake:postgres:{server.dsn}", "data_path": str(tmp_path / "lake")}
        h = gateway(lake)
        try:
            session = await org_with_user(h)
            for _ in range(3):
                await h.as_session(session, p={"command": "diag.ping"})
            assert h.usage.flush()
            server.halt()
            await asyncio.sleep(0.6)  # past the sessions' recheck: they are read again
            answered = 0
            for _ in range(10):
                reply = await h.as_session(session, p={"command": "diag.ping"})
                answered += bool(reply["p"]["success"])
            server.start()
            assert h.usage.flush(60)
            reply = await h.as_session(
                session, l={"command": "usage.api.list", "params": {"service": "diag"}}
            )
            assert (answered, reply["l"]["params"]["count"]) == (10, 13)
        finally:
            h.close()


async def test_the_admin_cli_provisions_a_lake_the_gateways_share(lake: dict[str, str]) -> None:
    where = ("--db", lake["db"], "--data-path", lake["data_path"], "--json")
    code, out = run_cli("admin", "org-create", "acme", *where)
    assert code == 0, out
    code, out = run_cli(
        "admin",
        "user-create",
        "ops@acme.test",
        "--org",
        "acme",
        "--password",
        PASSWORD,
        "--role",
        "super-ops",
        *where,
    )
    assert code == 0, out
    h = gateway(lake)
    try:
        assert isinstance(await h.login("ops@acme.test", PASSWORD), str)
    finally:
        h.close()
