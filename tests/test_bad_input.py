"""Bad input (SPEC §1, §3, §4): whatever a client sends, every transport answers it in TR50, the
call is logged, and the gateway keeps serving.

One table of hostile payloads runs through both real transports of one gateway (WebSocket, and
MQTT through a real Mosquitto from the shipped config; some cases through the zlib `apiz` topic
too). For each: the reply is the TR50 failure the SPEC's error table calls for, `usage.api.list`
(as a Super-Ops user) shows one record per command with that error code under the caller's
clientId, and the same connection still gets `diag.ping` answered. What the gateway does, case by
case (orjson is the parser):

- not UTF-8, not JSON, NaN/Infinity, a number literal beyond a double (10**400 -> "infinity"),
  JSON that is not an object, nesting past the codec's 64 levels (and past orjson's 1024) and
  more commands than `max_commands` (default 500): root failure -90010;
- over `max_payload` (256 KiB), or an `apiz` payload inflating beyond it: root failure -90011;
- an entry whose `command` is missing or not a string: that entry -90010, the others run;
- `params` not an object: that entry -90002;
- an integer beyond 64 bits that still fits a double (2**64) is read as a float, so a strict int
  param rejects it: -90002, and the log shows the float;
- duplicate keys: the last one wins, for command ids and inside an entry; the earlier ones are
  neither run nor logged;
- a 10 KB command id: SPEC §1 allows any string, so it is answered (and logged) under that id.

The last tests run in-process on the dispatcher: the command cap is a setting, and inputs found
by `make fuzz` (devtools/fuzz.py) that the gateway must survive as well.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from devtools.broker import Broker
from gateway.settings import Settings
from tests.harness import Harness
from tests.support import GatewayThread, MqttClient, Tenants, WsClient, provision

MAX_PAYLOAD = 256 * 1024  # the defaults: this module's gateway runs with them
MAX_COMMANDS = 500
SUPER_OPS = "ops@acme.test"
SESSION = b"@SESSION@"  # replaced by a live Super-Ops session id before sending
PING = b'"p":{"command":"diag.ping"}'
Expected = int | dict[str, int | None]  # a root failure's code, or each id's code (None: success)


@dataclass(frozen=True)
class Case:
    name: str
    payload: bytes
    reply: Expected
    logged: tuple[int | None, ...]  # each record's errorCode, oldest first
    transports: tuple[str, ...] = ("ws", "mqtt")
    request: Any = None  # when set: what the (first) record's `request` holds, as JSON
    says: str | None = None  # when set: the first entry's error message contains it


def device(command: str, params: bytes) -> bytes:
    """One device command (as the Super-Ops user, on an acme thing) with raw JSON params."""
    return (
        b'{"auth":{"sessionId":"@SESSION@"},"1":{"command":"%s","params":{"thingKey":"t-1",%s}}}'
        % (command.encode(), params)
    )


def batch(entries: int, bad: int | None = None) -> bytes:
    """A property.batch of `entries` values; entry `bad` (if any) has a string value."""
    data = b",".join(b'{"value":"x"}' if i == bad else b'{"value":%d}' % i for i in range(entries))
    return device("property.batch", b'"key":"k","data":[%s]' % data)


def nested(depth: int) -> bytes:
    return b'{"1":' * depth + b'{"command":"diag.ping"}' + b"}" * depth


def nested_params(depth: int) -> bytes:
    return b'{"1":{"command":"diag.ping","params":{"x":' + b"[" * depth + b"]" * depth + b"}}}"


def sized(size: int) -> bytes:
    """A ping envelope padded to exactly `size` bytes."""
    head, tail = b'{"big":{"command":"diag.ping","params":{"pad":"', b'"}}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def commands(count: int) -> bytes:
    return b"{" + b",".join(b'"%d":{"command":"diag.ping"}' % i for i in range(count)) + b"}"


LONG_ID = "k" * 10_240
ALL = ("ws", "mqtt", "apiz")
CASES = [
    # -- not UTF-8 ----------------------------------------------------------------------------
    Case("utf8-invalid-byte", b'{"1":{"command":"diag.ping","params":{"x":"\xff\xfe"}}}', -90010,
         (-90010,), ALL),
    Case("utf8-overlong", b'{"1":{"command":"diag.pin\xc1\xa7"}}', -90010, (-90010,)),
    Case("utf8-lone-surrogate", b'{"1":{"command":"diag.ping","x":"\xed\xa0\x80"}}', -90010,
         (-90010,)),
    # -- not JSON -----------------------------------------------------------------------------
    Case("json-truncated", b'{"1":{"command":"diag.ping"', -90010, (-90010,), ALL),
    Case("json-single-quotes", b"{'1': {'command': 'diag.ping'}}", -90010, (-90010,)),
    Case("json-trailing-garbage", b'{"1":{"command":"diag.ping"}} {}', -90010, (-90010,)),
    Case("json-escaped-lone-surrogate", b'{"1":{"command":"diag.ping","x":"\\ud800"}}', -90010,
         (-90010,)),
    # -- JSON, but not an object --------------------------------------------------------------
    Case("json-list", b'[{"command":"diag.ping"}]', -90010, (-90010,), ALL),
    Case("json-number", b"42", -90010, (-90010,)),
    Case("json-string", b'"diag.ping"', -90010, (-90010,)),
    Case("json-null", b"null", -90010, (-90010,)),
    Case("json-empty-object", b"{}", -90010, (-90010,)),
    # -- too deep -----------------------------------------------------------------------------
    Case("nesting-65", nested(65), -90010, (-90010,)),
    Case("nesting-10000", nested(10_000), -90010, (-90010,), ALL),
    Case("nesting-10000-in-params", nested_params(10_000), -90010, (-90010,)),
    # -- numbers ------------------------------------------------------------------------------
    Case("integer-10e400", b'{"1":{"command":"diag.ping","params":{"n":1%s}}}' % (b"0" * 400),
         -90010, (-90010,), ALL),
    Case("integer-beyond-64-bits",
         b'{"auth":{"sessionId":"@SESSION@"},'
         b'"1":{"command":"usage.api.list","params":{"limit":18446744073709551616}}}',
         {"1": -90002}, (-90002,),
         request={"1": {"command": "usage.api.list", "params": {"limit": 1.8446744073709552e19}}}),
    Case("nan", b'{"1":{"command":"diag.ping","params":{"x":NaN}}}', -90010, (-90010,), ALL),
    Case("infinity", b'{"1":{"command":"diag.ping","params":{"x":Infinity}}}', -90010, (-90010,)),
    Case("minus-infinity", b'{"1":{"command":"diag.ping","params":{"x":-Infinity}}}', -90010,
         (-90010,)),
    Case("float-1e999", b'{"1":{"command":"diag.ping","params":{"x":1e999}}}', -90010, (-90010,)),
    # -- duplicate keys: the last one wins ----------------------------------------------------
    Case("duplicate-command-ids", b'{"1":{"command":"no.such"},"1":{"command":"diag.ping"}}',
         {"1": None}, (None,), request={"1": {"command": "diag.ping"}}),
    Case("duplicate-keys-in-entry", b'{"1":{"command":"diag.ping","command":"no.such"}}',
         {"1": -90001}, (-90001,), request={"1": {"command": "no.such"}}),
    # -- bad entries: each fails alone --------------------------------------------------------
    Case("command-not-a-string", b'{"1":{"command":42}}', {"1": -90010}, (-90010,)),
    Case("bad-entries-mixed",
         b'{"a":{"command":null},"b":{"command":["diag.ping"]},"c":{"params":{}},'
         b'"d":"diag.ping","e":{"command":"diag.ping"}}',
         {"a": -90010, "b": -90010, "c": -90010, "d": -90010, "e": None},
         (-90010, -90010, -90010, -90010, None)),
    Case("params-not-an-object",
         b'{"a":{"command":"diag.ping","params":[1]},"b":{"command":"diag.time","params":"x"},'
         b'"c":{"command":"diag.ping","params":5},"d":{"command":"diag.ping","params":true}}',
         {"a": -90002, "b": -90002, "c": -90002, "d": -90002}, (-90002,) * 4),
    # -- big ----------------------------------------------------------------------------------
    Case("id-10kb", b'{"%s":{"command":"diag.ping"}}' % LONG_ID.encode(), {LONG_ID: None},
         (None,), request={LONG_ID: {"command": "diag.ping"}}),
    Case("id-10kb-bad-command", b'{"%s":{"command":7}}' % LONG_ID.encode(), {LONG_ID: -90010},
         (-90010,)),
    Case("payload-over-limit", sized(MAX_PAYLOAD + 1), -90011, (-90011,), ALL),
    Case("thousand-commands", commands(1000), -90010, (-90010,), ALL),
    Case("commands-at-the-cap", commands(MAX_COMMANDS),
         {str(i): None for i in range(MAX_COMMANDS)}, (None,) * MAX_COMMANDS, ("ws",)),
    # -- device data (SPEC §6): each a -90002 naming what is wrong ---------------------------
    Case("property-value-a-string", device("property.publish", b'"key":"k","value":"12"'),
         {"1": -90002}, (-90002,), says="value"),
    Case("property-value-a-boolean", device("property.publish", b'"key":"k","value":true'),
         {"1": -90002}, (-90002,), says="value"),
    Case("property-unknown-param", device("property.publish", b'"key":"k","value":1,"unit":"C"'),
         {"1": -90002}, (-90002,), says="unit"),
    Case("property-ts-before-1970",
         device("property.publish", b'"key":"k","value":1,"ts":"1969-12-31T23:59:59Z"'),
         {"1": -90002}, (-90002,), says="ts"),
    Case("property-ts-after-9000",
         device("property.publish", b'"key":"k","value":1,"ts":"9000-01-01T00:00:01Z"'),
         {"1": -90002}, (-90002,), says="ts"),
    Case("property-key-10kb",
         device("property.publish", b'"key":"%s","value":1' % LONG_ID.encode()),
         {"1": -90002}, (-90002,), says="key"),
    Case("batch-empty", batch(0), {"1": -90002}, (-90002,), says="data"),
    Case("batch-10000-entries", batch(10_000), {"1": -90002}, (-90002,), ALL, says="data"),
    Case("batch-one-bad-entry", batch(10, bad=3), {"1": -90002}, (-90002,), ALL, says="data.3"),
    Case("location-lat-91", device("location.publish", b'"lat":91,"lng":0'),
         {"1": -90002}, (-90002,), says="lat"),
    Case("alarm-state-a-string", device("alarm.publish", b'"key":"a","state":"1"'),
         {"1": -90002}, (-90002,), says="state"),
    Case("attribute-value-a-number", device("attribute.publish", b'"key":"a","value":5'),
         {"1": -90002}, (-90002,), says="value"),
    Case("log-level-7", device("log.publish", b'"msg":"m","level":7'),
         {"1": -90002}, (-90002,), says="level"),
]  # fmt: skip


# -- one gateway for the module -------------------------------------------------------------------
@dataclass
class Served:
    broker: Broker
    thread: GatewayThread
    tenants: Tenants
    ops: WsClient
    session_id: str

    def records(self, **params: Any) -> list[dict[str, Any]]:
        """Usage records (all orgs, oldest first) as the Super-Ops user lists them."""
        reply = self.ops.send(
            {
                "l": {
                    "command": "usage.api.list",
                    "params": {"showAll": True, "limit": 2000, **params},
                }
            }
        )
        assert reply["l"]["success"] is True, reply
        return list(reversed(reply["l"]["params"]["result"] or []))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    db: Path = tmp_path_factory.mktemp("bad-input") / "usage.duckdb"
    tenants = provision(db)
    with Broker() as broker:
        broker.start()
        settings = Settings(
            db=db,
            mqtt_url=broker.url_for_gateway,
            ws_port=0,
            instance_name=f"bad-input-{secrets.token_hex(3)}",
        )
        thread = GatewayThread(settings).start()
        ops = WsClient(thread.ws_url)
        try:
            login = ops.login(SUPER_OPS)
            assert login["auth"]["success"] is True, login
            yield Served(broker, thread, tenants, ops, login["auth"]["params"]["sessionId"])
        finally:
            ops.close()
            thread.stop()


# -- helpers --------------------------------------------------------------------------------------
def assert_reply(expected: Expected, reply: Any) -> None:
    if isinstance(expected, int):
        assert set(reply) == {"success", "errorCodes", "errorMessages"}, reply
        assert reply["success"] is False
        assert reply["errorCodes"] == [expected], reply
        assert len(reply["errorMessages"]) == 1 and reply["errorMessages"][0]
        return
    assert list(reply) == list(expected), reply
    for key, code in expected.items():
        if code is None:
            assert reply[key]["success"] is True, reply[key]
        else:
            assert reply[key]["success"] is False, reply[key]
            assert reply[key]["errorCodes"] == [code], reply[key]


def send_ws(served: Served, payload: bytes) -> tuple[Any, str]:
    """Send on a new connection; returns the reply and the connection's clientId."""
    ws = WsClient(served.thread.ws_url)
    try:
        try:  # UTF-8 goes in a text frame; anything else can only travel as binary
            reply = ws.send(payload.decode())
        except UnicodeDecodeError:
            reply = ws.send(payload)
        marker = f"alive-{secrets.token_hex(6)}"
        assert ws.send({marker: {"command": "diag.ping"}}) == {marker: {"success": True}}
    finally:
        ws.close()
    (ping,) = served.records(searchText=marker)
    client_id: str = ping["clientId"]
    return reply, client_id


