"""`python -m bench [--quick] [--only SUITE,...]` (what `make bench` runs; suites: SUITES).

Runs the suites one after the other (round trips over MQTT and WebSocket, sustained ingest, queries
on 10M records, device data: property.batch ingest and property reads on 10M values, several
gateways on a DuckLake against the DuckDB file), prints one table on stdout, and writes
bench/results/latest.json (rows plus the machine they ran on) and bench/results/latest.png.
Progress goes to stderr. The exit status is 1 when a suite crashed (its row says so), not when a
target was missed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, Result, busy_percent, machine_info
from bench.roundtrip import progress

__all__ = ["main", "render_chart", "render_table"]

SUITES = ("mqtt", "ws", "ingest", "queries", "devices", "export", "console", "lake")


# -- table ---------------------------------------------------------------------------------------
_MAIN = ("rps", "p50_ms", "p99_ms", "ratio")
_QUIET = {
    "requests",
    "p90_ms",
    "rss_mean_mb",
    "rps_min",
    "rps_max",
    "runs",
}  # kept in the JSON, left out of the table


def _number(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _others(result: Result) -> str:
    parts = []
    for key, value in result.metrics.items():
        if key in _MAIN or key in _QUIET:
            continue
        if key in ("errors", "lost", "unanswered") and not value:
            continue
        if key == "others_cpu" and value < 10:  # only when something else took a real share
            continue
        if key == "spread" and result.metrics.get("runs", 2) < 2:
            continue  # one run: no spread to speak of
        if key == "runs_used" and value >= result.metrics.get("runs", 2):
            continue  # only when a disturbed floor run was dropped
        parts.append(f"{key}={_number(value)}")
    return " ".join(parts)


def render_table(results: Sequence[Result]) -> str:
    header = (
        "suite",
        "case",
        "side",
        "req/s",
        "p50 ms",
        "p99 ms",
        "ratio",
        "other",
        "target",
        "met",
    )
    rows = [header]
    for result in results:
        metrics = result.metrics
        rows.append(
            (
                result.suite,
                result.case,
                result.side,
                _number(metrics["rps"]) if "rps" in metrics else "",
                _number(metrics["p50_ms"]) if "p50_ms" in metrics else "",
                _number(metrics["p99_ms"]) if "p99_ms" in metrics else "",
                _number(metrics["ratio"]) if "ratio" in metrics else "",
                _others(result),
                result.target,
                "" if result.met is None else ("yes" if result.met else "NO"),
            )
        )
    widths = [max(len(row[index]) for row in rows) for index in range(len(header))]
    numeric = {3, 4, 5, 6}
    lines = []
    for number, row in enumerate(rows):
        cells = [
            cell.rjust(width) if index in numeric else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


# -- chart ---------------------------------------------------------------------------------------
_GATEWAY, _FLOOR, _MISS, _MET = "#1f77b4", "#b0b0b0", "#d62728", "#2ca02c"


def _pairs(results: Sequence[Result], suites: Sequence[str]) -> list[tuple[str, Result, Result]]:
    """(label, floor, gateway) per round-trip case; the floor is the one the gateway was compared
    with: `floor+plugin` over MQTT (the echo behind a broker with the plugin, as the gateway's)."""
    floors: dict[tuple[str, str], Result] = {}
    for r in results:
        if r.side == "floor+plugin" or (r.side == "floor" and (r.suite, r.case) not in floors):
            floors[(r.suite, r.case)] = r
    pairs = []
    for result in results:
        if result.side == "gateway" and result.suite in suites:
            floor = floors.get((result.suite, result.case))
            if floor is not None:
                pairs.append((f"{result.suite}: {result.case}", floor, result))
    return pairs


def _short(label: str) -> str:
    """`mqtt: usage.api.list qos1 100 in flight` -> `mqtt\nlist q1\nx100`."""
    suite, _, case = label.partition(": ")
    case = (
        case.replace(" in flight", "")
        .replace("usage.api.list", "list")
        .replace("diag.ping", "ping")
        .replace("qos", "q")
    )
    head, _, window = case.rpartition(" ")
    return f"{suite}\n{head}\nx{window}"


def _verdict(gateway: Result) -> str:
    """What the target of a case looks at: the p50 difference at 1 in flight, else the ratio."""
    if "p50_diff_ms" in gateway.metrics:
        return f"{gateway.metrics['p50_diff_ms']:+.2f} ms"
    ratio = gateway.metrics.get("ratio", math.nan)
    return "" if math.isnan(ratio) else f"{ratio:.0%}"


def _throughput_panel(axis: Any, results: Sequence[Result]) -> None:
    pairs = _pairs(results, ("mqtt", "ws"))
    if not pairs:
        _empty(axis, "round trips not run")
        return
    positions = range(len(pairs))
    width = 0.4
    floor_values = [floor.metrics.get("rps", 0) for _, floor, _ in pairs]
    gateway_values = [gateway.metrics.get("rps", 0) for _, _, gateway in pairs]
    spread = [
        [
            value - floor.metrics.get("rps_min", value)
            for value, (_, floor, _) in zip(floor_values, pairs, strict=True)
        ],
        [
            floor.metrics.get("rps_max", value) - value
            for value, (_, floor, _) in zip(floor_values, pairs, strict=True)
        ],
    ]
    axis.bar(
        [p - width / 2 for p in positions],
        floor_values,
        width,
        yerr=spread,
        capsize=3,
        error_kw={"elinewidth": 1, "ecolor": "#555555"},
        color=_FLOOR,
        label="floor (MQTT: floor+plugin); whisker: its runs before and after the gateway's",
    )
    axis.bar(
        [p + width / 2 for p in positions], gateway_values, width, color=_GATEWAY, label="gateway"
    )
    for position, (_, _, gateway) in zip(positions, pairs, strict=True):
        top = max(floor_values[position], gateway_values[position])
        axis.annotate(
            _verdict(gateway),
            (position + width / 2, top),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize=8,
            color=_MET if gateway.met else _MISS,
            fontweight="bold",
        )
    axis.set_xticks(list(positions), [_short(label) for label, _, _ in pairs], fontsize=7)
    axis.set_ylabel("requests/s")
    axis.set_title(
        "Round trips, requests/s: gateway vs floor\n"
        "label: gateway/floor at 100 in flight, p50 difference at 1; green = target met",
        fontsize=10,
    )
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)


