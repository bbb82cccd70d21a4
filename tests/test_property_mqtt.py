"""A device publishes properties over a real Mosquitto and reads them back; an operator reads the
same values over WebSocket and sees the device's calls in the usage log."""

from __future__ import annotations

import secrets
from typing import Any

from devtools.broker import Broker
from tests.support import PASSWORD, GatewayThread, MqttClient, Tenants, ws_client


def test_a_device_publishes_over_mqtt_and_an_operator_reads_it_back(
    broker: Broker, gateway: GatewayThread, tenants: Tenants
) -> None:
    app_id, app_token = tenants.apps["acme"]
    thing_key = f"meter-{secrets.token_hex(3)}"
    device = MqttClient(broker.port, f"dev-{secrets.token_hex(4)}")
    try:
        device.subscribe(f"reply/{device.client_id}/#")
        login = {
            "command": "api.authenticate",
            "params": {"appId": app_id, "appToken": app_token, "thingKey": thing_key},
        }
        assert device.call({"auth": login})["auth"]["success"]
        published = device.call(
            {
                "1": {"command": "property.publish", "params": {"key": "temp", "value": 20.5}},
                "2": {
                    "command": "property.publish",
                    "params": {"key": "temp", "value": 21, "ts": "2030-01-01T00:00:00Z"},
                },
                "3": {"command": "property.current", "params": {"key": "temp"}},
            }
        )
    finally:
        device.close()
    assert published["1"] == {"success": True} and published["2"] == {"success": True}
    assert published["3"] == {
        "success": True,
        "params": {"value": 21.0, "ts": "2030-01-01T00:00:00.000Z"},
    }

    with ws_client(gateway.ws_url) as operator:
        user = {"username": tenants.user("acme", "org-admin"), "password": PASSWORD}
        reply: dict[str, Any] = operator.send(
            {
                "auth": {"command": "api.authenticate", "params": user},
                "h": {
                    "command": "property.history",
                    "params": {"thingKey": thing_key, "key": "temp", "split": True},
                },
                "u": {
                    "command": "usage.api.list",
                    "params": {"who": thing_key, "service": "property"},
                },
            }
        )
    assert reply["h"]["params"]["values"] == [21.0, 20.5]
    records = reply["u"]["params"]["result"]
    assert [(r["command"], r["transport"], r["success"]) for r in records] == [
        ("current", "mqtt", True),
        ("publish", "mqtt", True),
        ("publish", "mqtt", True),
    ]
