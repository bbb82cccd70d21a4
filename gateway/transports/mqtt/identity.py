"""What the broker plugin (broker/) says about a request: pure, no I/O.

With `--mqtt-broker-identity`, Mosquitto runs tr50gw's plugin, which puts a header in front of
the payload of every request a client publishes:

    NUL "tr50gw " <conn>/<client id> LF                               (an anonymous client)
    NUL "tr50gw " <conn>/<client id>/<org id>/<app id>/<thing key> LF   (a thing authenticated
                                                                         at CONNECT)

`<conn>` is unique per CONNECT; the client id holds no `/` (the plugin refuses such ids) and the
thing key, last, may (no field holds a newline: Mosquitto refuses control characters in client
ids and usernames). In front of the payload rather than in an MQTT v5 user property: paho
decodes each property in Python, about 25 µs per request in the gateway, where this header costs
about one. The gateway believes it only when told the plugin is there (not told, it removes the
header and ignores it): without the plugin, any client could write one.

The plugin moves a thing's requests into its namespace (`api/0001` arrives as
`api/<client id>/0001`) and delivers the reply the gateway publishes on `reply/<client id>/0001`
to that client alone, as `reply/0001`. Only a reply on a v5 Response Topic the device asked for
needs a word from the gateway: the user property `tr50gw-deliver` = client id, `/`, topic.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DELIVER", "MAGIC", "BrokerIdentity", "broker_identity", "delivery"]

MAGIC = b"\x00tr50gw "
DELIVER = "tr50gw-deliver"
_MAX_HEADER = 4096  # conn, client id, two ids and a thing key: far less


@dataclass(frozen=True, slots=True)
class BrokerIdentity:
    connection: str  # one CONNECT of one client
    client: str  # its client id
    org: str | None = None  # authenticated at CONNECT with a token of this org...
    app: str | None = None  # ...this app's...
    thing: str | None = None  # ...as this thing key


def broker_identity(payload: bytes) -> tuple[BrokerIdentity | None, bytes]:
    """The plugin's identity of a request and the payload the client sent; `(None, payload)`
    when the payload starts with no header (a message that did not pass through the plugin:
    the gateway then treats it as it would without the plugin) or with one not of the
    plugin's shape."""
    if not payload.startswith(MAGIC):
        return None, payload
    end = payload.find(b"\n", len(MAGIC), _MAX_HEADER)
    if end < 0:
        return None, payload
    try:
        fields = payload[len(MAGIC) : end].decode().split("/", 4)
    except UnicodeDecodeError:
        return None, payload
    if not all(fields) or len(fields) not in (2, 5):
        return None, payload
    return BrokerIdentity(*fields), payload[end + 1 :]


def delivery(client: str, topic: str) -> tuple[str, str]:
    """The user property asking the plugin to deliver a reply to `client` alone, on `topic`."""
    return (DELIVER, f"{client}/{topic}")
