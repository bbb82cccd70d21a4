"""Security properties (SPEC §2 tenancy, §3 secrets): who sees which usage, injection-shaped
values in every string param, and no secret in the DuckDB file or in the gateway's log.

1. An isolation matrix: session kind x showAll x target org x every usage command, as a literal
   table of what each cell sees.
2. Injection: quotes, `%`, `_`, `\\`, NUL, newlines and SQL fragments in every string param give
   exact results (validated params -90002), never -90099, and the table stays intact.
3. Secrets: a real gateway (WebSocket and MQTT through a real Mosquitto) is driven with
   passwords, app tokens and session ids; afterwards neither the DuckDB file (raw bytes, its WAL,
   and every VARCHAR column via SQL) nor the captured log holds any of them.

MQTT isolation is proven in tests/test_mqtt.py and not repeated here:
`test_broker_isolates_namespaces` (a client cannot read another client's replies, nor publish
in its namespace) and `test_v5_response_topic_only_within_own_reply_namespace` (a v5 Response
Topic outside the caller's own `reply/<clientId>`, e.g. `elsewhere/x`, is ignored for the
derived topic).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from devtools.broker import Broker
from gateway.core.context import Connection
from gateway.core.records import RecordIds, UsageRecord
from storage.duckdb import rollups
from tests.harness import Clock, Harness
from tests.support import (
    PASSWORD,
    GatewayThread,
    MqttClient,
    Tenants,
    provision,
    ws_client,
)

RECORD_IDS = RecordIds()

NOW = datetime(2027, 1, 1, 0, 30, 0)  # the gateway's own records land here, after every window
MATRIX_DAY = datetime(2026, 5, 1)
INJECTION_DAY = datetime(2026, 6, 1)
MATRIX_WINDOW = {"start": "2026-05-01T00:00:00Z", "end": "2026-05-01T23:59:59.999Z"}
INJECTION_WINDOW = {"start": "2026-06-01T00:00:00Z", "end": "2026-06-01T23:59:59.999Z"}
DENIED, NOT_FOUND, INVALID = -90003, -90008, -90002

# -- the seeded callers -------------------------------------------------------------------------

# label: (org key or None for no org, whoami). Both orgs have a thing called truck-1: a thing's
# scope is its org *and* its key, so acme's truck-1 must never see globex's.
CALLERS: dict[str, tuple[str | None, str]] = {
    "acme-user": ("acme", "user@acme.test"),
    "acme-org-admin": ("acme", "org-admin@acme.test"),
    "acme-truck-1": ("acme", "truck-1"),
    "acme-truck-2": ("acme", "truck-2"),
    "acme-super-ops": ("acme", "ops@acme.test"),
    "globex-user": ("globex", "user@globex.test"),
    "globex-org-admin": ("globex", "org-admin@globex.test"),
    "globex-truck-1": ("globex", "truck-1"),
    "no-org": (None, ""),  # e.g. failed logins and anonymous diag calls
}
LABELS = tuple(CALLERS)
# Each caller has a distinct power of two of records, so any total decodes into exactly the set
# of callers it counts: a bucketed count is as telling as a listing.
WEIGHT = {label: 2**index for index, label in enumerate(LABELS)}
ACME = tuple(label for label in LABELS if CALLERS[label][0] == "acme")
GLOBEX = tuple(label for label in LABELS if CALLERS[label][0] == "globex")
NO_ORG_CALLERS = ("no-org",)
REMOTE_PREFIX = {"acme": "10.1.", "globex": "10.2.", None: "10.9."}

# viewer: (org key, user email or thing key)
VIEWERS: dict[str, tuple[str, str]] = {
    "user": ("acme", "user@acme.test"),
    "org-admin": ("acme", "org-admin@acme.test"),
    "thing": ("acme", "truck-1"),
    "super-ops": ("acme", "ops@acme.test"),
    "globex user": ("globex", "user@globex.test"),
    "globex org-admin": ("globex", "org-admin@globex.test"),
    "globex thing": ("globex", "truck-1"),
}
OWN, OTHER, NONE = "own org", "other org", "no org"

# -- 1. the isolation matrix ---------------------------------------------------------------------

# (viewer, showAll, target, expected): the seeded callers of the target the viewer sees, with
# every command; or the error code every command answers. A caller is seen whole or not at all.
MATRIX: list[tuple[str, bool, str, tuple[str, ...] | int]] = [
    ("user", False, OWN, ACME),
    ("user", False, OTHER, ()),
    ("user", False, NONE, ()),
    ("user", True, OWN, DENIED),
    ("user", True, OTHER, DENIED),
    ("user", True, NONE, DENIED),
    ("org-admin", False, OWN, ACME),
    ("org-admin", False, OTHER, ()),
    ("org-admin", False, NONE, ()),
    ("org-admin", True, OWN, DENIED),
    ("org-admin", True, OTHER, DENIED),
    ("org-admin", True, NONE, DENIED),
    ("thing", False, OWN, ("acme-truck-1",)),
    ("thing", False, OTHER, ()),  # not globex's truck-1 either
    ("thing", False, NONE, ()),
    ("thing", True, OWN, DENIED),
    ("thing", True, OTHER, DENIED),
    ("thing", True, NONE, DENIED),
    ("super-ops", False, OWN, ACME),
    ("super-ops", False, OTHER, ()),
    ("super-ops", False, NONE, ()),
    ("super-ops", True, OWN, ACME),
    ("super-ops", True, OTHER, GLOBEX),
    ("super-ops", True, NONE, NO_ORG_CALLERS),
    ("globex user", False, OWN, GLOBEX),
    ("globex user", False, OTHER, ()),
    ("globex user", False, NONE, ()),
    ("globex user", True, OWN, DENIED),
    ("globex user", True, OTHER, DENIED),
    ("globex user", True, NONE, DENIED),
    ("globex org-admin", False, OWN, GLOBEX),
    ("globex org-admin", False, OTHER, ()),
    ("globex org-admin", False, NONE, ()),
    ("globex org-admin", True, OWN, DENIED),
    ("globex org-admin", True, OTHER, DENIED),
    ("globex org-admin", True, NONE, DENIED),
    ("globex thing", False, OWN, ("globex-truck-1",)),
    ("globex thing", False, OTHER, ()),  # not acme's truck-1 either
    ("globex thing", False, NONE, ()),
    ("globex thing", True, OWN, DENIED),
    ("globex thing", True, OTHER, DENIED),
    ("globex thing", True, NONE, DENIED),
]
MATRIX_COMMANDS = (
    "list",
    "activity",
    "times",
    "statuses",
    "breakdown",
    "endpoints",
    "history",
    "get",
)


def target_callers(viewer: str, target: str) -> tuple[str, ...]:
    org = VIEWERS[viewer][0]
    if target == NONE:
        return NO_ORG_CALLERS
    own = ACME if org == "acme" else GLOBEX
    other = GLOBEX if org == "acme" else ACME
    return own if target == OWN else other


def scope_of(viewer: str) -> set[str]:
    """Every seeded caller the viewer sees without showAll, read off the matrix."""
    seen: set[str] = set()
    for row_viewer, show_all, _, expected in MATRIX:
        if row_viewer == viewer and not show_all:
            assert not isinstance(expected, int)
            seen |= set(expected)
    return seen


# -- 2. the injection values ---------------------------------------------------------------------

NASTY = [
    "'",
    '"',
    "%",
    "_",
    "\\",
    "\x00",
    "a\x00b",
    "'; DROP TABLE usage_log; --",
    ") OR 1=1 --",
    "' OR '1'='1",
    "%_%",
    "\\%",
    "x_y",
    "*",
    "?",
    "$1",
    "/* */",
    "line\nbreak",
    "Ünïcødé ✓ 𝄞",
    "\u202eevil",
    # controls: what `_`, `%`, `x_y` or `a\0b` would match if they acted as wildcards or
    # the NUL cut the string
    "x",
    "xay",
    "a",
]
RAW_NUL_REQUEST = "not json \x00 raw"  # how a malformed payload with a NUL byte is stored

# -- the world: a DuckDB file with both tenants, their sessions and the seeded records ----------


@dataclass
class World:
    h: Harness
    tenants: Tenants
    sessions: dict[str, str]  # viewer: session id
    first_id: dict[str, str]  # seeded caller: the id of its first record
    injection: list[UsageRecord]

    async def call(self, viewer: str, command: str, /, **params: Any) -> dict[str, Any]:
        """One command as `viewer` (a viewer name, or a raw session id)."""
        session = self.sessions.get(viewer, viewer)
        reply = await self.h.as_session(session, c={"command": command, "params": params})
        return dict(reply["c"])

    async def envelope(self, viewer: str, entries: dict[str, Any]) -> dict[str, Any]:
        session = self.sessions.get(viewer, viewer)
        return dict(await self.h.as_session(session, **entries))


def seeded(
    ts: datetime,
    *,
    org: str | None,
    tenants: Tenants,
    whoami: str,
    service: str,
    command: str,
    client_id: str,
    remote_addr: str,
    request: str,
    success: bool = True,
    exec_ns: int = 1_000_000,
) -> UsageRecord:
    return UsageRecord(
        id=RECORD_IDS.new(int(ts.replace(tzinfo=UTC).timestamp() * 1000)),
        ts=ts,
        exec_time=exec_ns,
        processed_by="seed",
        org_id=tenants.org_ids[org] if org else "",
        org_key=org or "",
        whoami=whoami,
        service=service,
        command=command,
        success=success,
        error_code=None if success else INVALID,
        transport="ws",
        client_id=client_id,
        remote_addr=remote_addr,
        request=request,
        response='{"1":{"success":true}}' if success else '{"1":{"success":false}}',
    )


def matrix_records(tenants: Tenants) -> list[UsageRecord]:
    records = []
    step = 0
    for label in LABELS:
        org, whoami = CALLERS[label]
        for index in range(WEIGHT[label]):
            step += 1
            records.append(
                seeded(
                    MATRIX_DAY + timedelta(seconds=150 * step),
                    org=org,
                    tenants=tenants,
                    whoami=whoami,
                    service="seed",
                    command=label,
                    client_id=f"cid-{label}",
                    remote_addr=f"{REMOTE_PREFIX[org]}{LABELS.index(label)}.{index % 250}",
                    request=orjson.dumps({"1": {"command": f"seed.{label}"}}).decode(),
                    success=step % 3 != 0,
                    exec_ns=1_000 * step,
                )
            )
    return records


def injection_records(tenants: Tenants) -> list[UsageRecord]:
    """Per value: one record with the value in every string field, and one with it only as the
    service; plus a stored malformed payload holding a raw NUL byte."""
    records = []
    for index, value in enumerate(NASTY):
        ts = INJECTION_DAY + timedelta(minutes=10 * index)
        request = orjson.dumps(
            {"1": {"command": f"{value}.{value}", "params": {"text": value}}}
        ).decode()
        records.append(
            seeded(
                ts,
                org="acme",
                tenants=tenants,
                whoami=value,
                service=value,
                command=value,
                client_id=value,
                remote_addr=value,
                request=request,
            )
        )
        records.append(
            seeded(
                ts + timedelta(minutes=1),
                org="acme",
                tenants=tenants,
                whoami="plain@acme.test",
                service=value,
                command="plain",
                client_id="ws-plain",
                remote_addr="192.0.2.1",
                request='{"1":{"command":"plain"}}',
            )
        )
    records.append(
        seeded(
            INJECTION_DAY + timedelta(hours=20),
            org="acme",
            tenants=tenants,
            whoami="raw@acme.test",
            service="",
            command="",
            client_id="ws-raw",
            remote_addr="192.0.2.2",
            request=RAW_NUL_REQUEST,
        )
    )
    return records


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tenants = provision(tmp_path_factory.mktemp("security") / "usage.duckdb")
    h = Harness(tenants.db, Clock(NOW))

    async def open_sessions() -> dict[str, str]:
        sessions = {}
        for viewer, (org, who) in VIEWERS.items():
            if "@" in who:
                sessions[viewer] = await h.login(who, PASSWORD)
            else:
                sessions[viewer] = await thing_login(h, tenants, org, who)
        await thing_login(h, tenants, "acme", "truck-2")  # exists, never a viewer
        return sessions

    sessions = asyncio.run(open_sessions())
    matrix = matrix_records(tenants)
    injection = injection_records(tenants)
    for record in [*matrix, *injection]:
        h.usage.submit(record)
    assert h.usage.flush()
    first_id: dict[str, str] = {}
    for record in matrix:
        first_id.setdefault(record.command, record.id)
    yield World(h, tenants, sessions, first_id, injection)
    h.close()


async def thing_login(
    h: Harness, tenants: Tenants, org: str, thing_key: str, connection: Connection | None = None
) -> str:
    app_id, app_token = tenants.apps[org]
    reply = await h.call(
        {
            "auth": {
                "command": "api.authenticate",
                "params": {"appId": app_id, "appToken": app_token, "thingKey": thing_key},
            }
        },
        connection,
    )
    assert reply["auth"]["success"], reply
    return str(reply["auth"]["params"]["sessionId"])


def decode_total(total: int) -> dict[str, int]:
    """The seeded callers a total counts (weights are distinct powers of two)."""
    assert 0 <= total < 2 ** len(LABELS), total
    return {label: weight for label, weight in WEIGHT.items() if total & weight}


async def visible(world: World, viewer: str, command: str, show_all: bool) -> set[str] | int:
    """The seeded callers `command` shows `viewer` in the matrix window, or its error code."""
    scope = {"showAll": True} if show_all else {}
    if command == "get":
        seen: set[str] = set()
        codes: set[int] = set()
        outcomes = await asyncio.gather(
            *(
                world.call(viewer, "usage.api.get", id=world.first_id[label], **scope)
                for label in LABELS
            )
        )
        for label, outcome in zip(LABELS, outcomes, strict=True):
            record_id = world.first_id[label]
            if outcome["success"]:
                record = outcome["params"]
                assert (record["id"], record["command"]) == (record_id, label), record
                seen.add(label)
            else:
                codes.add(outcome["errorCodes"][0])
        if codes - {NOT_FOUND}:  # a refusal is all-or-nothing, never mixed with records
            assert len(codes) == 1 and not seen, (codes, seen)
            return codes.pop()
        return seen

    extra: dict[str, Any] = {
        "list": {"limit": 2000},
        "breakdown": {"by": "command", "top": 100},
        "endpoints": {"limit": 2000},
        "history": {"dimension": "org"},
    }.get(command, {})
    outcome = await world.call(viewer, f"usage.api.{command}", **MATRIX_WINDOW, **scope, **extra)
    if not outcome["success"]:
        return int(outcome["errorCodes"][0])
    result = outcome["params"]
    counts: dict[str, int]
    if command == "list":
        records = result["result"] or []
        assert result["count"] == len(records)
        for record in records:
            assert record["command"] in CALLERS, record
            org, whoami = CALLERS[record["command"]]
            assert (record["orgKey"], record["whoami"]) == (org or "", whoami), record
        counts = dict(Counter(record["command"] for record in records))
    elif command in ("activity", "times", "statuses"):
        buckets = result["result"]
        if command == "statuses":
            assert all(b["success"] + b["failed"] == b["count"] for b in buckets)
        counts = decode_total(sum(b["count"] for b in buckets))
    elif command == "breakdown":
        assert all(b["other"] == 0 for b in result["result"])
        counts = {
            key.removeprefix("seed."): sum(b["counts"][key] for b in result["result"])
            for key in result["keys"]
        }
    elif command == "endpoints":
        counts = {e["command"].removeprefix("seed."): e["hits"] for e in result["result"] or []}
        assert result["count"] == len(counts)
    else:  # history by org
        counts = decode_total(result["total"])
        orgs = {key for key, series in result["counters"].items() if sum(series)}
        assert orgs == {CALLERS[label][0] or "" for label in counts}, result["counters"]
    for label, count in counts.items():
        assert label in WEIGHT, f"{label!r} is not a seeded caller"
        assert count == WEIGHT[label], f"{label}: {count} of its {WEIGHT[label]} records"
    return set(counts)


@pytest.mark.parametrize(
    ("viewer", "show_all", "target", "expected"),
    MATRIX,
    ids=[f"{v}-{'showAll' if a else 'scoped'}-{t}" for v, a, t, _ in MATRIX],
)
async def test_isolation_matrix(
    world: World, viewer: str, show_all: bool, target: str, expected: tuple[str, ...] | int
) -> None:
    """Every usage command shows the row's viewer exactly the row's callers of its target."""
    outcomes = await asyncio.gather(
        *(visible(world, viewer, command, show_all) for command in MATRIX_COMMANDS)
    )
    callers = set(target_callers(viewer, target))
    seen = {
        command: outcome if isinstance(outcome, int) else tuple(sorted(outcome & callers))
        for command, outcome in zip(MATRIX_COMMANDS, outcomes, strict=True)
    }
    wanted = expected if isinstance(expected, int) else tuple(sorted(expected))
    assert seen == dict.fromkeys(MATRIX_COMMANDS, wanted)


@pytest.mark.parametrize("viewer", list(VIEWERS))
async def test_filters_never_widen_a_sessions_scope(world: World, viewer: str) -> None:
    """Naming another org's caller, client, address or text finds nothing outside the scope."""
    scope = scope_of(viewer)

    def expected(labels: list[str]) -> int:
        return sum(WEIGHT[label] for label in labels if label in scope)

    checks: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}
    for label in LABELS:
        org, who = CALLERS[label]
        filters: dict[str, tuple[dict[str, Any], int]] = {
            "client": ({"clientId": f"cid-{label}"}, expected([label])),
            "text": ({"searchText": f"seed.{label}"}, expected([label])),
            "command": ({"service": "seed", "command": label}, expected([label])),
            "addr": (
                {"remoteAddr": REMOTE_PREFIX[org]},
                expected([other for other in LABELS if CALLERS[other][0] == org]),
            ),
        }
        if who:
            same_who = [other for other in LABELS if CALLERS[other][1] == who]
            filters["who"] = ({"who": who}, expected(same_who))
        checks.update({(label, key): check for key, check in filters.items()})
    outcomes = await asyncio.gather(
        *(
            world.call(viewer, "usage.api.list", **params, **MATRIX_WINDOW, limit=1)
            for params, _ in checks.values()
        )
    )
    wrong = {
        key: (params, count, outcome)
        for (key, (params, count)), outcome in zip(checks.items(), outcomes, strict=True)
        if not outcome["success"] or outcome["params"]["count"] != count
    }
    assert wrong == {}


