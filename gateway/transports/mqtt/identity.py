"""What the broker plugin (broker/) says about a request: pure, no I/O.

With `--mqtt-broker-identity`, Mosquitto runs tr50gw's plugin, which removes every `tr50gw-*`
user property a client sends and adds its own: the connection (`tr50gw-conn`, unique per
CONNECT), the client id, and for a device that authenticated in its CONNECT the thing, its org
and the app whose token it presented, plus where the device expects its reply. The gateway
believes these only when told the plugin is there: without it, any client could write them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DELIVER_TO", "DELIVER_TOPIC", "BrokerIdentity", "broker_identity"]

DELIVER_TO = "tr50gw-deliver-to"
DELIVER_TOPIC = "tr50gw-deliver-topic"


@dataclass(frozen=True, slots=True)
class BrokerIdentity:
    connection: str  # tr50gw-conn: one CONNECT of one client
    client: str  # tr50gw-client: its client id
    thing: str | None = None  # tr50gw-thing: authenticated at CONNECT as this thing key...
    org: str | None = None  # ...of this org (tr50gw-org)...
    app: str | None = None  # ...with this app's token (tr50gw-app)
    reply: str | None = None  # tr50gw-reply: the topic the device reads its reply on


def broker_identity(user_properties: Iterable[tuple[str, str]]) -> BrokerIdentity | None:
    """The plugin's properties of a request, or None when it carries none (a message that did
    not pass through the plugin: the gateway then treats it as it would without the plugin)."""
    found = {name: value for name, value in user_properties if name.startswith("tr50gw-")}
    connection, client = found.get("tr50gw-conn"), found.get("tr50gw-client")
    if not connection or client is None:
        return None
    thing, org, app = found.get("tr50gw-thing"), found.get("tr50gw-org"), found.get("tr50gw-app")
    if not (thing and org and app):
        thing = org = app = None
    return BrokerIdentity(connection, client, thing, org, app, found.get("tr50gw-reply") or None)
