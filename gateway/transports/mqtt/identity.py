"""What the broker plugin (broker/) says about a request: pure, no I/O.

With `--mqtt-broker-identity`, Mosquitto runs tr50gw's plugin, which removes every user property
named `tr50gw*` a client sends and adds one of its own, `tr50gw`, whose `/`-separated fields are
the connection (unique per CONNECT) and the client id (which holds no `/`: the plugin refuses
such ids), and for a device that authenticated in its CONNECT its org, the app whose token it
presented, and last its thing key (which may hold `/`). One property rather than one per field:
paho decodes each property in Python, at about 14 µs apiece (broker/README.md, "What it
costs"). The gateway believes the property only when told the plugin is there: without it, any
client could write it.

The plugin moves a thing's requests into its namespace (`api/0001` arrives as
`api/<client id>/0001`) and delivers the reply the gateway publishes on `reply/<client id>/0001`
to that client alone, as `reply/0001`. Only a reply on a v5 Response Topic the device asked for
needs a word from the gateway: `tr50gw-deliver` = client id, `/`, topic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DELIVER", "IDENTITY", "BrokerIdentity", "broker_identity", "delivery"]

IDENTITY = "tr50gw"
DELIVER = "tr50gw-deliver"


@dataclass(frozen=True, slots=True)
class BrokerIdentity:
    connection: str  # one CONNECT of one client
    client: str  # its client id
    org: str | None = None  # authenticated at CONNECT with a token of this org...
    app: str | None = None  # ...this app's...
    thing: str | None = None  # ...as this thing key


def broker_identity(user_properties: Iterable[tuple[str, str]]) -> BrokerIdentity | None:
    """The plugin's identity of a request, or None when it carries none (a message that did not
    pass through the plugin: the gateway then treats it as it would without the plugin) or one
    that does not have the plugin's shape."""
    for name, value in user_properties:
        if name == IDENTITY:
            fields = value.split("/", 4)
            if not all(fields):
                return None
            if len(fields) == 2:
                return BrokerIdentity(fields[0], fields[1])
            if len(fields) == 5:
                return BrokerIdentity(*fields)
            return None
    return None


def delivery(client: str, topic: str) -> tuple[str, str]:
    """The user property asking the plugin to deliver a reply to `client` alone, on `topic`."""
    return (DELIVER, f"{client}/{topic}")
