"""The HTTP transport (SPEC §4) against a real gateway: POST /api, status 200, TR50 in the body."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.support import PASSWORD, GatewayThread, Tenants

SUPER_OPS = "ops@acme.test"


def post(gateway: GatewayThread, body: bytes | dict[str, Any], **headers: str) -> Any:
    assert gateway.gateway is not None and gateway.gateway.http_port
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{gateway.gateway.http_port}/api", data=data, headers=headers
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http only
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        return json.loads(response.read())


def login(gateway: GatewayThread, username: str) -> str:
    params = {"username": username, "password": PASSWORD}
    reply = post(gateway, {"auth": {"command": "api.authenticate", "params": params}})
    assert reply["auth"]["success"] is True, reply
    return str(reply["auth"]["params"]["sessionId"])


@pytest.fixture
def gateway(start_gateway: Callable[..., GatewayThread]) -> GatewayThread:
    return start_gateway(http_port=0, max_payload=32_768)


def test_a_session_id_header_stands_in_for_an_auth_block(
    gateway: GatewayThread, tenants: Tenants
) -> None:
    assert post(gateway, {"1": {"command": "diag.ping"}}) == {"1": {"success": True}}
    session = login(gateway, tenants.user("acme", "org-admin"))
    info = post(gateway, {"i": {"command": "session.info"}}, sessionId=session)
    assert info["i"]["params"]["userName"] == "org-admin@acme.test"
    # nothing binds: without the header the same call has no session
    assert post(gateway, {"i": {"command": "session.info"}})["i"]["errorCodes"] == [-90005]
    assert post(gateway, {"i": {"command": "session.info"}}, sessionId="nope")["i"][
        "errorCodes"
    ] == [-90005]


BAD = [
    ("invalid utf-8", b'{"1":{"command":"diag.ping","x":"\xff"}}', -90010),
    ("invalid json", b'{"1":', -90010),
    ("a list", b"[1]", -90010),
    ("nan", b'{"1":{"command":"diag.ping","params":{"x":NaN}}}', -90010),
    ("deep", b'{"1":' + b"[" * 10_000 + b"]" * 10_000 + b"}", -90010),
    ("over the limit", b'{"1":{"command":"diag.ping","x":"' + b"y" * 40_000 + b'"}}', -90011),
    ("over four times the limit", b'{"x":"' + b"y" * 140_000 + b'"}', -90011),
]


def test_bad_input_gets_a_tr50_failure_is_logged_and_serving_goes_on(
    gateway: GatewayThread,
) -> None:
    for name, body, code in BAD:
        reply = post(gateway, body)
        assert reply["success"] is False and reply["errorCodes"] == [code], (name, reply)
        assert post(gateway, {"p": {"command": "diag.ping"}}) == {"p": {"success": True}}
    session = login(gateway, SUPER_OPS)
    logged = post(
        gateway,
        {
            "l": {
                "command": "usage.api.list",
                "params": {"transport": "http", "hasFailure": True, "showAll": True},
            }
        },
        sessionId=session,
    )["l"]["params"]
    assert sorted(record["errorCode"] for record in logged["result"]) == sorted(
        code for _, _, code in BAD
    )
    assert {record["remoteAddr"] for record in logged["result"]} == {"127.0.0.1"}


def test_only_post_to_api_is_served(gateway: GatewayThread) -> None:
    assert gateway.gateway is not None
    base = f"http://127.0.0.1:{gateway.gateway.http_port}"
    for url, method, status in ((base + "/api", "GET", 405), (base + "/other", "POST", 404)):
        request = urllib.request.Request(url, data=b"{}" if method == "POST" else None)  # noqa: S310
        request.method = method
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310
        assert refused.value.code == status