def send_mqtt(served: Served, payload: bytes, *, compressed: bool) -> tuple[Any, str]:
    client = MqttClient(served.broker.port, f"bad-{secrets.token_hex(4)}")
    try:
        client.subscribe(f"{'replyz' if compressed else 'reply'}/{client.client_id}/#")
        reply = client.call(payload, compressed=compressed)
        alive = client.call(b"{" + PING + b"}", compressed=compressed)
        assert alive == {"p": {"success": True}}
    finally:
        client.close()
    return reply, client.client_id


# -- the table, through every transport -----------------------------------------------------------
@pytest.mark.parametrize(
    ("case", "transport"),
    [pytest.param(case, t, id=f"{case.name}-{t}") for case in CASES for t in case.transports],
)
def test_bad_input_is_answered_logged_and_survived(
    served: Served, case: Case, transport: str
) -> None:
    payload = case.payload.replace(SESSION, served.session_id.encode())
    if transport == "ws":
        reply, client_id = send_ws(served, payload)
    else:
        reply, client_id = send_mqtt(served, payload, compressed=transport == "apiz")
    assert_reply(case.reply, reply)
    if case.says is not None:
        assert case.says in next(iter(reply.values()))["errorMessages"][0], reply

    records = served.records(clientId=client_id)
    *logged, ping = records  # the last one is the ping that proved the connection alive
    assert (ping["service"], ping["command"], ping["success"]) == ("diag", "ping", True), records
    assert [record["errorCode"] for record in logged] == list(case.logged), logged
    for record in logged:
        assert record["transport"] == ("ws" if transport == "ws" else "mqtt")
        assert record["success"] is (record["errorCode"] is None)
        assert len(record["request"].encode()) <= 64 * 1024
    if isinstance(case.reply, int):  # a payload that is not an envelope: one anonymous record
        (record,) = logged
        assert (record["service"], record["command"]) == ("", "")
        assert json.loads(record["response"]) == reply
    if case.request is not None:
        assert json.loads(logged[0]["request"]) == case.request


