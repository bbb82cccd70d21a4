"""A device publishes properties over a real Mosquitto and reads them back; an operator reads the
same values over WebSocket and sees the device's calls in the usage log."""

from __future__ import annotations

import json
import secrets
from typing import Any

from devtools.broker import Broker
from tests.support import PASSWORD, GatewayThread, MqttClient, Tenants, run_client, ws_client


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


def rr(broker: Broker, client_id: str, envelope: dict[str, Any]) -> Any:
    """One request/response with Mosquitto's own `mosquitto_rr`, as a shell-script device would:
    MQTT 3.1.1, the isolated-mode namespace as client id, the reply on the derived topic."""
    done = run_client(
        "mosquitto_rr", broker.port, "-V", "mqttv311", "-i", client_id, "-q", "1", "-W", "10",
        "-t", f"api/{client_id}/1", "-e", f"reply/{client_id}/1", "-m", json.dumps(envelope),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_mosquitto_rr_device_publishes_everything_and_reads_it_back(
    broker: Broker, gateway: GatewayThread, tenants: Tenants
) -> None:
    """Three separate connections of one namespace: the session opened by the first is bound to
    the namespace, so the next ones need no auth block (SPEC §4)."""
    app_id, app_token = tenants.apps["acme"]
    thing_key = f"rr-{secrets.token_hex(3)}"
    namespace = f"dev-{secrets.token_hex(4)}"
    login = {"appId": app_id, "appToken": app_token, "thingKey": thing_key}
    opened = rr(broker, namespace, {"auth": {"command": "api.authenticate", "params": login}})
    assert opened["auth"]["success"] is True, opened
    published = rr(
        broker,
        namespace,
        {
            "1": {
                "command": "property.batch",
                "params": {
                    "key": "temp",
                    "data": [{"value": 20.5}, {"value": 21.5, "ts": "2030-01-01T00:00:00Z"}],
                },
            },
            "2": {"command": "alarm.publish", "params": {"key": "door", "state": 1, "msg": "open"}},
            "3": {"command": "location.publish", "params": {"lat": 45.5, "lng": -73.6}},
            "4": {"command": "attribute.publish", "params": {"key": "fw", "value": "2.1"}},
            "5": {"command": "log.publish", "params": {"msg": "booted", "level": 2}},
        },
    )
    assert published == {str(n): {"success": True} for n in range(1, 6)}
    read = rr(
        broker,
        namespace,
        {
            "p": {"command": "property.current", "params": {"key": "temp"}},
            "a": {"command": "alarm.current", "params": {"key": "door"}},
            "l": {"command": "log.list", "params": {}},
            "t": {"command": "thing.find", "params": {}},
        },
    )
    assert read["p"]["params"] == {"value": 21.5, "ts": "2030-01-01T00:00:00.000Z"}
    assert (read["a"]["params"]["state"], read["a"]["params"]["msg"]) == (1, "open")
    assert [entry["msg"] for entry in read["l"]["params"]["result"]] == ["booted"]
    assert (read["t"]["params"]["key"], read["t"]["params"]["attrs"]["fw"]["value"]) == (
        thing_key,
        "2.1",
    )