# -- 2. injection --------------------------------------------------------------------------------


async def usage_rows(h: Harness) -> dict[str, int]:
    """Row counts of every table, once the writer has committed everything submitted; the
    hourly rollups are left out (they follow usage_log, tests/test_rollups.py)."""
    await h.usage.wait_visible()  # unlike flush(), this makes the writer commit at once
    cursor = h.database.cursor()
    derived = {level.table for level in rollups.LEVELS}
    tables = [
        row[0]
        for row in cursor.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        if row[0] not in derived
    ]
    counts = {}
    for table in tables:
        row = cursor.execute(f'SELECT count(*) FROM "{table}"').fetchone()  # noqa: S608
        assert row is not None
        counts[table] = int(row[0])
    return counts


def full_name(record: UsageRecord) -> str:
    return f"{record.service}.{record.command}" if record.command else record.service


FILTERS: dict[str, tuple[Callable[[str], dict[str, Any]], Callable[[UsageRecord, str], bool]]] = {
    "who": (lambda v: {"who": v}, lambda r, v: r.whoami == v),
    "service": (lambda v: {"service": v}, lambda r, v: r.service == v),
    "service+command": (
        lambda v: {"service": v, "command": v},
        lambda r, v: r.service == v and r.command == v,
    ),
    "clientId": (lambda v: {"clientId": v}, lambda r, v: r.client_id == v),
    "remoteAddr": (lambda v: {"remoteAddr": v}, lambda r, v: r.remote_addr.startswith(v)),
    "searchText": (
        lambda v: {"searchText": v},
        lambda r, v: v.lower() in r.request.lower() or v.lower() in r.response.lower(),
    ),
}
ANALYTICS = {
    "activity": {},
    "times": {},
    "statuses": {},
    "breakdown": {"by": "who", "top": 100},
    "endpoints": {"limit": 2000},
    "history": {},
}