def test_apiz_payload_that_is_not_zlib_is_answered_and_logged(served: Served) -> None:
    client = MqttClient(served.broker.port, f"bad-{secrets.token_hex(4)}")
    try:
        client.subscribe(f"replyz/{client.client_id}/#")
        client.publish(f"apiz/{client.client_id}/req", b'{"1":{"command":"diag.ping"}}')
        reply = json.loads(zlib.decompress(client.receive().payload))
        assert client.call(b"{" + PING + b"}", compressed=True) == {"p": {"success": True}}
    finally:
        client.close()
    assert_reply(-90010, reply)
    codes = [record["errorCode"] for record in served.records(clientId=client.client_id)]
    assert codes == [-90010, None]


def test_invalid_utf8_in_a_websocket_text_frame_is_logged(served: Served) -> None:
    """RFC 6455 makes the server close a text frame that is not UTF-8 (1007), so no TR50 reply
    can come back; like the 1009 close of an oversized message, the call must still be logged
    (SPEC §3: every payload received is a record, malformed ones included)."""
    ws = WsClient(served.thread.ws_url)
    try:
        marker = f"before-{secrets.token_hex(6)}"
        assert ws.send({marker: {"command": "diag.ping"}}) == {marker: {"success": True}}
        ws.connection.send(b'{"1":{"command":"diag.ping","x":"\xff"}}', text=True)
        with pytest.raises(ConnectionClosed):
            ws.connection.recv(timeout=10)
        assert ws.connection.close_code == 1007
    finally:
        ws.close()
    (ping,) = served.records(searchText=marker)
    records = served.records(clientId=ping["clientId"])
    assert [record["errorCode"] for record in records] == [None, -90010], records
    # ...and the gateway serves the next connection.
    assert send_ws(served, b"{" + PING + b"}")[0] == {"p": {"success": True}}


