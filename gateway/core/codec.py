"""Bytes <-> TR50 envelope, with no I/O.

`decode` turns a transport payload into an `Envelope` (ordered command entries plus the optional
`auth` entry) or a `RootFailure` when the payload is not a JSON object at all. `encode` is the one
place replies become bytes. Redaction and capping of what goes into the usage log live here too,
because they are properties of the wire format, not of any transport.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

from gateway.core.errors import MalformedEnvelope, PayloadTooLarge, TR50Error

__all__ = [
    "MAX_DEPTH",
    "REDACTED",
    "Envelope",
    "RootFailure",
    "cap_text",
    "decode",
    "encode",
    "redact",
]

MAX_DEPTH: Final = 64
"""Deepest nesting accepted; deeper payloads are a root failure (orjson alone allows 1024)."""

REDACTED: Final = "***"
_SECRET_KEY = re.compile(r"password|passwd|secret|token|sessionid|apikey|api_key", re.IGNORECASE)


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


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in item)
    return False


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


_STRING_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?')  # a JSON string, maybe cut off at the end
_KEY_GAP = re.compile(r"\s*:\s*")


def redact_text(text: str) -> str:
    """Mask, in JSON-like text that may not parse, every string value whose key looks secret
    (and a string `auth` value: a bare session id). One linear pass over the string tokens."""
    parts: list[str] = []
    position = 0
    mask_at = -1
    for token in _STRING_TOKEN.finditer(text):
        if token.start() == mask_at:
            parts.append(text[position : token.start()])
            parts.append(f'"{REDACTED}"')
            position = token.end()
            mask_at = -1
            continue
        gap = _KEY_GAP.match(text, token.end())
        if gap is not None and token.end() < len(text):
            key = token.group()[1:-1] if token.group().endswith('"') else token.group()[1:]
            if key == "auth" or _is_secret_key(key):
                mask_at = gap.end()
    parts.append(text[position:])
    return "".join(parts)


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


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def redact(value: Any, extra_keys: frozenset[str] = frozenset()) -> Any:
    """A copy of `value` with every secret-looking key's value replaced by `***`."""
    if isinstance(value, dict):
        return {
            key: REDACTED if key in extra_keys or _is_secret_key(key) else redact(item, extra_keys)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item, extra_keys) for item in value]
    return value


def cap_text(text: str, limit: int) -> str:
    """Cut `text` to at most `limit` UTF-8 bytes, marking the cut so readers know it is partial."""
    if len(text) * 4 <= limit:
        return text
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    marker = f"...[truncated, {len(data)} bytes]"
    head = data[: max(0, limit - len(marker))].decode("utf-8", "ignore")
    return head + marker