def total_of(command: str, result: dict[str, Any]) -> int:
    if command == "endpoints":
        return sum(e["hits"] for e in result["result"] or [])
    if command == "history":
        return int(result["total"])
    return sum(b["count"] for b in result["result"])


async def filter_mismatches(world: World, param: str, value: str) -> list[str]:
    """Run usage.api.list and every analytics command with one filter value; describe every
    result that differs from the exact matches of the seeded data (empty: all exact)."""
    make_params, matches = FILTERS[param]
    params = {**make_params(value), **INJECTION_WINDOW}
    expected = [r for r in world.injection if matches(r, value)]
    assert expected or param == "searchText", "the data set covers each value"
    commands = {"list": {"limit": 2000}, **ANALYTICS}
    outcomes = dict(
        zip(
            commands,
            await asyncio.gather(
                *(
                    world.call("user", f"usage.api.{command}", **params, **extra)
                    for command, extra in commands.items()
                )
            ),
            strict=True,
        )
    )
    wrong = [f"{c}: {o}" for c, o in outcomes.items() if not o["success"]]
    if wrong:
        return wrong
    results = {command: outcome["params"] for command, outcome in outcomes.items()}
    listed = sorted(r["id"] for r in results["list"]["result"] or [])
    if listed != sorted(r.id for r in expected) or results["list"]["count"] != len(expected):
        wrong.append(f"list: {results['list']['count']} records, expected {len(expected)}")
    for command in ANALYTICS:
        if total_of(command, results[command]) != len(expected):
            wrong.append(f"{command}: total {total_of(command, results[command])}")
    if sorted(results["breakdown"]["keys"]) != sorted({r.whoami for r in expected}):
        wrong.append(f"breakdown keys {results['breakdown']['keys']}")
    endpoints = sorted(e["command"] for e in results["endpoints"]["result"] or [])
    if endpoints != sorted({full_name(r) for r in expected}):
        wrong.append(f"endpoints {endpoints}")
    return wrong


