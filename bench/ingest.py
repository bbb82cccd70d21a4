"""Sustained ingest: usage records per second the gateway stores while serving, none lost.

Two WebSocket load processes (bench.load, 8 connections each, one envelope in flight per
connection) send envelopes of 50 `diag.ping` commands each, so every answer stands for 50 usage
records. After the load, one more envelope (api.authenticate + usage.api.list) is the visibility
barrier: usage.api.list answers only once every record submitted before it is committed, so its
answer marks when the last ingested record was stored. Then the gateway is stopped and the rows
in its DuckDB file are counted: they must be exactly the records the clients were answered for
(plus the barrier's two).

`stored/s` = all records / (barrier answered - first request sent), warm-up included: what the
writer really kept up with. `records/s` is the answered rate in the measured interval.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from bench.common import GatewayProcess, Result
from bench.roundtrip import (
    Account,
    RssSampler,
    count_usage_rows,
    progress,
    provision,
    run_load,
)

__all__ = [
    "CASE",
    "COMMANDS_PER_ENVELOPE",
    "measure",
    "none_lost",
    "run",
    "sustained_metrics",
    "sustained_summary",
    "visibility_barrier",
]

COMMANDS_PER_ENVELOPE = 50
LOAD_PROCESSES = 2
CONNECTIONS_PER_PROCESS = 8
TARGET = 50_000
CASE = (
    f"{COMMANDS_PER_ENVELOPE} x diag.ping per envelope, "
    f"{LOAD_PROCESSES * CONNECTIONS_PER_PROCESS} in flight ({LOAD_PROCESSES} ws clients)"
)
"""The load, in words (the row's case)."""


def _envelope() -> str:
    return json.dumps(
        {str(index): {"command": "diag.ping"} for index in range(COMMANDS_PER_ENVELOPE)},
        separators=(",", ":"),
    )


def visibility_barrier(
    ws_url: str, account: Account, command: str, params: dict[str, Any]
) -> float:
    """When a read by `account`'s user (`command`, which waits for the writer) was answered:
    every write answered before it had been committed by then. Two usage records."""
    envelope = {
        "auth": json.loads(account.auth_envelope)["auth"],
        "1": {"command": command, "params": params},
    }
    with connect(ws_url, max_size=None) as websocket:
        websocket.send(json.dumps(envelope))
        reply = json.loads(websocket.recv(timeout=120))
    visible_at = time.time()
    if not reply.get("1", {}).get("success"):
        raise RuntimeError(f"the barrier {command} failed: {reply}")
    return visible_at


def sustained_metrics(
    load: dict[str, Any], visible_at: float, stored: int, per_answer: int, unit: str
) -> dict[str, float]:
    """The figures of a sustained load (a merged bench.load result): `stored` rows over the time
    from the first request sent to `visible_at` (the barrier's answer), warm-up included; the
    answered rate of `unit`s (`per_answer` to an answer); latency; commit lag; others' CPU."""
    return {
        "stored_per_s": round(stored / max(1e-9, visible_at - load["wall_first_send"]), 1),
        f"{unit}_per_s": round(load["rps"] * per_answer, 1),
        "rps": load["rps"],
        "p50_ms": load["p50_ms"],
        "p99_ms": load["p99_ms"],
        "commit_lag_s": round(max(0.0, visible_at - load["wall_last_answer"]), 3),
        "others_cpu": load["others_cpu"],
    }


def sustained_summary(metrics: dict[str, float], unit: str) -> str:
    """`sustained_metrics` in words, for the progress lines."""
    return (
        f"{metrics[f'{unit}_per_s']:,.0f} {unit}/s answered, {metrics['stored_per_s']:,.0f} "
        f"stored/s, commit lag {metrics['commit_lag_s']:.2f} s"
    )


def measure(
    db: Path | str,
    account: Account,
    count_rows: Callable[[], int],
    *,
    warmup: float,
    duration: float,
    extra_env: Mapping[str, str] | None = None,
    name: str = "ingest",
) -> tuple[dict[str, float], float | None]:
    """The sustained ingest into `db` (a DuckDB file, or a lake with its data path in
    `extra_env`), `account` provisioned in it: the metrics (`sustained_metrics`, with the rows
    `count_rows()` finds once the gateway has stopped and the rows expected) and the gateway's
    peak RSS under the load (None when not sampled). Progress lines start with `name`."""
    progress(f"{name}: starting the gateway (WebSocket only)")
    gateway = GatewayProcess(db, extra_env=extra_env)
    sampler: RssSampler | None = None
    try:
        gateway.wait_ready()
        sampler = RssSampler(gateway.pid)
        progress(
            f"{name}: {LOAD_PROCESSES} ws clients x {CONNECTIONS_PER_PROCESS} connections, "
            f"{COMMANDS_PER_ENVELOPE} x diag.ping per envelope, {warmup + duration:.0f} s"
        )
        with sampler.active():
            result = run_load(
                [
                    "ws",
                    "--url",
                    gateway.ws_url,
                    "--window",
                    str(CONNECTIONS_PER_PROCESS),
                    "--payload",
                    _envelope(),
                ],
                warmup=warmup,
                duration=duration,
                processes=LOAD_PROCESSES,
            )
        visible_at = visibility_barrier(gateway.ws_url, account, "usage.api.list", {"limit": 1})
    finally:
        if sampler is not None:
            sampler.close()
        gateway.stop()
    rows = count_rows()
    records = result["answered"] * COMMANDS_PER_ENVELOPE
    expected = records + 2
    metrics = sustained_metrics(result, visible_at, records, COMMANDS_PER_ENVELOPE, "records")
    metrics |= {"errors": float(result["errors"]), "rows": float(rows), "expected": float(expected)}
    progress(f"{name}: {sustained_summary(metrics, 'records')}, rows {rows} (expected {expected})")
    peak = max(sampler.samples) if sampler is not None and sampler.samples else None
    return metrics, peak


def none_lost(metrics: dict[str, float]) -> bool:
    """Every record the clients were answered for is stored, and none failed."""
    return metrics["rows"] == metrics["expected"] and metrics["errors"] == 0


def run(quick: bool = False) -> list[Result]:
    warmup, duration = (1.0, 3.0) if quick else (2.0, 12.0)
    with tempfile.TemporaryDirectory(prefix="tr50gw-ingest-") as tmp:
        db = Path(tmp) / "usage.duckdb"
        account = provision(db)
        metrics, peak = measure(
            db, account, lambda: count_usage_rows(db), warmup=warmup, duration=duration
        )
    stored_per_s = metrics["stored_per_s"]
    results = [
        Result(
            "ingest",
            CASE,
            "gateway",
            metrics,
            f">= {TARGET:,} stored/s, none lost",
            stored_per_s >= TARGET and none_lost(metrics),
        )
    ]
    if peak is not None:
        results.append(Result("memory", "during ingest", "gateway", {"rss_mb": round(peak, 1)}))
    return results
