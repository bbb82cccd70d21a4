"""The dispatcher over a real DuckDB file: literal JSON envelopes in, literal replies out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from commands import build_registry
from gateway.core.context import CallContext
from gateway.core.dispatcher import Dispatcher
from gateway.core.registry import Command, Registry
from tests.harness import Harness

PW = "s3cret-pass"


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path / "usage.duckdb", session_ttl=100)
    for org in ("acme", "globex"):
        h.identity.create_org(org)
        h.identity.create_user(f"user@{org}", org, PW, "user")
    h.identity.create_user("ops@acme", "acme", PW, "super-ops")
    yield h
    h.close()


async def records(h: Harness, **params: Any) -> list[dict[str, Any]]:
    """Every record (newest first) as a Super-Ops user sees them; that listing is logged too."""
    sid = await h.login("ops@acme", PW)
    reply = await h.as_session(
        sid, l={"command": "usage.api.list", "params": {"showAll": True, "limit": 2000, **params}}
    )
    assert reply["l"]["success"], reply
    return reply["l"]["params"]["result"] or []


async def test_commands_run_in_order_and_fail_one_by_one(harness: Harness) -> None:
    reply = await harness.raw(
        b'{"b":{"command":"diag.ping"},"a":{"command":"no.such"},"c":{"command":"diag.time","params":{"x":1}},'
        b'"d":{"params":{}},"e":{"command":"session.info"},"f":{"command":"diag.ping","params":null}}'
    )
    assert list(reply) == ["b", "a", "c", "d", "e", "f"]
    assert reply["b"] == {"success": True}
    assert reply["a"] == {
        "success": False,
        "errorCodes": [-90001],
        "errorMessages": ["unknown command: no.such"],
    }
    assert reply["c"]["errorCodes"] == [-90002]
    assert "x: Extra inputs are not permitted" in reply["c"]["errorMessages"][0]
    assert reply["d"]["errorCodes"] == [-90010]
    assert reply["e"]["errorCodes"] == [-90005]
    assert reply["f"] == {"success": True}


async def test_params_must_be_an_object(harness: Harness) -> None:
    reply = await harness.raw(b'{"1":{"command":"diag.ping","params":[1]}}')
    assert reply["1"]["errorCodes"] == [-90002]


async def test_diag_time_is_rfc3339_milliseconds(harness: Harness) -> None:
    reply = await harness.raw(b'{"t":{"command":"diag.time"}}')
    assert reply == {"t": {"success": True, "params": {"time": "2024-03-01T12:00:00.000Z"}}}


async def test_auth_command_runs_first_and_its_session_serves_the_envelope(
    harness: Harness,
) -> None:
    reply = await harness.call(
        {
            "i": {"command": "session.info"},
            "auth": {
                "command": "api.authenticate",
                "params": {"username": "user@acme", "password": PW},
            },
        }
    )
    assert list(reply) == ["auth", "i"]
    session_id = reply["auth"]["params"]["sessionId"]
    assert len(session_id) >= 32
    info = reply["i"]["params"]
    assert info["id"] == session_id
    assert (info["orgKey"], info["whoAmI"], info["userName"]) == ("acme", "user@acme", "user@acme")
    assert (info["hasSuperOps"], info["hasOrgAdmin"], info["ttl"]) == (False, False, 100)
    assert info["startTime"] == info["lastAccessed"] == "2024-03-01T12:00:00.000Z"


async def test_auth_by_session_id_and_bad_auth_blocks(harness: Harness) -> None:
    sid = await harness.login("user@acme", PW)
    ok = await harness.as_session(sid, i={"command": "session.info"})
    assert ok["i"]["params"]["whoAmI"] == "user@acme"
    unknown = await harness.as_session(
        "nope", i={"command": "session.info"}, p={"command": "diag.ping"}
    )
    assert unknown == {
        "i": {
            "success": False,
            "errorCodes": [-90005],
            "errorMessages": ["authentication session is invalid: no valid session"],
        },
        "p": {"success": True},
    }
    not_auth = await harness.call({"auth": {"command": "diag.ping"}, "p": {"command": "diag.ping"}})
    assert not_auth["auth"]["errorCodes"] == [-90010]
    assert not_auth["p"] == {"success": True}
    garbage = await harness.call({"auth": 7, "i": {"command": "session.info"}})
    assert garbage["auth"]["errorCodes"] == [-90010]
    assert garbage["i"]["errorCodes"] == [-90005]


async def test_bad_credentials(harness: Harness) -> None:
    for params in (
        {"username": "user@acme", "password": "wrong"},
        {"username": "nobody@acme", "password": PW},
        {"appId": "nope", "appToken": "nope", "thingKey": "t1"},
    ):
        reply = await harness.call({"auth": {"command": "api.authenticate", "params": params}})
        assert reply["auth"]["errorCodes"] == [-90004], params
    mixed = await harness.call(
        {
            "1": {
                "command": "api.authenticate",
                "params": {"username": "u", "password": "p", "thingKey": "t"},
            }
        }
    )
    assert mixed["1"]["errorCodes"] == [-90002]


async def test_thing_authentication_registers_the_thing(harness: Harness) -> None:
    app_id, app_token = harness.identity.create_app("acme", "fleet")
    params = {"appId": app_id, "appToken": app_token, "thingKey": "truck-7"}
    reply = await harness.call(
        {
            "auth": {"command": "api.authenticate", "params": params},
            "i": {"command": "session.info"},
        }
    )
    info = reply["i"]["params"]
    assert (info["thingKey"], info["whoAmI"], info["orgKey"]) == ("truck-7", "truck-7", "acme")
    row = harness.database.cursor().execute("SELECT thing_key FROM things").fetchall()
    assert row == [("truck-7",)]
    wrong = await harness.call(
        {"auth": {"command": "api.authenticate", "params": {**params, "appToken": app_token + "x"}}}
    )
    assert wrong["auth"]["errorCodes"] == [-90004]


async def test_sessions_slide_expire_and_end(harness: Harness) -> None:
    sid = await harness.login("user@acme", PW)
    info = {"i": {"command": "session.info"}}
    harness.clock.advance(seconds=60)
    assert (await harness.as_session(sid, **info))["i"]["success"]
    harness.clock.advance(seconds=60)  # 120 s after login, 60 s after last use: still alive
    assert (await harness.as_session(sid, **info))["i"]["params"]["ttl"] == 100
    harness.clock.advance(seconds=101)
    assert (await harness.as_session(sid, **info))["i"]["errorCodes"] == [-90005]

    sid = await harness.login("user@acme", PW)
    ended = await harness.as_session(
        sid, e={"command": "session.end"}, i={"command": "session.info"}
    )
    assert ended["e"] == {"success": True}
    assert ended["i"]["errorCodes"] == [-90005]
    assert (await harness.as_session(sid, **info))["i"]["errorCodes"] == [-90005]


async def test_sessions_survive_a_restart_but_not_a_copied_token_table(
    harness: Harness, tmp_path: Path
) -> None:
    sid = await harness.login("user@acme", PW)
    stored = harness.database.cursor().execute("SELECT token_hash FROM sessions").fetchall()
    assert sid not in {row[0] for row in stored}
    harness.restart()  # the in-memory session cache is lost
    assert (await harness.as_session(sid, i={"command": "session.info"}))["i"]["success"]
    assert (await harness.as_session(stored[0][0], i={"command": "session.info"}))["i"][
        "errorCodes"
    ] == [-90005]


async def test_connection_binding(harness: Harness) -> None:
    connection = harness.connection(binds=True)
    login = {
        "auth": {"command": "api.authenticate", "params": {"username": "user@acme", "password": PW}}
    }
    await harness.call(login, connection)
    assert (await harness.call({"i": {"command": "session.info"}}, connection))["i"]["success"]
    other = harness.connection(binds=False)
    await harness.call(login, other)
    assert (await harness.call({"i": {"command": "session.info"}}, other))["i"]["errorCodes"] == [
        -90005
    ]


async def test_unexpected_errors_answer_90099_without_detail(
    harness: Harness, tmp_path: Path
) -> None:
    class NoParams(BaseModel):
        model_config = ConfigDict(extra="forbid")

    async def boom(params: NoParams, ctx: CallContext) -> None:
        raise RuntimeError("database password is hunter2")

    registry = Registry([[Command("test.boom", NoParams, boom, needs_session=False)]])
    dispatcher = Dispatcher(registry, harness.services)
    reply = await dispatcher.handle(b'{"1":{"command":"test.boom"}}', harness.connection())
    assert (
        reply == b'{"1":{"success":false,"errorCodes":[-90099],"errorMessages":["internal error"]}}'
    )


def test_registry_rejects_duplicates() -> None:
    commands = list(build_registry().names())
    assert {
        "api.authenticate",
        "session.info",
        "session.end",
        "diag.ping",
        "diag.time",
        "usage.api.list",
    } <= set(commands)
    table = [Command("diag.ping", BaseModel, lambda p, c: None)]  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="twice"):
        Registry([table, table])


async def test_command_cap_per_envelope(tmp_path: Path) -> None:
    h = Harness(tmp_path / "cap.duckdb", max_commands=3)
    try:
        reply = await h.call({str(i): {"command": "diag.ping"} for i in range(4)})
        assert reply["errorCodes"] == [-90010]
        assert "4 commands, limit 3" in reply["errorMessages"][0]
        assert list(await h.call({str(i): {"command": "diag.ping"} for i in range(3)})) == [
            "0",
            "1",
            "2",
        ]
    finally:
        h.close()


async def test_every_call_is_logged_and_secrets_are_not(harness: Harness) -> None:
    sid = await harness.login("user@acme", PW)
    await harness.raw(b"\xff not json")
    await harness.raw(
        b'{"x":{"command":"no.such"},"y":{"command":"diag.ping","params":{"appToken":"tok-123"}}}'
    )
    await harness.as_session(sid, i={"command": "session.info"})
    await harness.call(
        {
            "auth": {
                "command": "api.authenticate",
                "params": {"username": "user@acme", "password": "bad-pw-9"},
            }
        }
    )
    rows = await records(harness)
    # oldest first: login, malformed, no.such, diag.ping, session.info, failed login, ops login
    shapes = [(r["service"], r["command"], r["success"], r["errorCode"]) for r in reversed(rows)]
    assert shapes[:6] == [
        ("api", "authenticate", True, None),
        ("", "", False, -90010),
        ("no", "such", False, -90001),
        ("diag", "ping", False, -90002),
        ("session", "info", True, None),
        ("api", "authenticate", False, -90004),
    ]
    text = repr(rows)
    for secret in (PW, sid, "tok-123", "bad-pw-9"):
        assert secret not in text
    login = rows[-1]
    assert login["whoami"] == "user@acme" and login["orgKey"] == "acme"
    assert '"password":"***"' in login["request"] and '"sessionId":"***"' in login["response"]
    failed_login = rows[-6]
    assert (failed_login["orgId"], failed_login["whoami"]) == ("", "")
    assert set(login) == {
        "id",
        "ts",
        "execTime",
        "processedBy",
        "orgId",
        "orgKey",
        "whoami",
        "service",
        "command",
        "success",
        "errorCode",
        "transport",
        "clientId",
        "remoteAddr",
        "request",
        "response",
    }
    assert login["ts"] == "2024-03-01T12:00:00.000Z" and login["processedBy"] == "unit"
    assert isinstance(login["execTime"], int) and login["execTime"] > 0


async def test_request_and_response_are_capped_and_marked(tmp_path: Path) -> None:
    h = Harness(tmp_path / "cap.duckdb", log_cap=300)
    try:
        h.identity.create_org("acme")
        h.identity.create_user("ops@acme", "acme", PW, "super-ops")
        await h.call({"1": {"command": "diag.ping", "params": {"blob": "x" * 5000}}})

        class NoParams(BaseModel):
            model_config = ConfigDict(extra="forbid")

        async def big(params: NoParams, ctx: CallContext) -> dict[str, Any]:
            return {"blob": "y" * 5000}

        registry = Registry([[Command("test.big", NoParams, big, needs_session=False)]])
        reply = await Dispatcher(registry, h.services).handle(
            b'{"2":{"command":"test.big"}}', h.connection()
        )
        assert len(reply) > 5000  # the caller gets it all; only the log is capped
        rows = await records(h)
        big_request, big_response = rows[-1], rows[-2]
        assert len(big_request["request"].encode()) <= 300
        assert big_request["request"].endswith("bytes]") and "truncated" in big_request["request"]
        assert len(big_response["response"].encode()) <= 300
        assert big_response["response"].endswith("bytes]") and "yyyy" in big_response["response"]
    finally:
        h.close()


async def test_a_listing_logs_its_count_not_the_records_it_returned(harness: Harness) -> None:
    sid = await harness.login("user@acme", PW)
    for _ in range(3):
        await harness.as_session(sid, p={"command": "diag.ping"})
    reply = await harness.as_session(sid, l={"command": "usage.api.list", "params": {"limit": 2}})
    assert reply["l"]["params"]["count"] == 4 and len(reply["l"]["params"]["result"]) == 2
    logged = next(r for r in await records(harness) if r["command"] == "api.list")
    assert logged["response"] == '{"l":{"success":true,"params":{"count":4,"returned":2}}}'
    failed = await harness.as_session(sid, l={"command": "usage.api.list", "params": {"limit": 0}})
    assert failed["l"]["errorCodes"] == [-90002]
