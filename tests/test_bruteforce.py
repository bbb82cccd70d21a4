"""api.authenticate's brute-force guard, over a real DuckDB file with a settable clock.

Failures count per username (per appId + thingKey for things) and per client (an isolated MQTT
namespace, or a WebSocket peer address); at the limit every attempt answers -90012 before the
password is checked, until enough failures leave the sliding window. Also: session expiry and
`session.end` where tests/test_dispatcher.py (explicit `sessionId`s, live cache) and
tests/test_websocket.py (`session.end` on a bound connection) do not look: a connection-bound
session expiring, and ended or expired sessions after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from gateway.core.context import Connection
from gateway.core.ratelimit import FailedLogins, RateLimitExceeded
from tests.harness import Harness
from tests.support import PASSWORD, GatewayThread, Tenants, ws_client

PW = "s3cret-pass"
WRONG = "not-the-password"
RATE_LIMITED = -90012


@pytest.fixture
async def harness(backend: dict[str, Any]) -> AsyncIterator[Harness]:
    """Each backend in turn: the guard in memory (a DuckDB file), in PostgreSQL (a DuckLake)."""
    h = Harness(**backend, session_ttl=100)
    provision_harness(h)
    yield h
    h.close()


def provision_harness(h: Harness) -> None:
    h.identity.create_org("acme")
    h.identity.create_user("user@acme", "acme", PW)
    h.identity.create_user("other@acme", "acme", PW)
    h.identity.create_user("ops@acme", "acme", PW, "super-ops")


def mqtt(namespace: str) -> Connection:
    """An isolated-mode MQTT namespace: the client key is the namespace."""
    return Connection("mqtt", namespace, "", binds_sessions=True)


def ws(remote_addr: str, number: int = 1) -> Connection:
    """A WebSocket connection: the client key is the peer address, not the `ws-<n>` id."""
    return Connection("ws", f"ws-{number}", remote_addr, binds_sessions=True)


async def login(
    h: Harness, connection: Connection, username: str, password: str = PW
) -> dict[str, Any]:
    reply = await h.call(
        {
            "auth": {
                "command": "api.authenticate",
                "params": {"username": username, "password": password},
            }
        },
        connection,
    )
    return dict(reply["auth"])


def code(outcome: dict[str, Any]) -> int | None:
    return None if outcome["success"] else int(outcome["errorCodes"][0])


async def fail_from_many_clients(h: Harness, username: str, times: int) -> None:
    """`times` wrong passwords for `username`, each from its own client."""
    for n in range(times):
        assert code(await login(h, mqtt(f"spread-{username}-{n}"), username, WRONG)) == -90004


async def usage_records(h: Harness, **params: Any) -> list[dict[str, Any]]:
    """Every record, as Super-Ops sees them, read from a client that has failed nothing."""
    fresh = mqtt("auditor")
    assert (await login(h, fresh, "ops@acme"))["success"]
    reply = await h.call(
        {"l": {"command": "usage.api.list", "params": {"showAll": True, "limit": 2000, **params}}},
        fresh,
    )
    assert reply["l"]["success"], reply
    return reply["l"]["params"]["result"] or []


async def test_ten_failures_lock_a_username_even_for_the_right_password(harness: Harness) -> None:
    await fail_from_many_clients(harness, "user@acme", 10)
    refused = await login(harness, mqtt("fresh"), "user@acme", PW)
    assert refused == {
        "success": False,
        "errorCodes": [RATE_LIMITED],
        "errorMessages": ["rate limited: too many failed logins; retry in 300 s"],
    }
    # Other users, even from the same clients, are not affected.
    assert (await login(harness, mqtt("spread-user@acme-0"), "other@acme"))["success"]

    harness.clock.advance(seconds=299)
    refused = await login(harness, mqtt("fresh"), "user@acme", PW)
    assert refused["errorMessages"] == ["rate limited: too many failed logins; retry in 1 s"]
    harness.clock.advance(seconds=1)  # the window has passed
    assert (await login(harness, mqtt("fresh"), "user@acme", PW))["success"]


async def test_the_window_slides_and_refusals_do_not_extend_it(harness: Harness) -> None:
    await fail_from_many_clients(harness, "user@acme", 5)
    harness.clock.advance(seconds=100)
    for n in range(5):
        await login(harness, mqtt(f"late-{n}"), "user@acme", WRONG)
    for _ in range(4):  # a client retrying while locked out stays refused...
        assert code(await login(harness, mqtt("fresh"), "user@acme", WRONG)) == RATE_LIMITED
        harness.clock.advance(seconds=50)
    # ...but its refused attempts were not failures: at 300 s the first five have aged out.
    assert harness.clock.now == datetime(2024, 3, 1, 12, 5, 0)
    assert (await login(harness, mqtt("fresh"), "user@acme", PW))["success"]
    # Five failures (100 s old) are still inside the window: five more lock again.
    for n in range(5):
        await login(harness, mqtt(f"again-{n}"), "user@acme", WRONG)
    refused = await login(harness, mqtt("fresh"), "user@acme", PW)
    assert refused["errorMessages"] == ["rate limited: too many failed logins; retry in 100 s"]


async def test_a_success_clears_no_failure(harness: Harness) -> None:
    await fail_from_many_clients(harness, "user@acme", 9)
    assert (await login(harness, mqtt("fresh"), "user@acme"))["success"]
    await login(harness, mqtt("one-more"), "user@acme", WRONG)
    assert code(await login(harness, mqtt("fresh"), "user@acme")) == RATE_LIMITED

    # Per client: an attacker's own valid account does not reset the client's counter.
    attacker = mqtt("attacker")
    for n in range(9):
        assert code(await login(harness, attacker, f"victim-{n}@acme", WRONG)) == -90004
    assert (await login(harness, attacker, "other@acme"))["success"]
    assert code(await login(harness, attacker, "victim-9@acme", WRONG)) == -90004
    assert code(await login(harness, attacker, "other@acme")) == RATE_LIMITED


@pytest.mark.parametrize(
    ("same_client", "other_client"),
    [
        (mqtt("dev-a"), mqtt("dev-b")),
        # WebSocket: per peer address, whatever the connection.
        (ws("10.0.0.1", 2), ws("10.0.0.2", 1)),
    ],
    ids=["mqtt-namespace", "ws-address"],
)
async def test_ten_failures_from_one_client_lock_that_client(
    harness: Harness, same_client: Connection, other_client: Connection
) -> None:
    first = ws("10.0.0.1", 1) if same_client.transport == "ws" else same_client
    for n in range(10):
        assert code(await login(harness, first, f"nobody-{n}@acme", WRONG)) == -90004
    # A fresh (and real) username from the same client is refused without a password check...
    assert code(await login(harness, same_client, "user@acme")) == RATE_LIMITED
    # ...but not from another client.
    assert (await login(harness, other_client, "user@acme"))["success"]
    harness.clock.advance(seconds=300)
    assert (await login(harness, same_client, "user@acme"))["success"]


async def test_classic_mqtt_has_no_client_key(harness: Harness) -> None:
    """A classic-mode topic is chosen per message and identifies no one: only usernames count."""
    classic = Connection("mqtt", "17", "", binds_sessions=False)
    for n in range(10):
        assert code(await login(harness, classic, f"nobody-{n}@acme", WRONG)) == -90004
    assert (await login(harness, classic, "user@acme"))["success"]


async def test_usernames_are_counted_case_folded(harness: Harness) -> None:
    for n, spelling in enumerate(["User@Acme", "USER@ACME", "user@acme"] * 3 + ["uSeR@aCmE"]):
        await login(harness, mqtt(f"c-{n}"), spelling, WRONG)
    assert code(await login(harness, mqtt("fresh"), "user@acme")) == RATE_LIMITED


async def test_settings_are_honoured(backend: dict[str, Any]) -> None:
    h = Harness(**backend, auth_max_failures=3, auth_failure_window_s=60)
    try:
        provision_harness(h)
        await fail_from_many_clients(h, "user@acme", 2)
        assert (await login(h, mqtt("fresh"), "user@acme"))["success"]
        await login(h, mqtt("third"), "user@acme", WRONG)
        refused = await login(h, mqtt("fresh"), "user@acme")
        assert refused["errorMessages"] == ["rate limited: too many failed logins; retry in 60 s"]
        h.clock.advance(seconds=60)
        assert (await login(h, mqtt("fresh"), "user@acme"))["success"]
    finally:
        h.close()


async def test_thing_logins_count_per_app_and_thing_key(harness: Harness) -> None:
    app_id, app_token = harness.identity.create_app("acme", "fleet")

    async def thing_login(connection: Connection, thing_key: str, token: str) -> dict[str, Any]:
        params = {"appId": app_id, "appToken": token, "thingKey": thing_key}
        reply = await harness.call(
            {"auth": {"command": "api.authenticate", "params": params}}, connection
        )
        return dict(reply["auth"])

    for n in range(10):
        assert code(await thing_login(mqtt(f"t-{n}"), "truck-7", app_token + "x")) == -90004
    assert code(await thing_login(mqtt("truck-7"), "truck-7", app_token)) == RATE_LIMITED
    # One device with a stale token does not lock out its fleet.
    assert (await thing_login(mqtt("truck-8"), "truck-8", app_token))["success"]
    # Things share the per-client counter with users.
    for n in range(10):
        await thing_login(mqtt("garage"), f"car-{n}", "bad-token")
    assert code(await login(harness, mqtt("garage"), "user@acme")) == RATE_LIMITED
    harness.clock.advance(seconds=300)
    assert (await thing_login(mqtt("truck-7"), "truck-7", app_token))["success"]


async def test_refused_attempts_are_usage_records(harness: Harness) -> None:
    client = mqtt("dev-a")
    entries = {
        str(n): {
            "command": "api.authenticate",
            "params": {"username": "user@acme", "password": PW if n == 11 else WRONG},
        }
        for n in range(12)
    }
    reply = await harness.call(entries, client)
    # One envelope cannot buy more guesses than the limit: the last two are not even checked.
    assert [code(reply[str(n)]) for n in range(12)] == [-90004] * 10 + [RATE_LIMITED] * 2

    records = await usage_records(harness, clientId="dev-a")
    assert len(records) == 12
    refused = [r for r in records if r["errorCode"] == RATE_LIMITED]
    assert len(refused) == 2
    for record in refused:
        assert (record["service"], record["command"], record["success"]) == (
            "api",
            "authenticate",
            False,
        )
        assert (record["whoami"], record["orgId"], record["transport"]) == ("", "", "mqtt")
        assert PW not in record["request"] and '"password":"***"' in record["request"]
        assert "retry in 300 s" in record["response"]
    assert sum(r["errorCode"] == -90004 for r in records) == 10


async def test_concurrent_attempts_cannot_exceed_the_limit(harness: Harness) -> None:
    """Attempts are counted before the slow password check, so a burst gets `limit` guesses."""
    replies = await asyncio.gather(
        *(login(harness, mqtt(f"burst-{n}"), "user@acme", WRONG) for n in range(25))
    )
    assert sorted(code(reply) or 0 for reply in replies) == [RATE_LIMITED] * 15 + [-90004] * 10


async def test_a_lockout_is_logged_once_without_the_username(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tr50gw.auth")
    for n in range(12):
        await login(harness, mqtt("dev-a"), "user@acme", f"guess-{n}")
    locked = [r.getMessage() for r in caplog.records if r.name == "tr50gw.auth"]
    assert len(locked) == 2, locked  # the username and the client, once each
    assert any(m.startswith("login locked for user #") for m in locked)
    assert "login locked for mqtt client dev-a: 10 failed logins within 300 s" in locked
    assert "user@acme" not in caplog.text and "guess-" not in caplog.text


def test_memory_is_bounded() -> None:
    start = datetime(2024, 1, 1)
    window = timedelta(seconds=300)
    limiter = FailedLogins(max_keys=100)

    def begin(key: str, at: datetime) -> object:
        return limiter.begin([key], at, limit=3, window=window)

    for n in range(250):
        begin(f"k{n}", start)
    assert len(limiter) == 100  # the 150 oldest keys were forgotten
    assert limiter.failures("k0", start, window=window) == 0
    assert limiter.failures("k249", start, window=window) == 1
    # Keys whose failures have all aged out are swept on the next attempt.
    begin("late", start + window)
    assert len(limiter) == 1
    # A key never holds more than `limit` stamps; refused attempts add none.
    for _ in range(10):
        begin("late", start + window)
    assert limiter.failures("late", start + window, window=window) == 3
    refused = limiter.blocked(["late"], start + window, limit=3, window=window)
    assert refused == RateLimitExceeded("late", 300)


# -- session expiry and session.end, where tests/test_dispatcher.py does not look --------------


async def test_a_connection_bound_session_expires(harness: Harness) -> None:
    connection = mqtt("dev-a")
    assert (await login(harness, connection, "user@acme"))["success"]
    info: dict[str, Any] = {"i": {"command": "session.info"}}
    harness.clock.advance(seconds=99)
    assert (await harness.call(info, connection))["i"]["success"]  # slides: 100 s from now
    harness.clock.advance(seconds=100)
    assert (await harness.call(info, connection))["i"]["errorCodes"] == [-90005]
    assert connection.session is None  # unbound, not merely refused
    assert (await login(harness, connection, "user@acme"))["success"]


async def test_ended_and_expired_sessions_stay_dead_after_a_restart(harness: Harness) -> None:
    info: dict[str, Any] = {"i": {"command": "session.info"}}
    ended = await harness.login("user@acme", PW)
    assert (await harness.as_session(ended, e={"command": "session.end"}))["e"]["success"]
    expired = await harness.login("user@acme", PW)
    harness.clock.advance(seconds=100)
    harness.restart()  # the in-memory session cache is lost
    for token in (ended, expired):
        assert (await harness.as_session(token, **info))["i"]["errorCodes"] == [-90005]


# -- end to end ---------------------------------------------------------------------------------


def test_rate_limited_on_the_wire(
    tenants: Tenants, start_gateway: Callable[..., GatewayThread]
) -> None:
    gateway = start_gateway(auth_max_failures=3)
    user = tenants.user("acme")
    with ws_client(gateway.ws_url) as client:
        for _ in range(3):
            assert client.login(user, "wrong")["auth"]["errorCodes"] == [-90004]
        assert client.login(user, PASSWORD) == {
            "auth": {
                "success": False,
                "errorCodes": [RATE_LIMITED],
                "errorMessages": ["rate limited: too many failed logins; retry in 300 s"],
            }
        }
    # The peer address is the client key: a new connection from it is refused as well.
    with ws_client(gateway.ws_url) as client:
        reply = client.login(tenants.user("globex"), PASSWORD)
        assert reply["auth"]["errorCodes"] == [RATE_LIMITED]
