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
from pathlib import Path

from websockets.sync.client import connect

from bench.common import GatewayProcess, Result
from bench.roundtrip import RssSampler, count_usage_rows, progress, provision, run_load

__all__ = ["COMMANDS_PER_ENVELOPE", "run"]

COMMANDS_PER_ENVELOPE = 50
LOAD_PROCESSES = 2
CONNECTIONS_PER_PROCESS = 8
TARGET = 50_000


def _envelope() -> str:
    return json.dumps(
        {str(index): {"command": "diag.ping"} for index in range(COMMANDS_PER_ENVELOPE)},
        separators=(",", ":"),
    )


def run(quick: bool = False) -> list[Result]:
    warmup, duration = (1.0, 3.0) if quick else (2.0, 12.0)
    with tempfile.TemporaryDirectory(prefix="tr50gw-ingest-") as tmp:
        db = Path(tmp) / "usage.duckdb"
        account = provision(db)
        progress("ingest: starting the gateway (WebSocket only)")
        gateway = GatewayProcess(db)
        sampler: RssSampler | None = None
        try:
            gateway.wait_ready()
            sampler = RssSampler(gateway.pid)
            window = LOAD_PROCESSES * CONNECTIONS_PER_PROCESS
            progress(
                f"ingest: {LOAD_PROCESSES} ws clients x {CONNECTIONS_PER_PROCESS} connections, "
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
            barrier = json.loads(account.auth_envelope)
            barrier = {"auth": barrier["auth"]}
            barrier["1"] = {"command": "usage.api.list", "params": {"limit": 1}}
            with connect(gateway.ws_url, max_size=None) as websocket:
                websocket.send(json.dumps(barrier))
                reply = json.loads(websocket.recv(timeout=120))
            visible_at = time.time()
            if not reply.get("1", {}).get("success"):
                raise RuntimeError(f"ingest: the barrier listing failed: {reply}")
        finally:
            if sampler is not None:
                sampler.close()
            gateway.stop()
        rows = count_usage_rows(db)
    records = result["answered"] * COMMANDS_PER_ENVELOPE
    expected = records + 2
    stored_per_s = records / max(1e-9, visible_at - result["wall_first_send"])
    lag = max(0.0, visible_at - result["wall_last_answer"])
    progress(
        f"ingest: {result['rps'] * COMMANDS_PER_ENVELOPE:,.0f} records/s answered, "
        f"{stored_per_s:,.0f} stored/s, commit lag {lag:.2f} s, rows {rows} (expected {expected})"
    )
    metrics = {
        "stored_per_s": round(stored_per_s, 1),
        "records_per_s": round(result["rps"] * COMMANDS_PER_ENVELOPE, 1),
        "rps": result["rps"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "errors": float(result["errors"]),
        "rows": float(rows),
        "expected": float(expected),
        "commit_lag_s": round(lag, 3),
        "others_cpu": result["others_cpu"],
    }
    case = (
        f"{COMMANDS_PER_ENVELOPE} x diag.ping per envelope, {window} in flight "
        f"({LOAD_PROCESSES} ws clients)"
    )
    results = [
        Result(
            "ingest",
            case,
            "gateway",
            metrics,
            f">= {TARGET:,} stored/s, none lost",
            stored_per_s >= TARGET and rows == expected and result["errors"] == 0,
        )
    ]
    if sampler is not None and sampler.samples:
        results.append(
            Result("memory", "during ingest", "gateway", {"rss_mb": round(max(sampler.samples), 1)})
        )
    return results
