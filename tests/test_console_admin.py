"""The console's admin page (issue 13) in Debian's Chromium: an org-admin manages its users,
applications and things, Super-Ops also orgs; every change checked over a separate TR50
connection. A gateway of this module's own (these tests change users and apps)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from gateway.settings import Settings
from tests.support import PASSWORD, GatewayThread, Tenants, ws_client
from tests.test_console import (  # noqa: F401 - fixtures
    DESKTOP,
    SUPER_OPS,
    browser,
    call_as,
    console_url,
    log_in,
    playwright,
    screenshots,
)

ADMIN = "org-admin@acme.test"


@pytest.fixture(scope="module")
def gateway(
    provisioned: Tenants, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    db = tmp_path_factory.mktemp("console-admin") / "usage.duckdb"
    shutil.copyfile(provisioned.db, db)
    thread = GatewayThread(
        Settings(db=db, mqtt_url="none", ws_port=0, http_port=0, instance_name="console-admin")
    ).start()
    yield thread
    thread.stop()


@pytest.fixture
def page(browser: Browser, gateway: GatewayThread) -> Iterator[Page]:  # noqa: F811
    context = browser.new_context(viewport=DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # every confirm() says yes
    page.goto(console_url(gateway))
    yield page
    context.close()


def open_admin(page: Page, user: str = ADMIN, tab: str = "users") -> None:
    log_in(page, user)
    page.click("#admin-tab")
    if tab != "users":
        page.click(f"[data-tab={tab}]")
    expect(page.locator(f"#{tab}-panel")).to_have_attribute("data-state", "ready")


def login_outcome(gateway: GatewayThread, username: str, password: str) -> bool:
    with ws_client(gateway.ws_url) as client:
        reply = client.login(username, password)
    return bool(reply["auth"]["success"])


def thing_login(gateway: GatewayThread, app_id: str, token: str, key: str) -> bool:
    with ws_client(gateway.ws_url) as client:
        params = {"appId": app_id, "appToken": token, "thingKey": key}
        reply = client.send({"auth": {"command": "api.authenticate", "params": params}})
    return bool(reply["auth"]["success"])


def new_user(page: Page, email: str, password: str = "a long password") -> None:
    page.fill("#user-form [name=emailAddress]", email)
    page.fill("#user-form [name=password]", password)
    page.click("#user-form button[type=submit]")
    expect(page.locator(f'#users-table tr[data-key="{email}"]')).to_have_count(1)


def test_a_created_user_logs_in(page: Page, gateway: GatewayThread) -> None:
    open_admin(page)
    email = f"new-{secrets.token_hex(3)}@acme.test"
    new_user(page, email, "its own password")
    assert login_outcome(gateway, email, "its own password")


def test_a_disabled_user_cannot_log_in(page: Page, gateway: GatewayThread) -> None:
    open_admin(page)
    email = f"off-{secrets.token_hex(3)}@acme.test"
    new_user(page, email)
    row = page.locator(f'#users-table tr[data-key="{email}"]')
    row.get_by_role("button", name="Disable").click()
    expect(row.locator(".badge")).to_have_text("disabled")
    assert not login_outcome(gateway, email, "a long password")


def test_a_deleted_user_is_gone(page: Page, gateway: GatewayThread) -> None:
    open_admin(page)
    email = f"gone-{secrets.token_hex(3)}@acme.test"
    new_user(page, email)
    page.locator(f'#users-table tr[data-key="{email}"]').get_by_role(
        "button", name="Delete"
    ).click()
    expect(page.locator(f'#users-table tr[data-key="{email}"]')).to_have_count(0)
    reply = call_as(gateway, ADMIN, {"command": "user.find", "params": {"emailAddress": email}})
    assert reply["1"]["errorCodes"] == [-90008]


def test_a_bad_password_shows_the_error(page: Page) -> None:
    open_admin(page)
    page.fill("#user-form [name=emailAddress]", "short@acme.test")
    page.fill("#user-form [name=password]", "short")
    page.eval_on_selector("#user-form", "form => form.noValidate = true")  # past the browser
    page.click("#user-form button[type=submit]")
    expect(page.locator("#admin-banner")).to_contain_text("password")


def test_a_new_apps_token_is_shown_once_and_copied(
    page: Page,
    gateway: GatewayThread,
    screenshots: Path,  # noqa: F811
) -> None:
    open_admin(page, tab="apps")
    page.fill("#app-form [name=name]", f"fleet-{secrets.token_hex(3)}")
    page.click("#app-form button[type=submit]")
    expect(page.locator("#token-box")).to_be_visible()
    token = page.inner_text("#token-value")
    app_id = page.inner_text("#token-app-id")
    page.click("#token-copy")
    expect(page.locator("#token-copied")).to_have_text("Copied.")
    page.screenshot(path=screenshots / "console-admin.png")
    copied = page.evaluate("navigator.clipboard.readText()")
    page.click("#token-done")
    listed = page.inner_text("#apps-table")
    assert (copied, thing_login(gateway, app_id, token, "sensor-1"), token in listed) == (
        token,
        True,
        False,
    )


def test_a_rotated_token_replaces_the_old(page: Page, gateway: GatewayThread) -> None:
    created = call_as(gateway, ADMIN, {"command": "app.create", "params": {"name": "rotating"}})
    app_id, old = created["1"]["params"]["id"], created["1"]["params"]["token"]
    open_admin(page, tab="apps")
    page.locator(f'#apps-table tr[data-key="{app_id}"]').get_by_role(
        "button", name="Rotate token"
    ).click()
    expect(page.locator("#token-box")).to_be_visible()
    new = page.inner_text("#token-value")
    outcomes = [thing_login(gateway, app_id, old, "t-1"), thing_login(gateway, app_id, new, "t-1")]
    assert outcomes == [False, True]


def test_a_deleted_thing_leaves_the_list(page: Page, gateway: GatewayThread) -> None:
    created = call_as(gateway, ADMIN, {"command": "app.create", "params": {"name": "things"}})
    params = created["1"]["params"]
    key = f"doomed-{secrets.token_hex(3)}"
    assert thing_login(gateway, params["id"], params["token"], key)
    open_admin(page, tab="things")
    row = page.locator(f'#things-table tr[data-key="{key}"]')
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)


def test_super_ops_creates_an_org(page: Page, gateway: GatewayThread) -> None:
    open_admin(page, SUPER_OPS, tab="orgs")
    key = f"org-{secrets.token_hex(3)}"
    page.fill("#org-form [name=key]", key)
    page.fill("#org-form [name=name]", "New Org")
    page.click("#org-form button[type=submit]")
    expect(page.locator(f'#orgs-table tr[data-key="{key}"]')).to_have_count(1)


def test_an_org_admin_has_no_orgs_tab(page: Page) -> None:
    open_admin(page)
    expect(page.locator("#orgs-tab")).to_be_hidden()


def test_a_plain_user_has_no_admin_page(page: Page) -> None:
    log_in(page, "user@acme.test", PASSWORD)
    expect(page.locator("#admin-tab")).to_be_hidden()
