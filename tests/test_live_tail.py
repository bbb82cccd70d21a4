"""Live tail (SPEC §7.2) over a real gateway's WebSocket: usage.api.subscribe pushes new records
that match the filters and the session's tenancy; a subscriber that does not read loses the
oldest and is told how many; unsubscribe and closing end it."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import PASSWORD, GatewayThread, Tenants, WsClient, ws_client

ORG_ADMIN = "org-admin@acme.test"


@pytest.fixture
def gateway(start_gateway: Callable[..., GatewayThread]) -> GatewayThread:
    return start_gateway(http_port=0)


@pytest.fixture
def watcher(gateway: GatewayThread, tenants: Tenants) -> Iterator[WsClient]:
    """An org-admin of acme with a connection of its own for the notifications."""
    with ws_client(gateway.ws_url) as client:
        client.login(ORG_ADMIN)
        yield client


def send(client: WsClient, envelope: dict[str, Any]) -> dict[str, Any]:
    """The reply to `envelope`, past any notification pushed on the connection meanwhile."""
    client.connection.send(json.dumps(envelope))
    while True:
        message: dict[str, Any] = json.loads(client.connection.recv(timeout=10))
        if "notify" not in message:
            return message


def subscribe(client: WsClient, **params: Any) -> str:
    reply = send(client, {"s": {"command": "usage.api.subscribe", "params": params}})
    assert reply["s"]["success"] is True, reply
    return str(reply["s"]["params"]["subscriptionId"])


def next_notification(client: WsClient) -> dict[str, Any]:
    message = json.loads(client.connection.recv(timeout=10))
    assert message["notify"]["command"] == "usage.api.records", message
    params: dict[str, Any] = message["notify"]["params"]
    return params


def records_until(client: WsClient, marker: str) -> list[dict[str, Any]]:
    """Every pushed record up to the one whose request holds `marker` (sent last)."""
    records: list[dict[str, Any]] = []
    while not any(marker in record["request"] for record in records):
        records += next_notification(client)["result"]
    return records


def call(gateway: GatewayThread, username: str, envelope: dict[str, Any]) -> None:
    with ws_client(gateway.ws_url) as client:
        client.login(username)
        client.send(envelope)


def test_a_new_call_is_pushed_to_the_subscriber(gateway: GatewayThread, watcher: WsClient) -> None:
    subscription = subscribe(watcher, service="diag")
    call(gateway, "user@acme.test", {"marker-1": {"command": "diag.ping"}})
    params = next_notification(watcher)
    (record,) = params["result"]
    assert (params["subscriptionId"], record["whoami"], params["dropped"]) == (
        subscription,
        "user@acme.test",
        0,
    )


def test_another_orgs_calls_are_not_pushed(gateway: GatewayThread, watcher: WsClient) -> None:
    subscribe(watcher, service="diag")
    call(gateway, "user@globex.test", {"theirs": {"command": "diag.ping"}})
    call(gateway, "user@acme.test", {"marker-2": {"command": "diag.ping"}})
    assert {r["orgKey"] for r in records_until(watcher, "marker-2")} == {"acme"}


def test_the_filters_narrow_what_is_pushed(gateway: GatewayThread, watcher: WsClient) -> None:
    subscribe(watcher, hasFailure=True)
    call(
        gateway, "user@acme.test", {"ok": {"command": "diag.ping"}, "marker-3": {"command": "x.y"}}
    )
    assert [r["service"] for r in records_until(watcher, "marker-3")] == ["x"]


def test_super_ops_sees_every_org_only_with_show_all(
    gateway: GatewayThread, tenants: Tenants
) -> None:
    with ws_client(gateway.ws_url) as ops:
        ops.login("ops@acme.test")
        subscribe(ops, service="diag", showAll=True)
        call(gateway, "user@globex.test", {"marker-4": {"command": "diag.ping"}})
        assert {r["orgKey"] for r in records_until(ops, "marker-4")} == {"globex"}


def test_show_all_without_super_ops_is_refused(watcher: WsClient) -> None:
    reply = watcher.send({"s": {"command": "usage.api.subscribe", "params": {"showAll": True}}})
    assert reply["s"]["errorCodes"] == [-90003]


def test_a_thing_sees_only_its_own_calls(gateway: GatewayThread, tenants: Tenants) -> None:
    app_id, token = tenants.apps["acme"]
    login = {"appId": app_id, "appToken": token, "thingKey": "meter-7"}
    with ws_client(gateway.ws_url) as thing:
        thing.send({"auth": {"command": "api.authenticate", "params": login}})
        subscribe(thing)
        call(gateway, "user@acme.test", {"not-mine": {"command": "diag.ping"}})
        send(thing, {"marker-5": {"command": "diag.ping"}})
        assert {r["whoami"] for r in records_until(thing, "marker-5")} == {"meter-7"}


def test_a_time_window_is_refused(watcher: WsClient) -> None:
    reply = watcher.send({"s": {"command": "usage.api.subscribe", "params": {"last": "1h"}}})
    assert reply["s"]["errorCodes"] == [-90002]


def test_without_a_websocket_there_is_nothing_to_push_on(
    gateway: GatewayThread, tenants: Tenants
) -> None:
    assert gateway.gateway is not None

    login = {"username": ORG_ADMIN, "password": PASSWORD}
    body = json.dumps(
        {
            "auth": {"command": "api.authenticate", "params": login},
            "s": {"command": "usage.api.subscribe"},
        }
    ).encode()
    url = f"http://127.0.0.1:{gateway.gateway.http_port}/api"
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as response:
        reply = json.loads(response.read())
    assert reply["s"]["errorCodes"] == [-90002]


def test_unsubscribe_ends_a_subscription_once(watcher: WsClient) -> None:
    subscription = subscribe(watcher)
    ended = [
        send(
            watcher,
            {"u": {"command": "usage.api.unsubscribe", "params": {"subscriptionId": subscription}}},
        )["u"]["params"]["ended"]
        for _ in range(2)
    ]
    assert ended == [1, 0]


def test_another_connections_subscription_cannot_be_ended(
    gateway: GatewayThread, watcher: WsClient
) -> None:
    subscription = subscribe(watcher)
    with ws_client(gateway.ws_url) as other:
        other.login(ORG_ADMIN)
        reply = other.send(
            {"u": {"command": "usage.api.unsubscribe", "params": {"subscriptionId": subscription}}}
        )
    assert reply["u"]["params"]["ended"] == 0


def test_closing_the_connection_ends_its_subscriptions(
    gateway: GatewayThread, tenants: Tenants
) -> None:
    assert gateway.gateway is not None
    tail = gateway.gateway.assembly.services.tail
    with ws_client(gateway.ws_url) as client:
        client.login(ORG_ADMIN)
        subscribe(client)
        subscribe(client, service="diag")
        during = len(tail)
    deadline = time.monotonic() + 10  # the server handles the close after the client sends it
    while len(tail) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (during, len(tail)) == (2, 0)


def test_a_subscriber_that_does_not_read_loses_the_oldest_and_is_told(
    gateway: GatewayThread, watcher: WsClient
) -> None:
    """More records in one interval than a subscription holds (10,000): every call is still
    answered at once, and what was not pushed is counted."""
    subscribe(watcher, service="diag")
    sent = 0
    with ws_client(gateway.ws_url) as caller:
        caller.login("user@acme.test")
        for batch in range(24):
            envelope = {f"{batch}-{n}": {"command": "diag.ping"} for n in range(500)}
            reply = caller.send(envelope)
            assert all(entry["success"] for entry in reply.values())
            sent += len(envelope)
        caller.send({"marker-6": {"command": "diag.ping"}})
        sent += 1
    pushed = dropped = 0
    while True:
        params = next_notification(watcher)
        pushed += len(params["result"])
        dropped += params["dropped"]
        if any("marker-6" in record["request"] for record in params["result"]):
            break
    assert (dropped > 0, pushed + dropped) == (True, sent)