def _latency_panel(axis: Any, results: Sequence[Result]) -> None:
    pairs = _pairs(results, ("mqtt", "ws"))
    if not pairs:
        _empty(axis, "round trips not run")
        return
    positions = range(len(pairs))
    width = 0.4
    for offset, side, color in ((-width / 2, 1, _FLOOR), (width / 2, 2, _GATEWAY)):
        p50 = [pair[side].metrics.get("p50_ms", math.nan) for pair in pairs]
        p99 = [pair[side].metrics.get("p99_ms", math.nan) for pair in pairs]
        xs = [p + offset for p in positions]
        axis.bar(xs, p50, width, color=color, label=f"{'floor' if side == 1 else 'gateway'} p50")
        axis.scatter(xs, p99, marker="_", s=120, color="black", zorder=3)
    axis.scatter([], [], marker="_", s=120, color="black", label="p99")
    axis.set_yscale("log")
    axis.set_xticks(list(positions), [_short(label) for label, _, _ in pairs], fontsize=7)
    axis.set_ylabel("latency, ms (log)")
    axis.set_title("Round-trip latency, ms (log): p50 bars, p99 ticks", fontsize=10)
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3, which="both")


def _target_number(target: str) -> float | None:
    """The threshold in a target text: `p50 < 20 ms` -> 20, `>= 50,000 stored/s` -> 50000."""
    match = re.search(r"[<>=]=?\s*([\d][\d,]*(?:\.\d+)?)", target)
    if not match:
        return None
    return float(match.group(1).replace(",", ""))


