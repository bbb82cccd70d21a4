"""A realistic synthetic usage log (and a fleet's property values), generated inside DuckDB for
benchmarks and tests.

Every value of row `i` is computed in SQL by `INSERT ... SELECT ... FROM range()` (no Python per
row) from hashes of `hash(i, seed)`: deterministic for a seed, independent of thread scheduling
and of how the rows are split into statements. `range()` feeds the insert in order, so rows land
in ascending `ts` and DuckDB's zone maps can skip whole row groups for time filters, as they do
for the gateway's own appends.

The shape of the data:

* time: `days` ending at `end`, with a diurnal peak around 14:00 UTC and quieter weekends. Row
  `i` gets its time from a monotone warp `g` of `(i + jitter) / rows` whose slope sets the local
  rate, so `ts` never decreases with `i` without sorting anything.
* ids: UUIDv7 (RFC 9562, method 3): 48-bit Unix milliseconds, then the microseconds within the
  millisecond in `rand_a`, then `i` and random bits in `rand_b`; ids therefore increase with `i`
  and `ORDER BY ts DESC, id DESC` is exactly the reverse insertion order.
* callers: a Zipf-like popularity (a few busy, most quiet), spread over orgs whose sizes are
  skewed too; 85% are things (`thing-0042`, MQTT mostly), 15% users (`user17@org3.example`,
  WebSocket) with a different command mix.
* commands: 40 `service.command` names over 9 services, outcome failed at `failure_rate` with
  the error codes of SPEC §1; log-normal execution times per command; short TR50 request and
  response strings like the gateway's own (compact JSON, secrets as `"***"`).

Property values (`generate_properties`): one org's fleet of things publishing four keys at a
steady pace with jitter, each received day's rows in (org_id, thing_key, key, ts) order, as a
device table's compaction keeps them, and their hourly rollups; the things are registered so that
the org's users can read them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, NamedTuple

import duckdb

from storage.duckdb import rollups
from storage.duckdb.compaction import SORTED_TABLES, compact_due
from storage.duckdb.database import Database
from storage.duckdb.identity import token_digest

__all__ = [
    "COMMANDS",
    "FLEET_KEYS",
    "GENERATOR_VERSION",
    "PROPERTY_GENERATOR_VERSION",
    "generate_file",
    "generate_properties",
    "generate_usage",
    "main",
    "stored_file_summary",
    "stored_summary",
]

# Bumped whenever the same parameters would generate different data or a different summary, so
# that cached datasets (bench/queries.py) are regenerated.
GENERATOR_VERSION: Final = 3  # 2: finished days compacted, as a running gateway leaves them
# 3: hourly rollups built
_EPOCH: Final = datetime(1970, 1, 1)
_DAY_US: Final = 86_400_000_000
_LUT_SIZE: Final = 4096
_ERROR_LUT_SIZE: Final = 1024
_USER_SHARE: Final = 0.15  # of callers
_DIURNAL: Final = 0.45  # 0 = flat; peak/mean rate = 1 / (1 - diurnal - weekly)
_WEEKLY: Final = 0.20
_PEAK_HOUR_UTC: Final = 14.0
_INSTANCES: Final = ("tr50gw-a", "tr50gw-b")
_PROPERTY_KEYS: Final = (
    "temp", "humidity", "battery", "rssi", "speed", "fuel", "pressure", "voltage",
)  # fmt: skip
_METHODS: Final = ("reboot", "setInterval", "fwUpdate", "ping")


class CommandSpec(NamedTuple):
    """One generated command: its name, how often things and users call it, how long it takes."""

    service: str
    command: str
    thing_weight: float
    user_weight: float
    median_us: float  # median execution time
    family: int  # which request/response template (see _FAMILIES)


# Families of request/response templates.
_NONE, _AUTH, _LOC_PUB, _PROP_PUB, _ALARM_PUB, _BATCH, _THING_READ, _PROP_READ = range(8)
_HISTORY, _LIST, _THING_WRITE, _METHOD, _USAGE, _SESSION, _TIME = range(8, 15)

# Ordered by importance: `commands=k` keeps the first k.
COMMANDS: Final[tuple[CommandSpec, ...]] = (
    CommandSpec("property", "publish", 26.0, 0.0, 150, _PROP_PUB),
    CommandSpec("location", "publish", 20.0, 0.0, 180, _LOC_PUB),
    CommandSpec("alarm", "publish", 6.0, 0.0, 170, _ALARM_PUB),
    CommandSpec("diag", "ping", 5.0, 1.5, 25, _NONE),
    CommandSpec("api", "authenticate", 2.0, 6.0, 9_000, _AUTH),
    CommandSpec("thing", "find", 0.5, 8.0, 900, _THING_READ),
    CommandSpec("usage", "api.list", 0.0, 5.0, 12_000, _USAGE),
    CommandSpec("property", "batch", 6.0, 0.0, 400, _BATCH),
    CommandSpec("property", "current", 0.5, 5.0, 700, _PROP_READ),
    CommandSpec("property", "history", 0.0, 4.0, 4_500, _HISTORY),
    CommandSpec("session", "info", 0.5, 4.0, 60, _SESSION),
    CommandSpec("thing", "list", 0.0, 6.0, 2_500, _LIST),
    CommandSpec("location", "current", 0.2, 3.0, 650, _THING_READ),
    CommandSpec("location", "history", 0.0, 2.5, 5_200, _HISTORY),
    CommandSpec("alarm", "current", 0.2, 2.0, 600, _PROP_READ),
    CommandSpec("alarm", "history", 0.0, 1.5, 4_800, _HISTORY),
    CommandSpec("method", "ack", 1.5, 0.0, 250, _METHOD),
    CommandSpec("method", "exec", 0.0, 2.0, 30_000, _METHOD),
    CommandSpec("diag", "time", 2.0, 1.0, 30, _TIME),
    CommandSpec("session", "end", 0.3, 1.5, 300, _SESSION),
    CommandSpec("location", "batch", 2.0, 0.0, 420, _BATCH),
    CommandSpec("alarm", "batch", 1.0, 0.0, 380, _BATCH),
    CommandSpec("thing", "update", 0.3, 1.5, 1_200, _THING_WRITE),
    CommandSpec("thing", "create", 0.0, 1.0, 1_500, _THING_WRITE),
    CommandSpec("property", "aggregate", 0.0, 1.5, 8_000, _HISTORY),
    CommandSpec("usage", "api.activity", 0.0, 1.0, 25_000, _USAGE),
    CommandSpec("thing", "tag.add", 0.0, 0.5, 900, _THING_WRITE),
    CommandSpec("method", "update", 0.5, 0.0, 300, _METHOD),
    CommandSpec("thing", "attr.set", 0.4, 0.3, 800, _THING_WRITE),
    CommandSpec("location", "decode", 0.3, 0.2, 1_100, _LOC_PUB),
    CommandSpec("usage", "api.times", 0.0, 0.6, 30_000, _USAGE),
    CommandSpec("usage", "api.statuses", 0.0, 0.5, 22_000, _USAGE),
    CommandSpec("thing", "delete", 0.0, 0.3, 1_100, _THING_READ),
    CommandSpec("alarm", "delete", 0.0, 0.2, 900, _PROP_READ),
    CommandSpec("property", "delete", 0.0, 0.2, 950, _PROP_READ),
    CommandSpec("method", "find", 0.0, 0.4, 700, _THING_READ),
    CommandSpec("thing", "bind", 0.2, 0.1, 1_000, _THING_WRITE),
    CommandSpec("usage", "api.breakdown", 0.0, 0.4, 40_000, _USAGE),
    CommandSpec("usage", "api.get", 0.0, 0.3, 2_000, _USAGE),
    CommandSpec("usage", "api.history", 0.0, 0.3, 35_000, _USAGE),
)

# (code, weight, message) for failures of a known caller; -90004/-90005 come without a session.
_ERRORS: Final = (
    (-90002, 45.0, "invalid params: thingKey: Field required"),
    (-90008, 20.0, "not found: no such thing"),
    (-90005, 12.0, "authentication session is invalid"),
    (-90003, 8.0, "permission denied"),
    (-90012, 8.0, "rate limited: slow down"),
    (-90001, 4.0, "unknown command"),
    (-90099, 3.0, "internal error"),
)
_AUTH_FAILED: Final = (-90004, "authentication failed")
_ANONYMOUS_CODES: Final = (-90004, -90005)


def _h(key: str, salt: int) -> str:
    """SQL for a 64-bit hash of the hashed `key` column (`k`: row, `kc`: caller) and a salt.

    `hash(a, b, c)` only combines the three hashes cheaply: values for different salts are
    almost perfectly correlated. Hashing the row's hash again after XOR with a spread-out salt
    goes through DuckDB's full 64-bit mixer, so every salt gives an independent stream.
    """
    return f"hash(xor({key}, {salt * 0x9E3779B97F4A7C15 % 2**64}::UBIGINT))"


def _u(key: str, salt: int) -> str:
    """SQL for a uniform double in [0, 1) (53 random bits) from `_h(key, salt)`."""
    return f"(({_h(key, salt)} >> 11)::DOUBLE / 9007199254740992.0)"


# Per family: SQL for the `params` object of the request, and for the `params` of a success
# reply ('' = none). Columns available: tk (thing key), pk (property key), n1, n2, n3 (uniform
# doubles), whoami, org_key, is_user, ts_us, i.
_TK = """'"thingKey":"' || tk || '"'"""


def _with_tk(rest: str) -> str:
    """A params object that starts with the thing key: `{"thingKey":"..."` + rest."""
    return "'{' || " + _TK + rest


_FAMILIES: Final[dict[int, tuple[str, str]]] = {
    _NONE: ("", ""),
    _TIME: ("", """'{"time":' || (ts_us // 1000)::VARCHAR || '}'"""),
    _AUTH: (
        """CASE WHEN is_user
             THEN '{"username":"' || whoami || '","password":"***"}'
             ELSE '{"appId":"' || md5(org_key || '-fleet') || '","appToken":"***",'
                  || """
        + _TK
        + """ || '}' END""",
        """'{"sessionId":"***"}'""",
    ),
    _LOC_PUB: (
        _with_tk(""" || ',"lat":' || round(35 + 20 * n1, 5)::VARCHAR
          || ',"lng":' || round(-10 + 40 * n2, 5)::VARCHAR
          || ',"heading":' || (n3 * 360)::INTEGER::VARCHAR
          || ',"speed":' || round(n3 * n1 * 130, 1)::VARCHAR
          || ',"fixAcc":' || (3 + n2 * 20)::INTEGER::VARCHAR || ',"fixType":"gps"}'"""),
        "",
    ),
    _PROP_PUB: (
        _with_tk(""" || ',"key":"' || pk || '","value":' || round(100 * n1, 2)::VARCHAR
          || ',"ts":' || (ts_us // 1000 - (n2 * 900)::BIGINT)::VARCHAR
          || ',"corrId":"' || lpad(to_hex((n3 * 16777215)::UBIGINT), 6, '0')
          || '"}'"""),
        "",
    ),
    _ALARM_PUB: (
        _with_tk(""" || ',"key":"' || pk || '_alarm","state":'
          || (n1 * 4)::INTEGER::VARCHAR || ',"msg":"' || pk || ' threshold crossed"}'"""),
        "",
    ),
    _BATCH: (
        _with_tk(""" || ',"data":[{"key":"' || pk || '","value":'
          || round(100 * n1, 2)::VARCHAR || '},{"key":"battery","value":'
          || round(100 * n2, 1)::VARCHAR || '},{"key":"rssi","value":-'
          || (40 + n3 * 60)::INTEGER::VARCHAR || '}]}'"""),
        "",
    ),
    _THING_READ: (
        _with_tk(" || '}'"),
        """'{"key":"' || tk || '","name":"Unit ' || upper(tk) || '","defKey":"tracker",'
          || '"tags":["fleet-' || (n1 * 9)::INTEGER::VARCHAR || '"],"lastSeen":'
          || (ts_us // 1000 - (n2 * 3600000)::BIGINT)::VARCHAR || '}'""",
    ),
    _PROP_READ: (
        _with_tk(""" || ',"key":"' || pk || '"}'"""),
        """'{"value":' || round(100 * n1, 2)::VARCHAR || ',"ts":'
          || (ts_us // 1000 - (n2 * 600000)::BIGINT)::VARCHAR || '}'""",
    ),
    _HISTORY: (
        _with_tk(""" || ',"key":"' || pk || '","last":"'
          || (1 + (n1 * 48)::INTEGER)::VARCHAR || 'h","records":100}'"""),
        """'{"values":[{"value":' || round(100 * n2, 2)::VARCHAR || ',"ts":'
          || (ts_us // 1000 - 60000)::VARCHAR || '},{"value":' || round(100 * n3, 2)::VARCHAR
          || ',"ts":' || (ts_us // 1000 - 120000)::VARCHAR || '}]}'""",
    ),
    _LIST: (
        """'{"offset":0,"limit":' || (10 * (1 + (n1 * 9)::INTEGER))::VARCHAR
          || ',"tags":["fleet-' || (n2 * 9)::INTEGER::VARCHAR || '"]}'""",
        """'{"count":' || (1 + (n3 * 400)::INTEGER)::VARCHAR || ',"result":[{"key":"' || tk
          || '","name":"Unit ' || upper(tk) || '"}]}'""",
    ),
    _THING_WRITE: (
        _with_tk(""" || ',"name":"Unit ' || upper(tk) || '","tags":["fleet-'
          || (n1 * 9)::INTEGER::VARCHAR || '"],"attrs":{"site":"depot-'
          || (n2 * 30)::INTEGER::VARCHAR || '"}}'"""),
        "",
    ),
    _METHOD: (
        _with_tk(""" || ',"method":"' || $methods[1 + (n1 * 4)::INTEGER % 4]
          || '","params":{"delay":' || (n2 * 60)::INTEGER::VARCHAR || '},"ackTimeout":30}'"""),
        "",
    ),
    _USAGE: (
        """'{"last":"' || (1 + (n1 * 72)::INTEGER)::VARCHAR || 'h","limit":'
          || (10 * (1 + (n2 * 9)::INTEGER))::VARCHAR || ',"who":"' || tk || '"}'""",
        """'{"count":' || (n3 * 5000)::INTEGER::VARCHAR || ',"result":null}'""",
    ),
    _SESSION: ("", """'{"id":"***","orgKey":"' || org_key || '","ttl":86400}'"""),
}