@pytest.mark.parametrize("param", list(FILTERS))
async def test_injection_in_filters_gives_exact_results(world: World, param: str) -> None:
    """Each filter is an exact match (`remoteAddr` a prefix, `searchText` a case-insensitive
    substring) of the very characters sent, for every value of NASTY: no wildcard, no escape,
    no SQL, no NUL cut, never an error."""
    before = await usage_rows(world.h)
    found = await asyncio.gather(*(filter_mismatches(world, param, value) for value in NASTY))
    assert {value: wrong for value, wrong in zip(NASTY, found, strict=True) if wrong} == {}
    after = await usage_rows(world.h)
    calls = len(NASTY) * (1 + len(ANALYTICS))
    assert after == {**before, "usage_log": before["usage_log"] + calls}


async def test_injected_values_come_back_verbatim_as_keys(world: World) -> None:
    """Stored values with quotes, NUL and SQL in them are grouped and named exactly."""
    by_who = await world.call(
        "user", "usage.api.breakdown", by="who", top=100, interval="day", **INJECTION_WINDOW
    )
    assert by_who["success"], by_who
    expected_who = Counter(r.whoami for r in world.injection)
    assert by_who["params"]["result"][0]["counts"] == dict(expected_who)
    history = await world.call("user", "usage.api.history", **INJECTION_WINDOW)
    assert history["success"], history
    assert {k: sum(v) for k, v in history["params"]["counters"].items()} == dict(
        Counter(r.service for r in world.injection)
    )
    listed = await world.call("user", "usage.api.list", limit=2000, **INJECTION_WINDOW)
    assert listed["success"], listed
    stored = {r["id"]: r for r in listed["params"]["result"]}
    for record in world.injection:
        row = stored[record.id]
        assert (row["whoami"], row["service"], row["command"]) == (
            record.whoami,
            record.service,
            record.command,
        )
        assert (row["clientId"], row["remoteAddr"], row["request"]) == (
            record.client_id,
            record.remote_addr,
            record.request,
        )