def _hbars(axis: Any, rows: list[tuple[str, float, float | None, bool | None]], unit: str) -> None:
    labels = [label for label, _, _, _ in rows]
    values = [value for _, value, _, _ in rows]
    colors = [
        (_FLOOR if label.endswith("(raw)") else _GATEWAY)
        if met is None
        else (_MET if met else _MISS)
        for label, _, _, met in rows
    ]
    axis.barh(range(len(rows)), values, color=colors)
    for index, (_, value, target, _) in enumerate(rows):
        axis.annotate(f" {_number(value)} {unit}", (value, index), va="center", fontsize=7)
        if target is not None:
            axis.plot([target, target], [index - 0.4, index + 0.4], color="black", lw=2)
    axis.set_yticks(range(len(rows)), labels, fontsize=7)
    axis.invert_yaxis()
    axis.grid(axis="x", alpha=0.3)


def _empty(axis: Any, text: str) -> None:
    axis.text(0.5, 0.5, text, ha="center", transform=axis.transAxes)
    axis.set_axis_off()


def _stored_rows(
    results: Sequence[Result], suite: str, answered_key: str
) -> list[tuple[str, float, float | None, bool | None]]:
    """`suite`'s sustained-ingest rows as bars: stored (with its target) and answered per
    second; a case named `transport: ...` labels its bars with the transport."""
    rows: list[tuple[str, float, float | None, bool | None]] = []
    for result in results:
        if result.suite == suite and "stored_per_s" in result.metrics:
            head, colon, _ = result.case.partition(": ")
            prefix = f"{head} " if colon else ""
            target = _target_number(result.target)
            rows.append((f"{prefix}stored", result.metrics["stored_per_s"], target, result.met))
            answered = result.metrics.get(answered_key, math.nan)
            rows.append((f"{prefix}answered", answered, None, None))
    return rows


def _stored_panel(
    axis: Any, results: Sequence[Result], suite: str, answered_key: str, title: str
) -> None:
    rows = _stored_rows(results, suite, answered_key)
    if not rows:
        _empty(axis, f"{suite} not run")
        return
    _hbars(axis, rows, "/s")
    axis.set_title(f"{title}\nblack tick = target", fontsize=10)


def _memory_panel(axis: Any, results: Sequence[Result]) -> None:
    rows: list[tuple[str, float, float | None, bool | None]] = []
    for result, before in _before_and_after(results):
        if result.suite == "memory" and "rss_mb" in result.metrics:
            target = _target_number(result.target) if result.target else None
            if before:
                rows.append((f"{result.case} (raw)", result.metrics["rss_mb"], None, None))
            else:
                rows.append((result.case, result.metrics["rss_mb"], target, result.met))
    if not rows:
        _empty(axis, "memory not measured")
        return
    _hbars(axis, rows, "MB")
    axis.set_title("Gateway RSS, MB\nblack tick = target", fontsize=10)


def _p50_panel(
    axis: Any,
    results: Sequence[Result],
    suite: str,
    title: str,
    label: Callable[[str], str] = str,
) -> None:
    """`suite`'s timed commands (rows with a p50 and a target in ms) as p50 bars on a log axis,
    each with its target's tick."""
    from matplotlib.ticker import NullFormatter

    rows: list[tuple[str, float, float | None, bool | None]] = []
    for result, before in _before_and_after(results):
        value = result.metrics.get("p50_ms")
        if result.suite != suite or value is None or "ms" not in result.target:
            continue
        if before:
            rows.append((f"{label(result.case)} (raw)", value, None, None))
        else:
            rows.append((label(result.case), value, _target_number(result.target), result.met))
    if not rows:
        _empty(axis, f"{suite} not run")
        return
    _hbars(axis, rows, "ms")
    axis.set_xscale("log")
    axis.xaxis.set_minor_formatter(NullFormatter())
    smallest = min([value for _, value, _, _ in rows] + [t for _, _, t, _ in rows if t])
    axis.set_xlim(left=max(smallest / 3, 1e-3))
    axis.set_title(title, fontsize=10)


