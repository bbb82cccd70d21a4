"""Fuzz the codec and the dispatcher in-process: `python -m devtools.fuzz [--cases N] [--seed S]`.

Every case is one payload (bytes, sometimes str) handed to `codec.decode` and to the full
`Dispatcher` of `gateway.app.assemble` (the composition root, so the wiring is production's) on a
temporary DuckDB file, with no transport and no sockets, so 100,000 cases take a couple of minutes.
Payloads come from a grammar of TR50 envelopes (real and bogus commands, plausible and hostile
params, `auth` blocks with real sessions, forged ones and logins) and from byte-level mutations of
valid envelopes, deep nesting, huge numbers, NaN, invalid UTF-8, truncations, oversized payloads and
envelopes around the command cap. The limits are tightened (`FUZZ_LIMITS`) so that random payloads
cross them often.

A finding is any of: an exception escaping `Dispatcher.handle` or `codec.decode`; a case that
takes longer than `CASE_TIMEOUT`; a reply that is not JSON or not the TR50 reply the envelope
calls for (one outcome per command id, in order, each a well-formed success or failure with a
known code); a -90099 anywhere; a case that submits a different number of usage records than it
received commands (a non-envelope payload is one record, an envelope one per entry, `auth`
included unless it is a bare `{"sessionId": ...}`); a record the usage log cannot store (text that
is not UTF-8, `request`/`response` over the log cap); an error logged by the gateway; a case
slower than `SLOW_CASE`, or one during which the event loop ran nothing else for `LOOP_STALL`
(a gateway whose loop is blocked stops serving every client). At the end
the records stored in DuckDB must equal that expected count. Findings are printed with their
input; the exit code is 1 if there was any.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import random
import re
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import orjson

from gateway.app import Assembly, assemble
from gateway.core import codec
from gateway.core.context import Connection
from gateway.core.records import Session, UsageRecord
from gateway.settings import Settings

__all__ = ["FUZZ_LIMITS", "Finding", "Report", "main", "run"]

DEFAULT_CASES: Final = 100_000
CASE_TIMEOUT: Final = 30.0
SLOW_CASE: Final = 10.0  # seconds of wall time for one payload: a finding
LOOP_STALL: Final = 2.0  # seconds the event loop went without running anything else: a finding
FUZZ_LIMITS: Final = {"max_payload": 16 * 1024, "max_commands": 40, "log_cap": 2048}
KNOWN_CODES: Final = frozenset(
    {-90001, -90002, -90003, -90004, -90005, -90008, -90010, -90011, -90012, -90099}
)
PASSWORD: Final = "fuzz-password-not-secret"
PRINTED_PER_KIND: Final = 5

# -- JSON text with the liberties a hostile client takes ---------------------------------------


@dataclass(frozen=True, slots=True)
class Raw:
    """A token written verbatim: `NaN`, `1e999`, a 400-digit integer, half a string."""

    text: str


@dataclass(frozen=True, slots=True)
class Obj:
    """A JSON object as a list of pairs, so keys may repeat."""

    pairs: list[tuple[str, Any]]


def dump(value: Any, rng: random.Random, out: list[str]) -> None:
    """Append the JSON text of `value`; Python's own NaN/Infinity and big ints pass through."""
    if isinstance(value, Raw):
        out.append(value.text)
    elif isinstance(value, Obj | dict):
        pairs = value.pairs if isinstance(value, Obj) else list(value.items())
        out.append("{")
        for index, (key, item) in enumerate(pairs):
            if index:
                out.append(",")
            dump(key, rng, out)
            out.append(":")
            dump(item, rng, out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            dump(item, rng, out)
        out.append("]")
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=rng.random() < 0.3))
    elif isinstance(value, bool) or value is None:
        out.append(json.dumps(value))
    elif isinstance(value, int):
        out.append(str(value))  # no digit limit: `int.__str__` of 10**400 is fine
    else:
        out.append(json.dumps(value))  # floats, NaN and Infinity included


def to_text(value: Any, rng: random.Random) -> str:
    out: list[str] = []
    dump(value, rng, out)
    if rng.random() < 0.05:  # whitespace is legal around every token; some clients pretty-print
        return " \n\t" + "".join(out) + "\r\n "
    return "".join(out)


def to_bytes(text: str) -> bytes:
    """UTF-8, with lone surrogates encoded as such: invalid UTF-8 the parser must refuse."""
    return text.encode("utf-8", "surrogatepass")


# -- the grammar -----------------------------------------------------------------------------

