"""The WebSocket transport (SPEC §4) against one real gateway on a free port, through real sockets.

One gateway (no MQTT) serves the whole module; tests tell their own calls apart in the shared
usage log by a unique command id in the first envelope of each connection, whose record names the
connection's clientId.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from gateway.settings import Settings
from tests.support import PASSWORD, GatewayThread, Tenants, WsClient, provision, ws_client

DEFAULT_LIMIT = 256 * 1024
SUPER_OPS = "ops@acme.test"
WIRE_FIELDS = {
    "id", "ts", "execTime", "processedBy", "orgId", "orgKey", "whoami", "service", "command",
    "success", "errorCode", "transport", "clientId", "remoteAddr", "request", "response",
}  # fmt: skip
TS_PATTERN = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclass
class Served:
    thread: GatewayThread
    tenants: Tenants

    @property
    def url(self) -> str:
        return self.thread.ws_url

    @property
    def instance_name(self) -> str:
        return self.thread.settings.instance_name


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    db: Path = tmp_path_factory.mktemp("ws") / "usage.duckdb"
    tenants = provision(db)
    settings = Settings(
        db=db, mqtt_url="none", ws_port=0, instance_name=f"ws-test-{secrets.token_hex(3)}"
    )
    thread = GatewayThread(settings).start()
    yield Served(thread, tenants)
    thread.stop()


# -- helpers ---------------------------------------------------------------------------------------
def login(ws: WsClient, username: str) -> str:
    reply = ws.login(username)
    assert reply["auth"]["success"] is True, reply
    session_id: str = reply["auth"]["params"]["sessionId"]
    return session_id


def mark(ws: WsClient) -> str:
    """Send a ping under a unique command id; the id finds this connection's records later."""
    marker = f"mark-{secrets.token_hex(6)}"
    assert ws.send({marker: {"command": "diag.ping"}}) == {marker: {"success": True}}
    return marker


def all_records(url: str, **params: Any) -> list[dict[str, Any]]:
    """Every usage record (all orgs) as a Super-Ops user sees it."""
    with ws_client(url) as ops:
        login(ops, SUPER_OPS)
        reply = ops.send(
            {
                "l": {
                    "command": "usage.api.list",
                    "params": {"showAll": True, "limit": 2000, **params},
                }
            }
        )
    assert reply["l"]["success"] is True, reply
    records: list[dict[str, Any]] = reply["l"]["params"]["result"] or []
    return records


def client_id_of(marker: str, records: list[dict[str, Any]]) -> str:
    found = [r for r in records if marker in r["request"]]
    assert len(found) == 1, found
    client_id: str = found[0]["clientId"]
    return client_id


def sized_envelope(size: int) -> str:
    """A valid ping envelope padded to exactly `size` bytes of UTF-8."""
    head, tail = '{"big":{"command":"diag.ping","params":{"pad":"', '"}}}'
    return head + "x" * (size - len(head) - len(tail)) + tail


def assert_root_failure(reply: Any, code: int) -> None:
    assert set(reply) == {"success", "errorCodes", "errorMessages"}, reply
    assert reply["success"] is False
    assert reply["errorCodes"] == [code]
    assert len(reply["errorMessages"]) == 1 and reply["errorMessages"][0]


# -- 1. sessions bound to the connection -----------------------------------------------------------
def test_authenticate_binds_the_session_to_its_connection(served: Served) -> None:
    user = served.tenants.user("acme")
    with ws_client(served.url) as first, ws_client(served.url) as second:
        session_id = login(first, user)
        info = first.send({"i": {"command": "session.info"}})
        assert info["i"]["success"] is True, info
        assert info["i"]["params"]["whoAmI"] == user
        assert info["i"]["params"]["orgKey"] == "acme"

        other = second.send({"i": {"command": "session.info"}})
        assert other["i"]["success"] is False
        assert other["i"]["errorCodes"] == [-90005]

        assert first.send({"e": {"command": "session.end"}}) == {"e": {"success": True}}
        after = first.send({"i": {"command": "session.info"}})
        assert after["i"]["success"] is False
        assert after["i"]["errorCodes"] == [-90005]

        # Ended, not merely unbound: the id opens nothing on any connection.
        reused = second.send({"auth": {"sessionId": session_id}, "i": {"command": "session.info"}})
        assert reused["i"]["errorCodes"] == [-90005]


# -- 2. auth by sessionId, per-command failures, key order -----------------------------------------
def test_session_id_from_another_connection_and_per_command_failures(served: Served) -> None:
    user = served.tenants.user("globex")
    with ws_client(served.url) as first, ws_client(served.url) as second:
        session_id = login(first, user)
        reply = second.send({"auth": {"sessionId": session_id}, "i": {"command": "session.info"}})
        assert reply["i"]["success"] is True, reply
        assert reply["i"]["params"]["whoAmI"] == user
        assert reply["i"]["params"]["orgKey"] == "globex"

    with ws_client(served.url) as third:
        envelope = {
            "auth": {"sessionId": "unknown-" + secrets.token_urlsafe(32)},
            "z": {"command": "session.info"},
            "a": {"command": "diag.ping"},
            "m": {"command": "usage.api.list"},
        }
        reply = third.send(envelope)
    assert [key for key in reply if key != "auth"] == ["z", "a", "m"]
    assert reply["z"]["success"] is False and reply["z"]["errorCodes"] == [-90005]
    assert reply["a"] == {"success": True}
    assert reply["m"]["success"] is False and reply["m"]["errorCodes"] == [-90005]


