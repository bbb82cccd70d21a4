"""Topic routing and response-topic policy for TR50 over MQTT: pure functions, no I/O.

`api/<rest>` is answered on `reply/<rest>` (bare `api` on `reply`), `apiz/<rest>` (zlib) on
`replyz/<rest>`; the first level under `api/` is the namespace (the client id in isolated mode).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Route", "reply_route", "response_topic"]


@dataclass(frozen=True, slots=True)
class Route:
    namespace: str
    reply_topic: str
    compressed: bool


def reply_route(topic: str) -> Route | None:
    """Where a request on `topic` is answered: `api/17` -> `reply/17`, `apiz/x` -> `replyz/x`."""
    for prefix, reply_prefix, compressed in (("api", "reply", False), ("apiz", "replyz", True)):
        if topic == prefix:
            return Route("", reply_prefix, compressed)
        if topic.startswith(prefix + "/"):
            rest = topic[len(prefix) + 1 :]
            return Route(rest.split("/", 1)[0], f"{reply_prefix}/{rest}", compressed)
    return None


def response_topic(wanted: str | None, route: Route, *, classic: bool) -> str | None:
    """The MQTT v5 Response Topic to honour, or None to answer on `route.reply_topic`.

    Honoured only under the replies the requester may read anyway: `reply/` or `replyz/` in
    classic mode, its own `reply/<namespace>` or `replyz/<namespace>` in isolated mode; never a
    wildcard. Anything else would let a client make the gateway publish where it pleases.
    """
    if not wanted:
        return None
    roots = (
        ("reply", "replyz")
        if classic
        else (f"reply/{route.namespace}", f"replyz/{route.namespace}")
    )
    if "+" in wanted or "#" in wanted:
        return None
    if any(wanted == root or wanted.startswith(root + "/") for root in roots):
        return wanted
    return None