def _data_set(results: Sequence[Result]) -> str:
    """The queries' data set as its memory rows name it ("10M", "100M"...)."""
    for result in results:
        match = re.match(r"(\d+M) table open", result.case)
        if result.suite == "memory" and match:
            return match.group(1)
    return "10M"


def _queries_panel(axis: Any, results: Sequence[Result]) -> None:
    title = (
        f"usage.api.list on {_data_set(results)} records, p50 ms (log)\n"
        "grey: --no-rollups; black tick = target"
    )
    _p50_panel(axis, results, "queries", title)


def _devices_reads_panel(axis: Any, results: Sequence[Result]) -> None:
    title = "Property reads on 10M values, random thing and key, p50 ms (log)\nblack tick = target"
    _p50_panel(axis, results, "devices", title, lambda case: case.removeprefix("property."))


_FAILED_MARK = " - FAILED "  # bench.queries.FAILED_MARK: a failed case's name, then its error


_RAW_SIDE = "gateway, raw records"  # bench.queries.RAW_SIDE: the same case with --no-rollups


def _before_and_after(results: Sequence[Result]) -> list[tuple[Result, bool]]:
    """The rows in order, each measured with --no-rollups (the before, flagged True) right
    before its counterpart: a chart shows the pair as two bars."""
    raw = {(r.suite, r.case): r for r in results if r.side == _RAW_SIDE}
    ordered: list[tuple[Result, bool]] = []
    for result in results:
        if result.side == _RAW_SIDE:
            continue
        before = raw.get((result.suite, result.case))
        if before is not None:
            ordered.append((before, True))
        ordered.append((result, False))
    return ordered


def _analytics_rows(
    results: Sequence[Result], scope: str
) -> list[tuple[str, float, float | None, bool | None]]:
    """`scope`'s analytics cases as bars: p50 ms, or NaN when the command failed; a case
    measured without rollups too gets a grey bar for that, labelled "(raw)", above."""
    rows: list[tuple[str, float, float | None, bool | None]] = []
    for result, before in _before_and_after(results):
        if result.suite != "analytics" or not result.case.startswith(f"{scope}: "):
            continue
        name = result.case.removeprefix(f"{scope}: ").replace("usage.api.", "")
        name, failed, _ = name.partition(_FAILED_MARK)
        target = _target_number(result.target) if "ms" in result.target else None
        if before:
            name, target = f"{name} (raw)", None
        if failed:
            rows.append((name, math.nan, target, None if before else False))
        elif "p50_ms" in result.metrics:
            rows.append((name, result.metrics["p50_ms"], target, None if before else result.met))
    return rows


def _analytics_panels(axes: Sequence[Any], results: Sequence[Result]) -> None:
    """One panel per scope (busiest org, showAll) sharing a log axis; a failed case says so."""
    from matplotlib.ticker import NullFormatter

    scopes = (("org", "busiest org"), ("showAll", "showAll"))
    panels = [
        (axis, _analytics_rows(results, scope), title)
        for axis, (scope, title) in zip(axes, scopes, strict=True)
    ]
    known = [
        number
        for _, rows, _ in panels
        for _, value, target, _ in rows
        for number in (value, target)
        if number is not None and not math.isnan(number) and number > 0
    ]
    left, right = (min(known) / 3, max(known) * 4) if known else (1.0, 1000.0)
    for axis, rows, title in panels:
        if not rows:
            _empty(axis, f"analytics ({title}) not run")
            continue
        failed = [math.isnan(value) for _, value, _, _ in rows]
        shown = [
            (label, left if bad else value, target, met)
            for (label, value, target, met), bad in zip(rows, failed, strict=True)
        ]
        _hbars(axis, shown, "ms")
        for text, bad in zip(axis.texts, failed, strict=True):
            if bad:
                text.set_text(" failed (success false)")
                text.set_color(_MISS)
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlim(left, right)
        axis.set_title(
            f"Usage analytics over last 30d of {_data_set(results)}, {title}: p50 ms (log)\n"
            "grey: --no-rollups; black tick = target",
            fontsize=10,
        )


_LATENCY = "#ff7f0e"


