"""The console's first load (issue 12: under 300 KB transferred) and how soon it shows data.

`tr50gw serve` with an HTTP port over a fresh file of `devtools.synthetic` records (200k over a
day; `--quick`: 20k), and Debian's Chromium driven by Playwright, as the browser tests drive it.
Each run is a new browser context (an empty cache, as a first visit):

* first load: `GET /` until the login form shows; the bytes are what the network carried
  (Playwright's `request.sizes()`: headers plus the body as sent, gzipped where the browser asked),
  for every request of the page.
* charts: logging in as an org-admin until every panel has its answer (one envelope of five
  analytics commands and one listing, over the WebSocket), the org's last hour.
* all orgs: the same as Super-Ops with "All orgs" over the last 24 hours.

Medians of RUNS runs (`--quick`: 3).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import GatewayProcess, Result
from bench.queries import ADMIN, OPS, PASSWORD, provision_readers
from bench.roundtrip import progress
from devtools.broker import free_port
from devtools.synthetic import generate_file

__all__ = ["FIRST_LOAD_TARGET_KB", "run"]

FIRST_LOAD_TARGET_KB = 300.0
RUNS = 7
SETTLED = (
    "[...document.querySelectorAll('#usage-view .card[data-state]')]"
    ".every(card => card.dataset.state !== 'loading')"
)


def _first_load(browser: Any, url: str) -> tuple[float, float, int, float]:
    """(KB transferred, KB of bodies uncompressed, requests, ms until the login form shows)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    finished: list[Any] = []
    page.on("requestfinished", lambda request: finished.append(request))
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("#login-form", state="visible")
    page.wait_for_load_state("load")
    elapsed = (time.perf_counter() - started) * 1000
    transferred = decoded = 0
    for request in finished:
        sizes = request.sizes()
        transferred += sizes["responseHeadersSize"] + sizes["responseBodySize"]
        response = request.response()
        decoded += len(response.body()) if response is not None else 0
    context.close()
    return transferred / 1024, decoded / 1024, len(finished), elapsed


def _to_charts(browser: Any, url: str, user: str, *, all_orgs: bool) -> float:
    """ms from submitting the login form until every panel has its answer."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(url)
    page.fill("#login-username", user)
    page.fill("#login-password", PASSWORD)
    started = time.perf_counter()
    page.click("#login-submit")
    page.wait_for_selector("#app-view", state="visible")
    page.wait_for_function(SETTLED)
    elapsed = (time.perf_counter() - started) * 1000
    if all_orgs:
        page.select_option("#range-preset", "24h")
        page.wait_for_function(SETTLED)
        started = time.perf_counter()
        page.check("#show-all")
        page.wait_for_timeout(0)
        page.wait_for_function(SETTLED)
        elapsed = (time.perf_counter() - started) * 1000
    context.close()
    return elapsed


def run(quick: bool = False) -> list[Result]:
    from playwright.sync_api import sync_playwright

    rows, runs = (20_000, 3) if quick else (200_000, RUNS)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="tr50gw-console-") as workdir:
        path = Path(workdir) / "usage.duckdb"
        progress(f"console: generating {rows:,} usage records")
        summary = generate_file(path, rows=rows, days=1)
        provision_readers(path, summary["orgs"][0]["orgKey"])
        http_port = free_port()
        url = f"http://127.0.0.1:{http_port}/"
        gateway = GatewayProcess(path, extra_env={"TR50GW_HTTP_PORT": str(http_port)})
        try:
            gateway.wait_ready()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=chromium, args=["--no-sandbox"]
                )
                loads = [_first_load(browser, url) for _ in range(runs)]
                org = [_to_charts(browser, url, ADMIN, all_orgs=False) for _ in range(runs)]
                every = [_to_charts(browser, url, OPS, all_orgs=True) for _ in range(runs)]
                browser.close()
        finally:
            gateway.stop()
    kb = statistics.median(load[0] for load in loads)
    results.append(
        Result(
            "console",
            "first load (login page, empty cache)",
            "gateway",
            {
                "kb": round(kb, 1),
                "kb_uncompressed": round(statistics.median(load[1] for load in loads), 1),
                "requests": float(loads[0][2]),
                "p50_ms": round(statistics.median(load[3] for load in loads), 1),
            },
            f"< {FIRST_LOAD_TARGET_KB:.0f} KB transferred",
            kb < FIRST_LOAD_TARGET_KB,
        )
    )
    for case, timings in (
        ("log in to charts: an org's last hour", org),
        (f"All orgs, last 24 h ({rows:,} records)", every),
    ):
        results.append(
            Result("console", case, "gateway", {"p50_ms": round(statistics.median(timings), 1)})
        )
    for result in results:
        progress(f"console {result.case}: {result.metrics}")
    return results
