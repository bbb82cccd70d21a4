"""What the usage log keeps of a request or reply: secrets masked, text capped.

Properties of the wire format, not of any transport: `redact` masks the values of secret-looking
keys in a decoded document, `redact_text` does its best on text that does not parse, and
`cap_text` cuts what would make a record unbounded, marking the cut.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Final

__all__ = ["REDACTED", "cap_text", "may_hold_secrets", "redact", "redact_text"]

REDACTED: Final = "***"
_SECRET_WORDS: Final = ("password", "passwd", "secret", "token", "sessionid", "apikey", "api_key")
_SECRET_KEY = re.compile("|".join(_SECRET_WORDS), re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


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


def may_hold_secrets(text: str, extra_keys: frozenset[str] = frozenset()) -> bool:
    """Whether the JSON `text` of a document has anything `redact` could mask: every key is a
    substring of the text, so where no secret-looking word occurs at all (a few searches in
    C), `redact` would return the document unchanged and the walk can be skipped."""
    lowered = text.lower()  # plain `in` per word: several times faster than the regex's search
    return any(word in lowered for word in _SECRET_WORDS) or any(key in text for key in extra_keys)


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