def _family_case(part: int) -> str:
    branches = " ".join(
        f"WHEN {family} THEN {sql[part]}" for family, sql in _FAMILIES.items() if sql[part]
    )
    return f"CASE family {branches} ELSE '' END"


_INSERT_SQL: Final = f"""
INSERT INTO usage_log (id, ts, exec_time, processed_by, org_id, org_key, whoami, service, command,
    success, error_code, transport, client_id, remote_addr, request, response)
WITH base AS (
    SELECT i, k,
        $start_us + floor((
            $span_us * u - $c1 * (sin($w1 * u - $p1) + sin($p1))
                         - $c2 * (sin($w2 * u - $p2) + sin($p2))
        ) * $scale)::BIGINT AS ts_us,
        floor($callers * pow({_u("k", 1)}, $zipf))::BIGINT AS caller_rank,
        1 + floor({_u("k", 2)} * {_LUT_SIZE})::BIGINT AS slot,
        {_u("k", 3)} < $failure_rate AS failed,
        1 + floor({_u("k", 4)} * {_ERROR_LUT_SIZE})::BIGINT AS error_slot,
        sqrt(-2 * ln(1 - {_u("k", 5)})) * cos(2 * pi() * {_u("k", 6)}) AS z,
        {_u("k", 7)} AS n1, {_u("k", 8)} AS n2, {_u("k", 9)} AS n3,
        {_u("k", 10)} AS n4, {_u("k", 11)} AS n5
    FROM (
        SELECT i, k, (i + {_u("k", 0)}) / $rows AS u
        FROM (SELECT i, hash(i, $seed) AS k FROM range($first, $first + $count) t(i))
    )
), callers AS (
    SELECT *,
        (caller_rank * $caller_mult + $caller_offset) % $callers AS caller,
    FROM base
), caller_facts AS (
    SELECT *,
        {_u("kc", 20)} < {_USER_SHARE} AS is_user,
        1 + floor($orgs * pow({_u("kc", 21)}, 2))::INTEGER AS org_no,
    FROM (SELECT *, hash(caller, $seed) AS kc FROM callers)
), picked AS (
    SELECT *,
        ascii(substr(CASE WHEN is_user THEN $user_lut ELSE $thing_lut END, slot, 1)) - 64
            AS command_no,
    FROM caller_facts
), outcome AS (
    SELECT *,
        CASE WHEN NOT failed THEN NULL
             WHEN $families[command_no] = {_AUTH} THEN {_AUTH_FAILED[0]}
             ELSE $error_codes[ascii(substr($error_lut, error_slot, 1)) - 64] END AS error_code,
        $families[command_no] AS family,
        $org_keys[org_no] AS org_key,
        CASE WHEN is_user THEN 'user' || caller::VARCHAR || '@' || $org_keys[org_no] || '.example'
             ELSE 'thing-' || lpad(caller::VARCHAR, $key_width, '0') END AS whoami,
        CASE WHEN is_user
             THEN 'thing-' || lpad(({_h("k", 30)} % $callers)::VARCHAR, $key_width, '0')
             ELSE 'thing-' || lpad(caller::VARCHAR, $key_width, '0') END AS tk,
        $property_keys[(1 + ({_h("kc", 31)} + (n4 * 3)::UBIGINT) % 8)::BIGINT] AS pk,
        CASE WHEN is_user THEN (1 + i % 7)::VARCHAR ELSE '1' END AS cid,
        CASE WHEN is_user THEN (CASE WHEN n5 < 0.9 THEN 'ws' ELSE 'mqtt' END)
             ELSE (CASE WHEN n5 < 0.93 THEN 'mqtt' ELSE 'ws' END) END AS transport,
    FROM picked
), described AS (
    SELECT *,
        error_code IN {_ANONYMOUS_CODES} AS anonymous,
        '{{"' || cid || '":{{"command":"' || $names[command_no] || '"'
            || CASE WHEN params = '' THEN '' ELSE ',"params":' || params END
            || '}}}}' AS request,
        '{{"' || cid || '":{{"success":'
            || CASE WHEN error_code IS NOT NULL
                    THEN 'false,"errorCodes":[' || error_code::VARCHAR
                         || '],"errorMessages":["'
                         || $messages[list_position($message_codes, error_code)] || '"]'
                    WHEN result = '' THEN 'true'
                    ELSE 'true,"params":' || result END
            || '}}}}' AS response,
    FROM (
        SELECT *, {_family_case(0)} AS params, {_family_case(1)} AS result FROM outcome
    )
)
SELECT
    (printf('%012x7%03x%016x', ts_us // 1000, ts_us % 1000,
            9223372036854775808::UBIGINT
            | (i::UBIGINT << 24) | ({_h("k", 40)} & 16777215::UBIGINT)))::UUID,
    make_timestamp(ts_us),
    greatest(1000, exp($log_median[command_no] + 0.6 * z)
                   * CASE WHEN error_code IS NULL OR error_code = -90099 THEN 1 ELSE 0.3 END
            )::BIGINT,
    $instances[(1 + {_h("k", 42)} % {len(_INSTANCES)})::BIGINT],
    CASE WHEN anonymous THEN '' ELSE $org_ids[org_no] END,
    CASE WHEN anonymous THEN '' ELSE org_key END,
    CASE WHEN anonymous THEN '' ELSE whoami END,
    $services[command_no],
    $commands[command_no],
    error_code IS NULL,
    error_code,
    transport,
    CASE WHEN transport = 'mqtt'
         THEN 'dev-' || lpad(to_hex({_h("kc", 43)} & 16777215::UBIGINT), 6, '0')
         ELSE 'ws-' || (1 + (hash(xor(kc, (i // 5000)::UBIGINT)) % 100000))::VARCHAR END,
    CASE WHEN transport = 'mqtt' THEN ''
         WHEN is_user THEN '198.51.100.' || (1 + {_h("kc", 44)} % 254)::VARCHAR
         ELSE '10.' || org_no::VARCHAR || '.' || (caller // 254 % 254)::VARCHAR || '.'
              || (1 + caller % 254)::VARCHAR END,
    request,
    response
FROM described
"""  # noqa: S608 - only code constants are formatted in; every value is a $parameter

