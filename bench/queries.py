"""usage.api.list and the usage analytics on a realistic 10M-record log, through the real gateway.

The dataset is `devtools.synthetic`'s (50 orgs, 5,000 callers, 40 commands, 2% failures, 30 days)
in bench/results/usage-10m.duckdb, reused while it is fresh (< 6 h old, same parameters and
generator version; the `last 24h` cases need data up to about now) and regenerated otherwise.
An org-admin of the busiest org (the worst case for org-scoped listings; `who` is that org's
busiest caller) and a Super-Ops user are provisioned into it, then `tr50gw serve` runs on it
(WebSocket only) and a client in this process times each listing's round trip after a warm-up.

Then the same clients time the analytics commands over `last 30d` (org scope and showAll):
usage.api.activity (auto interval = day; and hourly in Asia/Kolkata, 721 buckets),
usage.api.times, .statuses, .breakdown by who and by command, .endpoints, .history (daily), and
usage.api.get of one id taken from a listing first. They take longer than a listing, so they get
fewer repetitions (1 warm-up + at most 7 timed, fewer when a call is slow; 3 with `--quick`).
A failed reply (success false) makes its case a failed row (`error_code`), never a timing.

Memory: the gateway's RSS idle on an empty file, with the big file open before the queries, at
the peak while the listings run and after them, then at the peak while the analytics run and
after them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tqdm import tqdm
from websockets.sync.client import ClientConnection, connect

from bench.common import RESULTS_DIR, GatewayProcess, Result, percentile, rss_mb
from devtools.broker import free_port
from devtools.synthetic import (
    GENERATOR_VERSION,
    generate_file,
    generate_usage,
    stored_file_summary,
)
from gateway.app import open_provisioning
from gateway.core.ports import AlreadyExists

__all__ = [
    "ADMIN",
    "FAILED_MARK",
    "Client",
    "CommandFailed",
    "QueryCase",
    "cached_dataset",
    "dataset",
    "failed_row",
    "main",
    "provision_readers",
    "run",
]

PASSWORD = "bench-queries-password"
ADMIN = "org-admin@bench.example"
OPS = "super-ops@bench.example"
FRESH_FOR = timedelta(hours=6)
COMMON_TARGET_MS = 20.0
DEEP_TARGET_MS = 200.0
ANALYTICS_TARGET_MS = 300.0
ANALYTICS_CASE_SECONDS = 12.0  # timed repetitions stop growing past this per case (full run)
ANALYTICS_MIN_REPETITIONS = 3
FAILED_MARK = " - FAILED "  # case name, then the error code and message
RSS_TARGET_MB = 300.0  # issue 14: through the whole benchmark, at the default memory cap
# Issue 14: showAll activity, statuses, breakdown and history over 30 days, p50 on 10M / 100M.
CHART_TARGET_MS = 20.0
LARGE_CHART_TARGET_MS = 50.0
CHART_CASES = frozenset(
    {
        "usage.api.activity (auto: day)",
        "usage.api.statuses",
        "usage.api.breakdown by who",
        "usage.api.breakdown by command",
        "usage.api.history (series day)",
    }
)
DEEP_OFFSET = 100_000


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class CommandFailed(RuntimeError):
    """A TR50 reply with success false."""

    def __init__(self, command: str, params: dict[str, Any], reply: dict[str, Any]) -> None:
        errors = reply.get("errorMessages") or []
        codes = reply.get("errorCodes") or []
        self.code = int(codes[0]) if codes else 0
        self.text = "; ".join(str(error) for error in errors) or json.dumps(reply)
        super().__init__(f"{command} {json.dumps(params)} failed: {self.code} {self.text}")


@dataclass(frozen=True)
class QueryCase:
    name: str
    params: dict[str, Any]
    super_ops: bool = False
    deep: bool = False
    command: str = "usage.api.list"
    suite: str = "queries"
    target: float | None = None  # p50 goal in ms; None: the listing's (common or deep)

    @property
    def target_ms(self) -> float:
        if self.target is not None:
            return self.target
        return DEEP_TARGET_MS if self.deep else COMMON_TARGET_MS


def _parameters(rows: int) -> dict[str, Any]:
    return {
        "rows": rows, "orgs": 50, "callers": 5000, "commands": 40,
        "failure_rate": 0.02, "days": 30, "seed": 1,
    }  # fmt: skip


def _is_fresh(summary: dict[str, Any] | None, parameters: dict[str, Any], version: int) -> bool:
    if summary is None or summary.get("parameters") != parameters:
        return False
    if summary.get("generator_version") != version:
        return False
    generated = datetime.fromisoformat(summary["generated_at"])
    return datetime.now(UTC).replace(tzinfo=None) - generated < FRESH_FOR


def cached_dataset(
    path: Path,
    parameters: dict[str, Any],
    *,
    generate: Callable[..., dict[str, Any]],
    version: int,
    suite: str,
    what: str,
) -> dict[str, Any]:
    """The summary of the synthetic dataset in `path`, generated first (by `generate`, one of
    devtools.synthetic's, with `parameters`) unless the file holds a fresh one: same parameters,
    generator `version`, and less than FRESH_FOR old. Progress goes to stderr as `suite: ...`."""
    if path.exists():
        summary = stored_file_summary(path)
        if _is_fresh(summary, parameters, version):
            assert summary is not None
            progress(f"{suite}: reusing {path.name} (generated {summary['generated_at']} UTC)")
            return summary
        progress(f"{suite}: {path.name} is stale or different; generating it again")
    for stale in (path, path.with_name(path.name + ".wal")):
        stale.unlink(missing_ok=True)
    progress(f"{suite}: generating {parameters['rows']:,} {what} into {path}")
    bar = tqdm(
        total=parameters["rows"],
        desc=f"{suite}: generating",
        unit="rows",
        unit_scale=True,
        file=sys.stderr,
        mininterval=1.0,
    )

    def report(done: int, total: int) -> None:
        bar.update(done - bar.n)
        if done >= total:
            bar.set_description(f"{suite}: compacting and building rollups")

    with bar:
        summary = generate_file(path, generate, progress=report, **parameters)
    size_mb = path.stat().st_size / 2**20
    progress(
        f"{suite}: {summary['rows']:,} rows in {summary['seconds']:.1f} s "
        f"({summary['rows_per_second']:,} rows/s insert), file {size_mb:,.0f} MiB"
    )
    return summary


def dataset(path: Path, rows: int) -> dict[str, Any]:
    """The usage generator's summary of `path`, generating it first unless it is fresh."""
    return cached_dataset(
        path,
        _parameters(rows),
        generate=generate_usage,
        version=GENERATOR_VERSION,
        suite="queries",
        what="usage records",
    )


def provision_readers(path: Path, org_key: str) -> None:
    """An org-admin of `org_key` and a Super-Ops user (kept when the file is reused)."""
    provisioning, close = open_provisioning(path)
    try:
        for email, role in ((ADMIN, "org-admin"), (OPS, "super-ops")):
            with suppress(AlreadyExists):
                provisioning.create_user(email, org_key, PASSWORD, role)
    finally:
        close()


def _cases(summary: dict[str, Any]) -> tuple[list[QueryCase], dict[str, Any]]:
    org = summary["orgs"][0]  # the busiest org: the worst case for org-scoped listings
    offset = DEEP_OFFSET if org["rows"] > DEEP_OFFSET + 100 else org["rows"] // 2
    who = org["busiest_caller"]["whoami"]
    org_cases = [
        QueryCase("last 24h, limit 100", {"last": "24h", "limit": 100}),
        QueryCase(f"who={who}", {"who": who, "limit": 100}),
        QueryCase("hasFailure", {"hasFailure": True, "limit": 100}),
        QueryCase(f"offset {offset:,}", {"offset": offset, "limit": 100}, deep=True),
        QueryCase("count, last 30d (limit 1)", {"last": "30d", "limit": 1}),
    ]
    cases = [QueryCase(f"org: {c.name}", c.params, deep=c.deep) for c in org_cases]
    cases += [
        QueryCase(f"showAll: {c.name}", {**c.params, "showAll": True}, super_ops=True, deep=c.deep)
        for c in org_cases
    ]
    return cases, {"org": org["orgKey"], "org_rows": org["rows"], "who": who}


class Client:
    """One TR50 WebSocket connection with a logged-in (connection-bound) session."""

    def __init__(self, url: str, username: str) -> None:
        self._stack = ExitStack()
        self.connection: ClientConnection = self._stack.enter_context(connect(url, max_size=None))
        reply = self.call(
            {
                "auth": {
                    "command": "api.authenticate",
                    "params": {"username": username, "password": PASSWORD},
                }
            }
        )
        if not reply["auth"]["success"]:
            raise RuntimeError(f"login of {username} failed: {reply}")

    def call(self, envelope: dict[str, Any]) -> Any:
        self.connection.send(json.dumps(envelope, separators=(",", ":")))
        return json.loads(self.connection.recv(timeout=300))

    def timed(self, command: str, params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        """One round trip of `command`: seconds and the reply's params (CommandFailed if failed)."""
        message = json.dumps({"q": {"command": command, "params": params}}, separators=(",", ":"))
        started = time.perf_counter()
        self.connection.send(message)
        text = self.connection.recv(timeout=300)
        elapsed = time.perf_counter() - started
        body = json.loads(text)
        reply = body.get("q", body)  # a root-level failure has no "q"
        if not reply.get("success"):
            raise CommandFailed(command, params, reply)
        return elapsed, reply.get("params") or {}

    def timed_list(self, params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        return self.timed("usage.api.list", params)

    def close(self) -> None:
        self._stack.close()


class _RssPeak:
    """Samples a process's RSS every 50 ms while active; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return

    @contextmanager
    def active(self) -> Iterator[_RssPeak]:
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def _idle_rss(settle: float = 1.0) -> float:
    """RSS of a gateway just started on a fresh file (the floor the big table adds to)."""
    with (
        tempfile.TemporaryDirectory(prefix="tr50gw-queries-") as tmp,
        GatewayProcess(Path(tmp) / "empty.duckdb") as gateway,
    ):
        time.sleep(settle)  # let start-up allocations settle; readiness is already known
        return rss_mb(gateway.pid)


def _measure(
    client: Client,
    case: QueryCase,
    warmup: int,
    repetitions: int,
    budget_s: float | None = None,
) -> tuple[list[float], dict[str, Any]]:
    """Round-trip times in ms after `warmup` calls, and the last reply's params.

    With `budget_s`, a slow command gets fewer timed calls (down to ANALYTICS_MIN_REPETITIONS):
    as many as the slowest warm-up call says fit in the budget.
    """
    reply: dict[str, Any] = {}
    slowest = 0.0
    for _ in range(warmup):
        elapsed, reply = client.timed(case.command, case.params)
        slowest = max(slowest, elapsed)
    if budget_s is not None and slowest > 0:
        fits = int(budget_s / slowest)
        repetitions = min(repetitions, max(ANALYTICS_MIN_REPETITIONS, fits))
    timings = []
    for _ in range(repetitions):
        elapsed, reply = client.timed(case.command, case.params)
        timings.append(elapsed * 1000)
    return timings, reply


def _analytics_cases(
    org_id: str | CommandFailed,
    all_id: str | CommandFailed,
    *,
    chart_target: float = 20.0,
) -> list[tuple[QueryCase, CommandFailed | None]]:
    """The analytics cases over `last 30d`, org scope then showAll, each with its id's failure.

    `org_id`/`all_id`: the record usage.api.get fetches in each scope (or why none was found).
    """
    window = {"last": "30d"}
    scoped = [
        ("usage.api.activity (auto: day)", "usage.api.activity", window),
        (
            "usage.api.activity (hour, Asia/Kolkata)",
            "usage.api.activity",
            {**window, "interval": "hour", "timezone": "Asia/Kolkata"},
        ),
        ("usage.api.times", "usage.api.times", window),
        ("usage.api.statuses", "usage.api.statuses", window),
        ("usage.api.breakdown by who", "usage.api.breakdown", {**window, "by": "who"}),
        ("usage.api.breakdown by command", "usage.api.breakdown", {**window, "by": "command"}),
        ("usage.api.endpoints", "usage.api.endpoints", window),
        ("usage.api.history (series day)", "usage.api.history", {**window, "series": "day"}),
    ]
    cases: list[tuple[QueryCase, CommandFailed | None]] = []
    for scope, super_ops, record in (("org", False, org_id), ("showAll", True, all_id)):
        extra = {"showAll": True} if super_ops else {}
        for name, command, params in scoped:
            charted = super_ops and name in CHART_CASES
            case = QueryCase(
                f"{scope}: {name}",
                {**params, **extra},
                super_ops=super_ops,
                command=command,
                suite="analytics",
                target=chart_target if charted else ANALYTICS_TARGET_MS,
            )
            cases.append((case, None))
        get = QueryCase(
            f"{scope}: usage.api.get (one id)",
            {"id": record if isinstance(record, str) else "", **extra},
            super_ops=super_ops,
            command="usage.api.get",
            suite="analytics",
            target=COMMON_TARGET_MS,  # one record by key: a common query
        )
        cases.append((get, record if isinstance(record, CommandFailed) else None))
    return cases


def _pick_id(client: Client, super_ops: bool) -> str | CommandFailed:
    """The id of a record from the middle of the 30 days (visible to `client`), by a listing."""
    start = datetime.now(UTC) - timedelta(days=15)
    params: dict[str, Any] = {
        "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "limit": 1,
    }
    if super_ops:
        params["showAll"] = True
    try:
        _, page = client.timed_list(params)
    except CommandFailed as error:
        return error
    records = page.get("result") or []
    if not records:
        return CommandFailed("usage.api.list", params, {"errorMessages": ["no record to get"]})
    return str(records[0]["id"])


def _check(case: QueryCase, reply: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
    """What a reply says (count, buckets, ...) and what looks wrong in it."""
    metrics: dict[str, float] = {}
    notes: list[str] = []
    command, params = case.command, case.params
    if command == "usage.api.list":
        metrics["count"] = float(reply["count"])
    elif command == "usage.api.get":
        metrics["count"] = 1.0
        if reply.get("id") != params["id"]:
            notes.append(f"asked for id {params['id']}, got {reply.get('id')!r}")
    elif command == "usage.api.endpoints":
        metrics["count"] = float(reply.get("count") or 0)
        metrics["returned"] = float(len(reply.get("result") or ()))
    elif command == "usage.api.history":
        stamps = reply.get("ts") or []
        metrics["buckets"] = float(len(stamps))
        metrics["count"] = float(reply.get("total") or 0)
        if not 30 <= len(stamps) <= 31:
            notes.append(f"{len(stamps)} daily buckets over 30 days")
        counters = reply.get("counters") or {}
        if any(len(series) != len(stamps) for series in counters.values()):
            notes.append("a counter's length differs from ts's")
        if sum(sum(series) for series in counters.values()) != metrics["count"]:
            notes.append("the counters do not add up to total")
    else:  # one bucket per interval
        buckets = reply.get("result") or []
        metrics["buckets"] = float(len(buckets))
        metrics["count"] = float(sum(int(bucket.get("count") or 0) for bucket in buckets))
        interval = params.get("interval", "day")  # auto over 30 days: at most 200 buckets
        if reply.get("interval") != interval:
            notes.append(f"interval {reply.get('interval')!r}, expected {interval!r}")
        expected = (720, 721) if interval == "hour" else (30, 31)
        if not expected[0] <= len(buckets) <= expected[1]:
            notes.append(f"{len(buckets)} buckets, expected {expected[0]}..{expected[1]}")
        zone = params.get("timezone", "UTC")
        if reply.get("timezone") != zone:
            notes.append(f"timezone {reply.get('timezone')!r}, expected {zone!r}")
        suffix = "+05:30" if zone == "Asia/Kolkata" else "Z"
        if buckets and not str(buckets[0].get("timestamp", "")).endswith(suffix):
            notes.append(f"bucket timestamp {buckets[0].get('timestamp')!r} (not ...{suffix})")
        if command == "usage.api.breakdown":
            metrics["keys"] = float(len(reply.get("keys") or ()))
            if any(
                sum(bucket["counts"].values()) + bucket["other"] != bucket["count"]
                for bucket in buckets
            ):
                notes.append("a bucket's counts + other differ from its count")
        if command == "usage.api.statuses" and any(
            bucket["success"] + bucket["failed"] != bucket["count"] for bucket in buckets
        ):
            notes.append("a bucket's success + failed differ from its count")
    return metrics, notes


def _timed_row(case: QueryCase, timings: list[float], reply: dict[str, Any]) -> Result:
    p50, p95 = percentile(timings, 0.50), percentile(timings, 0.95)
    met = p50 < case.target_ms
    try:
        shape, notes = _check(case, reply)
    except (KeyError, TypeError, ValueError, AttributeError) as error:  # not the documented shape
        shape, notes = {}, [f"unexpected reply shape ({type(error).__name__}: {error})"]
    count = f", count {shape['count']:,.0f}" if "count" in shape else ""
    progress(
        f"{case.suite}: {case.name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms{count} "
        f"({len(timings)} timed) {'(met)' if met else '(MISSED)'}"
    )
    for note in notes:
        progress(f"{case.suite}: NOTE {case.name}: {note}")
    return Result(
        case.suite,
        case.name,
        "gateway",
        {
            "p50_ms": round(p50, 2),
            "p95_ms": round(p95, 2),
            "max_ms": round(max(timings), 2),
            **shape,
            "repetitions": float(len(timings)),
        },
        f"p50 < {case.target_ms:.0f} ms",
        met,
    )


def failed_row(case: QueryCase, error: CommandFailed) -> Result:
    progress(f"{case.suite}: FAILED {case.name}: {error}")
    return Result(
        case.suite,
        f"{case.name}{FAILED_MARK}{error.code} {error.text[:80]}",
        "gateway",
        {"error_code": float(error.code)},
        f"p50 < {case.target_ms:.0f} ms",
        False,
    )


def _run_case(
    client: Client,
    case: QueryCase,
    warmup: int,
    repetitions: int,
    budget_s: float | None = None,
) -> Result:
    try:
        timings, reply = _measure(client, case, warmup, repetitions, budget_s)
    except CommandFailed as error:
        return failed_row(case, error)
    return _timed_row(case, timings, reply)


REST_SLACK_MS = 2.0  # issue 12: REST GET /usage p50 within 2 ms of the same TR50 listing


def _rest_vs_tr50(admin: Client, http_port: int, warmup: int, repetitions: int) -> Result:
    """The org-admin's last-24-hours page of 100 as Cloud Elements' `GET /usage` (HTTP, one
    kept-alive connection, Bearer session) and as `usage.api.list` (its WebSocket), the same
    window and page, calls alternating; p50 of each and their difference."""
    connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=300)
    login = {"username": ADMIN, "password": PASSWORD}
    connection.request(
        "POST", "/api", json.dumps({"auth": {"command": "api.authenticate", "params": login}})
    )
    session = json.loads(connection.getresponse().read())["auth"]["params"]["sessionId"]
    end = datetime.now(UTC).replace(tzinfo=None)
    start, end_text = (end - timedelta(hours=24)).isoformat() + "Z", end.isoformat() + "Z"
    path = f"/usage?from={start}&to={end_text}&pageSize=100"
    headers = {"Authorization": f"Bearer {session}"}
    tr50: list[float] = []
    rest: list[float] = []
    rest_rows = tr50_rows = 0
    try:
        for index in range(warmup + repetitions):
            started = time.perf_counter()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = json.loads(response.read())
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status} {body}")
            rest_rows = len(body)
            listed_s, listed = admin.timed(
                "usage.api.list", {"start": start, "end": end_text, "limit": 100}
            )
            tr50_rows = len(listed.get("result") or ())
            if index >= warmup:
                rest.append(elapsed * 1000)
                tr50.append(listed_s * 1000)
    finally:
        connection.close()
    rest_p50, tr50_p50 = percentile(rest, 0.50), percentile(tr50, 0.50)
    difference = rest_p50 - tr50_p50
    progress(
        f"queries: REST GET /usage p50 {rest_p50:.2f} ms vs usage.api.list {tr50_p50:.2f} ms"
        f" (+{difference:.2f}); {rest_rows} and {tr50_rows} rows"
    )
    return Result(
        "queries",
        "REST GET /usage vs usage.api.list, last 24h, 100",
        "gateway",
        {
            "p50_ms": round(rest_p50, 2),
            "p95_ms": round(percentile(rest, 0.95), 2),
            "tr50_p50_ms": round(tr50_p50, 2),
            "diff_ms": round(difference, 2),
            "count": float(rest_rows),
        },
        f"p50 <= TR50's + {REST_SLACK_MS:.0f} ms",
        difference <= REST_SLACK_MS and rest_rows == tr50_rows,
    )


RAW_SIDE = "gateway, raw records"
"""The side of the rows measured with `--no-rollups` (every query scans the records): the
"before" of each figure, in the same run as the "after" (side `gateway`, rollups on)."""
SIDES = ((RAW_SIDE, {"TR50GW_ROLLUPS": "false"}), ("gateway", {}))


def run(quick: bool = False, *, large: bool = False) -> list[Result]:
    """The listing and analytics cases, on the 10M set (1M with `quick`, 100M with `large`),
    against a gateway answering from the raw records only, then against one using the rollups."""
    rows = 100_000_000 if large else 1_000_000 if quick else 10_000_000
    label = "100M" if large else "1M" if quick else "10M"
    path = RESULTS_DIR / f"usage-{label.lower()}.duckdb"
    summary = dataset(path, rows)
    cases, chosen = _cases(summary)
    provision_readers(path, chosen["org"])
    size_mb = path.stat().st_size / 2**20
    progress(
        f"queries: org {chosen['org']} ({chosen['org_rows']:,} rows), busiest caller "
        f"{chosen['who']}; file {size_mb:,.0f} MiB"
    )

    results: list[Result] = []
    progress("queries: gateway RSS idle on an empty file")
    idle = _idle_rss()
    results.append(Result("memory", "idle, empty file", "gateway", {"rss_mb": round(idle, 1)}))
    for side, environment in SIDES:
        results += _measure_side(path, label, side, environment, cases, quick, large)
    return results


def _measure_side(
    path: Path,
    label: str,
    side: str,
    environment: dict[str, str],
    cases: list[QueryCase],
    quick: bool,
    large: bool,
) -> list[Result]:
    warmup, repetitions = (2, 10) if quick else (5, 30)
    analytics_repetitions = 3 if quick else 7
    analytics_budget = None if quick else ANALYTICS_CASE_SECONDS
    results: list[Result] = []
    progress(f"queries: starting the gateway on the {label} file ({side})")
    http_port = free_port()
    chart_target = LARGE_CHART_TARGET_MS if large else CHART_TARGET_MS
    with GatewayProcess(
        path, extra_env={"TR50GW_HTTP_PORT": str(http_port), **environment}
    ) as gateway:
        time.sleep(1.0)
        opened = rss_mb(gateway.pid)
        admin = Client(gateway.ws_url, ADMIN)
        ops = Client(gateway.ws_url, OPS)
        try:
            with _RssPeak(gateway.pid).active() as sampler:
                for case in cases:
                    client = ops if case.super_ops else admin
                    results.append(_run_case(client, case, warmup, repetitions))
                results.append(_rest_vs_tr50(admin, http_port, warmup, repetitions))
            after = rss_mb(gateway.pid)
            progress(f"analytics: over last 30d, 1 warm-up + up to {analytics_repetitions} timed")
            with _RssPeak(gateway.pid).active() as analytics_sampler:
                ids = (_pick_id(admin, super_ops=False), _pick_id(ops, super_ops=True))
                for case, failure in _analytics_cases(*ids, chart_target=chart_target):
                    if failure is not None:
                        results.append(failed_row(case, failure))
                        continue
                    client = ops if case.super_ops else admin
                    results.append(
                        _run_case(client, case, 1, analytics_repetitions, analytics_budget)
                    )
            after_analytics = rss_mb(gateway.pid)
        finally:
            admin.close()
            ops.close()
    spill = path.with_name(path.name + ".tmp")  # DuckDB's spill directory, if it made one
    if spill.is_dir() and not any(spill.iterdir()):
        spill.rmdir()
    target = f"< {RSS_TARGET_MB:.0f} MB"
    for name, value in (
        (f"{label} table open, before queries", opened),
        (f"{label} table open, peak during queries", sampler.peak),
        (f"{label} table open, after queries", after),
        (f"{label} table open, peak during analytics", analytics_sampler.peak),
        (f"{label} table open, after analytics", after_analytics),
    ):
        results.append(
            Result(
                "memory",
                name,
                "gateway",
                {"rss_mb": round(value, 1)},
                target,
                value < RSS_TARGET_MB,
            )
        )
    return [replace(result, side=side) for result in results]


def _number(metrics: dict[str, float], key: str, digits: int = 1) -> str:
    return f"{metrics[key]:,.{digits}f}" if key in metrics else ""


def format_table(results: Sequence[Result]) -> str:
    """A plain-text table of the rows (what `python -m bench.queries` prints)."""
    header = ("suite", "case", "p50 ms", "p95 ms", "count", "RSS MB", "target", "met")
    lines = [header]
    for result in results:
        lines.append(
            (
                result.suite,
                result.case,
                _number(result.metrics, "p50_ms"),
                _number(result.metrics, "p95_ms"),
                _number(result.metrics, "count", 0),
                _number(result.metrics, "rss_mb"),
                result.target,
                "" if result.met is None else ("yes" if result.met else "NO"),
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    numeric = {2, 3, 4, 5}
    text = []
    for line in lines:
        cells = [
            cell.rjust(width) if index in numeric else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        text.append("  ".join(cells).rstrip())
    return "\n".join(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.queries", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1M records, fewer repetitions")
    parser.add_argument("--large", action="store_true", help="100M records")
    args = parser.parse_args(argv)
    print(format_table(run(args.quick, large=args.large)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