VALID_ID = "01890000-0000-7000-8000-000000000000"
BAD_DURATIONS = [*NASTY, "1h\n", "1h'", "1h%", "1e3h", "0x10s", "-1h", "1h\x00"]
TIMELINE = ("list", "activity", "endpoints", "history")
# group: ([values], commands it goes to, extra params); every (value, command) is -90002.
VALIDATED: dict[str, tuple[list[Any], tuple[str, ...], dict[str, Any]]] = {
    "timezone": (
        [
            *NASTY,
            "Etc",  # a directory of the zone database, not a zone
            "America",
            "Europe/Berlin\n",
            "Europe/Berlin\x00",
            "../../../../etc/passwd",
            "/etc/localtime",
            "UTC'; --",
            "Z" * 65,
        ],
        ("activity", "times", "statuses", "breakdown", "history"),
        {},
    ),
    "last": (BAD_DURATIONS, TIMELINE, {}),
    "start": (
        [
            *BAD_DURATIONS,
            "2026-06-01T00:00:00Z\n",
            "2026-06-01T00:00:00Z'; --",
            "2026-06-01 00:00:00 OR 1=1",
            "2026-06-01T00:00:00Z\x00",
            "2026-06-01T00:00:00Z\x00' OR '1'='1",  # datetime.fromisoformat stops at a NUL
        ],
        TIMELINE,
        {},
    ),
    "end": (BAD_DURATIONS, TIMELINE, {"start": "2026-06-01T00:00:00Z"}),
    "id": (
        [
            *NASTY,
            VALID_ID + "\n",  # `$` in a Python regex also matches before a final newline
            VALID_ID + "\x00",
            VALID_ID + "'",
            VALID_ID + "' OR '1'='1",
            f"{{{VALID_ID}}}",
            f" {VALID_ID}",
            VALID_ID[:-1] + "%",
            VALID_ID[:-1] + "_",
        ],
        ("get",),
        {},
    ),
    "by": ([*NASTY, "who'", "service;"], ("breakdown",), {}),
    "interval": ([*NASTY, "day'", "hour\n"], ("activity",), {}),
    "series": (NASTY, ("history",), {}),
    "dimension": (NASTY, ("history",), {}),
    "transport": ([*NASTY, "ws\n", "ws'"], ("list", "activity"), {}),
    **{
        param: ([{"$ne": ""}, ["x"], 1, True], ("list", "breakdown", "endpoints"), {})
        for param in ("who", "service", "searchText", "remoteAddr", "clientId")
    },
}
COMMAND_DEFAULTS: dict[str, dict[str, Any]] = {"breakdown": {"by": "who"}, "get": {"id": VALID_ID}}


@pytest.mark.parametrize("param", [*VALIDATED, "unknown param names"])
async def test_injection_in_validated_params_is_90002(world: World, param: str) -> None:
    if param in VALIDATED:
        values, commands, extra = VALIDATED[param]
        calls = [
            (command, value, {**COMMAND_DEFAULTS.get(command, {}), **extra, param: value})
            for value in values
            for command in commands
        ]
    else:  # every value of NASTY as the name of a param
        calls = [
            (command, name, {**COMMAND_DEFAULTS.get(command, {}), name: 1})
            for name in NASTY
            for command in ("list", "activity", "get")
        ]
    before = await usage_rows(world.h)
    outcomes = await asyncio.gather(
        *(world.call("user", f"usage.api.{command}", **params) for command, _, params in calls)
    )
    wrong = {
        (command, repr(value)): outcome.get("errorCodes", "success")
        for (command, value, _), outcome in zip(calls, outcomes, strict=True)
        if outcome.get("errorCodes") != [INVALID]
    }
    assert wrong == {}
    after = await usage_rows(world.h)
    assert after == {**before, "usage_log": before["usage_log"] + len(calls)}


