"""What the lake benchmark (bench/lake.py) builds on, in small: a synthetic DuckDB file copied
into a DuckLake holds the same records, rollups and orgs; and the chart's DuckLake panel pairs
each ratio with the figures it compares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.__main__ import _lake_rows
from bench.common import Result
from bench.lake import COPIED_TABLES, Lake, copy_into_lake
from bench.roundtrip import read_file
from devtools.synthetic import generate_file

ROWS = 3000


def test_a_file_copied_into_a_lake_holds_the_same_records_rollups_and_orgs(
    tmp_path: Path, lake: dict[str, Any]
) -> None:
    path = tmp_path / "usage.duckdb"
    generate_file(path, rows=ROWS, orgs=3, callers=40, days=2, seed=3)
    target = Lake(lake["db"].removeprefix("ducklake:postgres:"), Path(lake["data_path"]))

    copied, _ = copy_into_lake(path, target)

    assert copied == ROWS
    counts = " UNION ALL ".join(
        f"SELECT '{table}', count(*) FROM {table}"  # noqa: S608
        for table in ("usage_log", *COPIED_TABLES)
    )
    assert dict(target.query(counts)) == dict(read_file(path, counts))
    log = "SELECT count(DISTINCT id), sum(exec_time), min(ts), max(ts) FROM usage_log"
    assert target.query(log) == read_file(path, log)
    orgs = "SELECT org_id, org_key FROM orgs ORDER BY org_key"
    assert target.query(orgs) == read_file(path, orgs)


def test_the_chart_pairs_each_lake_ratio_with_its_figures() -> None:
    results = [
        Result("lake", "ping, 1 gateway", "ducklake", {"rps": 1000.0, "gateways_used": 1.0}),
        Result("lake", "ping, 2 gateways", "ducklake", {"rps": 1800.0, "vs_1gw": 1.8}, met=True),
        Result("lake", "ingest: load", "file", {"stored_per_s": 50000.0}),
        Result("lake", "ingest: load", "ducklake", {"stored_per_s": 20000.0, "lake_vs_file": 0.4}),
        Result("lake", "list, 10M", "file", {"p50_ms": 4.0}),
        Result("lake", "list, 10M", "ducklake", {"p50_ms": 12.0, "lake_vs_file": 3.0}, met=False),
    ]

    rows = [(label, ratio, detail) for label, ratio, detail, _ in _lake_rows(results)]

    assert rows == [
        ("ping, 2 gateways / 1", 1.8, "1,800 vs 1,000 req/s"),
        ("ingest: load: lake / file", 0.4, "20,000 vs 50,000 stored/s"),
        ("list: lake / file", 3.0, "p50 12.0 vs 4.00 ms on 10M"),
    ]
    assert _lake_rows(results)[-1][3] == "#d62728"  # its check failed: red