def test_one_connection_survives_a_run_of_bad_payloads(served: Served) -> None:
    """Each transport's connection or namespace keeps working after every bad payload in turn."""
    ws = WsClient(served.thread.ws_url)
    client = MqttClient(served.broker.port, f"bad-{secrets.token_hex(4)}")
    try:
        client.subscribe(f"reply/{client.client_id}/#")
        for case in CASES:
            payload = case.payload.replace(SESSION, served.session_id.encode())
            assert_reply(case.reply, ws.send(payload))
            assert_reply(case.reply, client.call(payload))
        assert ws.send({"p": {"command": "diag.ping"}}) == {"p": {"success": True}}
        assert client.call({"p": {"command": "diag.ping"}}) == {"p": {"success": True}}
    finally:
        ws.close()
        client.close()
    logged = served.records(clientId=client.client_id)
    assert len(logged) == sum(len(case.logged) for case in CASES) + 1


# -- in-process: the dispatcher alone --------------------------------------------------------------
PW = "s3cret-pass"


@pytest.fixture
async def harness(backend: dict[str, Any]) -> AsyncIterator[Harness]:
    h = Harness(max_commands=3, **backend)
    h.identity.create_org("acme")
    h.identity.create_user("ops@acme", "acme", PW, "super-ops")
    yield h
    h.close()


