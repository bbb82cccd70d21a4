"""Streamed exports (`GET /usage/export`, issue 12): 1M records as CSV, JSON lines and Parquet.

A fresh file of `devtools.synthetic` usage records (1M; `--quick`: 100k), a Super-Ops user, and
`tr50gw serve` with an HTTP port. A first CSV export warms DuckDB's buffer cache (it keeps the
pages any read loads, up to `--db-memory-limit`). Then for each format, one `showAll` export of
every record is read to the end by a plain HTTP client, 64 KiB at a time, while the gateway's
RSS is sampled every 0.2 s: its peak over the RSS just before the export is what the export held
in memory. Target: flat, i.e. the peak at most RSS_GROWTH_TARGET_MB above it whatever the number
of rows (the rows are read and encoded 10,000 at a time). Rows/s and MB/s are the whole export,
first byte to last.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import GatewayProcess, Result, rss_mb
from bench.queries import OPS, PASSWORD, provision_readers
from bench.roundtrip import RssSampler, progress
from devtools.broker import free_port
from devtools.synthetic import generate_file

__all__ = ["FORMATS", "run"]

FORMATS = ("csv", "json", "parquet")
RSS_GROWTH_TARGET_MB = 100.0
CHUNK = 64 * 1024


def _login(http_port: int) -> str:
    login = {"username": OPS, "password": PASSWORD}
    envelope = {"auth": {"command": "api.authenticate", "params": login}}
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/api", data=json.dumps(envelope).encode()
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - http only
        return str(json.loads(response.read())["auth"]["params"]["sessionId"])


def _export(http_port: int, session: str, file_format: str) -> tuple[int, int, float]:
    """(rows said by X-Total-Count, bytes read, seconds from request to last byte)."""
    url = f"http://127.0.0.1:{http_port}/usage/export?format={file_format}&showAll=true"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {session}"})
    started = time.perf_counter()
    read = 0
    with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310 - http only
        rows = int(response.headers["X-Total-Count"])
        while chunk := response.read(CHUNK):
            read += len(chunk)
    return rows, read, time.perf_counter() - started


def run(quick: bool = False) -> list[Result]:
    rows = 100_000 if quick else 1_000_000
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="tr50gw-export-") as workdir:
        path = Path(workdir) / "usage.duckdb"
        progress(f"export: generating {rows:,} usage records")
        summary = generate_file(path, rows=rows, days=7)
        provision_readers(path, summary["orgs"][0]["orgKey"])
        http_port = free_port()
        gateway = GatewayProcess(
            path, extra_env={"TR50GW_HTTP_PORT": str(http_port), "TR50GW_COMPACT_INTERVAL_S": "0"}
        )
        try:
            gateway.wait_ready()
            session = _login(http_port)
            # A first export warms DuckDB's buffer cache with the table's pages (up to
            # --db-memory-limit, whatever is read): what any read would keep, not the export's.
            _export(http_port, session, "csv")
            for file_format in FORMATS:
                time.sleep(1.0)  # let the previous export's buffers go
                before = rss_mb(gateway.pid)
                sampler = RssSampler(gateway.pid)
                try:
                    with sampler.active():
                        said, read, seconds = _export(http_port, session, file_format)
                finally:
                    sampler.close()
                peak = max([before, *sampler.samples])
                growth = peak - before
                progress(
                    f"export {file_format}: {said:,} rows, {read / 1e6:.1f} MB in {seconds:.1f} s;"
                    f" RSS {before:.0f} -> peak {peak:.0f} MB"
                )
                metrics: dict[str, Any] = {
                    "rows": float(said),
                    "mb": round(read / 1e6, 1),
                    "seconds": round(seconds, 2),
                    "rows_per_s": round(said / seconds),
                    "mb_per_s": round(read / 1e6 / seconds, 1),
                    "rss_before_mb": round(before, 1),
                    "rss_peak_mb": round(peak, 1),
                    "rss_growth_mb": round(growth, 1),
                }
                results.append(
                    Result(
                        "export",
                        f"{file_format}, {rows:,} records",
                        "gateway",
                        metrics,
                        f"RSS growth <= {RSS_GROWTH_TARGET_MB:.0f} MB, every row",
                        growth <= RSS_GROWTH_TARGET_MB and said >= rows,
                    )
                )
        finally:
            gateway.stop()
    return results
