"""Bytes <-> TR50 envelope, with no I/O.

`decode` turns a transport payload into an `Envelope` (ordered command entries plus the optional
`auth` entry) or a `RootFailure` when the payload is not a JSON object at all. `encode` is the one
place replies become bytes. What the usage log keeps of a payload is `gateway.core.redaction`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

from gateway.core.errors import MalformedEnvelope, PayloadTooLarge, TR50Error
from gateway.core.redaction import cap_text, redact_text

__all__ = ["MAX_DEPTH", "Envelope", "RootFailure", "decode", "encode"]

MAX_DEPTH: Final = 64
"""Deepest nesting accepted; deeper payloads are a root failure (orjson alone allows 1024)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded request: `auth` is the raw value of the `auth` key (None when absent)."""

    auth: Any
    entries: list[tuple[str, Any]]


@dataclass(frozen=True, slots=True)
class RootFailure:
    """The payload could not be read as an envelope; `text` is what the usage log keeps of it."""

    error: TR50Error
    text: str


def _depth_exceeds(document: Any, limit: int) -> bool:
    """Whether `document` nests containers deeper than `limit`: one level at a time, looking only
    at the containers of the level before (a batch's scalars are never visited one by one)."""
    level = [document]
    for _ in range(limit):
        nested: list[Any] = []
        for item in level:
            children = item.values() if type(item) is dict else item
            nested += [child for child in children if type(child) is dict or type(child) is list]
        if not nested:
            return False
        level = nested
    return True


def _bracket_count(payload: bytes | str) -> int:
    """An upper bound of the nesting depth, counted in C: most envelopes skip the walk."""
    if isinstance(payload, str):
        return payload.count("{") + payload.count("[")
    return payload.count(b"{") + payload.count(b"[")


def _as_text(payload: bytes | str, limit: int) -> str:
    """What the log keeps of a payload that is not an envelope: its text, capped and with the
    values of secret-looking keys masked as far as the text can be read."""
    if isinstance(payload, str):  # lone surrogates (surrogateescape) cannot be stored
        text = payload[: limit + 4].encode("utf-8", "replace").decode("utf-8")
        return cap_text(redact_text(text), limit)
    return cap_text(redact_text(payload[: limit + 4].decode("utf-8", errors="replace")), limit)


def decode(
    payload: bytes | str, *, max_bytes: int, max_commands: int = 500, log_cap: int = 65536
) -> Envelope | RootFailure:
    """Parse one request. Never raises: every bad payload becomes a `RootFailure`."""
    size = len(payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload)
    if size > max_bytes:
        return RootFailure(
            PayloadTooLarge(f"payload too large: {size} bytes, limit {max_bytes}"),
            _as_text(payload, log_cap),
        )
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        reason = str(error).split(":", 1)[0]
        return RootFailure(
            MalformedEnvelope(f"malformed envelope: {reason}"), _as_text(payload, log_cap)
        )
    if not isinstance(document, dict):
        kind = type(document).__name__.replace("NoneType", "null")
        return RootFailure(
            MalformedEnvelope(f"malformed envelope: expected a JSON object, got {kind}"),
            _as_text(payload, log_cap),
        )
    if not document:
        return RootFailure(MalformedEnvelope("malformed envelope: no commands"), "{}")
    if _bracket_count(payload) > MAX_DEPTH and _depth_exceeds(document, MAX_DEPTH):
        return RootFailure(
            MalformedEnvelope(f"malformed envelope: nested deeper than {MAX_DEPTH}"),
            _as_text(payload, log_cap),
        )
    auth = document.pop("auth", None)
    if not document and auth is None:  # {"auth": null}: nothing to run, still one logged call
        return RootFailure(
            MalformedEnvelope("malformed envelope: no commands"), _as_text(payload, log_cap)
        )
    if len(document) > max_commands:
        return RootFailure(
            MalformedEnvelope(
                f"malformed envelope: {len(document)} commands, limit {max_commands}"
            ),
            _as_text(payload, log_cap),
        )
    return Envelope(auth=auth, entries=list(document.items()))


def encode(document: Any) -> bytes:
    return orjson.dumps(document)
