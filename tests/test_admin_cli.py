"""`tr50gw admin` as an operator runs it (SPEC §10): real subprocesses of the console script,
against the database file when no gateway runs and against a running `tr50gw serve` (whose lock
on the file sends the CLI to its HTTP port) when one does."""

from __future__ import annotations

import json
import re
import secrets
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from devtools.broker import free_port
from tests.support import PASSWORD, Tenants, ws_client
from tests.test_cli import ServeProcess, tr50gw

LISTEN_LINE = r"websocket listening on ws://[\d.]+:(?P<port>\d+)/api$"


def admin(db: Path, *argv: str, env: dict[str, str] | None = None, json_out: bool = True) -> Any:
    done = tr50gw(
        "admin", *argv, "--db", str(db), *(["--json"] if json_out else []), cwd=db.parent, env=env
    )
    return done


def ok(db: Path, *argv: str, env: dict[str, str] | None = None) -> Any:
    done = admin(db, *argv, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- without a gateway: the CLI opens the file ----------------------------------------------------
def test_list_shows_an_aligned_table(tenants: Tenants) -> None:
    done = admin(tenants.db, "user-list", "--org", "acme", json_out=False)
    header, rule, *rows = done.stdout.splitlines()
    columns = [match.start() for match in re.finditer(r"\S+", header)][:3]
    aligned = [[match.start() for match in re.finditer(r"\S+", row)][:3] for row in rows[:-1]]
    assert (done.returncode, header.split()[:3], [row.split()[0] for row in rows[:-1]]) == (
        0,
        ["emailAddress", "orgKey", "role"],
        ["ops@acme.test", "org-admin@acme.test", "user@acme.test"],
    )
    assert (aligned, rule.startswith("-" * len("emailAddress")), rows[-1]) == (
        [columns] * 3,
        True,
        "(3 in all)",
    )


def test_list_as_json_is_the_commands_result(tenants: Tenants) -> None:
    listed = ok(tenants.db, "user-list", "--all")
    assert listed["count"] == 5


def test_find_update_and_see_it(tenants: Tenants) -> None:
    ok(tenants.db, "user-update", "user@acme.test", "--first-name", "Ann", "--role", "org-admin")
    found = ok(tenants.db, "user-find", "user@acme.test")
    assert (found["firstName"], found["role"]) == ("Ann", "org-admin")


def test_a_disabled_user_cannot_log_in(tenants: Tenants, start_gateway: Any) -> None:
    ok(tenants.db, "user-disable", "user@acme.test")
    gateway = start_gateway()
    with ws_client(gateway.ws_url) as client:
        reply = client.login("user@acme.test")
    assert reply["auth"]["errorCodes"] == [-90004]


def test_a_rotated_token_is_printed_once_and_opens(tenants: Tenants, start_gateway: Any) -> None:
    app_id, old = tenants.apps["acme"]
    rotated = ok(tenants.db, "app-rotate", app_id)
    gateway = start_gateway()
    outcomes = []
    for token in (old, rotated["appToken"]):
        with ws_client(gateway.ws_url) as client:
            params = {"appId": app_id, "appToken": token, "thingKey": "t-1"}
            reply = client.send({"auth": {"command": "api.authenticate", "params": params}})
        outcomes.append(reply["auth"]["success"])
    assert (rotated["appId"], outcomes) == (app_id, [False, True])


def test_the_last_super_ops_user_cannot_be_deleted(tenants: Tenants) -> None:
    done = admin(tenants.db, "user-delete", "ops@acme.test")
    assert (done.returncode, "last Super-Ops" in done.stderr) == (5, True)


def test_an_unknown_user_exits_4(tenants: Tenants) -> None:
    assert admin(tenants.db, "user-find", "nobody@acme.test").returncode == 4


def test_a_short_password_exits_2_naming_it(tenants: Tenants) -> None:
    done = admin(tenants.db, "user-create", "x@acme.test", "--org", "acme", "--password", "short")
    assert (done.returncode, "password" in done.stderr) == (2, True)


def test_a_new_password_comes_from_the_environment(tenants: Tenants, start_gateway: Any) -> None:
    secret = f"pw-{secrets.token_urlsafe(12)}"
    ok(tenants.db, "user-password", "user@acme.test", env={"TR50GW_NEW_PASSWORD": secret})
    gateway = start_gateway()
    with ws_client(gateway.ws_url) as client:
        reply = client.login("user@acme.test", secret)
    assert reply["auth"]["success"] is True


def test_no_password_and_no_terminal_is_a_usage_error(tenants: Tenants) -> None:
    done = admin(tenants.db, "user-password", "user@acme.test")
    assert (done.returncode, "TR50GW_NEW_PASSWORD" in done.stderr) == (2, True)


def test_the_cli_calls_are_logged_without_secrets(tenants: Tenants) -> None:
    secret = f"pw-{secrets.token_urlsafe(12)}"
    ok(tenants.db, "user-create", "new@acme.test", "--org", "acme", "--password", secret)
    stored = b"".join(path.read_bytes() for path in tenants.db.parent.glob(tenants.db.name + "*"))
    assert (b"new@acme.test" in stored, secret.encode() in stored) == (True, False)


def test_a_thing_is_named_and_deleted(tenants: Tenants, start_gateway: Any) -> None:
    gateway = start_gateway()
    app_id, token = tenants.apps["acme"]
    with ws_client(gateway.ws_url) as client:
        params = {"appId": app_id, "appToken": token, "thingKey": "pump-1"}
        client.send({"auth": {"command": "api.authenticate", "params": params}})
    gateway.stop()
    ok(tenants.db, "thing-update", "pump-1", "--org", "acme", "--name", "Pump", "--tag", "north")
    deleted = ok(tenants.db, "thing-delete", "pump-1", "--org", "acme")
    again = admin(tenants.db, "thing-delete", "pump-1", "--org", "acme")
    assert (deleted, again.returncode) == ({}, 4)


# -- with a gateway running: the CLI calls it -----------------------------------------------------
@pytest.fixture
def served(tenants: Tenants) -> Iterator[str]:
    """`tr50gw serve` on the tenants' file with an HTTP port; the gateway's URL."""
    http_port = free_port()
    server = ServeProcess(
        "--db", str(tenants.db), "--mqtt-url", "none", "--ws-port", "0",
        "--http-port", str(http_port), cwd=tenants.db.parent,
    )  # fmt: skip
    try:
        server.wait_for(LISTEN_LINE)
        server.wait_for(r"http listening")
        yield f"http://127.0.0.1:{http_port}"
    finally:
        server.stop()


def as_admin(user: str = "org-admin@acme.test", password: str = PASSWORD) -> dict[str, str]:
    return {"TR50GW_ADMIN_USER": user, "TR50GW_ADMIN_PASSWORD": password}


def test_a_running_gateway_is_called(tenants: Tenants, served: str) -> None:
    done = tr50gw(
        "admin", "user-list", "--gateway", served, "--json", cwd=tenants.db.parent, env=as_admin()
    )
    assert (done.returncode, json.loads(done.stdout)["count"]) == (0, 3)


def test_a_locked_file_sends_the_cli_to_the_gateway(tenants: Tenants, served: str) -> None:
    """The file is the gateway's: the CLI says so and calls it where the environment says the
    gateway listens (TR50GW_HTTP_PORT, as `serve` reads it)."""
    port = served.rsplit(":", 1)[1]
    env = {**as_admin(), "TR50GW_HTTP_PORT": port}
    done = admin(tenants.db, "user-find", "user@acme.test", env=env)
    assert (done.returncode, json.loads(done.stdout)["emailAddress"], served in done.stderr) == (
        0,
        "user@acme.test",
        True,
    )


def test_the_gateway_checks_the_callers_rights(tenants: Tenants, served: str) -> None:
    done = tr50gw(
        "admin", "user-delete", "org-admin@acme.test", "--gateway", served,
        cwd=tenants.db.parent, env=as_admin("user@acme.test"),
    )  # fmt: skip
    assert done.returncode == 5


def test_a_wrong_admin_password_exits_6(tenants: Tenants, served: str) -> None:
    done = tr50gw(
        "admin", "user-list", "--gateway", served, cwd=tenants.db.parent,
        env=as_admin(password="not the password"),
    )  # fmt: skip
    assert done.returncode == 6


def test_changes_through_the_gateway_are_in_its_log(tenants: Tenants, served: str) -> None:
    tr50gw(
        "admin", "user-update", "user@acme.test", "--last-name", "Lee", "--gateway", served,
        cwd=tenants.db.parent, env=as_admin(),
    )  # fmt: skip
    body = json.dumps(
        {
            "auth": {
                "command": "api.authenticate",
                "params": {"username": "org-admin@acme.test", "password": PASSWORD},
            },
            "l": {"command": "usage.api.list", "params": {"service": "user", "command": "update"}},
        }
    ).encode()
    with urllib.request.urlopen(f"{served}/api", data=body, timeout=10) as response:  # noqa: S310
        reply = json.loads(response.read())
    (record,) = reply["l"]["params"]["result"]
    assert (record["transport"], record["whoami"]) == ("http", "org-admin@acme.test")


# -- tr50gw admin export --------------------------------------------------------------------------
def test_export_writes_the_log_and_the_archive(tenants: Tenants, tmp_path: Path) -> None:
    """Days retired to the archive are exported with the log's: every record, once."""
    from devtools.synthetic import generate_usage
    from storage.duckdb.database import Database
    from storage.duckdb.retention import retire_due

    database = Database(tenants.db)
    end = datetime(2026, 3, 31, 12)
    generate_usage(database, rows=3_000, orgs=2, callers=10, days=6, end=end, compact=False)
    retired = retire_due(database, end, 3, tmp_path / "archive")
    (total,) = database.cursor().execute("SELECT count(*) FROM usage_log").fetchone() or (0,)
    database.close()
    out = tmp_path / "out" / "usage.parquet"
    done = tr50gw(
        "admin", "export", "--from", "2020-01-01T00:00:00Z", "--out", str(out),
        "--archive-dir", str(tmp_path / "archive"), "--db", str(tenants.db), "--json",
        cwd=tenants.db.parent,
    )  # fmt: skip
    import pyarrow.parquet as pq

    ids = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    expected = total + sum(part.records for part in retired)
    assert (done.returncode, json.loads(done.stdout)["records"], len(ids), len(set(ids))) == (
        0,
        expected,
        expected,
        expected,
    )


def test_export_through_a_running_gateway(tenants: Tenants, served: str, tmp_path: Path) -> None:
    out = tmp_path / "usage.csv"
    done = tr50gw(
        "admin", "export", "--from", "2020-01-01T00:00:00Z", "--format", "csv", "--out",
        str(out), "--gateway", served, "--json", cwd=tenants.db.parent,
        env=as_admin("ops@acme.test"),
    )  # fmt: skip
    rows = out.read_text().splitlines()[1:]
    assert (done.returncode, json.loads(done.stdout)["records"]) == (0, len(rows))


def test_export_with_a_bad_time_exits_2(tenants: Tenants, tmp_path: Path) -> None:
    done = admin(tenants.db, "export", "--from", "yesterday", "--out", str(tmp_path / "x"))
    assert (done.returncode, "--from" in done.stderr) == (2, True)