# Timestamps at the ends of the calendar: outside 1970..9000, so -90002, never an internal error.
EDGE_WINDOWS: list[tuple[str, dict[str, Any]]] = [
    ("list", {"start": "0001-01-01T00:00:00+14:00"}),
    ("list", {"start": "9999-12-31T23:59:59-12:00"}),
    ("activity", {"start": "9999-12-31T00:00:00Z", "end": "9999-12-31T23:59:59.999Z"}),
    ("activity", {"start": "0001-01-01T00:00:00Z", "end": "0001-01-01T23:00:00Z"}),
    (
        "times",
        {
            "start": "0001-01-01T00:00:00Z",
            "end": "0001-01-02T00:00:00Z",
            "timezone": "America/New_York",
        },
    ),
    ("history", {"start": "9999-12-31T00:00:00Z", "end": "9999-12-31T23:59:59.999Z"}),
    ("endpoints", {"start": "0001-01-01T00:00:00Z", "end": "9999-12-31T23:59:59.999Z"}),
]


@pytest.mark.parametrize(
    ("command", "params"),
    EDGE_WINDOWS,
    ids=[f"{c}-{'-'.join(p.values())}" for c, p in EDGE_WINDOWS],
)
async def test_calendar_edges_are_90002(world: World, command: str, params: dict[str, Any]) -> None:
    outcome = await world.call("user", f"usage.api.{command}", **params)
    assert outcome["success"] is False, outcome
    assert outcome["errorCodes"] == [INVALID], outcome


async def test_get_finds_exactly_one_record_whatever_the_id_spelling(world: World) -> None:
    record = world.injection[0]
    for spelling in (record.id, record.id.upper(), record.id.replace("-", "")):
        outcome = await world.call("user", "usage.api.get", id=spelling)
        assert outcome["success"], (spelling, outcome)
        assert outcome["params"]["id"] == record.id
        assert outcome["params"]["request"] == record.request


async def test_injection_in_envelope_keys_command_names_and_logins(world: World) -> None:
    h = world.h
    before = await usage_rows(h)
    calls = 0
    # Entry keys and command names are data: echoed back and stored, never interpreted.
    entries = {value: {"command": "diag.ping"} for value in NASTY}
    entries.update({f"name-{i}": {"command": f"usage.{v}"} for i, v in enumerate(NASTY)})
    reply = await world.envelope("user", entries)
    calls += len(entries)
    assert list(reply) == list(entries)
    for value in NASTY:
        assert reply[value] == {"success": True}
    for index in range(len(NASTY)):
        assert reply[f"name-{index}"]["errorCodes"] == [-90001]

    # Usernames (looked up in SQL) and passwords (only ever hashed): bad credentials. Failed
    # logins are rate limited per username and per client address, so each attempt comes from
    # its own address and the bad passwords go round the five real users.
    users = [who for _, who in VIEWERS.values() if "@" in who]
    passwords = ["'", "\x00", "'; DROP TABLE usage_log; --", "Ünïcødé ✓ 𝄞", "%"]
    attempts = [(value, PASSWORD) for value in NASTY]
    attempts += [(users[i % len(users)], value) for i, value in enumerate(passwords)]

    def login(username: str, password: str) -> bytes:
        entry = {
            "command": "api.authenticate",
            "params": {"username": username, "password": password},
        }
        return orjson.dumps({"auth": entry})

    logins = await asyncio.gather(
        *(
            h.raw(login(username, password), Connection("ws", f"inj-{i}", f"192.0.2.{i}"))
            for i, (username, password) in enumerate(attempts)
        )
    )
    calls += len(attempts)
    refused = [reply["auth"].get("errorCodes") for reply in logins]
    assert refused == [[-90004]] * len(attempts)

    # Thing keys: a thing named like SQL is a thing like any other, and sees only its calls.
    # (Logins in flight count against their client's limit too: one address each.)
    async def thing_calls(index: int, thing_key: str) -> tuple[Any, ...]:
        connection = Connection("ws", f"thing-{index}", f"198.51.100.{index}")
        session = await thing_login(h, world.tenants, "acme", thing_key, connection)
        ping = await h.as_session(session, p={"command": "diag.ping"})
        mine = await world.call(session, "usage.api.list", last="1h", limit=2000)
        records = mine["params"]["result"] or []
        return ping, mine["params"]["count"], {r["whoami"] for r in records}

    things = await asyncio.gather(*(thing_calls(i, value) for i, value in enumerate(NASTY)))
    calls += 3 * len(NASTY)
    # each sees its login and its ping, and nothing else
    assert things == [({"p": {"success": True}}, 2, {value}) for value in NASTY]
    org_view = await world.call("user", "usage.api.list", who=NASTY[7], last="1h")
    calls += 1
    assert org_view["params"]["count"] == 3  # login, ping, listing

    after = await usage_rows(h)
    assert after["usage_log"] == before["usage_log"] + calls
    assert after["things"] == before["things"] + len(NASTY)
    for table in ("orgs", "users", "applications"):
        assert after[table] == before[table]