INTERESTING_STRINGS = [
    "", " ", "a", "diag", "ping", "usage", "api", "api.list", "acme", "globex", "ws", "mqtt",
    "http", "%", "_", "\\", "'", '"', "\x00", "\x00diag", "null", "true", "é", "日本",
    "\U0001f600", "\u202e", "\ud800", "\udfff", "ops@acme.fuzz", "user@globex.fuzz", "ws-1",
    "127.0.0.", "x" * 201, "x" * 321, "ü" * 150, "' OR 1=1 --", "%s%n", "../../etc/passwd",
]  # fmt: skip
INTERESTING_INTS = [
    0, 1, -1, 2, 9, 10, 99, 100, 101, 1999, 2000, 2001, 10_000_000, 10_000_001, 2**31 - 1, 2**31,
    2**53, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**30,
    10**308, 10**309, 10**400, -(10**400),
]  # fmt: skip
INTERESTING_FLOATS = [
    0.0, -0.0, 0.5, 1.5, 1e-300, 5e-324, 1e300, 1.7976931348623157e308, math.nan, math.inf,
    -math.inf,
]  # fmt: skip
RAW_NUMBERS = [
    "NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999", "1E400", "0e0", "-0",
    "00", "01", "1.", ".5", "+1", "0x10", "1_000", "9" * 400, "-" + "9" * 5000, "1e" + "9" * 30,
]  # fmt: skip
DURATIONS = [
    "1h", "30m", "1h30m", "250ms", "1.5h", "2d", "15s", "1us", "1µs", "1ns", "0s", "0.0000000001ns",
    "-1h", "1", "h", "1x", "1h 30m", ".5m", "5.m", "36600d", "36601d", "1e3s", "9" * 400 + "h",
    "100000000000000000000000000000000000000000d", "",
]  # fmt: skip
TIMESTAMPS = [
    "2024-03-01T12:00:00Z", "2024-03-01T12:00:00.123Z", "2024-03-01T12:00:00+05:30",
    "2024-03-01T12:00:00.999999-09:30", "2024-03-01T12:00:00", "2024-03-01", "2024-03-01 12:00",
    "2026-03-29T01:30:00+01:00", "2024-02-30T00:00:00Z", "2024-13-01T00:00:00Z",
    "0001-01-01T00:00:00", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "0001-01-02",
    "0001-01-01T00:30:00+14:00", "9999-12-31T23:59:59", "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-14:00", "9999-12-31T12:00:00-01:00", "1970-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z", "8999-12-31T23:59:59Z", "9000-01-01T00:00:00Z", "1970-01-01",
    "2024-03-01T24:00:00Z", "2024-03-01T12:00:00+25:00", "now", "", "yesterday",
    "2024-03-01T12:00:00Z" + "0" * 30,
]  # fmt: skip
TIMEZONES = [
    "UTC", "Europe/Berlin", "Asia/Kolkata", "America/St_Johns", "Pacific/Kiritimati",
    "Pacific/Pago_Pago", "Etc/GMT+12", "Etc/GMT-14", "Australia/Lord_Howe", "EST5EDT",
    "localtime", "Factory", "posixrules", "../etc/passwd", "/etc/localtime", "Europe/", "",
    "Europe", "America/Argentina", "zone.tab", "tzdata.zi", "Etc/../Etc/UTC", "./UTC",
    "\x00", "A" * 65, "utc", "Mars/Olympus",
]  # fmt: skip
INTERVALS = ["year", "quarter", "month", "week", "day", "hour", "minute", "second", "fortnight", ""]
COMMANDS = [
    "diag.ping", "diag.time", "session.info", "session.end", "api.authenticate",
    "usage.api.list", "usage.api.activity", "usage.api.times", "usage.api.statuses",
    "usage.api.breakdown", "usage.api.endpoints", "usage.api.history", "usage.api.get",
    "no.such", "diag", "diag.", ".ping", "diag.ping.x", "DIAG.PING", " diag.ping", "diag.ping\x00",
    "", "usage.api", "usage.list", "x" * 300 + ".y",
]  # fmt: skip
COMMAND_WEIGHTS = [  # the usage commands wait for a DuckDB commit: frequent, not dominant
    14, 5, 5, 0.5, 2, 5, 1.5, 1.5, 1.5, 1.5, 1.5, 1, 1.5, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.5,
]  # fmt: skip
WINDOW_PARAMS = [
    "who", "service", "command", "showAll", "last", "start", "end", "hasFailure", "searchText",
    "remoteAddr", "clientId", "transport",
]  # fmt: skip
PARAMS_BY_COMMAND: dict[str, list[str]] = {
    "usage.api.list": [*WINDOW_PARAMS, "offset", "limit"],
    "usage.api.activity": [*WINDOW_PARAMS, "interval", "timezone"],
    "usage.api.times": [*WINDOW_PARAMS, "interval", "timezone"],
    "usage.api.statuses": [*WINDOW_PARAMS, "interval", "timezone"],
    "usage.api.breakdown": [*WINDOW_PARAMS, "interval", "timezone", "by", "top"],
    "usage.api.endpoints": [*WINDOW_PARAMS, "offset", "limit"],
    "usage.api.history": [*WINDOW_PARAMS, "series", "dimension", "timezone"],
    "usage.api.get": ["id", "showAll"],
    "api.authenticate": ["username", "password", "appId", "appToken", "thingKey"],
}


