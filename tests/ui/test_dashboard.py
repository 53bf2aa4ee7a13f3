"""The dashboard in a real browser: Playwright driving Debian's Chromium against a live server.

The fleet is built through the real REST and device APIs (what an agent and the CLI do); the
assertions read what the page shows. Full-page screenshots go to test-artifacts/ui/, which CI
keeps. UI tests run on SQLite only: the pages call the same services the API tests run on
both databases.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.conftest import ARTIFACTS, LiveServer, require_tool
from tests.helpers import deploy, device_headers, enroll, release, upload

pytestmark = pytest.mark.ui

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ARTIFACTS / "ui"
REFRESH_MS = 10_000  # the overview polls every 5 s; allow two rounds


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (overrides the conftest fixture that also runs PostgreSQL)."""
    return f"sqlite:///{tmp_path / 'fleetwarden.db'}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_tool(CHROMIUM)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(
    browser: Browser, live_server: LiveServer, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A fresh browser context (no cookies) on the live server; a screenshot if the test fails."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(10_000)
    (SHOTS / f"FAILED-{request.node.name}.png").unlink(missing_ok=True)  # from an earlier run
    failed_before = request.session.testsfailed
    pg = context.new_page()
    try:
        yield pg
    finally:
        if request.session.testsfailed > failed_before:
            shot(pg, f"FAILED-{request.node.name}")
        context.close()


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[httpx.Client]:
    with live_server.api() as client:
        yield client


# -- helpers ----------------------------------------------------------------------------------
def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png", full_page=True)


def log_in(page: Page, token: str) -> None:
    """Fill the login form that is on screen and submit it."""
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()


def mark_page(page: Page) -> None:
    """Tag the current document; ``still_same_page`` is false after any full reload."""
    page.evaluate("window.__fwSamePage = true")


def still_same_page(page: Page) -> bool:
    return bool(page.evaluate("window.__fwSamePage === true"))


def device_links(page: Page) -> Locator:
    return page.locator("#rows").get_by_role("link")


def facts(dl: Locator) -> dict[str, str]:
    """A <dl> as the operator reads it: term -> description text."""
    terms = dl.locator("dt").all_inner_texts()
    values = dl.locator("dd").all_inner_texts()
    return {t.strip(): v.strip() for t, v in zip(terms, values, strict=True)}


def table_rows(table: Locator) -> list[list[str]]:
    return [
        [c.strip() for c in row.locator("th, td").all_inner_texts()]
        for row in table.locator("tr").all()
        if row.locator("td").count()
    ]


# -- fleet builders (through the real APIs) ---------------------------------------------------
@dataclass
class Fleet:
    devices: dict[str, dict[str, Any]]
    v1: int
    v2: int

    def id(self, name: str) -> str:
        return str(self.devices[name]["device_id"])


def build_fleet(api: httpx.Client) -> Fleet:
    devices = {
        "berlin-gw-1": enroll(
            api, hostname="berlin-gw-1", labels={"site": "berlin", "ring": "canary"}
        ),
        "berlin-gw-2": enroll(
            api, hostname="berlin-gw-2", labels={"site": "berlin", "ring": "main"}
        ),
        "paris-gw-1": enroll(api, hostname="paris-gw-1", labels={"site": "paris", "ring": "main"}),
    }
    a1 = upload(api, b"setting = 1\n", name="demo-conf", version="1.0")
    a2 = upload(api, b"setting = 2\n", name="demo-conf", version="2.0")
    v1 = release(api, "edge", "1.0", [a1["id"]])["id"]
    v2 = release(api, "edge", "2.0", [a2["id"]])["id"]
    return Fleet(devices, v1, v2)


def assignment_id(api: httpx.Client, device: dict[str, Any]) -> int:
    """The assignment the device is told to work on, as the agent learns it: by polling."""
    r = api.get("/device/v1/poll", headers=device_headers(device))
    assert r.status_code == 200, r.text
    action = r.json()["action"]
    assert action is not None, "device has no active assignment"
    return int(action["assignment_id"])


def report(api: httpx.Client, device: dict[str, Any], *states: str, detail: str = "") -> None:
    """Report states of the device's current assignment, in order, like the agent does."""
    aid = assignment_id(api, device)
    for state in states:
        r = api.post(
            f"/device/v1/assignments/{aid}/status",
            json={"state": state, "detail": detail},
            headers=device_headers(device),
        )
        assert r.status_code == 200, r.text


