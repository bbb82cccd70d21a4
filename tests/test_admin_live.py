"""Issue 13's "done when": an org-admin manages users, apps and things while devices keep
publishing. A real broker and gateway; a device publishes over MQTT without pause while an
org-admin creates, changes and deletes over WebSocket; nothing the device sends is refused or
lost, and every admin call succeeds."""

from __future__ import annotations

import secrets
import threading
from typing import Any

from tests.support import GatewayThread, MqttClient, Tenants, ws_client

PUBLISHES = 300


def test_administration_does_not_disturb_publishing_devices(
    broker: Any, gateway: GatewayThread, tenants: Tenants
) -> None:
    app_id, token = tenants.apps["acme"]
    device = MqttClient(broker.port, "meter-live")
    device.subscribe("reply/meter-live/#")
    login = {"appId": app_id, "appToken": token, "thingKey": "meter-live"}
    assert device.call({"auth": {"command": "api.authenticate", "params": login}})["auth"][
        "success"
    ]
    outcomes: list[bool] = []

    def publish() -> None:
        for n in range(PUBLISHES):
            envelope = {"1": {"command": "property.publish", "params": {"key": "kwh", "value": n}}}
            outcomes.append(device.call(envelope)["1"]["success"])

    publisher = threading.Thread(target=publish)
    publisher.start()
    admin_outcomes = []
    with ws_client(gateway.ws_url) as admin:
        admin.login(tenants.user("acme", "org-admin"))
        while publisher.is_alive():
            email = f"temp-{secrets.token_hex(3)}@acme.test"
            reply = admin.send(
                {
                    "1": {
                        "command": "user.create",
                        "params": {"emailAddress": email, "password": "a long password"},
                    },
                    "2": {
                        "command": "user.update",
                        "params": {"emailAddress": email, "disabled": True},
                    },
                    "3": {"command": "app.create", "params": {"name": f"a-{secrets.token_hex(3)}"}},
                    "4": {"command": "user.delete", "params": {"emailAddress": email}},
                    "5": {
                        "command": "thing.update",
                        "params": {"key": "meter-live", "tags": ["x"]},
                    },
                }
            )
            admin_outcomes += [reply[key]["success"] for key in ("1", "2", "3", "4", "5")]
        history = admin.send(
            {
                "h": {
                    "command": "property.history",
                    "params": {"thingKey": "meter-live", "key": "kwh", "records": 5000},
                }
            }
        )
    publisher.join()
    device.close()
    assert (
        outcomes.count(True),
        len(history["h"]["params"]["values"]),
        len(admin_outcomes) >= 5 and all(admin_outcomes),
    ) == (PUBLISHES, PUBLISHES, True)