# -- 3. secrets ----------------------------------------------------------------------------------


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def gateway_log() -> Iterator[Capture]:
    """Everything logged, as `tr50gw serve --log-level DEBUG` would print it (the gateway's
    thread included: handlers are process-wide)."""
    capture = Capture()
    root = logging.getLogger()
    websockets_logger = logging.getLogger("websockets")
    saved = root.level, websockets_logger.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    websockets_logger.setLevel(logging.WARNING)  # as the CLI sets it
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(saved[0])
        websockets_logger.setLevel(saved[1])


def secret_forms(secret: str) -> dict[str, bytes]:
    """The secret as UTF-8, hex and base64; a session id or token also as the random bytes its
    URL-safe base64 encodes (and their hex)."""
    raw = secret.encode()
    forms = {
        "utf-8": raw,
        "hex": raw.hex().encode(),
        "base64": base64.b64encode(raw).rstrip(b"="),
    }
    try:
        decoded = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    except ValueError:
        decoded = b""
    if len(decoded) >= 24:
        forms["decoded bytes"] = decoded
        forms["decoded hex"] = decoded.hex().encode()
    return forms


def varchar_columns_containing(db: Path, needles: dict[str, str]) -> dict[str, list[str]]:
    """Per needle, `table.column` of every VARCHAR column of every table holding it (SQL, so
    compressed storage cannot hide it)."""
    found: dict[str, list[str]] = {name: [] for name in needles}
    with duckdb.connect(str(db), read_only=True) as connection:
        columns = connection.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE data_type = 'VARCHAR' ORDER BY ALL"
        ).fetchall()
        assert len(columns) > 20
        for table, column in columns:
            for name, needle in needles.items():
                hits = connection.execute(
                    f'SELECT count(*) FROM "{table}" WHERE contains("{column}", ?)',  # noqa: S608
                    [needle],
                ).fetchone()
                if hits and hits[0]:
                    found[name].append(f"{table}.{column}")
    return found