class Grammar:
    """Random TR50 envelopes; `real` holds live credentials and ids so some calls go deep."""

    def __init__(self, rng: random.Random, real: Real) -> None:
        self.rng = rng
        self.real = real

    # values
    def string(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            return rng.choice(INTERESTING_STRINGS)
        if roll < 0.9:
            alphabet = "abcxyz019._-@/ %\\\"'é\x00\x7f\u2028日\U0001f600"
            return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        return "".join(chr(rng.randint(1, 0x10FFFF)) for _ in range(rng.randint(1, 6)))

    def number(self) -> Any:
        roll = self.rng.random()
        if roll < 0.55:
            return self.rng.choice(INTERESTING_INTS)
        if roll < 0.75:
            return self.rng.randint(-1000, 5000)
        if roll < 0.92:
            return self.rng.choice(INTERESTING_FLOATS)
        return Raw(self.rng.choice(RAW_NUMBERS))

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        roll = rng.random()
        if depth > 3 or roll < 0.3:
            return rng.choice([None, True, False])
        if roll < 0.55:
            return self.string()
        if roll < 0.8:
            return self.number()
        if roll < 0.9:
            return [self.value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {self.string(): self.value(depth + 1) for _ in range(rng.randint(0, 4))}

    def param_value(self, name: str) -> Any:
        rng = self.rng
        if rng.random() < 0.15:
            return self.value()
        real = self.real
        choices: dict[str, Callable[[], Any]] = {
            "who": lambda: rng.choice([*real.whoamis, self.string()]),
            "service": lambda: rng.choice(["diag", "usage", "api", "session", self.string()]),
            "command": lambda: rng.choice(["ping", "time", "api.list", "info", self.string()]),
            "searchText": lambda: rng.choice(["ping", "command", "%", "_", self.string()]),
            "remoteAddr": lambda: rng.choice(["127.", "127.0.0.1", "10.", self.string()]),
            "clientId": lambda: rng.choice(["ws-1", "fuzz-1", "mqtt-2", self.string()]),
            "transport": lambda: rng.choice(["ws", "mqtt", "http", "WS", self.string()]),
            "showAll": lambda: rng.choice([True, False, "true", 1, None]),
            "hasFailure": lambda: rng.choice([True, False, "false", 0, None]),
            "last": lambda: rng.choice(DURATIONS),
            "start": lambda: rng.choice(TIMESTAMPS),
            "end": lambda: rng.choice(TIMESTAMPS),
            "offset": lambda: rng.choice([0, 0, 1, 5, *INTERESTING_INTS, "10", 1.0]),
            "limit": lambda: rng.choice([1, 3, 10, 100, *INTERESTING_INTS, "10", 2.5]),
            "top": lambda: rng.choice([1, 3, 10, 100, 101, 0, -1, 2**64, "3"]),
            "interval": lambda: rng.choice(INTERVALS),
            "timezone": lambda: rng.choice(TIMEZONES),
            "by": lambda: rng.choice(["service", "command", "who", "org", "x", ""]),
            "series": lambda: rng.choice(["hour", "day", "week", ""]),
            "dimension": lambda: rng.choice(["service", "org", "who"]),
            "id": lambda: rng.choice(
                [
                    *real.record_ids[-8:],
                    str(uuid.uuid4()),
                    str(uuid.uuid4()).replace("-", ""),
                    "0" * 32,
                    "x",
                    "",
                    "f" * 65,
                    self.string(),
                ]
            ),
            "username": lambda: rng.choice(["nobody@nowhere", "", "x" * 400, self.string()]),
            "password": lambda: rng.choice(["wrong", "", self.string()]),
            "appId": lambda: rng.choice([real.app_id, real.app_id, "0" * 32, self.string()]),
            "appToken": lambda: rng.choice([real.app_token, real.app_token, "bad", ""]),
            "thingKey": lambda: rng.choice(["truck-7", "pump-1", "", "x" * 300, self.string()]),
        }
        maker = choices.get(name)
        return maker() if maker else self.value()

    def params(self, command: str) -> Any:
        rng = self.rng
        roll = rng.random()
        if roll < 0.04:
            return rng.choice([[], [1], "x", 5, True, 1.5, ""])  # not an object: -90002
        if roll < 0.07:
            return None  # as good as absent
        names = PARAMS_BY_COMMAND.get(command, [])
        params: dict[str, Any] = {}
        if names:
            for name in rng.sample(names, rng.randint(0, min(4, len(names)))):
                params[name] = self.param_value(name)
            if "timezone" in names and rng.random() < 0.3:  # windows and zones meet more often
                params.setdefault("start", self.param_value("start"))
                params.setdefault("timezone", self.param_value("timezone"))
        if not names or rng.random() < 0.08:  # stray params: -90002 for every strict model
            params[self.string()] = self.value()
        return params

    def entry(self) -> Any:
        rng = self.rng
        roll = rng.random()
        if roll < 0.06:
            return self.value()  # not an object, or an object without `command`
        if roll < 0.09:
            return Obj([("command", rng.choice([None, 42, ["diag.ping"], {"x": 1}, True]))])
        command = rng.choices(COMMANDS, COMMAND_WEIGHTS)[0]
        pairs: list[tuple[str, Any]] = [("command", command)]
        if rng.random() < 0.75:
            pairs.append(("params", self.params(command)))
        if rng.random() < 0.03:
            pairs.append(("command", rng.choices(COMMANDS, COMMAND_WEIGHTS)[0]))  # last one wins
        if rng.random() < 0.03:
            pairs.append((self.string(), self.value()))
        if rng.random() < 0.2:
            rng.shuffle(pairs)
        return Obj(pairs)

    def auth(self) -> Any:
        rng = self.rng
        real = self.real
        roll = rng.random()
        if roll < 0.45 and real.tokens:
            return {"sessionId": rng.choice(real.tokens)}
        if roll < 0.6:
            forged = rng.choice(["", "x", "x" * 600, "A" * 43, None, 42, ["s"], {"s": 1}])
            return {"sessionId": forged}
        if roll < 0.63 and real.tokens:
            return {"sessionId": rng.choice(real.tokens), "extra": 1}  # not bare: a command entry
        if roll < 0.75:
            return {
                "command": "api.authenticate",
                "params": {"appId": real.app_id, "appToken": real.app_token, "thingKey": "t-fuzz"},
            }
        if roll < 0.9:
            return {"command": "api.authenticate", "params": self.params("api.authenticate")}
        if roll < 0.96:
            return self.entry()  # another command in `auth`: -90010
        return self.value()

    def envelope(self) -> Obj:
        rng = self.rng
        count = rng.choice([1, 1, 1, 2, 2, 3, 4, 6])
        if rng.random() < 0.01:
            count = rng.randint(1, FUZZ_LIMITS["max_commands"] + 3)
        pairs: list[tuple[str, Any]] = []
        for _ in range(count):
            key = rng.choice(["1", "2", "a", "cmd", "auth", "", "é", "\x00", str(rng.random())])
            if rng.random() < 0.005:
                key = "k" * rng.choice([1000, 10_000])
            elif rng.random() < 0.3:
                key = self.string()
            pairs.append((key, self.auth() if key == "auth" else self.entry()))
        if rng.random() < 0.35:
            pairs.insert(rng.randint(0, len(pairs)), ("auth", self.auth()))
        return Obj(pairs)


# -- payload kinds -----------------------------------------------------------------------------

INTERESTING_BYTES = b'\x00"\\{}[]:,\xff\xfe\xc0\xc1\xed\xa0\x80\xf4\x90\xf5 \n-+.0e'
INSERTIONS = [
    b"NaN", b"Infinity", b"-Infinity", b"1e999", b"9" * 400, b"null", b'"\\ud800"', b"\\u0000",
    b"\\ud83d", b"{", b"}", b"[[[[", b'"auth":', b",", b'""', b'"command":', b'"params":',
    b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xff", b'{"1":' * 70, b"\\",
]  # fmt: skip


class Payloads:
    def __init__(self, grammar: Grammar) -> None:
        self.grammar = grammar
        self.rng = grammar.rng
        self.kinds: list[tuple[str, float, Callable[[], bytes | str]]] = [
            ("envelope", 50, self.envelope),
            ("mutated", 22, self.mutated),
            ("invalid-utf8", 4, self.invalid_utf8),
            ("truncated", 4, self.truncated),
            ("random-bytes", 4, self.random_bytes),
            ("deep", 3, self.deep),
            ("huge-number", 3, self.huge_number),
            ("not-an-object", 3, self.not_an_object),
            ("oversized", 3, self.oversized),
            ("many-commands", 2, self.many_commands),
            ("str", 2, self.str_payload),
        ]
        self._names = [kind[0] for kind in self.kinds]
        self._weights = [kind[1] for kind in self.kinds]
        self._makers = {kind[0]: kind[2] for kind in self.kinds}

    def next(self) -> tuple[str, bytes | str]:
        kind = self.rng.choices(self._names, self._weights)[0]
        return kind, self._makers[kind]()

    def valid_bytes(self) -> bytes:
        return to_bytes(to_text(self.grammar.envelope(), self.rng))

    def envelope(self) -> bytes:
        return self.valid_bytes()

    def mutated(self) -> bytes:
        rng = self.rng
        data = bytearray(self.valid_bytes())
        for _ in range(rng.choice([1, 1, 2, 3, 5])):
            size = len(data)
            at = rng.randint(0, size)
            op = rng.randrange(7)
            if op == 0 and size:
                data[min(at, size - 1)] ^= 1 << rng.randrange(8)
            elif op == 1 and size:
                data[min(at, size - 1)] = rng.choice(INTERESTING_BYTES)
            elif op == 2:
                del data[at : at + rng.randint(1, 8)]
            elif op == 3:
                start = rng.randint(0, size)
                data[at:at] = data[start : start + rng.randint(1, 32)]
            elif op == 4:
                data[at:at] = rng.choice(INSERTIONS)
            elif op == 5:
                del data[at:]
            else:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        return bytes(data)

    def invalid_utf8(self) -> bytes:
        rng = self.rng
        bad = rng.choice(
            [b"\xff", b"\xfe\xff", b"\xc0\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\x80",
             b"\xf8\x88\x80\x80\x80", b"\xf4\x90\x80\x80"]
        )  # fmt: skip
        data = self.valid_bytes()
        quote = data.find(b'"', rng.randint(0, len(data)))
        at = quote + 1 if quote >= 0 and rng.random() < 0.8 else rng.randint(0, len(data))
        return data[:at] + bad + data[at:]

    def truncated(self) -> bytes:
        data = self.valid_bytes()
        return data[: self.rng.randint(0, max(0, len(data) - 1))]

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.choice([0, 1, 2, 5, 20, 100, 500]))

    def deep(self) -> bytes:
        rng = self.rng
        depth = rng.choice([62, 63, 64, 65, 66, 100, 1023, 1024, 1025, 5000, 10_000])
        roll = rng.random()
        if roll < 0.4:  # inside params: valid until it is too deep
            head = b'{"1":{"command":"diag.ping","params":{"x":'
            return head + b"[" * depth + b"]" * depth + b"}}}"
        if roll < 0.7:
            return b'{"1":' * depth + b'{"command":"diag.ping"}' + b"}" * depth
        if roll < 0.85:
            return b"[" * depth + b"]" * depth
        return b'{"a":' * depth  # unterminated

    def huge_number(self) -> bytes:
        rng = self.rng
        number = rng.choice(
            [str(10**400), str(2**64), str(2**63), str(-(2**63) - 1), "1e309", "-1e309",
             "NaN", "Infinity", "-Infinity", "1" * 20, "123456789012345678901234567890",
             "0." + "0" * 400 + "1", "1e-400"]
        )  # fmt: skip
        command = rng.choice(["diag.ping", "usage.api.list", "usage.api.endpoints"])
        key = rng.choice(["limit", "offset", "n", "top"])
        return (
            f'{{"1":{{"command":"{command}","params":{{"{key}":{number}}}}},'
            f'"2":{{"command":"diag.ping"}}}}'
        ).encode()

    def not_an_object(self) -> bytes:
        return self.rng.choice(
            [b"[]", b'[{"command":"diag.ping"}]', b"42", b"-0", b"1e999", b'"diag.ping"', b"null",
             b"true", b"false", b"{}", b"", b" ", b"\n", b"\xef\xbb\xbf{}", b'{"auth":null}',
             b'{"1":{"command":"diag.ping"}} {}', b'{"1":{"command":"diag.ping"}}x']
        )  # fmt: skip

    def oversized(self) -> bytes:
        rng = self.rng
        limit = FUZZ_LIMITS["max_payload"]
        size = rng.choice([limit - 1, limit, limit + 1, limit * 2, limit * 5])
        head, tail = b'{"big":{"command":"diag.ping","params":{"pad":"', b'"}}}'
        filler = rng.choice([b"x", b"\\u00e9", "é".encode()])
        body = filler * ((size - len(head) - len(tail)) // len(filler) + 1)
        return (head + body)[: size - len(tail)] + tail

    def many_commands(self) -> bytes:
        rng = self.rng
        cap = FUZZ_LIMITS["max_commands"]
        count = rng.choice([cap - 1, cap, cap + 1, 1000])
        entries = ",".join(f'"{index}":{{"command":"diag.ping"}}' for index in range(count))
        auth = ""
        if rng.random() < 0.5:  # `auth` does not count towards the cap
            auth = '"auth":{"sessionId":"x"},'
        return ("{" + auth + entries + "}").encode()

    def str_payload(self) -> str:
        """What a transport that decodes text itself would hand over (WebSocket text frames)."""
        data = self.rng.choice([self.valid_bytes, self.mutated, self.invalid_utf8])()
        try:
            return data.decode()
        except UnicodeDecodeError:
            # Lone surrogates: no transport produces them today, but `handle` accepts any str.
            return data.decode("utf-8", "surrogateescape")


# -- live credentials --------------------------------------------------------------------------


@dataclass
class Real:
    """Sessions and ids that exist, so generated calls reach the handlers and storage."""

    app_id: str = ""
    app_token: str = ""
    tokens: list[str] = field(default_factory=list)
    whoamis: list[str] = field(default_factory=list)
    record_ids: list[str] = field(default_factory=list)


# -- findings and the report -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    case: int
    payload: bytes | str
    detail: str
    payload_kind: str = ""

    def describe(self) -> str:
        shown = self.payload[:300]
        more = f" ... ({len(self.payload)} in all)" if len(self.payload) > 300 else ""
        origin = f" ({self.payload_kind} payload)" if self.payload_kind else ""
        text = f"  [{self.kind}] case {self.case}{origin}: {self.detail}"
        return f"{text}\n    input: {shown!r}{more}" if self.payload else text


CRASH_KINDS: Final = frozenset(
    {"crash", "hang", "loop-blocked", "bad-reply", "codec-crash", "codec-mismatch"}
)


@dataclass
class Report:
    cases: int = 0
    seed: int = 0
    seconds: float = 0.0
    expected_records: int = 0
    submitted_records: int = 0
    stored_records: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    codes: Counter[int] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    slowest: float = 0.0
    slowest_input: str = ""

    @property
    def crashes(self) -> int:
        return sum(1 for f in self.findings if f.kind in CRASH_KINDS)

    @property
    def internal_errors(self) -> int:
        return sum(1 for f in self.findings if f.kind == "internal-error")

    @property
    def other_findings(self) -> int:
        return len(self.findings) - self.crashes - self.internal_errors

    @property
    def ok(self) -> bool:
        return (
            not self.findings
            and self.submitted_records == self.expected_records
            and self.stored_records == self.expected_records
        )

    def summary(self) -> str:
        relation = (
            "== expected"
            if self.stored_records == self.expected_records
            else f"!= expected {self.expected_records}"
        )
        return (
            f"fuzz: {self.cases} cases, {self.crashes} crashes, {self.internal_errors} internal "
            f"errors, {self.stored_records} records logged ({relation})"
        )


class _Collect(logging.Handler):
    """Keeps what the gateway logs at ERROR (tracebacks of -90099s, a failed usage batch)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        detail = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            frames = traceback.extract_tb(error.__traceback__)
            where = ""
            if frames:
                last = frames[-1]
                where = f" at {Path(last.filename).name}:{last.lineno} ({last.name})"
                for frame in reversed(frames):  # the project's own frame nearest the error
                    if (
                        "site-packages" not in frame.filename
                        and "/lib/python" not in frame.filename
                    ):
                        where += f", from {Path(frame.filename).name}:{frame.lineno}"
                        break
            detail += f": {type(error).__name__}: {error}{where}"
        self.messages.append(f"{record.name}: {detail}")


# -- checks ------------------------------------------------------------------------------------

_RECORD_TEXT = [f.name for f in fields(UsageRecord) if f.type in ("str", str)]


def _expected_keys(decoded: codec.Envelope) -> tuple[list[str], int]:
    """The reply's keys for an envelope, and how many usage records it must produce."""
    keys = [key for key, _ in decoded.entries]
    auth = decoded.auth
    if auth is None or (isinstance(auth, dict) and set(auth) == {"sessionId"}):
        return keys, len(keys)
    return ["auth", *keys], len(keys) + 1


def _outcome_problem(key: str, outcome: Any) -> str | None:
    if not isinstance(outcome, dict) or not isinstance(outcome.get("success"), bool):
        return f"outcome {key!r} is not a TR50 outcome: {outcome!r:.200}"
    if outcome["success"]:
        if not set(outcome) <= {"success", "params"}:
            return f"success {key!r} has extra keys {sorted(outcome)}"
        if "params" in outcome and not isinstance(outcome["params"], dict):
            return f"success {key!r} has params {outcome['params']!r:.100}"
        return None
    codes, messages = outcome.get("errorCodes"), outcome.get("errorMessages")
    if set(outcome) != {"success", "errorCodes", "errorMessages"}:
        return f"failure {key!r} has keys {sorted(outcome)}"
    if not (isinstance(codes, list) and isinstance(messages, list) and len(codes) == 1):
        return f"failure {key!r} is malformed: {outcome!r:.200}"
    if len(messages) != 1 or not isinstance(messages[0], str) or not messages[0]:
        return f"failure {key!r} has no message: {outcome!r:.200}"
    if codes[0] not in KNOWN_CODES or type(codes[0]) is not int:
        return f"failure {key!r} has unknown code {codes[0]!r}"
    return None


def _codes(reply: dict[str, Any]) -> list[int]:
    if reply.get("success") is False:
        return list(reply.get("errorCodes", []))
    return [
        code
        for outcome in reply.values()
        if isinstance(outcome, dict)
        for code in outcome.get("errorCodes", [])
    ]


def _depth(value: Any) -> int:
    """Nesting depth counting objects and arrays (iterative: orjson allows 1024 levels)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _culprits(decoded: Any, reply: dict[str, Any]) -> str:
    """The entries answered -90099, as the dispatcher saw them: the input that matters."""
    if not isinstance(decoded, codec.Envelope):
        return ""
    bodies = dict(decoded.entries)
    if decoded.auth is not None:
        bodies["auth"] = decoded.auth
    shown = [
        f"{key!r:.40}: {orjson.dumps(bodies.get(key)).decode()[:300]}"
        for key, outcome in reply.items()
        if isinstance(outcome, dict) and -90099 in outcome.get("errorCodes", ())
    ]
    return "; entry " + "; entry ".join(shown) if shown else ""


class Fuzzer:
    def __init__(self, gateway: Assembly, rng: random.Random, report: Report) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.rng = rng
        self.report = report
        self.real = Real()
        self.grammar = Grammar(rng, self.real)
        self.payloads = Payloads(self.grammar)
        self.sessions: list[tuple[Session, str, Callable[[], Any]]] = []
        self.connections: list[Connection] = []
        self.unstorable: list[str] = []
        self.collector = _Collect()
        self.stall = 0.0  # the longest the event loop was blocked during the current case
        self._serial = 0

    # set-up
    async def provision(self) -> None:
        identity, ttl = self.gateway.storage.identity, self.settings.session_ttl
        identity.create_org("acme")
        identity.create_org("globex")
        identity.create_user("ops@acme.fuzz", "acme", PASSWORD, "super-ops")
        identity.create_user("user@globex.fuzz", "globex", PASSWORD, "user")
        self.real.app_id, self.real.app_token = identity.create_app("acme", "fleet")
        logins: list[Callable[[], Any]] = [
            lambda: identity.authenticate_user("ops@acme.fuzz", PASSWORD, ttl),
            lambda: identity.authenticate_user("user@globex.fuzz", PASSWORD, ttl),
            lambda: identity.authenticate_thing(
                self.real.app_id, self.real.app_token, "truck-7", ttl
            ),
        ]
        for login in logins:
            session, token = await login()
            self.sessions.append((session, token, login))
        self.real.whoamis = ["ops@acme.fuzz", "user@globex.fuzz", "truck-7", "t-fuzz"]
        self._refresh_tokens()
        self.connections = [self._new_connection() for _ in range(6)]

    def _refresh_tokens(self) -> None:
        self.real.tokens = [token for _, token, _ in self.sessions]

    async def _renew_ended_sessions(self) -> None:
        """A generated `session.end` may end one of ours; log in again (not through the log)."""
        for index, (session, _, login) in enumerate(self.sessions):
            if session.ended:
                fresh, token = await login()
                self.sessions[index] = (fresh, token, login)
                self._refresh_tokens()

    async def watch_loop(self, tick: float = 0.05) -> None:
        """Runs beside the cases: how late each tick wakes is how long the loop was blocked."""
        while True:
            before = time.perf_counter()
            await asyncio.sleep(tick)
            self.stall = max(self.stall, time.perf_counter() - before - tick)

    def _new_connection(self) -> Connection:
        self._serial += 1
        roll = self.rng.random()
        if roll < 0.5:
            connection = Connection("ws", f"ws-{self._serial}", "127.0.0.1", binds_sessions=True)
        elif roll < 0.85:
            connection = Connection("mqtt", f"fuzz-{self._serial}", "", binds_sessions=True)
        else:
            connection = Connection("mqtt", "", "", binds_sessions=False)  # classic mode
        if connection.binds_sessions and self.rng.random() < 0.4:
            session, token, _ = self.rng.choice(self.sessions)
            connection.bind(session, token)
        return connection

    def _connection(self) -> Connection:
        if self.rng.random() < 0.01:
            self.connections[self.rng.randrange(len(self.connections))] = self._new_connection()
        return self.rng.choice(self.connections)

    def watch_records(self) -> None:
        """Check each record as it is submitted: what the writer could not store is lost."""
        usage = self.gateway.storage.usage
        submit = usage.submit
        cap = self.settings.log_cap

        def checked_submit(record: UsageRecord) -> int:
            for name in _RECORD_TEXT:
                value = getattr(record, name)
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as error:
                    self.unstorable.append(
                        f"usage record field {name} is not UTF-8 ({error.reason} at {error.start})"
                    )
            for name in ("request", "response"):
                size = len(getattr(record, name).encode("utf-8", "replace"))
                if size > cap:
                    self.unstorable.append(f"usage record {name} has {size} bytes > cap {cap}")
            return submit(record)

        usage.submit = checked_submit  # type: ignore[method-assign]

    # one case
    def _check_codec(self, payload: bytes | str) -> tuple[Any, str | None]:
        settings = self.settings
        try:
            decoded = codec.decode(
                payload,
                max_bytes=settings.max_payload,
                max_commands=settings.max_commands,
                log_cap=settings.log_cap,
            )
        except Exception as error:
            return None, f"codec.decode raised {type(error).__name__}: {error}"
        size = len(
            payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
        )
        if isinstance(decoded, codec.RootFailure):
            return decoded, self._root_failure_problem(decoded, payload, size)
        if not isinstance(decoded, codec.Envelope):
            return None, f"codec.decode returned {type(decoded).__name__}"
        if size > settings.max_payload:
            return decoded, f"{size} bytes over the limit decoded as an envelope"
        if len(decoded.entries) > settings.max_commands:
            return decoded, f"{len(decoded.entries)} commands over the cap decoded"
        document = orjson.loads(payload)  # the codec accepted it, so orjson must too
        expected = [(key, value) for key, value in document.items() if key != "auth"]
        if decoded.entries != expected or decoded.auth != document.get("auth"):
            return decoded, "entries differ from orjson's reading of the payload"
        return decoded, None

    def _root_failure_problem(
        self, failure: codec.RootFailure, payload: bytes | str, size: int
    ) -> str | None:
        """Whether the codec refused a payload for a reason it really has."""
        code = failure.error.code
        if code == -90011:
            return None if size > self.settings.max_payload else f"-90011 for {size} bytes"
        if code != -90010:
            return f"root failure with code {code}"
        if size > self.settings.max_payload:
            return "a payload over the limit answered -90010, not -90011"
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None  # not JSON: -90010 is right
        if not isinstance(document, dict) or not document:
            return None
        commands = len(document) - ("auth" in document)
        if commands > self.settings.max_commands or _depth(document) > codec.MAX_DEPTH:
            return None
        if commands == 0 and document.get("auth") is None:
            return None  # {"auth": null}: nothing to run
        return f"a readable envelope refused: {failure.error.message}"

    async def case(self, index: int, kind: str, payload: bytes | str) -> None:
        report = self.report
        report.kinds[kind] += 1
        found = report.findings
        found_before = len(found)

        def finding(what: str, detail: str) -> None:
            found.append(Finding(what, index, payload, detail, kind))

        decoded, codec_problem = self._check_codec(payload)
        if codec_problem is not None:
            finding("codec-crash" if decoded is None else "codec-mismatch", codec_problem)
        connection = self._connection()
        usage = self.gateway.storage.usage
        before = usage.submitted
        logged_before = len(self.collector.messages)
        self.stall = 0.0
        started = time.perf_counter()
        try:
            reply_bytes = await asyncio.wait_for(
                self.gateway.dispatcher.handle(payload, connection), CASE_TIMEOUT
            )
        except TimeoutError:
            finding("hang", f"no reply within {CASE_TIMEOUT} s")
            return
        except Exception as error:
            finding("crash", f"handle raised {type(error).__name__}: {error}")
            return
        finally:
            elapsed = time.perf_counter() - started
            if elapsed > report.slowest:
                report.slowest = elapsed
                report.slowest_input = f"case {index} ({kind}): {payload[:200]!r}"
        submitted = usage.submitted - before
        for _ in range(2):  # let the loop monitor wake (after us, then before us) and measure
            await asyncio.sleep(0)
        if elapsed > SLOW_CASE:
            finding("slow", f"{elapsed:.1f} s for one payload")
        if self.stall > LOOP_STALL:
            finding("loop-blocked", f"the event loop was blocked for {self.stall:.1f} s")
        if not isinstance(reply_bytes, bytes):
            finding("bad-reply", f"reply is {type(reply_bytes).__name__}, not bytes")
            return
        try:
            reply = orjson.loads(reply_bytes)
        except (orjson.JSONDecodeError, TypeError) as error:
            finding("bad-reply", f"reply is not JSON ({error}): {reply_bytes!r:.200}")
            return
        if not isinstance(reply, dict):
            finding("bad-reply", f"reply is not an object: {reply!r:.200}")
            return
        codes = _codes(reply)
        report.codes.update(code for code in codes if isinstance(code, int))
        # The writer thread's errors belong to no case in particular; they are reported at the end.
        logged = [
            message
            for message in self.collector.messages[logged_before:]
            if not message.startswith("tr50gw.usage")
        ]
        if -90099 in codes:
            cause = " | ".join(logged) or "nothing logged"
            finding("internal-error", f"-90099 ({cause}){_culprits(decoded, reply)}")

        expected_records = 0
        if isinstance(decoded, codec.RootFailure):
            expected_records = 1
            error = decoded.error
            if reply != {
                "success": False,
                "errorCodes": [error.code],
                "errorMessages": [error.message],
            }:
                finding("bad-reply", f"expected root failure {error.code}, got {reply!r:.300}")
        elif isinstance(decoded, codec.Envelope):
            keys, expected_records = _expected_keys(decoded)
            if list(reply) != keys:
                finding("bad-reply", f"reply keys {list(reply)!r:.200} != {keys!r:.200}")
            for key, outcome in reply.items():
                problem = _outcome_problem(key, outcome)
                if problem is not None:
                    finding("bad-reply", problem)
                    break
            self._learn(reply)
        report.expected_records += expected_records
        if decoded is not None and submitted != expected_records:
            finding("record-count", f"{submitted} usage records for {expected_records} commands")
        if self.unstorable:
            finding("unstorable-record", "; ".join(dict.fromkeys(self.unstorable)))
            self.unstorable.clear()
        if logged and len(found) == found_before:
            finding("logged-error", " | ".join(logged)[:300])
        await self._renew_ended_sessions()

    def _learn(self, reply: dict[str, Any]) -> None:
        """Keep record ids from listings, so `usage.api.get` sometimes finds one."""
        for outcome in reply.values():
            params = outcome.get("params") if isinstance(outcome, dict) else None
            result = params.get("result") if isinstance(params, dict) else None
            if isinstance(result, list) and result and isinstance(result[0], dict):
                record_id = result[0].get("id")
                if isinstance(record_id, str):
                    self.real.record_ids.append(record_id)
                    del self.real.record_ids[:-16]


async def _run(cases: int, seed: int, out: Callable[[str], None], folder: Path) -> Report:
    report = Report(seed=seed)
    settings = Settings(
        db=folder / "fuzz.duckdb",
        mqtt_url="none",
        ws_port=-1,
        instance_name="fuzz",
        compact_interval_s=0,
        **FUZZ_LIMITS,
    )
    gateway = assemble(settings)
    rng = random.Random(seed)
    fuzzer = Fuzzer(gateway, rng, report)
    gateway_logger = logging.getLogger("tr50gw")
    collector = fuzzer.collector
    saved = gateway_logger.propagate
    gateway_logger.addHandler(collector)
    gateway_logger.propagate = False  # keep tracebacks of findings off the console
    monitor = asyncio.create_task(fuzzer.watch_loop())
    try:
        await fuzzer.provision()
        fuzzer.watch_records()
        step = max(1, cases // 10)
        started = time.perf_counter()
        for index in range(cases):
            kind, payload = fuzzer.payloads.next()
            await fuzzer.case(index, kind, payload)
            report.cases += 1
            if (index + 1) % step == 0 or index + 1 == cases:
                now = time.perf_counter()
                rate = (index + 1) / (now - started)
                out(
                    f"fuzz: {index + 1:,}/{cases:,} cases ({(index + 1) * 100 // cases}%), "
                    f"{rate:,.0f} cases/s, {len(report.findings)} findings"
                )
        report.seconds = time.perf_counter() - started
        report.submitted_records = gateway.storage.usage.submitted
        if not await asyncio.to_thread(gateway.storage.usage.flush, 60):
            report.findings.append(Finding("writer", cases, b"", "usage log did not flush"))
        row = gateway.storage.database.cursor().execute("SELECT count(*) FROM usage_log").fetchone()
        report.stored_records = int(row[0]) if row else -1
        failed = [m for m in collector.messages if m.startswith("tr50gw.usage")]
        if failed:
            lost = sum(int(n) for n in re.findall(r"failed to store (\d+)", " ".join(failed)))
            detail = f"{len(failed)} batch(es), {lost} records, not stored; first: {failed[0]}"
            report.findings.append(Finding("writer", cases, b"", detail[:400]))
    finally:
        monitor.cancel()
        gateway_logger.removeHandler(collector)
        gateway_logger.propagate = saved
        await asyncio.to_thread(gateway.close)
    return report


def _signature(detail: str) -> str:
    return re.sub(r"\d+|'.*?'|\".*?\"", "#", detail)[:160]


def run(cases: int = DEFAULT_CASES, seed: int = 0, out: Callable[[str], None] = print) -> Report:
    """Run `cases` cases from `seed` on a throw-away database; prints progress and findings."""
    with tempfile.TemporaryDirectory(prefix="tr50gw-fuzz-") as folder:
        report = asyncio.run(_run(cases, seed, out, Path(folder)))
    by_kind = Counter(f.kind for f in report.findings)
    for kind, count in sorted(by_kind.items()):
        # One example per distinct cause (the detail without its numbers and quoted input).
        examples: dict[str, list[Finding]] = {}
        for item in report.findings:
            if item.kind == kind:
                examples.setdefault(_signature(item.detail), []).append(item)
        out(f"fuzz: {count} finding(s) of kind {kind}, {len(examples)} distinct:")
        for same in list(examples.values())[:PRINTED_PER_KIND]:
            out(f"{same[0].describe()}\n    ({len(same)} case(s) like this)")
    rate = report.cases / report.seconds if report.seconds else 0.0
    out(
        f"fuzz: seed {seed}, {report.seconds:.1f} s ({rate:,.0f} cases/s), slowest case "
        f"{report.slowest * 1000:.0f} ms; payload kinds {dict(sorted(report.kinds.items()))}"
    )
    out(f"fuzz: slowest case: {report.slowest_input}")
    out(f"fuzz: error codes seen {dict(sorted(report.codes.items()))}")
    if report.other_findings:
        others = {kind: n for kind, n in sorted(by_kind.items()) if kind not in CRASH_KINDS}
        others.pop("internal-error", None)
        out(f"fuzz: {report.other_findings} other findings {others}")
    if report.submitted_records != report.expected_records:
        submitted, expected = report.submitted_records, report.expected_records
        out(f"fuzz: {submitted} records submitted, {expected} expected")
    out(report.summary())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--cases", type=int, default=DEFAULT_CASES, help="how many payloads")
    parser.add_argument("--seed", type=int, default=None, help="default: a random seed, printed")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"fuzz: {args.cases:,} cases, seed {seed} (replay with --seed {seed})", flush=True)
    report = run(args.cases, seed, lambda line: print(line, flush=True))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
