"""How the gateway serves its console (gateway/transports/console.py) over real HTTP: the page
and its files, revalidation and gzip, `config.json`, every request logged, no console with
`--no-console`, and the console's own origin admitted by the WebSocket Origin check."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from gateway.transports.console import CHECKOUT, VENDOR, ConsoleAssets
from tests.support import PASSWORD, GatewayThread, Tenants, ws_client


def fetch(
    gateway: GatewayThread, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    assert gateway.gateway is not None
    url = f"http://127.0.0.1:{gateway.gateway.http_port}{path}"
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http only
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def gateway(start_gateway: Callable[..., GatewayThread]) -> GatewayThread:
    return start_gateway(http_port=0)


def test_the_console_is_at_the_root(gateway: GatewayThread) -> None:
    status, headers, body = fetch(gateway, "/")
    assert (status, headers["Content-Type"], body) == (
        200,
        "text/html; charset=utf-8",
        (CHECKOUT / "console" / "index.html").read_bytes(),
    )


def test_the_charting_package_comes_from_node_modules(gateway: GatewayThread) -> None:
    status, _, body = fetch(gateway, "/console/vendor/uPlot.iife.min.js")
    installed = CHECKOUT / "node_modules" / VENDOR["vendor/uPlot.iife.min.js"]
    assert (status, body) == (200, installed.read_bytes())


def test_an_unchanged_file_is_revalidated_with_304(gateway: GatewayThread) -> None:
    _, headers, _ = fetch(gateway, "/console/console.js")
    status, _, body = fetch(gateway, "/console/console.js", {"If-None-Match": headers["ETag"]})
    assert (status, body) == (304, b"")


def test_files_are_gzipped_when_the_browser_accepts_it(gateway: GatewayThread) -> None:
    _, headers, body = fetch(gateway, "/console/console.js", {"Accept-Encoding": "gzip"})
    assert (headers["Content-Encoding"], gzip.decompress(body)) == (
        "gzip",
        (CHECKOUT / "console" / "console.js").read_bytes(),
    )


def test_config_says_where_the_websocket_is(gateway: GatewayThread) -> None:
    _, _, body = fetch(gateway, "/console/config.json")
    assert gateway.gateway is not None
    assert json.loads(body)["websocket"] == {"port": gateway.gateway.ws_port, "path": "/api"}


def test_without_a_websocket_port_the_console_uses_http(
    start_gateway: Callable[..., GatewayThread],
) -> None:
    _, _, body = fetch(start_gateway(http_port=0, ws_port=-1), "/console/config.json")
    assert json.loads(body)["websocket"] is None


def test_an_unknown_file_is_a_json_404(gateway: GatewayThread) -> None:
    status, _, body = fetch(gateway, "/console/../../pyproject.toml")
    assert (status, json.loads(body)["error"]["code"]) == (404, -90008)


def test_no_console_serves_nothing_at_the_root(
    start_gateway: Callable[..., GatewayThread],
) -> None:
    status, _, body = fetch(start_gateway(http_port=0, console=False), "/")
    assert (status, json.loads(body)["error"]["code"]) == (404, -90008)


def test_every_console_request_is_logged(gateway: GatewayThread, tenants: Tenants) -> None:
    for path in ("/", "/console/console.css", "/console/config.json", "/console/nothing"):
        fetch(gateway, path)
    assert gateway.gateway is not None
    gateway.gateway.assembly.storage.usage.flush()
    with ws_client(gateway.ws_url) as client:
        client.login("ops@acme.test", PASSWORD)
        reply = client.send(
            {
                "1": {
                    "command": "usage.api.list",
                    "params": {"service": "rest", "command": "console", "showAll": True},
                }
            }
        )
    logged = [json.loads(record["request"])["path"] for record in reply["1"]["params"]["result"]]
    assert logged == ["/console/nothing", "/console/config.json", "/console/console.css", "/"]


def test_a_missing_package_leaves_the_console_without_charts(tmp_path: Path) -> None:
    assets = ConsoleAssets(packages=tmp_path)
    assert (assets.get("index.html") is not None, assets.get("vendor/uPlot.iife.min.js")) == (
        True,
        None,
    )


# -- the WebSocket admits the console's own origin ------------------------------------------------
@pytest.fixture
def guarded(start_gateway: Callable[..., GatewayThread]) -> GatewayThread:
    """A gateway whose WebSocket admits only https://elsewhere.test (and its own console)."""
    return start_gateway(http_port=0, ws_allowed_origins=["https://elsewhere.test"])


def handshake_status(gateway: GatewayThread, origin: str) -> int:
    try:
        with connect(gateway.ws_url, origin=origin, open_timeout=5) as connection:  # type: ignore[arg-type]
            connection.send(json.dumps({"1": {"command": "diag.ping"}}))
            reply: dict[str, Any] = json.loads(connection.recv(timeout=10))
            return 101 if reply == {"1": {"success": True}} else 0
    except InvalidStatus as refused:
        return refused.response.status_code


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_consoles_origin_passes_the_origin_check(guarded: GatewayThread, scheme: str) -> None:
    assert guarded.gateway is not None
    origin = f"{scheme}://127.0.0.1:{guarded.gateway.http_port}"
    assert handshake_status(guarded, origin) == 101


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:{other}",  # another port of the same host
        "http://evil.test:{http}",  # the console's port on another host
        "http://127.0.0.1:{http}/path",  # no Origin has a path
        "http://127.0.0.1",
    ],
)
def test_other_origins_are_still_refused(guarded: GatewayThread, origin: str) -> None:
    assert guarded.gateway is not None
    http = guarded.gateway.http_port
    assert handshake_status(guarded, origin.format(http=http, other=(http or 0) + 1)) == 403