# -- 3. message size limits ------------------------------------------------------------------------
def test_oversized_messages_answer_or_close_and_are_logged(served: Served) -> None:
    with ws_client(served.url) as near:
        near_marker = mark(near)
        reply = near.send(sized_envelope(DEFAULT_LIMIT + 1))
        assert_root_failure(reply, -90011)
        assert near.send({"p": {"command": "diag.ping"}}) == {"p": {"success": True}}
        # Exactly at the limit the envelope is dispatched (and its stray param rejected).
        at_limit = near.send(sized_envelope(DEFAULT_LIMIT))
        assert at_limit["big"]["errorCodes"] == [-90002], at_limit

    far = WsClient(served.url)
    try:
        far_marker = mark(far)
        with pytest.raises(ConnectionClosed):
            far.connection.send(sized_envelope(4 * DEFAULT_LIMIT + 1))
            far.connection.recv(timeout=10)
        with pytest.raises(ConnectionClosed):
            far.connection.recv(timeout=10)
        assert far.connection.close_code == 1009
    finally:
        far.close()

    records = all_records(served.url)
    near_id, far_id = client_id_of(near_marker, records), client_id_of(far_marker, records)
    failures = all_records(served.url, hasFailure=True)
    too_large = [r for r in failures if r["errorCode"] == -90011]
    near_records = [r for r in too_large if r["clientId"] == near_id]
    far_records = [r for r in too_large if r["clientId"] == far_id]
    assert len(near_records) == 1, too_large
    assert len(far_records) == 1, too_large
    for record in (*near_records, *far_records):
        assert record["success"] is False
        assert record["transport"] == "ws"
        assert json.loads(record["response"])["errorCodes"] == [-90011]


# -- 4. binary frames ------------------------------------------------------------------------------
def test_binary_frames_carry_utf8_json(served: Served) -> None:
    with ws_client(served.url) as ws:
        assert ws.send('{"é": {"command": "diag.ping"}}'.encode()) == {"é": {"success": True}}
        reply = ws.send(b'{"1": {"command": "diag.ping", "params": {"x": "\xff\xfe"}}}')
        assert_root_failure(reply, -90010)
        assert ws.send(b'{"2": {"command": "diag.ping"}}') == {"2": {"success": True}}


# -- 5. only /api ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/apix", "/api/extra", "/other"])
def test_paths_other_than_api_are_refused(served: Served, path: str) -> None:
    url = served.url.removesuffix("/api") + path
    with pytest.raises(InvalidStatus) as refused, connect(url, open_timeout=5):
        pass
    assert refused.value.response.status_code == 404


def test_api_path_with_a_query_string_is_served(served: Served) -> None:
    with ws_client(served.url + "?client=x") as ws:
        assert ws.send({"1": {"command": "diag.ping"}}) == {"1": {"success": True}}


# -- 6. pipelining ---------------------------------------------------------------------------------
def test_pipelined_messages_are_answered_in_order(served: Served) -> None:
    with ws_client(served.url) as ws:
        login(ws, served.tenants.user("acme"))
        # Slow (a DuckDB read) and fast commands interleaved: replies must still keep order.
        commands = ["usage.api.list", "diag.ping", "session.info", "diag.time", "nope.nothing"]
        keys = [f"req-{index}" for index in range(50)]
        for index, key in enumerate(keys):
            ws.connection.send(json.dumps({key: {"command": commands[index % len(commands)]}}))
        replies = [json.loads(ws.connection.recv(timeout=10)) for _ in keys]
    assert [next(iter(reply)) for reply in replies] == keys
    assert all(len(reply) == 1 for reply in replies)
    outcomes = [reply[key]["success"] for reply, key in zip(replies, keys, strict=True)]
    assert outcomes == [index % len(commands) != 4 for index in range(50)]


# -- 7. what the usage log records for WebSocket calls --------------------------------------------
def test_ws_calls_are_logged_with_the_wire_fields(served: Served) -> None:
    user = served.tenants.user("acme")
    with ws_client(served.url) as ws:
        marker = mark(ws)
        login(ws, user)
        assert ws.send({"i": {"command": "session.info"}})["i"]["success"] is True
        assert ws.send({"x": {"command": "nope.nothing"}})["x"]["errorCodes"] == [-90001]

    records = all_records(served.url)
    client_id = client_id_of(marker, records)
    mine = [r for r in records if r["clientId"] == client_id]
    assert client_id.startswith("ws-")
    assert sorted((r["service"], r["command"]) for r in mine) == [
        ("api", "authenticate"), ("diag", "ping"), ("nope", "nothing"), ("session", "info"),
    ]  # fmt: skip
    for record in mine:
        assert set(record) == WIRE_FIELDS, record
        assert record["transport"] == "ws"
        assert record["remoteAddr"] == "127.0.0.1"
        assert TS_PATTERN.match(record["ts"]), record["ts"]
        assert type(record["execTime"]) is int and record["execTime"] > 0
        assert record["processedBy"] == served.instance_name
        assert record["success"] is (record["errorCode"] is None)
    by_command = {r["command"]: r for r in mine}
    assert by_command["ping"]["whoami"] == "" and by_command["ping"]["orgId"] == ""
    for command in ("authenticate", "info", "nothing"):
        assert by_command[command]["whoami"] == user
        assert by_command[command]["orgId"] == served.tenants.org_ids["acme"]
        assert by_command[command]["orgKey"] == "acme"
    assert by_command["nothing"]["errorCode"] == -90001
    assert PASSWORD not in by_command["authenticate"]["request"]
    assert json.loads(by_command["info"]["request"]) == {"i": {"command": "session.info"}}