def install(api: httpx.Client, fleet: Fleet, release_id: int, *names: str) -> None:
    deploy(api, release_id, devices=[fleet.id(n) for n in names])
    for n in names:
        report(api, fleet.devices[n], "downloading", "installing", "succeeded")


def api_token(api: httpx.Client, name: str, role: str) -> dict[str, Any]:
    r = api.post("/api/v1/tokens", json={"name": name, "role": role})
    assert r.status_code == 201, r.text
    return dict(r.json())


# -- tests ------------------------------------------------------------------------------------
def test_login_required_wrong_token_then_admin(page: Page, live_server: LiveServer) -> None:
    require_tool(CHROMIUM)
    page.goto("/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    expect(page.get_by_role("navigation")).to_have_count(0)  # nothing of the fleet before login
    shot(page, "login")

    log_in(page, "fwt_this-is-not-a-real-token")
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked API token")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    log_in(page, "not even the right shape")
    expect(page.get_by_role("alert")).to_contain_text("not an API token")
    shot(page, "login-error")

    log_in(page, live_server.admin_token)
    expect(page).to_have_url(f"{live_server.url}/ui/")
    expect(page.get_by_role("heading", name="Fleet overview")).to_be_visible()
    expect(page.get_by_role("banner")).to_contain_text("admin · admin")
    expect(page.get_by_role("alert")).to_have_count(0)


def test_login_returns_to_the_page_asked_for(
    page: Page, live_server: LiveServer, api: httpx.Client
) -> None:
    require_tool(CHROMIUM)
    enroll(api, hostname="solo-1")
    page.goto("/ui/devices?state=online&q=solo")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    log_in(page, "fwt_wrong")  # a failed attempt keeps where to go afterwards
    log_in(page, live_server.admin_token)
    expect(page).to_have_url(f"{live_server.url}/ui/devices?state=online&q=solo")
    expect(page.get_by_label("Search devices")).to_have_value("solo")
    expect(page.get_by_label("State")).to_have_value("online")
    expect(device_links(page)).to_have_text(["solo-1"])


def test_overview_counts_releases_and_live_refresh(
    page: Page, live_server: LiveServer, api: httpx.Client
) -> None:
    require_tool(CHROMIUM)
    fleet = build_fleet(api)
    install(api, fleet, fleet.v1, "berlin-gw-1", "berlin-gw-2")

    page.goto("/ui/")
    log_in(page, live_server.admin_token)
    expect(page.get_by_role("heading", name="Fleet overview")).to_be_visible()
    expected = {"total": 3, "online": 3, "updating": 0, "failed": 0, "offline": 0}
    expected |= {"never_seen": 0, "revoked": 0}
    for key, n in expected.items():
        testid = key if key == "total" else f"state-{key}"
        expect(page.get_by_test_id(testid)).to_have_text(str(n))
    assert table_rows(page.get_by_test_id("releases")) == [
        ["edge@1.0", "", "2"],
        ["(none)", "", "1"],
    ]
    shot(page, "overview")

    mark_page(page)
    deploy(api, fleet.v2, devices=[fleet.id("paris-gw-1"), fleet.id("berlin-gw-2")])
    report(api, fleet.devices["paris-gw-1"], "downloading")
    report(api, fleet.devices["berlin-gw-2"], "failed", detail="health check failed")

    expect(page.get_by_test_id("state-updating")).to_have_text("1", timeout=REFRESH_MS)
    expect(page.get_by_test_id("state-failed")).to_have_text("1", timeout=REFRESH_MS)
    expect(page.get_by_test_id("state-online")).to_have_text("1")
    expect(page.get_by_test_id("total")).to_have_text("3")
    assert still_same_page(page), "the overview reloaded instead of swapping the summary"

    install(api, fleet, fleet.v2, "berlin-gw-1")
    expect(page.get_by_test_id("releases").get_by_role("row")).to_have_count(3, timeout=REFRESH_MS)
    assert table_rows(page.get_by_test_id("releases")) == [
        ["(none)", "", "1"],  # most installed first, ties by name
        ["edge@1.0", "", "1"],
        ["edge@2.0", "", "1"],
    ]
    assert still_same_page(page)
    shot(page, "overview-updated")


def test_device_list_search_selector_and_state(
    page: Page, live_server: LiveServer, api: httpx.Client
) -> None:
    require_tool(CHROMIUM)
    fleet = build_fleet(api)
    deploy(api, fleet.v1, devices=[fleet.id("paris-gw-1")])  # pending: paris-gw-1 is updating

    page.goto("/ui/")
    log_in(page, live_server.admin_token)
    page.get_by_role("navigation").get_by_role("link", name="Devices").click()
    expect(page.get_by_role("heading", name="Devices")).to_be_visible()
    expect(device_links(page)).to_have_text(["berlin-gw-1", "berlin-gw-2", "paris-gw-1"])
    expect(page.locator("#rows")).to_contain_text("3 devices")
    shot(page, "devices")
    mark_page(page)

    search = page.get_by_label("Search devices")
    selector = page.get_by_label("Label selector")
    state = page.get_by_label("State")

    search.fill("berlin")
    expect(device_links(page)).to_have_text(["berlin-gw-1", "berlin-gw-2"])
    expect(page).to_have_url(re.compile(r"[?&]q=berlin"))  # shareable, survives a reload
    search.fill(fleet.id("paris-gw-1")[:12])  # search also matches ids
    expect(device_links(page)).to_have_text(["paris-gw-1"])
    search.fill("")
    expect(device_links(page)).to_have_count(3)

    selector.fill("ring=canary")
    expect(device_links(page)).to_have_text(["berlin-gw-1"])
    selector.fill("site in (berlin,paris) and ring!=canary")
    expect(device_links(page)).to_have_text(["berlin-gw-2", "paris-gw-1"])

    selector.fill("site in (berlin")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Invalid selector")
    expect(alert).to_contain_text("at position 15")  # the end: the ")" is missing
    expect(device_links(page)).to_have_count(0)
    shot(page, "devices-selector-error")

    selector.fill("site=berlin")
    expect(device_links(page)).to_have_text(["berlin-gw-1", "berlin-gw-2"])
    expect(page.get_by_role("alert")).to_have_count(0)
    selector.fill("")
    state.select_option("updating")
    expect(device_links(page)).to_have_text(["paris-gw-1"])
    expect(page.locator("#rows")).to_contain_text("1 device")
    state.select_option("failed")
    expect(page.locator("#rows")).to_contain_text("No devices match.")
    state.select_option("online")
    expect(device_links(page)).to_have_text(["berlin-gw-1", "berlin-gw-2"])
    assert still_same_page(page), "filtering reloaded the page instead of swapping the rows"
    shot(page, "devices-filtered")

    # Open a device and come back: the filtered list is still a whole page, filters kept.
    page.get_by_role("link", name="berlin-gw-2").click()
    expect(page.get_by_role("heading", name="berlin-gw-2")).to_be_visible()
    page.go_back()
    expect(page.get_by_role("heading", name="Devices")).to_be_visible()
    expect(page.get_by_label("State")).to_have_value("online")
    expect(device_links(page)).to_have_text(["berlin-gw-1", "berlin-gw-2"])
    page.reload()
    expect(page.get_by_role("heading", name="Devices")).to_be_visible()
    expect(page.get_by_label("State")).to_have_value("online")
    expect(device_links(page)).to_have_text(["berlin-gw-1", "berlin-gw-2"])


def test_device_detail_inventory_and_history(
    page: Page, live_server: LiveServer, api: httpx.Client
) -> None:
    require_tool(CHROMIUM)
    fleet = build_fleet(api)
    gw = fleet.devices["berlin-gw-1"]
    inventory = {
        "hostname": "berlin-gw-1",
        "os_name": "Debian GNU/Linux",
        "os_version": "12",
        "kernel": "6.1.0-28-arm64",
        "arch": "arm64",
        "hardware_model": "gw-200",
        "agent_version": "0.9.1",
        "site": "berlin",
        "zone": "eu-1",
        "labels": {"rack": "r7"},
        "packages": [
            {"name": "openssl", "version": "3.0.15-1~deb12u1", "arch": "arm64"},
            {"name": "systemd", "version": "252.31-1~deb12u1", "arch": "arm64"},
            {"name": "demo-conf", "version": "1.0", "arch": "all"},
        ],
        "firmware": [
            {"name": "bios", "version": "1.2.3", "vendor": "Acme"},
            {"name": "modem", "version": "4.5"},
        ],
        "slots": [
            {"name": "A", "state": "good", "attempts_left": 3, "booted": True},
            {"name": "B", "state": "trying", "attempts_left": 2, "primary": True},
        ],
    }
    r = api.put("/device/v1/inventory", json=inventory, headers=device_headers(gw))
    assert r.status_code == 200, r.text
    install(api, fleet, fleet.v1, "berlin-gw-1")
    deploy(api, fleet.v2, devices=[fleet.id("berlin-gw-1")])
    report(api, gw, "downloading", "installing")
    report(api, gw, "failed", detail="health check exited 1")

    page.goto("/ui/devices")
    log_in(page, live_server.admin_token)
    page.get_by_role("link", name="berlin-gw-1").click()
    expect(page).to_have_url(f"{live_server.url}/ui/devices/{fleet.id('berlin-gw-1')}")
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text("berlin-gw-1")
    expect(heading).to_contain_text("failed")

    shown = facts(page.get_by_test_id("inventory"))
    assert shown["OS"] == "Debian GNU/Linux 12"
    assert shown["Kernel"] == "6.1.0-28-arm64"
    assert shown["Hardware"].startswith("gw-200")
    assert "arm64" in shown["Hardware"]
    assert shown["Site / zone"] == "berlin / eu-1"
    assert shown["Release"] == "edge@1.0"
    assert shown["Agent"] == "0.9.1"
    assert shown["Packages"].startswith("3")
    assert shown["Firmware"] == "bios 1.2.3, modem 4.5"
    assert "A: good, running" in shown["A/B slots"]
    assert "B: trying (2 boots left), next boot" in shown["A/B slots"]
    identity = facts(page.locator("section", has=page.get_by_role("heading", name="Identity")))
    assert identity["Device id"] == fleet.id("berlin-gw-1")
    for tag in ("site=berlin", "ring=canary", "rack=r7"):
        assert tag in identity["Labels"]

    history = table_rows(page.get_by_test_id("assignments"))
    assert [(row[1], row[2]) for row in history] == [
        ("edge@2.0", "failed"),
        ("edge@1.0", "succeeded"),
    ]
    assert history[0][3] == "health check exited 1"
    shot(page, "device")

    # A device with nothing reported and nothing deployed says so instead of showing blanks.
    page.goto(f"/ui/devices/{fleet.id('paris-gw-1')}")
    expect(page.get_by_test_id("assignments")).to_contain_text("Nothing deployed")
    page.goto("/ui/devices/no-such-device")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()


def test_viewer_sees_pages_logs_out_and_revocation_sends_to_login(
    page: Page, live_server: LiveServer, api: httpx.Client
) -> None:
    require_tool(CHROMIUM)
    fleet = build_fleet(api)
    viewer = api_token(api, "night-shift", "viewer")

    page.goto("/ui/")
    log_in(page, viewer["token"])
    expect(page.get_by_role("heading", name="Fleet overview")).to_be_visible()
    expect(page.get_by_role("banner")).to_contain_text("night-shift · viewer")
    expect(page.get_by_test_id("total")).to_have_text("3")
    page.get_by_role("navigation").get_by_role("link", name="Devices").click()
    expect(device_links(page)).to_have_count(3)
    page.get_by_role("link", name="paris-gw-1").click()
    expect(page.get_by_role("heading", name="paris-gw-1")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/ui/login"))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.goto(f"/ui/devices/{fleet.id('paris-gw-1')}")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    expect(page.get_by_text("paris-gw-1")).to_have_count(0)

    # Log in again, then the admin revokes the token while the overview is open: the next
    # refresh sends the viewer to the login page, and logging in returns to the overview.
    page.goto("/ui/")
    log_in(page, viewer["token"])
    expect(page.get_by_role("heading", name="Fleet overview")).to_be_visible()
    r = api.post(f"/api/v1/tokens/{viewer['id']}/revoke")
    assert r.status_code == 200, r.text
    expect(page.get_by_role("heading", name="Log in")).to_be_visible(timeout=REFRESH_MS)
    log_in(page, viewer["token"])
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked API token")
    log_in(page, live_server.admin_token)
    expect(page).to_have_url(f"{live_server.url}/ui/")
    expect(page.get_by_role("heading", name="Fleet overview")).to_be_visible()
    expect(page.get_by_test_id("total")).to_have_text("3")