def _lake_rows(results: Sequence[Result]) -> list[tuple[str, float, str, str]]:
    """The lake suite's comparisons as (label, ratio, the two figures, colour): requests/s of 2
    and 3 gateways over 1, ingest lake/file (blue: higher is better), query p50 lake/file
    (orange: lower is better); red where the row's check failed."""
    lake = [result for result in results if result.suite == "lake"]
    base = next((result for result in lake if "gateways_used" in result.metrics), None)
    files = {result.case: result.metrics for result in lake if result.side == "file"}
    rows: list[tuple[str, float, str, str]] = []
    for result in lake:
        metrics = result.metrics
        if "vs_1gw" in metrics and base is not None:
            ratio, colour = metrics["vs_1gw"], _GATEWAY
            detail = f"{_number(metrics['rps'])} vs {_number(base.metrics['rps'])} req/s"
            label = f"{result.case} / 1"
        elif "lake_vs_file" in metrics and result.case in files:
            ratio, other = metrics["lake_vs_file"], files[result.case]
            if "stored_per_s" in metrics:  # `ingest: 50 x diag.ping per envelope, ...`
                colour, label = _GATEWAY, result.case.split(",")[0]
                stored = (_number(metrics["stored_per_s"]), _number(other["stored_per_s"]))
                detail = f"{stored[0]} vs {stored[1]} stored/s"
            else:  # `usage.api.list org: ..., limit 10, 10M`: the set's size goes last
                head, _, size = result.case.rpartition(", ")
                colour, label = _LATENCY, head or size
                detail = f"p50 {_number(metrics['p50_ms'])} vs {_number(other['p50_ms'])} ms"
                detail += f" on {size}" if head else ""
            label += ": lake / file"
        else:
            continue
        if ratio is None or math.isnan(ratio):
            continue
        rows.append((label, ratio, detail, _MISS if result.met is False else colour))
    return rows


def _lake_panel(axis: Any, results: Sequence[Result]) -> None:
    rows = _lake_rows(results)
    if not rows:
        _empty(axis, "lake not run")
        return
    values = [value for _, value, _, _ in rows]
    axis.barh(range(len(rows)), values, color=[colour for _, _, _, colour in rows])
    for index, (_, value, detail, _) in enumerate(rows):
        axis.annotate(f" {value:.2f}  ({detail})", (value, index), va="center", fontsize=7)
    axis.axvline(1.0, color="black", lw=1)
    axis.set_yticks(range(len(rows)), [label for label, _, _, _ in rows], fontsize=7)
    axis.invert_yaxis()
    if max(values) / max(min(values), 1e-9) > 8:  # a slow query beside the throughputs
        from matplotlib.ticker import FuncFormatter, NullFormatter

        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlim(min(values) / 2, max(values) * 4)
    else:
        axis.set_xlim(0, max(values) * 1.6)
    axis.grid(axis="x", alpha=0.3)
    axis.set_title(
        "Several gateways on one DuckLake, and DuckLake vs the DuckDB file (ratios; black line"
        " = 1)\nblue: requests or records per second, higher is better; orange: p50, lower is"
        " better; red: a check failed (lost, not logged once, a different count)",
        fontsize=10,
    )


