"""usage.api.list on a realistic 10M-record log, through the real gateway, and its memory.

The dataset is `storage.synthetic`'s (50 orgs, 5,000 callers, 40 commands, 2% failures, 30 days)
in bench/results/usage-10m.duckdb, reused while it is fresh (< 6 h old, same parameters and
generator version; the `last 24h` cases need data up to about now) and regenerated otherwise.
An org-admin of the busiest org (the worst case for org-scoped listings; `who` is that org's
busiest caller) and a Super-Ops user are provisioned into it, then `tr50gw serve` runs on it
(WebSocket only) and a client in this process times each listing's round trip after a warm-up.

Memory: the gateway's RSS idle on an empty file, with the big file open before the queries, at
the peak while they run, and after them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from bench.common import RESULTS_DIR, GatewayProcess, Result, percentile, rss_mb
from storage.db import Database
from storage.identity import AlreadyExists, IdentityStore
from storage.synthetic import GENERATOR_VERSION, generate_usage, stored_summary

__all__ = ["QueryCase", "dataset", "main", "run"]

PASSWORD = "bench-queries-password"
ADMIN = "org-admin@bench.example"
OPS = "super-ops@bench.example"
FRESH_FOR = timedelta(hours=6)
COMMON_TARGET_MS = 20.0
DEEP_TARGET_MS = 200.0
RSS_TARGET_MB = 250.0
DEEP_OFFSET = 100_000


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class QueryCase:
    name: str
    params: dict[str, Any]
    super_ops: bool = False
    deep: bool = False

    @property
    def target_ms(self) -> float:
        return DEEP_TARGET_MS if self.deep else COMMON_TARGET_MS


def _parameters(rows: int) -> dict[str, Any]:
    return {
        "rows": rows, "orgs": 50, "callers": 5000, "commands": 40,
        "failure_rate": 0.02, "days": 30, "seed": 1,
    }  # fmt: skip


def _is_fresh(summary: dict[str, Any] | None, parameters: dict[str, Any]) -> bool:
    if summary is None or summary.get("parameters") != parameters:
        return False
    if summary.get("generator_version") != GENERATOR_VERSION:
        return False
    generated = datetime.fromisoformat(summary["generated_at"])
    return datetime.now(UTC).replace(tzinfo=None) - generated < FRESH_FOR


def dataset(path: Path, rows: int) -> dict[str, Any]:
    """The generator's summary of `path`, generating it first unless it is fresh."""
    parameters = _parameters(rows)
    if path.exists():
        database = Database(path)
        try:
            summary = stored_summary(database)
        finally:
            database.close()
        if _is_fresh(summary, parameters):
            assert summary is not None
            progress(f"queries: reusing {path.name} (generated {summary['generated_at']} UTC)")
            return summary
        progress(f"queries: {path.name} is stale or different; generating it again")
    for stale in (path, path.with_name(path.name + ".wal")):
        stale.unlink(missing_ok=True)
    started = time.perf_counter()

    def report(done: int, total: int) -> None:
        elapsed = time.perf_counter() - started
        progress(
            f"queries: generated {done:,}/{total:,} rows in {elapsed:.0f} s "
            f"({done / elapsed:,.0f} rows/s)"
        )

    progress(f"queries: generating {rows:,} usage records into {path}")
    database = Database(path)
    try:
        summary = generate_usage(database, progress=report, **parameters)
    finally:
        database.close()
    size_mb = path.stat().st_size / 2**20
    progress(
        f"queries: {rows:,} rows in {summary['seconds']:.1f} s "
        f"({summary['rows_per_second']:,} rows/s insert), file {size_mb:,.0f} MiB"
    )
    return summary


def _provision(path: Path, org_key: str) -> None:
    """An org-admin of `org_key` and a Super-Ops user (kept when the file is reused)."""
    database = Database(path)
    try:
        identity = IdentityStore(database, lambda: datetime.now(UTC).replace(tzinfo=None))
        for email, role in ((ADMIN, "org-admin"), (OPS, "super-ops")):
            with suppress(AlreadyExists):
                identity.create_user(email, org_key, PASSWORD, role)
    finally:
        database.close()


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


class _Client:
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

    def timed_list(self, params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        message = json.dumps(
            {"q": {"command": "usage.api.list", "params": params}}, separators=(",", ":")
        )
        started = time.perf_counter()
        self.connection.send(message)
        text = self.connection.recv(timeout=300)
        elapsed = time.perf_counter() - started
        reply = json.loads(text)["q"]
        if not reply["success"]:
            raise RuntimeError(f"usage.api.list {params} failed: {reply}")
        return elapsed, reply["params"]

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
    client: _Client, case: QueryCase, warmup: int, repetitions: int
) -> tuple[list[float], int]:
    count = 0
    for _ in range(warmup):
        _, page = client.timed_list(case.params)
        count = int(page["count"])
    timings = []
    for _ in range(repetitions):
        elapsed, page = client.timed_list(case.params)
        timings.append(elapsed * 1000)
        count = int(page["count"])
    return timings, count


def run(quick: bool = False) -> list[Result]:
    rows = 1_000_000 if quick else 10_000_000
    label = "1M" if quick else "10M"
    warmup, repetitions = (2, 10) if quick else (5, 30)
    path = RESULTS_DIR / f"usage-{label.lower()}.duckdb"
    summary = dataset(path, rows)
    cases, chosen = _cases(summary)
    _provision(path, chosen["org"])
    size_mb = path.stat().st_size / 2**20
    progress(
        f"queries: org {chosen['org']} ({chosen['org_rows']:,} rows), busiest caller "
        f"{chosen['who']}; file {size_mb:,.0f} MiB"
    )

    results: list[Result] = []
    progress("queries: gateway RSS idle on an empty file")
    idle = _idle_rss()
    results.append(Result("memory", "idle, empty file", "gateway", {"rss_mb": round(idle, 1)}))

    progress(f"queries: starting the gateway on the {label} file (WebSocket only)")
    with GatewayProcess(path) as gateway:
        time.sleep(1.0)
        opened = rss_mb(gateway.pid)
        admin = _Client(gateway.ws_url, ADMIN)
        ops = _Client(gateway.ws_url, OPS)
        try:
            with _RssPeak(gateway.pid).active() as sampler:
                for case in cases:
                    client = ops if case.super_ops else admin
                    timings, count = _measure(client, case, warmup, repetitions)
                    p50, p95 = percentile(timings, 0.50), percentile(timings, 0.95)
                    met = p50 < case.target_ms
                    progress(
                        f"queries: {case.name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
                        f"count {count:,} {'(met)' if met else '(MISSED)'}"
                    )
                    results.append(
                        Result(
                            "queries",
                            case.name,
                            "gateway",
                            {
                                "p50_ms": round(p50, 2),
                                "p95_ms": round(p95, 2),
                                "max_ms": round(max(timings), 2),
                                "count": float(count),
                                "repetitions": float(len(timings)),
                            },
                            f"p50 < {case.target_ms:.0f} ms",
                            met,
                        )
                    )
            after = rss_mb(gateway.pid)
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
    return results


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
    args = parser.parse_args(argv)
    print(format_table(run(args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