_INFO_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS synthetic_dataset (
    generated_at TIMESTAMP NOT NULL,
    parameters VARCHAR NOT NULL,
    summary VARCHAR NOT NULL
)"""


def _lookup_table(weights: Sequence[float], size: int) -> str:
    """`size` slots given to items in proportion to `weights`, item n (1-based) as chr(64 + n).

    A string rather than a list: `ascii(substr(lut, slot, 1))` is cheaper per row than indexing
    a constant list, and binding a Python list of thousands of ints costs seconds per call.
    """
    total = sum(weights)
    table: list[int] = []
    cumulative = 0.0
    for number, weight in enumerate(weights, start=1):
        cumulative += weight
        table.extend([number] * (round(cumulative / total * size) - len(table)))
    table = table[:size] + [len(weights)] * (size - len(table))
    return "".join(chr(64 + number) for number in table)


def _coprime_multiplier(modulus: int) -> int:
    multiplier = 7919
    while math.gcd(multiplier, modulus) != 1:
        multiplier += 2
    return multiplier


def _epoch_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _time_warp(start: datetime, days: int) -> dict[str, float]:
    """Coefficients of the monotone warp u -> time that gives daily and weekly rhythms.

    g(u) = span*u - c1*(sin(w1*u - p1) + sin p1) - c2*(sin(w2*u - p2) + sin p2) has slope
    span*(1 - d*cos(...) - w*cos(...)) > 0, so it is increasing; the local event rate is
    inversely proportional to the slope, highest at 14:00 UTC and mid-week.
    """
    span = days * _DAY_US
    day_fraction = (_epoch_us(start) % _DAY_US) / _DAY_US
    # 1970-01-01 was a Thursday: Monday 00:00 is week fraction 0.
    week_fraction = (((_epoch_us(start) / _DAY_US) + 3) % 7) / 7
    w1 = 2 * math.pi * days
    w2 = 2 * math.pi * days / 7
    p1 = 2 * math.pi * (_PEAK_HOUR_UTC / 24 - day_fraction)
    p2 = 2 * math.pi * (2.5 / 7 - week_fraction)  # Wednesday noon
    c1 = _DIURNAL * span / w1
    c2 = _WEEKLY * span / w2
    g1 = span - c1 * (math.sin(w1 - p1) + math.sin(p1)) - c2 * (math.sin(w2 - p2) + math.sin(p2))
    return {
        "span_us": float(span), "w1": w1, "w2": w2, "p1": p1, "p2": p2, "c1": c1, "c2": c2,
        "scale": span / g1,
    }  # fmt: skip


def _org_rows(orgs: int, seed: int) -> list[tuple[str, str, str]]:
    """(org_id, org_key, name): ids look like `uuid4().hex` but are fixed by the seed."""
    rows = []
    for number in range(1, orgs + 1):
        org_id = hashlib.md5(f"tr50gw-synthetic:{seed}:{number}".encode()).hexdigest()  # noqa: S324
        rows.append((org_id, f"org{number}", f"Synthetic Org {number}"))
    return rows


def _insert_parameters(
    *,
    rows: int,
    orgs: list[tuple[str, str, str]],
    callers: int,
    commands: int,
    failure_rate: float,
    days: int,
    start: datetime,
    seed: int,
) -> dict[str, Any]:
    """The `$parameters` of `_INSERT_SQL`: scalars, lookup tables and the time warp."""
    specs = COMMANDS[:commands]
    thing_weights = [spec.thing_weight for spec in specs]
    user_weights = [spec.user_weight for spec in specs]
    if not any(thing_weights):
        thing_weights = user_weights
    if not any(user_weights):
        user_weights = thing_weights
    return {
        "seed": seed,
        "rows": rows,
        "callers": callers,
        "orgs": len(orgs),
        "start_us": _epoch_us(start),
        **_time_warp(start, days),
        "zipf": 2.5,
        "failure_rate": failure_rate,
        "caller_mult": _coprime_multiplier(callers),
        "caller_offset": (seed * 7_777_777) % callers,
        "key_width": max(4, len(str(callers - 1))),
        "user_lut": _lookup_table(user_weights, _LUT_SIZE),
        "thing_lut": _lookup_table(thing_weights, _LUT_SIZE),
        "error_lut": _lookup_table([weight for _, weight, _ in _ERRORS], _ERROR_LUT_SIZE),
        "error_codes": [code for code, _, _ in _ERRORS],
        "message_codes": [code for code, _, _ in _ERRORS] + [_AUTH_FAILED[0]],
        "messages": [message for _, _, message in _ERRORS] + [_AUTH_FAILED[1]],
        "families": [spec.family for spec in specs],
        "names": [f"{spec.service}.{spec.command}" for spec in specs],
        "services": [spec.service for spec in specs],
        "commands": [spec.command for spec in specs],
        "log_median": [math.log(spec.median_us * 1000) for spec in specs],
        "org_ids": [org_id for org_id, _, _ in orgs],
        "org_keys": [org_key for _, org_key, _ in orgs],
        "instances": list(_INSTANCES),
        "property_keys": list(_PROPERTY_KEYS),
        "methods": list(_METHODS),
    }


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _window(end: datetime | None, days: int) -> tuple[datetime, datetime]:
    """`(start, end)` of `days` ending at `end` (default now), as naive UTC."""
    if end is None:
        end = _utc_now()
    elif end.tzinfo is not None:
        end = end.astimezone(UTC).replace(tzinfo=None)
    return end - timedelta(days=days), end


@contextlib.contextmanager
def _inserting(database: Database) -> Iterator[Any]:
    """A cursor inside a transaction (the caller commits); rolled back if the block fails."""
    cursor = database.new_cursor()
    try:
        cursor.execute("SET enable_progress_bar = false")
        cursor.execute("BEGIN")
        yield cursor
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # nothing open to roll back
            cursor.execute("ROLLBACK")
        raise
    finally:
        cursor.close()


def _insert_chunks(
    cursor: Any,
    sql: str,
    parameters: dict[str, Any],
    rows: int,
    chunk_rows: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """`sql` for rows `$first` .. `$first + $count` of `rows`, by statements of `chunk_rows`
    (every value depends only on the row number, so chunking changes nothing)."""
    for first in range(0, rows, chunk_rows):
        count = min(chunk_rows, rows - first)
        cursor.execute(sql, {**parameters, "first": first, "count": count})
        if progress is not None:
            progress(first + count, rows)


def generate_usage(
    database: Database,
    *,
    rows: int,
    orgs: int = 50,
    callers: int = 5000,
    commands: int = 40,
    failure_rate: float = 0.02,
    days: int = 30,
    end: datetime | None = None,
    seed: int = 1,
    progress: Callable[[int, int], None] | None = None,
    chunk_rows: int = 1_000_000,
    compact: bool = True,
) -> dict[str, Any]:
    """Append `rows` synthetic usage records ending at `end` (naive UTC, default now).

    The orgs `org1`..`org<orgs>` are created in `orgs` (their ids fixed by `seed`; existing ones
    with the same id are reused). Meant for a fresh file: existing usage rows are left alone, and
    the new rows are in time order among themselves. Returns a summary: counts, the orgs (with
    their row counts), the busiest callers, the time range, and how long it took.

    The rows go in by statements of `chunk_rows` within one transaction (every value depends
    only on the row number, so chunking changes nothing); `progress(done, rows)` is called after
    each, which is how a long generation reports its rate. With `compact`, the finished days are
    then compacted (storage.duckdb.compaction) as a running gateway's compactor would have done.
    """
    if rows < 1 or orgs < 1 or callers < 1 or days < 1 or chunk_rows < 1:
        raise ValueError("rows, orgs, callers, days and chunk_rows must be positive")
    if not 1 <= commands <= len(COMMANDS):
        raise ValueError(f"commands must be between 1 and {len(COMMANDS)}")
    if not 0.0 <= failure_rate <= 1.0:
        raise ValueError("failure_rate must be between 0 and 1")
    start, end = _window(end, days)
    started = time.perf_counter()

    org_rows = _org_rows(orgs, seed)
    parameters = _insert_parameters(
        rows=rows, orgs=org_rows, callers=callers, commands=commands,
        failure_rate=failure_rate, days=days, start=start, seed=seed,
    )  # fmt: skip

    with _inserting(database) as cursor:
        for org_id, org_key, name in org_rows:
            cursor.execute(
                "INSERT INTO orgs (org_id, org_key, name, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (org_id) DO NOTHING",
                [org_id, org_key, name, start],
            )
        _insert_chunks(cursor, _INSERT_SQL, parameters, rows, chunk_rows, progress)
        cursor.execute("COMMIT")
        inserted_at = time.perf_counter()
        cursor.execute("CHECKPOINT")
        while compact and compact_due(database, _utc_now()):
            pass  # a round stops early only when a checkpoint is refused
        rollups.rebuild(cursor)  # as the gateway's writer would have kept them
        compacted_at = time.perf_counter()
        summary = _summarize(cursor, start, end, rows)
        summary["parameters"] = {
            "rows": rows, "orgs": orgs, "callers": callers, "commands": commands,
            "failure_rate": failure_rate, "days": days, "seed": seed,
        }  # fmt: skip
        summary["seconds"] = round(time.perf_counter() - started, 2)
        summary["insert_seconds"] = round(inserted_at - started, 2)
        summary["compact_seconds"] = round(compacted_at - inserted_at, 2)
        summary["rows_per_second"] = round(rows / (inserted_at - started))
        summary["generated_at"] = _utc_now().isoformat()
        summary["generator_version"] = GENERATOR_VERSION
        _keep_summary(cursor, summary)
    return summary


def _keep_summary(cursor: Any, summary: dict[str, Any]) -> None:
    """Store `summary` in the file (one dataset's summary per file; `stored_summary` reads it)."""
    cursor.execute(_INFO_SCHEMA)
    cursor.execute("DELETE FROM synthetic_dataset")
    cursor.execute(
        "INSERT INTO synthetic_dataset VALUES (?, ?, ?)",
        [
            _utc_now(),
            json.dumps(summary["parameters"], sort_keys=True),
            json.dumps(summary),
        ],
    )


def _summarize(cursor: Any, start: datetime, end: datetime, rows: int) -> dict[str, Any]:
    """Counts, orgs, busiest callers and time range of the rows in [start, end)."""
    window = [start, end]
    totals = cursor.execute(
        "SELECT count(*), count(*) FILTER (WHERE NOT success), min(ts), max(ts), "
        "count(DISTINCT whoami) FILTER (WHERE whoami <> ''), "
        "count(DISTINCT service || '.' || command) "
        "FROM usage_log WHERE ts >= ? AND ts < ?",
        window,
    ).fetchone()
    cursor.execute(
        "CREATE OR REPLACE TEMP TABLE synthetic_per_caller AS "
        "SELECT org_id, org_key, whoami, count(*) AS n FROM usage_log "
        "WHERE ts >= ? AND ts < ? AND whoami <> '' GROUP BY ALL",
        window,
    )
    per_org = cursor.execute(
        "SELECT o.org_id, o.org_key, o.name, sum(n)::BIGINT, "
        "first(whoami ORDER BY n DESC, whoami), max(n) FROM orgs o "
        "JOIN synthetic_per_caller p ON p.org_id = o.org_id GROUP BY ALL ORDER BY 4 DESC, 2"
    ).fetchall()
    busy = cursor.execute(
        "SELECT whoami, org_key, org_id, n FROM synthetic_per_caller "
        "ORDER BY n DESC, whoami LIMIT 10"
    ).fetchall()
    cursor.execute("DROP TABLE synthetic_per_caller")
    return {
        "rows": rows,
        "rows_in_window": totals[0],
        "failures": totals[1],
        "callers": totals[4],
        "commands": totals[5],
        "start": start.isoformat(),
        "end": end.isoformat(),
        "first_ts": totals[2].isoformat() if totals[2] else None,
        "last_ts": totals[3].isoformat() if totals[3] else None,
        "orgs": [
            {
                "orgId": org_id,
                "orgKey": org_key,
                "name": name,
                "rows": count,
                "busiest_caller": {"whoami": who, "rows": calls},
            }
            for org_id, org_key, name, count, who, calls in per_org
        ],
        "busy_callers": [
            {"whoami": who, "orgKey": org_key, "orgId": org_id, "rows": count}
            for who, org_key, org_id, count in busy
        ],
    }


# -- device data -----------------------------------------------------------------------------
# Bumped whenever the same parameters would generate different property data or summary.
# 2: hourly rollups built, and the rows of each finished (received) day compacted as a running
# gateway leaves them, not sorted over the whole window
PROPERTY_GENERATOR_VERSION: Final = 2
FLEET_KEYS: Final = ("battery", "humidity", "rssi", "temp")  # in sort order, as the rows go in
PROPERTY_ROWS: Final = next(table for table in SORTED_TABLES if table.table == "property_values")

_PROPERTY_SQL: Final = f"""
INSERT INTO property_values
WITH base AS (
    SELECT i, k,
        series // {len(FLEET_KEYS)} AS thing,
        series % {len(FLEET_KEYS)} AS key_no,
        $start_us + j * $step_us + floor({_u("k", 1)} * $step_us * 0.9)::BIGINT AS ts_us,
        {_u("k", 2)} AS n1,
        sqrt(-2 * ln(1 - {_u("k", 3)})) * cos(2 * pi() * {_u("k", 4)}) AS z,
        {_u("kt", 5)} AS level
    FROM (
        SELECT i, series, i % $per_series AS j, hash(i, $seed) AS k,
            hash(series // {len(FLEET_KEYS)}, $seed) AS kt
        FROM (SELECT i, i // $per_series AS series FROM range($first, $first + $count) t(i))
    )
), timed AS (
    SELECT *,
        (ts_us - $start_us) / {_DAY_US}.0 AS day,
        2 * pi() * ((ts_us % {_DAY_US}) / 3600e6 - 9) / 24 AS daily,
    FROM base
)
SELECT
    $org_id,
    'thing-' || lpad(thing::VARCHAR, $key_width, '0'),
    $keys[key_no + 1],
    make_timestamp(ts_us),
    CASE key_no
        WHEN 0 THEN round(least(100, greatest(5, 100 + 0.5 * z
            - 85 * (day / (4 + 6 * level) + level - floor(day / (4 + 6 * level) + level)))), 1)
        WHEN 1 THEN round(least(100, greatest(0, 60 - 15 * sin(daily) + 20 * (level - 0.5)
                                                 + 3 * z)), 1)
        WHEN 2 THEN round(-90 + 40 * level + 6 * z)
        ELSE round(14 + 8 * level + 6 * sin(daily) + 0.8 * z, 2)
    END,
    NULL,
    make_timestamp(ts_us + 200000 + (n1 * 1800000)::BIGINT)
FROM timed
"""  # noqa: S608 - only code constants are formatted in; every value is a $parameter


def generate_properties(
    database: Database,
    *,
    rows: int,
    things: int = 1000,
    days: int = 30,
    end: datetime | None = None,
    seed: int = 1,
    progress: Callable[[int, int], None] | None = None,
    chunk_rows: int = 1_000_000,
) -> dict[str, Any]:
    """Append `rows` property values of a fleet: `things` things (`thing-0000`, ...) of one org,
    each publishing the FLEET_KEYS every `days * 4 * things / rows` days or so, ending at `end`
    (naive UTC, default now).

    The org (`org1`, its id fixed by `seed`), an application and the things are created too, so
    that user sessions of the org can read the values. Rows go in sorted by (org_id, thing_key,
    key, ts); then each finished day (of `received_at`) is compacted, as a running gateway's
    compactor leaves it: its rows together, sorted the same way. A value's time is its slot in the
    series plus jitter, and `received_at` follows it by 0.2-2 s. The values move as sensors do:
    battery discharging over 4-10 days and recharged, humidity and temperature on a daily cycle
    around a level of the thing's own, rssi around one too, all with noise. The hourly
    rollups are built as the property writer would have kept them. Returns a summary.
    """
    per_series, rest = divmod(rows, things * len(FLEET_KEYS))
    if things < 1 or days < 1 or chunk_rows < 1 or per_series < 1 or rest:
        raise ValueError(
            f"rows must be a positive multiple of things x {len(FLEET_KEYS)} keys, and things, "
            "days and chunk_rows positive"
        )
    start, end = _window(end, days)
    started = time.perf_counter()
    org_id, org_key, org_name = _org_rows(1, seed)[0]
    app_id = hashlib.md5(f"tr50gw-synthetic-fleet:{seed}".encode()).hexdigest()  # noqa: S324
    key_width = max(4, len(str(things - 1)))
    parameters = {
        "org_id": org_id, "keys": list(FLEET_KEYS), "key_width": key_width, "seed": seed,
        "per_series": per_series, "start_us": _epoch_us(start),
        "step_us": days * _DAY_US // per_series,
    }  # fmt: skip
    with _inserting(database) as cursor:
        cursor.execute(
            "INSERT INTO orgs (org_id, org_key, name, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (org_id) DO NOTHING",
            [org_id, org_key, org_name, start],
        )
        cursor.execute(  # its token is thrown away: no thing can log in with it
            "INSERT INTO applications (app_id, org_id, name, token_hash, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (app_id) DO NOTHING",
            [app_id, org_id, "synthetic fleet", token_digest(secrets.token_urlsafe(32)), start],
        )
        cursor.execute(
            "INSERT INTO things (org_id, thing_key, app_id, created_at)"
            " SELECT $org_id, 'thing-' || lpad(i::VARCHAR, $width, '0'), "
            "$app_id, $start FROM range($things) t(i) ON CONFLICT DO NOTHING",
            {"org_id": org_id, "width": key_width, "app_id": app_id, "start": start,
             "things": things},
        )  # fmt: skip
        _insert_chunks(cursor, _PROPERTY_SQL, parameters, rows, chunk_rows, progress)
        cursor.execute("COMMIT")
        inserted_at = time.perf_counter()
        cursor.execute("CHECKPOINT")
        while compact_due(database, _utc_now(), tables=(PROPERTY_ROWS,)):
            pass  # a round stops early only when a checkpoint is refused
        rollups.rebuild(cursor, rollups.PROPERTY_LEVELS)  # as the property writer keeps them
        first_ts, last_ts = cursor.execute(
            "SELECT min(ts), max(ts) FROM property_values WHERE org_id = ?", [org_id]
        ).fetchone()
        summary: dict[str, Any] = {
            "rows": rows,
            "orgId": org_id,
            "orgKey": org_key,
            "appId": app_id,
            "things": things,
            "thing_keys": [f"thing-{number:0{key_width}d}" for number in range(things)],
            "keys": list(FLEET_KEYS),
            "values_per_series": per_series,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "first_ts": first_ts.isoformat(),
            "last_ts": last_ts.isoformat(),
            "parameters": {"rows": rows, "things": things, "days": days, "seed": seed},
            "seconds": round(time.perf_counter() - started, 2),
            "rows_per_second": round(rows / (inserted_at - started)),
            "generated_at": _utc_now().isoformat(),
            "generator_version": PROPERTY_GENERATOR_VERSION,
        }
        _keep_summary(cursor, summary)
    return summary


def stored_summary(database: Database) -> dict[str, Any] | None:
    """The summary `generate_usage` or `generate_properties` left in this file, or None if it
    holds no synthetic data."""
    cursor = database.new_cursor()
    try:
        exists = cursor.execute(
            "SELECT 1 FROM duckdb_tables() WHERE table_name = 'synthetic_dataset'"
        ).fetchone()
        if not exists:
            return None
        row = cursor.execute("SELECT summary FROM synthetic_dataset LIMIT 1").fetchone()
    finally:
        cursor.close()
    if row is None:
        return None
    summary: dict[str, Any] = json.loads(row[0])
    return summary


def generate_file(
    path: Path, generate: Callable[..., dict[str, Any]] = generate_usage, **parameters: Any
) -> dict[str, Any]:
    """`generate` (`generate_usage` or `generate_properties`) into the DuckDB file at `path`
    (created if missing), then close it."""
    database = Database(path)
    try:
        return generate(database, **parameters)
    finally:
        database.close()


def stored_file_summary(path: Path) -> dict[str, Any] | None:
    """`stored_summary` of the DuckDB file at `path` (the file is opened and closed again)."""
    database = Database(path)
    try:
        return stored_summary(database)
    finally:
        database.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.synthetic",
        description="Fill a DuckDB file's usage_log with a realistic synthetic dataset.",
    )
    parser.add_argument("--db", type=Path, required=True, help="DuckDB file (created if missing)")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--callers", type=int, default=5000)
    parser.add_argument("--commands", type=int, default=40)
    parser.add_argument("--failure-rate", type=float, default=0.02)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--end", type=datetime.fromisoformat, help="last moment, UTC (default: now)"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def report(done: int, total: int) -> None:
        rate = done / (time.perf_counter() - started)
        print(f"{done:,}/{total:,} rows ({rate:,.0f} rows/s)", file=sys.stderr, flush=True)

    summary = generate_file(
        args.db,
        rows=args.rows,
        orgs=args.orgs,
        callers=args.callers,
        commands=args.commands,
        failure_rate=args.failure_rate,
        days=args.days,
        end=args.end,
        seed=args.seed,
        progress=report,
    )
    size_mb = args.db.stat().st_size / 2**20
    summary["file_mb"] = round(size_mb, 1)
    json.dump(summary, sys.stdout, indent=2)
    print()
    print(
        f"{summary['rows']:,} rows in {summary['seconds']} s "
        f"({summary['rows_per_second']:,} rows/s insert), file {size_mb:,.0f} MiB",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