def test_passwords_are_hashed_at_the_real_cost_outside_the_tests() -> None:
    """The suite hashes cheaply in its own process (conftest.cheap_password_hashing); the
    gateway does not: scrypt with N=2^14, r=8, p=1, a 16-byte salt, 32 bytes."""
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from storage.duckdb.identity import hash_password as h; print(h('x'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    scheme, n, r, p, salt, digest = done.stdout.strip().split("$")
    assert (scheme, n, r, p, len(base64.b64decode(salt)), len(base64.b64decode(digest))) == (
        "scrypt",
        "16384",
        "8",
        "1",
        16,
        32,
    )


def test_no_secret_reaches_the_database_file_or_the_log(
    broker: Broker,
    start_gateway: Callable[..., GatewayThread],
    tenants: Tenants,
    gateway_log: Capture,
) -> None:
    # Compaction off: it checkpoints, and the WAL snapshot below should hold every write as is.
    gateway = start_gateway(mqtt_url=broker.url_for_gateway, compact_interval_s=0)
    wrong = [f"wrong-{secrets.token_hex(6)}" for _ in range(4)]
    presented = [secrets.token_urlsafe(32) for _ in range(2)]  # unknown session ids
    acme_app, globex_app = tenants.apps["acme"], tenants.apps["globex"]
    wrong_token = secrets.token_urlsafe(32)
    marker = f"marker-{secrets.token_hex(8)}"  # a thing key: not secret, so it must be stored
    sessions: list[str] = []

    def login_entry(**params: str) -> dict[str, Any]:
        return {"command": "api.authenticate", "params": params}

    def session_of(reply: dict[str, Any], key: str = "auth") -> str:
        assert reply[key]["success"], reply
        session = str(reply[key]["params"]["sessionId"])
        sessions.append(session)
        return session

    with ws_client(gateway.ws_url) as first, ws_client(gateway.ws_url) as second:
        user = session_of(first.login("user@acme.test"))
        bound = first.send({"i": {"command": "session.info"}, "l": {"command": "usage.api.list"}})
        assert bound["i"]["params"]["id"] == user and bound["l"]["success"]
        for password in wrong[:2]:
            assert first.login("user@acme.test", password)["auth"]["errorCodes"] == [-90004]
        assert first.login("nobody@acme.test", wrong[2])["auth"]["errorCodes"] == [-90004]

        # A session presented in an auth block, on another connection
        reused = second.send(
            {
                "auth": {"sessionId": user},
                "i": {"command": "session.info"},
                "l": {"command": "usage.api.list", "params": {"limit": 3}},
            }
        )
        assert reused["i"]["params"]["id"] == user and reused["l"]["success"]
        # api.authenticate as an ordinary entry, then its session in an auth block
        ops = session_of(
            second.send({"1": login_entry(username="ops@acme.test", password=PASSWORD)}), "1"
        )
        listed = second.send(
            {
                "auth": {"sessionId": ops},
                "l": {"command": "usage.api.list", "params": {"showAll": True, "limit": 5}},
            }
        )
        assert listed["l"]["success"], listed
        # Mixed credentials: -90002, logged with every secret-named value masked
        mixed = second.send(
            {
                "auth": login_entry(
                    username="user@acme.test", password=PASSWORD, appToken=globex_app[1]
                )
            }
        )
        assert mixed["auth"]["errorCodes"] == [-90002]
        for unknown in presented:
            stale = second.send({"auth": {"sessionId": unknown}, "i": {"command": "session.info"}})
            assert stale["i"]["errorCodes"] == [-90005]
        ended = second.send({"auth": {"sessionId": user}, "e": {"command": "session.end"}})
        assert ended["e"] == {"success": True}

    with ws_client(gateway.ws_url) as device:
        thing = session_of(
            device.send(
                {"auth": login_entry(appId=acme_app[0], appToken=acme_app[1], thingKey=marker)}
            )
        )
        info = device.send({"i": {"command": "session.info"}, "e": {"command": "session.end"}})
        assert info["i"]["params"]["id"] == thing and info["e"] == {"success": True}
        after_end = device.send({"auth": {"sessionId": thing}, "i": {"command": "session.info"}})
        assert after_end["i"]["errorCodes"] == [-90005]
        refused = device.send(
            {"auth": login_entry(appId=acme_app[0], appToken=wrong_token, thingKey="t-2")}
        )
        assert refused["auth"]["errorCodes"] == [-90004]

    mqtt_device = MqttClient(broker.port, f"sec-{secrets.token_hex(3)}")
    try:
        mqtt_device.subscribe(f"reply/{mqtt_device.client_id}/#")
        mqtt_device.subscribe(f"replyz/{mqtt_device.client_id}/#")
        denied = mqtt_device.call(
            {"auth": login_entry(username="user@globex.test", password=wrong[3])}
        )
        assert denied["auth"]["errorCodes"] == [-90004]
        session_of(
            mqtt_device.call(
                {"auth": login_entry(appId=globex_app[0], appToken=globex_app[1], thingKey="m-1")}
            )
        )
        bound_mqtt = mqtt_device.call(
            {"i": {"command": "session.info"}, "l": {"command": "usage.api.list"}}
        )
        assert bound_mqtt["i"]["params"]["thingKey"] == "m-1" and bound_mqtt["l"]["success"]
        zipped = mqtt_device.call(
            {"auth": login_entry(username="org-admin@globex.test", password=PASSWORD)},
            compressed=True,
        )
        session_of(zipped)
    finally:
        mqtt_device.close()

    with ws_client(gateway.ws_url) as console:  # the records exist, secrets masked
        session_of(console.login("ops@acme.test"))
        everything = console.send(
            {"l": {"command": "usage.api.list", "params": {"showAll": True, "limit": 2000}}}
        )["l"]["params"]
    logins = [r for r in everything["result"] if r["command"] == "authenticate"]
    assert len(logins) == 12
    assert all('"***"' in r["request"] for r in logins)

    db = tenants.db
    wal = db.with_name(db.name + ".wal")
    wal_while_running = wal.read_bytes() if wal.exists() else b""
    gateway.stop()
    stored = wal_while_running + b"".join(
        path.read_bytes() for path in sorted(db.parent.rglob(db.name + "*")) if path.is_file()
    )
    log_text = gateway_log.text

    # The scans can see: the marker thing key is in the WAL as written, in the tables via SQL,
    # and the log holds the gateway's own lines.
    assert marker.encode() in wal_while_running
    control = varchar_columns_containing(db, {"marker": marker})["marker"]
    assert {"things.thing_key", "usage_log.whoami", "usage_log.request"} <= set(control)
    assert "tr50gw starting" in log_text and "tr50gw stopped" in log_text

    named = {
        "password": PASSWORD,
        **{f"wrong password {i}": value for i, value in enumerate(wrong)},
        "acme app token": acme_app[1],
        "globex app token": globex_app[1],
        "wrong app token": wrong_token,
        "gateway's broker password": broker.gateway_password,
        **{f"session id {i}": value for i, value in enumerate(sessions)},
        **{f"presented session id {i}": value for i, value in enumerate(presented)},
    }
    assert len(sessions) == 6
    leaks = []
    for name, secret in named.items():
        for form, needle in secret_forms(secret).items():
            if needle in stored:
                leaks.append(f"{name} ({form}) in the DuckDB file")
            if form in ("utf-8", "hex", "base64") and needle.decode() in log_text:
                leaks.append(f"{name} ({form}) in the log")
    for name, columns in varchar_columns_containing(db, named).items():
        leaks += [f"{name} in {column}" for column in columns]
    assert leaks == []


# A payload the gateway cannot read as an envelope is stored as its text (README "The usage
# record"), and a malformed auth entry as it came; a secret inside either must still be masked
# (SPEC §3: secrets never reach the log).
UNPARSABLE = {
    "truncated JSON login": (
        '{"auth":{"command":"api.authenticate","params":'
        '{"username":"user@acme.test","password":"SECRET"}}'
    ),
    "login over the payload limit": orjson.dumps(
        {
            "auth": {
                "command": "api.authenticate",
                "params": {"username": "user@acme.test", "password": "SECRET"},
            },
            "1": {"command": "diag.ping", "params": {"pad": "x" * 300_000}},
        }
    ).decode(),
    # `"auth": "<id>"` instead of `"auth": {"sessionId": "<id>"}`: answered -90010 under "auth"
    "a session id as a bare auth value": '{"auth":"SECRET","1":{"command":"diag.ping"}}',
}


@pytest.mark.parametrize("payload", list(UNPARSABLE.values()), ids=list(UNPARSABLE))
async def test_secrets_in_malformed_payloads_are_masked(world: World, payload: str) -> None:
    secret = secrets.token_urlsafe(24)
    before = await usage_rows(world.h)
    await world.h.raw(payload.replace("SECRET", secret), world.h.connection(client_id="raw-1"))
    assert (await usage_rows(world.h))["usage_log"] > before["usage_log"]
    assert varchar_columns_containing_live(world.h, secret) == []


def varchar_columns_containing_live(h: Harness, needle: str) -> list[str]:
    """`usage_log.request`/`.response` rows holding `needle`, on the harness's open file."""
    cursor = h.database.cursor()
    found = []
    for column in ("request", "response"):
        row = cursor.execute(
            f"SELECT count(*) FROM usage_log WHERE contains({column}, ?)",  # noqa: S608
            [needle],
        ).fetchone()
        if row and row[0]:
            found.append(f"usage_log.{column}")
    return found