async def all_records(h: Harness) -> list[dict[str, Any]]:
    sid = await h.login("ops@acme", PW)
    reply = await h.as_session(
        sid, l={"command": "usage.api.list", "params": {"showAll": True, "limit": 2000}}
    )
    assert reply["l"]["success"], reply
    return list(reversed(reply["l"]["params"]["result"] or []))


async def test_the_command_cap_is_a_setting_and_auth_does_not_count(harness: Harness) -> None:
    three = {str(i): {"command": "diag.ping"} for i in range(3)}
    assert await harness.call(three) == {key: {"success": True} for key in three}
    with_auth = {"auth": {"sessionId": "nope"}, **three}
    assert await harness.call(with_auth) == {key: {"success": True} for key in three}
    four = {str(i): {"command": "diag.ping"} for i in range(4)}
    reply = await harness.call(four)
    assert_reply(-90010, reply)
    assert reply["errorMessages"] == ["malformed envelope: 4 commands, limit 3"]
    codes = [record["errorCode"] for record in await all_records(harness)]
    assert codes[:7] == [None] * 6 + [-90010]


@pytest.mark.parametrize(
    "start",
    ["0001-01-01T00:00:00+01:00", "0001-01-01T00:30:00+14:00", "9999-12-31T23:59:59-14:00"],
)
async def test_timestamps_beyond_the_datetime_range_are_not_internal_errors(
    harness: Harness, start: str
) -> None:
    """Found by make fuzz: RFC 3339 allows these, Python's datetime cannot hold them in UTC."""
    sid = await harness.login("ops@acme", PW)
    for command in ("usage.api.list", "usage.api.activity"):
        reply = await harness.as_session(sid, x={"command": command, "params": {"start": start}})
        outcome = reply["x"]
        assert outcome["success"] is False, (command, outcome)
        assert outcome["errorCodes"] == [-90002], (command, outcome)
        assert f"start: Value error, bad timestamp {start!r}" in outcome["errorMessages"][0]


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"start": "0001-01-02", "timezone": "Etc/GMT-14"}, id="year1-east"),
        pytest.param({"start": "0001-01-01T00:00:00", "end": "0001-01-01T00:00:01",
                      "timezone": "Etc/GMT+12"}, id="year1-west"),
        pytest.param({"start": "0001-01-01T00:00:00", "end": "0001-01-01T00:00:01",
                      "interval": "year", "timezone": "Pacific/Kiritimati"}, id="year1-yearly"),
        pytest.param({"start": "9999-12-31T00:00:00", "end": "9999-12-31T23:59:59",
                      "timezone": "Pacific/Kiritimati"}, id="year9999-east"),
        pytest.param({"start": "9999-12-31T23:59:59.999999Z", "timezone": "Europe/Berlin"},
                     id="year9999-to-now"),
    ],
)  # fmt: skip
async def test_analytics_windows_at_the_edge_of_time_are_not_internal_errors(
    harness: Harness, params: dict[str, Any]
) -> None:
    """Found by make fuzz: bucket boundaries in a zone fall outside datetime's range."""
    sid = await harness.login("ops@acme", PW)
    for command in ("usage.api.activity", "usage.api.times", "usage.api.history"):
        reply = await harness.as_session(sid, x={"command": command, "params": params})
        outcome = reply["x"]
        assert outcome["success"] is False, (command, outcome)
        assert outcome["errorCodes"] == [-90002], (command, outcome)
        assert "out of range: 1970 to 9000" in outcome["errorMessages"][0], (command, outcome)


