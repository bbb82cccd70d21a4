"""The web console (SPEC §7.1) in a real browser: Debian's Chromium, headless, driven by
Playwright, against a running gateway whose usage log holds real calls (made over WebSocket and
HTTP by the tests) and two days of synthetic history (devtools/synthetic.py).

Each test opens its own browser context (its own storage: no session carries over) on one
gateway and one browser shared by the module. What a panel shows is compared with what the same
TR50 command answers over a separate WebSocket connection.

Screenshots go to `$TR50GW_SCREENSHOTS` (`make screenshots` sets it to docs/console, which the
README shows), else to a temporary folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from devtools.synthetic import generate_usage
from gateway.settings import Settings
from storage.duckdb.database import Database
from tests.support import PASSWORD, GatewayThread, Tenants, ws_client

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SYNTHETIC_ROWS = 30_000
KOLKATA = timezone(timedelta(hours=5, minutes=30))  # no DST
SUPER_OPS = "ops@acme.test"  # tests.support.provision's Super-Ops user


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("TR50GW_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def gateway(
    provisioned: Tenants, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    """A gateway (WebSocket and HTTP on free ports) over a copy of the provisioned file with two
    days of synthetic calls of other orgs (what a Super-Ops user sees with "All orgs"), and
    real calls of acme and globex made here."""
    db = tmp_path_factory.mktemp("console") / "usage.duckdb"
    shutil.copyfile(provisioned.db, db)
    database = Database(db)
    generate_usage(database, rows=SYNTHETIC_ROWS, orgs=6, callers=200, days=2, compact=False)
    database.close()
    thread = GatewayThread(
        Settings(
            db=db,
            mqtt_url="none",
            ws_port=0,
            http_port=0,
            instance_name=f"gw-{secrets.token_hex(3)}",
        )
    ).start()
    for org, pings in (("acme", 12), ("globex", 7)):
        call_as(thread, provisioned.user(org), *[{"command": "diag.ping"}] * pings)
        call_as(thread, provisioned.user(org), {"command": "no.such"})
    call_as(thread, provisioned.user("acme", "org-admin"), {"command": "diag.time"})
    yield thread
    thread.stop()


def call_as(gateway: GatewayThread, username: str, *commands: dict[str, Any]) -> dict[str, Any]:
    """Log in as `username` over a WebSocket and send `commands` in one envelope."""
    with ws_client(gateway.ws_url) as client:
        reply = client.login(username)
        session = reply["auth"]["params"]["sessionId"]
        envelope = {str(n): command for n, command in enumerate(commands, 1)}
        result: dict[str, Any] = client.send({"auth": {"sessionId": session}, **envelope})
    flush(gateway)
    return result


def command_as(
    gateway: GatewayThread, username: str, command: str, params: dict[str, Any]
) -> dict[str, Any]:
    reply = call_as(gateway, username, {"command": command, "params": params})["1"]
    assert reply["success"], reply
    result: dict[str, Any] = reply["params"]
    return result


def flush(gateway: GatewayThread) -> None:
    assert gateway.gateway is not None
    assert gateway.gateway.assembly.storage.usage.flush()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser, gateway: GatewayThread) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: page.errors.append(str(error)))  # type: ignore[attr-defined]
    page.goto(console_url(gateway))
    yield page
    context.close()


def console_url(gateway: GatewayThread) -> str:
    assert gateway.gateway is not None
    return f"http://127.0.0.1:{gateway.gateway.http_port}/"


def log_in(page: Page, username: str, password: str = PASSWORD) -> None:
    page.fill("#login-username", username)
    page.fill("#login-password", password)
    page.click("#login-submit")
    expect(page.locator("#app-view")).to_be_visible()
    settled(page)


def settled(page: Page) -> None:
    """Every panel has its answer (ready, empty or error): none is loading."""
    page.wait_for_function(
        "[...document.querySelectorAll('#usage-view .card[data-state]')]"
        ".every(card => card.dataset.state !== 'loading')"
    )


def snapshot(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("window.tr50console.snapshot()")
    return result


def window_of(page: Page) -> dict[str, str]:
    shown: dict[str, str] = snapshot(page)["calls"]["window"]
    return shown


def listed_ids(gateway: GatewayThread, username: str, params: dict[str, Any]) -> list[str]:
    listing = command_as(gateway, username, "usage.api.list", {**params, "limit": 2000})
    return [record["id"] for record in listing["result"] or []]


# -- logging in and out ---------------------------------------------------------------------------
def test_logging_in_shows_the_orgs_calls(
    page: Page, gateway: GatewayThread, provisioned: Tenants
) -> None:
    log_in(page, provisioned.user("acme", "org-admin"))
    shown = page.locator("#log tbody tr").evaluate_all("rows => rows.map(row => row.dataset.id)")
    assert shown == listed_ids(gateway, provisioned.user("acme", "org-admin"), window_of(page))[:50]


def test_a_wrong_password_shows_an_error(page: Page, provisioned: Tenants) -> None:
    page.fill("#login-username", provisioned.user("acme"))
    page.fill("#login-password", "not the password")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_have_text("Wrong email or password")


def test_logging_out_ends_the_session(
    page: Page, gateway: GatewayThread, provisioned: Tenants
) -> None:
    log_in(page, provisioned.user("acme"))
    session = page.evaluate("sessionStorage.getItem('tr50gw.session')")
    page.click("#logout")
    expect(page.locator("#login-view")).to_be_visible()
    with ws_client(gateway.ws_url) as client:
        reply = client.send({"auth": {"sessionId": session}, "1": {"command": "session.info"}})
    assert reply["1"]["errorCodes"] == [-90005]


def test_a_reload_keeps_the_session(page: Page, provisioned: Tenants) -> None:
    log_in(page, provisioned.user("acme"))
    page.reload()
    expect(page.locator("#whoami")).to_contain_text(provisioned.user("acme"))


# -- the log explorer -----------------------------------------------------------------------------
def test_a_filter_narrows_the_rows(
    page: Page, gateway: GatewayThread, provisioned: Tenants
) -> None:
    log_in(page, provisioned.user("acme", "org-admin"))
    page.fill("#filters [name=command]", "no.such")
    page.click("#filters button[type=submit]")
    settled(page)
    commands = page.locator("#log tbody tr td:nth-child(3)").all_inner_texts()
    assert commands == ["no.such"]


def test_failed_only_lists_failures(page: Page, provisioned: Tenants) -> None:
    log_in(page, provisioned.user("acme", "org-admin"))
    page.check("#filters [name=hasFailure]")
    page.click("#filters button[type=submit]")
    settled(page)
    statuses = page.locator("#log tbody tr td:nth-child(5)").all_inner_texts()
    assert set(statuses) == {"error -90001"}


def test_a_row_opens_its_request_and_response(
    page: Page, gateway: GatewayThread, provisioned: Tenants, screenshots: Path
) -> None:
    admin = provisioned.user("acme", "org-admin")
    log_in(page, admin)
    page.fill("#filters [name=command]", "diag.time")
    page.click("#filters button[type=submit]")
    settled(page)
    page.locator("#log tbody tr").first.click()
    expect(page.locator("#detail")).to_be_visible()
    page.screenshot(path=screenshots / "console-detail.png")
    listing = command_as(gateway, admin, "usage.api.list", {"service": "diag", "command": "time"})
    (record,) = listing["result"]
    shown = [page.inner_text("#detail-request"), page.inner_text("#detail-response")]
    assert [json.loads(text) for text in shown] == [
        json.loads(record["request"]),
        json.loads(record["response"]),
    ]


def test_paging_shows_older_records(
    page: Page, gateway: GatewayThread, provisioned: Tenants
) -> None:
    ops = SUPER_OPS
    log_in(page, ops)
    page.check("#show-all")
    settled(page)
    page.click("#page-older")
    settled(page)
    shown = page.locator("#log tbody tr").evaluate_all("rows => rows.map(row => row.dataset.id)")
    params = {**window_of(page), "showAll": True, "offset": 50, "limit": 50}
    listing = command_as(gateway, ops, "usage.api.list", params)
    assert shown == [record["id"] for record in listing["result"]]


# -- charts ---------------------------------------------------------------------------------------
def test_the_calls_chart_has_the_bars_of_usage_api_activity(
    page: Page, gateway: GatewayThread, provisioned: Tenants, screenshots: Path
) -> None:
    ops = SUPER_OPS
    log_in(page, ops)
    page.select_option("#range-preset", "24h")
    page.check("#show-all")
    settled(page)
    page.screenshot(path=screenshots / "console-overview.png")
    shown = snapshot(page)["calls"]
    bars = page.evaluate(
        "(() => { const [xs, totals] = window.tr50console.state.charts.calls.data;"
        " return xs.map((x, i) => [x * 1000, totals[i]]); })()"
    )
    params = {**shown["params"], "interval": shown["interval"]}
    activity = command_as(gateway, ops, "usage.api.activity", params)
    expected = [
        [datetime.fromisoformat(bucket["timestamp"]).timestamp() * 1000, bucket["count"]]
        for bucket in activity["result"]
    ]
    assert (bars, sum(count for _, count in bars) > 1000) == (expected, True)


def test_the_time_zone_picker_moves_the_buckets_and_times(page: Page, provisioned: Tenants) -> None:
    log_in(page, provisioned.user("acme", "org-admin"))
    page.select_option("#range-preset", "24h")
    page.select_option("#interval", "hour")
    page.select_option("#timezone", "Asia/Kolkata")
    settled(page)
    first_bucket = snapshot(page)["calls"]["timestamps"][0]
    shown_time = page.locator("#log tbody tr td").first.inner_text()
    record_ts = page.evaluate("document.querySelector('#log tbody tr').record.ts")
    kolkata = datetime.fromisoformat(record_ts).astimezone(KOLKATA)
    assert (first_bucket[-6:], first_bucket[14:16], shown_time) == (
        "+05:30",  # the buckets' offset
        "00",  # local hours: on the hour in Kolkata, at :30 in UTC
        kolkata.strftime("%Y-%m-%d %H:%M:%S.") + f"{kolkata.microsecond // 1000:03d}",
    )


def test_dragging_across_the_chart_zooms_in(page: Page, provisioned: Tenants) -> None:
    log_in(page, provisioned.user("acme", "org-admin"))
    before = window_of(page)
    chart = page.locator("#calls-chart .u-over")
    box = chart.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.5, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.9, y, steps=8)
    page.mouse.up()
    settled(page)
    after = window_of(page)
    span = [
        datetime.fromisoformat(w["end"]) - datetime.fromisoformat(w["start"])
        for w in (before, after)
    ]
    assert (page.input_value("#range-preset"), span[1] < span[0] * 0.5) == ("custom", True)


def test_the_top_commands_are_the_breakdowns_keys(
    page: Page, gateway: GatewayThread, provisioned: Tenants
) -> None:
    admin = provisioned.user("acme", "org-admin")
    log_in(page, admin)
    shown = snapshot(page)
    breakdown = command_as(
        gateway, admin, "usage.api.breakdown", {**shown["calls"]["params"], "by": "command"}
    )
    assert list(shown["commands"]) == breakdown["keys"]


def test_the_endpoints_table_sorts_by_a_column(page: Page, provisioned: Tenants) -> None:
    log_in(page, provisioned.user("acme", "org-admin"))
    page.click("#endpoints th[data-key=command] button")
    names = page.locator("#endpoints tbody tr td:first-child").all_inner_texts()
    assert (names, len(names) > 2) == (sorted(names), True)


def test_a_range_without_calls_shows_the_empty_state(page: Page, provisioned: Tenants) -> None:
    log_in(page, provisioned.user("acme", "org-admin"))
    page.select_option("#range-preset", "custom")
    page.fill("#range-from", "2001-01-01T00:00:00")
    page.fill("#range-to", "2001-01-02T00:00:00")
    page.click("#range-apply")
    settled(page)
    expect(page.locator("#calls-card .state")).to_have_text("No calls in this range.")


def test_a_refused_filter_shows_the_error_state(page: Page, provisioned: Tenants) -> None:
    log_in(page, provisioned.user("acme", "org-admin"))
    page.fill("#filters [name=command]", "ping")  # a command needs its service
    page.click("#filters button[type=submit]")
    settled(page)
    expect(page.locator("#log-card")).to_have_attribute("data-state", "error")


# -- live tail and export -------------------------------------------------------------------------
def test_a_call_made_meanwhile_appears_by_live_tail(
    page: Page, gateway: GatewayThread, provisioned: Tenants
) -> None:
    log_in(page, provisioned.user("acme", "org-admin"))
    page.check("#tail")
    expect(page.locator("#tail-status")).to_contain_text("Live")
    marker = f"tail.check{secrets.token_hex(3)}"
    call_as(gateway, provisioned.user("acme"), {"command": marker})
    expect(page.locator("#log tbody tr td:nth-child(3)", has_text=marker)).to_have_count(1)


def test_export_downloads_the_filtered_rows(
    page: Page, gateway: GatewayThread, provisioned: Tenants
) -> None:
    admin = provisioned.user("acme", "org-admin")
    log_in(page, admin)
    page.fill("#filters [name=command]", "diag.ping")
    page.click("#filters button[type=submit]")
    settled(page)
    with page.expect_download() as download:
        page.click("#export")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    params = {**window_of(page), "service": "diag", "command": "ping"}
    assert sorted(row["id"] for row in rows) == sorted(listed_ids(gateway, admin, params))


# -- the console as a page ------------------------------------------------------------------------
@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "phone"])
def test_the_console_fits_the_window(
    browser: Browser,
    gateway: GatewayThread,
    provisioned: Tenants,
    viewport: dict[str, int],
    screenshots: Path,
) -> None:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.goto(console_url(gateway))
    log_in(page, provisioned.user("acme", "org-admin"))
    if viewport is PHONE:
        page.screenshot(path=screenshots / "console-phone.png")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    page.locator("#log tbody tr").first.click()
    expect(page.locator("#detail")).to_be_visible()
    context.close()
    assert overflow <= 0


def test_everything_comes_from_the_gateway(browser: Browser, gateway: GatewayThread) -> None:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(console_url(gateway))
    expect(page.locator("#login-view")).to_be_visible()
    context.close()
    origin = console_url(gateway).rstrip("/")
    assert [url for url in requested if not url.startswith(origin)] == []


def test_no_script_errors(page: Page, provisioned: Tenants) -> None:
    log_in(page, provisioned.user("acme", "org-admin"))
    page.select_option("#range-preset", "7d")
    settled(page)
    assert page.errors == []  # type: ignore[attr-defined]


def test_chromium_is_debians(browser: Browser) -> None:
    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=True)
    assert browser.version.split(".")[0] in version.stdout
