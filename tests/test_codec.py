"""The codec alone: literal payloads in, envelopes or root failures out."""

from __future__ import annotations

import pytest

from gateway.core import codec, redaction


def decode(payload: bytes | str, max_bytes: int = 8192) -> codec.Envelope | codec.RootFailure:
    return codec.decode(payload, max_bytes=max_bytes)


def test_entries_keep_their_order_and_auth_is_separated() -> None:
    envelope = decode(b'{"z":{"command":"a.b"},"auth":{"sessionId":"s"},"1":{"command":"c.d"}}')
    assert isinstance(envelope, codec.Envelope)
    assert envelope.auth == {"sessionId": "s"}
    assert [key for key, _ in envelope.entries] == ["z", "1"]


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        (b"\xff\xfe{}", -90010, "not valid UTF-8"),
        (b'{"1": ', -90010, "malformed envelope"),
        (b"[1, 2]", -90010, "got list"),
        (b"42", -90010, "got int"),
        (b'"text"', -90010, "got str"),
        (b"null", -90010, "got null"),
        (b"{}", -90010, "no commands"),
        (b'{"a":NaN}', -90010, "malformed envelope"),
        (b'{"1":' * 70 + b"1" + b"}" * 70, -90010, "nested deeper"),
        (b"[" * 2000 + b"]" * 2000, -90010, "malformed envelope"),
        (b'{"1":"' + b"x" * 9000 + b'"}', -90011, "payload too large"),
    ],
)
def test_root_failures(payload: bytes, code: int, fragment: str) -> None:
    result = decode(payload)
    assert isinstance(result, codec.RootFailure)
    assert result.error.code == code
    assert fragment in result.error.message


def test_huge_integers_and_duplicate_keys_decode() -> None:
    envelope = decode(
        b'{"1":{"command":"diag.ping","params":{"n":123456789012345678901234567890}},"1":{"command":"diag.time"}}'
    )
    assert isinstance(envelope, codec.Envelope)
    assert envelope.entries == [("1", {"command": "diag.time"})]


def test_redact_hides_secret_keys_at_any_depth() -> None:
    params = {
        "username": "u",
        "password": "p",
        "appToken": "t",
        "nested": [{"clientSecret": "s", "sessionId": "x", "keep": 1}],
    }
    assert redaction.redact(params) == {
        "username": "u",
        "password": "***",
        "appToken": "***",
        "nested": [{"clientSecret": "***", "sessionId": "***", "keep": 1}],
    }
    masked = redaction.redact({"id": "abc", "other": 1}, frozenset({"id"}))
    assert masked == {"id": "***", "other": 1}


def test_cap_text_marks_the_cut_and_respects_the_byte_limit() -> None:
    assert redaction.cap_text("short", 300) == "short"
    text = "é" * 1000  # 2000 bytes
    capped = redaction.cap_text(text, 300)
    assert len(capped.encode()) <= 300
    assert capped.endswith("...[truncated, 2000 bytes]")
    assert capped.startswith("é")


def test_encode_is_compact_json() -> None:
    assert codec.encode({"1": {"success": True}}) == b'{"1":{"success":true}}'


def test_an_envelope_of_only_a_null_auth_is_a_root_failure() -> None:
    """Found by hypothesis: `{"auth": null}` ran nothing and was not logged at all."""
    decoded = codec.decode(b'{"auth":null}', max_bytes=1024)
    assert isinstance(decoded, codec.RootFailure)
    assert decoded.error.code == -90010