async def test_a_str_payload_with_lone_surrogates_loses_no_record(harness: Harness) -> None:
    """Found by make fuzz: `handle` accepts str, and a str may hold lone surrogates (what
    `bytes.decode(..., "surrogateescape")` gives for bad UTF-8). The payload is answered -90010,
    but its record must be storable: one unstorable record must not sink the batch it is in."""
    reply = await harness.raw('{"1":{"command":"diag.ping","x":"\udcff"}}')
    assert_reply(-90010, reply)
    assert await harness.raw(b'{"after":{"command":"diag.ping"}}') == {"after": {"success": True}}
    records = await all_records(harness)
    assert [(r["errorCode"], r["command"]) for r in records[:2]] == [(-90010, ""), (None, "ping")]
    assert records[0]["request"].startswith('{"1":{"command":"diag.ping","x":"')


async def test_an_analytics_window_of_millennia_does_not_block_the_gateway(
    harness: Harness,
) -> None:
    """Found by make fuzz: bucketing 1970..8999 in a zone with DST took ~15 s of CPU on the event
    loop (the zone's offset changes are searched step by step), freezing every client of every
    transport meanwhile. Any session, a thing's included, may ask for such a window."""
    sid = await harness.login("ops@acme", PW)
    params = {
        "start": "1970-01-01T00:00:00Z",
        "end": "8999-12-31T00:00:00Z",
        "timezone": "Europe/Berlin",
    }
    started = time.perf_counter()
    call = asyncio.create_task(
        harness.as_session(sid, x={"command": "usage.api.activity", "params": params})
    )
    await asyncio.sleep(0.05)  # the call starts, and this should wake on time
    blocked = time.perf_counter() - started - 0.05
    ping = await harness.raw(b'{"p":{"command":"diag.ping"}}')
    outcome = (await call)["x"]
    took = time.perf_counter() - started
    assert ping == {"p": {"success": True}}
    assert outcome["success"] is False, outcome
    assert outcome["errorCodes"] == [-90002], outcome
    assert outcome["errorMessages"] == ["invalid params: the window is longer than 100 years"]
    assert blocked < 1.0, f"the event loop was blocked for {blocked:.1f} s"
    assert took < 5.0, f"one analytics call took {took:.1f} s"
