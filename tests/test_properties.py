"""Property-based: whatever arrives, the gateway answers in TR50 and keeps going."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import Harness
from tests.support import ws_client

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
command_names = st.sampled_from(
    [
        "diag.ping",
        "diag.time",
        "session.info",
        "session.end",
        "usage.api.list",
        "api.authenticate",
        "no.such",
        "",
    ]
) | st.text(max_size=12)
entries = (
    st.fixed_dictionaries(
        {"command": command_names},
        optional={
            "params": st.dictionaries(st.text(max_size=10), json_values, max_size=4) | json_values
        },
    )
    | json_values
)
envelopes = st.dictionaries(st.text(max_size=6), entries, min_size=1, max_size=6)


def assert_tr50_reply(request: Any, reply: Any) -> None:
    assert isinstance(reply, dict)
    if set(reply) == {"success", "errorCodes", "errorMessages"} and reply["success"] is False:
        assert all(
            isinstance(code, int) and -90099 <= code <= -90001 for code in reply["errorCodes"]
        )
        return
    assert isinstance(request, dict)
    expected = [key for key in request if key != "auth"]
    assert [key for key in reply if key != "auth"] == expected
    if "auth" in reply:
        assert "auth" in request
    for outcome in reply.values():
        assert isinstance(outcome["success"], bool)
        if not outcome["success"]:
            assert len(outcome["errorCodes"]) == len(outcome["errorMessages"]) == 1
            assert outcome["errorCodes"][0] != -90099, outcome


@pytest.fixture(scope="module")
def harness() -> Iterator[tuple[Harness, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as folder:
        h = Harness(Path(folder) / "fuzz.duckdb")
        h.identity.create_org("acme")
        yield h, loop
        h.close()
    loop.close()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=st.binary(max_size=300))
def test_arbitrary_bytes_get_a_tr50_reply(
    harness: tuple[Harness, asyncio.AbstractEventLoop], payload: bytes
) -> None:
    h, loop = harness
    before = h.usage.submitted
    reply = json.loads(loop.run_until_complete(h.dispatcher.handle(payload, h.connection())))
    try:
        request = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        request = None
    assert_tr50_reply(request, reply)
    assert h.usage.submitted > before  # whatever it was, it was logged


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(envelope=envelopes)
def test_arbitrary_envelopes_get_a_reply_per_command(
    harness: tuple[Harness, asyncio.AbstractEventLoop], envelope: dict[str, Any]
) -> None:
    h, loop = harness
    before = h.usage.submitted
    reply = json.loads(
        loop.run_until_complete(h.dispatcher.handle(json.dumps(envelope), h.connection()))
    )
    assert_tr50_reply(envelope, reply)
    commands = [key for key in envelope if key != "auth"]
    auth_is_session_id = isinstance(envelope.get("auth"), dict) and set(envelope["auth"]) == {
        "sessionId"
    }
    logged = h.usage.submitted - before
    assert logged == len(commands) + (1 if "auth" in envelope and not auth_is_session_id else 0)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=st.binary(max_size=200) | envelopes.map(lambda e: json.dumps(e).encode()))
def test_the_websocket_gateway_survives_arbitrary_input(ws_gateway: Any, payload: bytes) -> None:
    with ws_client(ws_gateway.ws_url) as ws:
        ws.connection.send(payload)
        assert isinstance(json.loads(ws.connection.recv(timeout=10)), dict)
        assert ws.send({"p": {"command": "diag.ping"}}) == {"p": {"success": True}}


@pytest.fixture(scope="module")
def ws_gateway() -> Iterator[Any]:
    from gateway.settings import Settings
    from tests.support import GatewayThread

    with tempfile.TemporaryDirectory() as folder:
        thread = GatewayThread(
            Settings(
                db=Path(folder) / "ws.duckdb", mqtt_url="none", ws_port=0, instance_name="fuzz"
            )
        ).start()
        yield thread
        thread.stop()