def render_chart(results: Sequence[Result], machine: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(18, 25))
    grid = figure.add_gridspec(5, 6, height_ratios=(3, 3.4, 2.6, 1.5, 1.8))
    _throughput_panel(figure.add_subplot(grid[0, :3]), results)
    _latency_panel(figure.add_subplot(grid[0, 3:]), results)
    _stored_panel(
        figure.add_subplot(grid[1, :2]),
        results,
        "ingest",
        "records_per_s",
        "Sustained ingest: usage records/s",
    )
    _memory_panel(figure.add_subplot(grid[1, 2:4]), results)
    _queries_panel(figure.add_subplot(grid[1, 4:]), results)
    _analytics_panels((figure.add_subplot(grid[2, :3]), figure.add_subplot(grid[2, 3:])), results)
    _stored_panel(
        figure.add_subplot(grid[3, :3]),
        results,
        "devices",
        "values_per_s",
        "property.batch (100 values each): property values/s",
    )
    _devices_reads_panel(figure.add_subplot(grid[3, 3:]), results)
    _lake_panel(figure.add_subplot(grid[4, :]), results)
    figure.suptitle(
        f"tr50gw benchmarks {machine['date']} - {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['ram_gb']} GB, Python {machine['python']}, DuckDB {machine['duckdb']}, "
        f"Mosquitto {machine['mosquitto']}",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- running -------------------------------------------------------------------------------------
def _suite_runners(
    only: set[str], *, large: bool = False
) -> list[tuple[str, Callable[[bool], list[Result]]]]:
    runners: list[tuple[str, Callable[[bool], list[Result]]]] = []
    round_trips = [suite for suite in ("mqtt", "ws") if suite in only]
    if round_trips:
        from bench import roundtrip

        runners.append(
            ("+".join(round_trips), lambda quick: roundtrip.run(quick, suites=round_trips))
        )
    if "ingest" in only:
        from bench import ingest

        runners.append(("ingest", ingest.run))
    if "queries" in only:
        try:  # written separately; may not exist yet
            queries = importlib.import_module("bench.queries")
        except ModuleNotFoundError as error:
            if error.name != "bench.queries":
                raise
            progress("note: bench/queries.py is not there yet; skipping the queries suite")
        else:
            runners.append(("queries", lambda quick: queries.run(quick, large=large)))
    if "export" in only:
        from bench import export

        runners.append(("export", export.run))
    if "devices" in only:
        from bench import devices

        runners.append(("devices", devices.run))
    if "console" in only:
        from bench import console

        runners.append(("console", console.run))
    if "lake" in only:  # after queries: it reuses their 10M file while fresh
        from bench import lake

        runners.append(("lake", lake.run))
    return runners


def _clean(value: Any) -> Any:
    """NaN is not JSON: null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument(
        "--only",
        default=",".join(SUITES),
        help=f"comma-separated suites out of {','.join(SUITES)} (default: all)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where results go")
    parser.add_argument(
        "--large",
        action="store_true",
        help="the queries suite on 100M records (make bench-large; the set takes about 15 min "
        "to generate the first time, 11 GB)",
    )
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - set(SUITES)
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(sorted(unknown))}")

    started = time.monotonic()
    machine = machine_info()
    progress(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gb']} GB")
    machine["busy_before_percent"] = busy_percent()
    if machine["busy_before_percent"] > 15:
        progress(
            f"note: {machine['busy_before_percent']:.0f}% of the CPU was in use before the run "
            "started; the figures will be noisy"
        )
    results: list[Result] = []
    crashed = False
    for name, runner in _suite_runners(only, large=args.large):
        progress(f"suite {name}{' (quick)' if args.quick else ''}")
        suite_started = time.monotonic()
        try:
            results += runner(args.quick)
        except Exception as error:
            crashed = True
            traceback.print_exc(file=sys.stderr)
            results.append(Result(name, f"crashed: {type(error).__name__}", "", {}, "", False))
        progress(f"suite {name} done in {time.monotonic() - suite_started:.0f} s")
    elapsed = time.monotonic() - started

    print(render_table(results))
    print(
        f"\n{machine['cpu']}, {machine['cores']} cores, {machine['ram_gb']} GB RAM; "
        f"Python {machine['python']}, DuckDB {machine['duckdb']}, "
        f"Mosquitto {machine['mosquitto']}; {elapsed:.0f} s"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": machine,
        "quick": args.quick,
        "suites": sorted(only),
        "seconds": round(elapsed, 1),
        "results": [result.as_dict() for result in results],
    }
    document["large"] = args.large
    json_path = args.out / "latest.json"
    json_path.write_text(json.dumps(_clean(document), indent=2) + "\n")
    chart_path = args.out / "latest.png"
    try:
        render_chart(results, machine, chart_path)
    except ImportError:
        progress("note: matplotlib is missing (pip install -e '.[bench]'); no chart")
    else:
        progress(f"wrote {json_path} and {chart_path}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
