"""The rollout pages in a real browser: Playwright driving Debian's Chromium against a live server.

Rollouts are created through the REST API as the operator would with the CLI; devices report
through the device API as agents do; ``tick_all`` runs the controller at the moments the test
chooses (the background controller may tick in between: it does the same work). Every verb is
clicked on the page, as the logged-in user. SQLite only, like the other UI tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from fleetwarden.server.services.rollout_tick import tick_all
from tests.conftest import LiveServer, require_tool
from tests.helpers import device_headers, enroll, release, upload
from tests.ui.test_dashboard import (
    CHROMIUM,
    LAUNCH_ARGS,
    REFRESH_MS,
    SHOTS,
    api_token,
    facts,
    log_in,
    mark_page,
    report,
    shot,
    still_same_page,
    table_rows,
)

pytestmark = pytest.mark.ui

STRATEGY = {
    "canary": {"count": 1},
    "waves": {"kind": "fixed", "size": 2},
    "budget": None,  # every device of a wave at once
    "gates": {"failure_percent": 10, "min_finished": 1, "on_failure": "pause"},
}
GATE_REASON = re.compile(r"failure gate breached in wave 1: 1 of 2 finished devices failed")


# -- fixtures (as in test_dashboard.py) -------------------------------------------------------
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
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(10_000)
    (SHOTS / f"FAILED-{request.node.name}.png").unlink(missing_ok=True)
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


# -- builders ---------------------------------------------------------------------------------
def build_fleet(api: httpx.Client) -> tuple[dict[str, dict[str, Any]], int]:
    """Five field gateways on edge@1.0 (three gw-100, two gw-200) and a lab gw-200 whose
    update to edge@2.0 already failed once (the risk model's only observation)."""
    models = {"field-1": "gw-100", "field-2": "gw-100", "field-3": "gw-100"}
    models |= {"field-4": "gw-200", "field-5": "gw-200", "lab-1": "gw-200"}
    fleet = {}
    for name, model in models.items():
        ring = "lab" if name.startswith("lab") else "field"
        d = enroll(api, hostname=name, labels={"ring": ring})
        inventory = {"hostname": name, "hardware_model": model, "installed_release": "edge@1.0"}
        r = api.put("/device/v1/inventory", json=inventory, headers=device_headers(d))
        assert r.status_code == 200, r.text
        fleet[name] = d
    a1 = upload(api, b"setting = 1\n", name="edge-conf", version="1.0")
    a2 = upload(api, b"setting = 2\n", name="edge-conf", version="2.0")
    release(api, "edge", "1.0", [a1["id"]])
    v2 = int(release(api, "edge", "2.0", [a2["id"]])["id"])
    r = api.post(
        "/api/v1/deployments", json={"release_id": v2, "devices": [fleet["lab-1"]["device_id"]]}
    )
    assert r.status_code == 201, r.text
    report(api, fleet["lab-1"], "downloading", "installing", "failed", detail="lab: bootloop")
    return fleet, v2


def as_user(live_server: LiveServer, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def create_rollout(
    live_server: LiveServer, token: str, release_id: int, name: str, **strategy: Any
) -> dict[str, Any]:
    with as_user(live_server, token) as client:
        body = {
            "name": name,
            "release_id": release_id,
            "selector": "ring=field",
            "strategy": STRATEGY | strategy,
        }
        r = client.post("/api/v1/rollouts", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def waves_of(api: httpx.Client, rollout_id: int) -> dict[int, list[str]]:
    r = api.get(f"/api/v1/rollouts/{rollout_id}/members")
    assert r.status_code == 200, r.text
    waves: dict[int, list[str]] = {}
    for m in r.json():
        waves.setdefault(m["wave"], []).append(m["device_id"])
    return waves


def settle(live_server: LiveServer) -> None:
    """Tick the controller until a tick changes nothing (a wave's gate and the next wave's
    assignments take one tick each)."""
    for _ in range(8):
        if not tick_all(live_server.ctx):
            return
    pytest.fail("the rollout controller kept changing things")


def by_id(fleet: dict[str, dict[str, Any]], device_id: str) -> dict[str, Any]:
    return next(d for d in fleet.values() if d["device_id"] == device_id)


def open_as(page: Page, path: str, token: str) -> None:
    """Open a page, logging in (as someone else, if need be) on the way."""
    if page.get_by_role("button", name="Log out").count():
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.goto(path)
    log_in(page, token)
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))


def verb(page: Page, label: str, reason: str = "") -> None:
    """Click a verb's button with a reason; return once the answer page has loaded."""
    page.get_by_label("Reason").fill(reason)
    with page.expect_navigation():
        page.get_by_role("button", name=label, exact=True).click()


def state(page: Page) -> Any:
    return expect(page.get_by_test_id("rollout-state"))


def waves_table(page: Page) -> list[list[str]]:
    """Wave, devices, waiting, active, succeeded, failed, skipped (the bar has no text)."""
    return [row[:7] for row in table_rows(page.get_by_test_id("waves"))]


def timeline(page: Page) -> list[list[str]]:
    """Event, by, detail; newest first."""
    return [row[1:] for row in table_rows(page.get_by_test_id("timeline"))]


# -- tests ------------------------------------------------------------------------------------
def test_approve_start_waves_chart_gate_pause_and_operator_verbs(
    page: Page, live_server: LiveServer, api: httpx.Client
) -> None:
    require_tool(CHROMIUM)
    fleet, v2 = build_fleet(api)
    alice = api_token(api, "alice", "operator")["token"]
    bob = api_token(api, "bob", "approver")["token"]
    created = create_rollout(live_server, alice, v2, "edge 2.0 to the field")
    rid = created["id"]
    waves = waves_of(api, rid)
    assert [len(waves[w]) for w in sorted(waves)] == [1, 2, 2]

    # The operator finds it in the list; she may not approve it, but may abort it.
    open_as(page, "/ui/rollouts", alice)
    expect(page.get_by_role("navigation").get_by_role("link", name="Rollouts")).to_have_attribute(
        "aria-current", "page"
    )
    rows = table_rows(page.get_by_test_id("rollouts"))
    assert rows[0][1:9] == [
        "edge 2.0 to the field",
        "edge@2.0",
        "waiting for approval",
        "1/3",
        "0",
        "0",
        "5",
        "",
    ]
    shot(page, "rollout-list")
    page.get_by_role("link", name="edge 2.0 to the field").click()
    expect(page).to_have_url(f"{live_server.url}/ui/rollouts/{rid}")
    state(page).to_have_text("waiting for approval")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    expect(page.get_by_role("button", name="Deny")).to_have_count(0)
    expect(page.get_by_role("button", name="Abort", exact=True)).to_be_visible()
    expect(page.get_by_test_id("approval-hint")).to_contain_text("other than token:alice")
    shown = facts(page.get_by_test_id("facts"))
    assert shown["Release"] == "edge@2.0"
    assert shown["Selector"] == "ring=field"
    assert shown["Created"].startswith("token:alice")
    assert shown["Approved by"] == "—"
    strategy = facts(page.get_by_test_id("strategy"))
    assert strategy["Canary"] == "1 device"
    assert "pause at 10% failed" in strategy["Gates"]
    # gw-200 failed once on the way to edge@2.0 (in the lab): riskier, listed first.
    risk = table_rows(page.get_by_test_id("risk"))
    assert [(r[0], r[1], r[3], r[4]) for r in risk] == [
        ("gw-200", "edge@1.0 → edge@2.0", "1", "2"),
        ("gw-100", "edge@1.0 → edge@2.0", "0", "3"),
    ]
    assert float(risk[0][2].rstrip("%")) < float(risk[1][2].rstrip("%")) < 90
    expect(page.get_by_test_id("no-progress")).to_be_visible()
    assert timeline(page)[0][:2] == ["created", "token:alice"]
    shot(page, "rollout-waiting")

    # The approver sees Approve, approves with a reason, and starts (no emergency for him).
    open_as(page, f"/ui/rollouts/{rid}", bob)
    verb(page, "Approve", "canary plan looks right")
    expect(page).to_have_url(f"{live_server.url}/ui/rollouts/{rid}")
    state(page).to_have_text("ready")
    assert facts(page.get_by_test_id("facts"))["Approved by"] == "token:bob"
    assert timeline(page)[0] == ["approve", "token:bob", "canary plan looks right"]
    expect(page.get_by_label(re.compile("Emergency start"))).to_have_count(0)
    verb(page, "Start")
    state(page).to_have_text("running")
    assert timeline(page)[0][:2] == ["start", "token:bob"]

    # Wave 0 (the canary) succeeds, wave 1 starts; one of its two devices succeeds.
    settle(live_server)
    report(api, by_id(fleet, waves[0][0]), "downloading", "installing", "succeeded")
    settle(live_server)
    report(api, by_id(fleet, waves[1][0]), "downloading", "installing", "succeeded")
    settle(live_server)
    page.reload()
    assert waves_table(page) == [
        ["0", "1", "0", "0", "1", "0", "0"],
        ["1 current", "2", "0", "1", "1", "0", "0"],
        ["2", "2", "2", "0", "0", "0", "0"],
    ]
    events = [row[0] for row in timeline(page)]
    assert "success gate" in events
    assert "wave started" in events
    chart = page.get_by_test_id("progress-chart")
    expect(chart).to_be_visible()
    assert chart.locator("[data-series=succeeded] circle").count() >= 2
    points = chart.locator("[data-series=succeeded] polyline").get_attribute("points") or ""
    assert len(points.split()) >= 3
    expect(chart.locator("text", has_text="time (UTC)")).to_have_count(1)
    expect(chart.locator("text", has_text="devices")).to_have_count(1)
    shot(page, "rollout-running")

    # While the approver types a reason, the second device fails and the gate pauses the
    # rollout: the page shows it by itself, without a reload and without losing his words.
    mark_page(page)
    page.get_by_label("Reason").fill("half-typed: wave 1 looks")
    report(api, by_id(fleet, waves[1][1]), "downloading", "installing", "failed", detail="boom")
    settle(live_server)
    reason = page.get_by_test_id("state-reason")
    expect(reason).to_contain_text(GATE_REASON, timeout=REFRESH_MS)
    expect(reason).to_contain_text("Paused by a gate")
    expect(reason).to_contain_text("failures by hardware model: gw-100: 1")
    state(page).to_have_text("paused")
    expect(page.get_by_label("Reason")).to_have_value("half-typed: wave 1 looks")
    assert still_same_page(page), "the rollout page reloaded instead of swapping its content"
    assert waves_table(page)[1] == ["1 current", "2", "0", "0", "1", "1", "0"]
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    expect(page.get_by_role("button", name="Retry failed")).to_be_visible()
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    shot(page, "rollout-gate-paused")

    # Retry the failed device and resume: it succeeds this time, and wave 2 starts.
    verb(page, "Retry failed", "flaky health check fixed")
    state(page).to_have_text("paused")
    assert timeline(page)[0] == ["retry failed", "token:bob", "flaky health check fixed"]
    verb(page, "Resume")
    state(page).to_have_text("running")
    expect(page.get_by_test_id("state-reason")).to_have_count(0)
    settle(live_server)
    report(api, by_id(fleet, waves[1][1]), "downloading", "installing", "succeeded")
    settle(live_server)
    page.reload()
    assert waves_table(page)[1:] == [
        ["1", "2", "0", "0", "2", "0", "0"],
        ["2 current", "2", "0", "2", "0", "0", "0"],
    ]

    # Pause by hand (the reason is on the page), resume, then abort.
    verb(page, "Pause", "freeze for the weekend")
    state(page).to_have_text("paused")
    expect(page.get_by_test_id("state-reason")).to_contain_text("Paused by token:bob")
    expect(page.get_by_test_id("state-reason")).to_contain_text("freeze for the weekend")
    verb(page, "Resume")
    state(page).to_have_text("running")
    verb(page, "Abort", "gw-200 vendor advisory")
    state(page).to_have_text("aborted")
    expect(page.get_by_test_id("state-reason")).to_contain_text("Aborted by token:bob")
    expect(page.get_by_test_id("state-reason")).to_contain_text("gw-200 vendor advisory")
    expect(page.get_by_test_id("actions")).to_have_count(0)
    expect(page.get_by_text("nothing more can be done")).to_be_visible()
    assert [row[0] for row in timeline(page)][:3] == ["abort", "resume", "pause"]
    shot(page, "rollout-aborted")

    page.get_by_role("link", name="← Rollouts").click()
    row = table_rows(page.get_by_test_id("rollouts"))[0]
    assert row[3] == "aborted"
    assert row[5:8] == ["3", "0", "5"]
    assert row[8] == "gw-200 vendor advisory"


def test_self_approval_is_refused_and_viewer_has_no_buttons(
    page: Page, live_server: LiveServer, api: httpx.Client
) -> None:
    require_tool(CHROMIUM)
    _, v2 = build_fleet(api)
    alice = api_token(api, "alice", "approver")["token"]
    viewer = api_token(api, "night-shift", "viewer")["token"]
    rid = create_rollout(live_server, alice, v2, "own change")["id"]

    open_as(page, f"/ui/rollouts/{rid}", alice)
    expect(page.get_by_role("button", name="Approve")).to_be_visible()  # her role may...
    verb(page, "Approve", "trust me")
    alert = page.get_by_role("alert")  # ...but not for her own rollout
    expect(alert).to_contain_text("Refused")
    expect(alert).to_contain_text(
        "four eyes: a rollout must be approved by someone other than its creator"
    )
    state(page).to_have_text("waiting for approval")
    expect(page.get_by_label("Reason")).to_have_value("trust me")  # kept for another try
    assert facts(page.get_by_test_id("facts"))["Approved by"] == "—"
    shot(page, "rollout-four-eyes")

    # A state the verb is not legal in is refused the same way: a stale page (stop its
    # refresh, as a sleeping laptop would) still offers Approve after someone else denied.
    page.evaluate("document.body.addEventListener('htmx:beforeRequest', e => e.preventDefault())")
    with as_user(live_server, live_server.admin_token) as admin:
        assert admin.post(f"/api/v1/rollouts/{rid}/deny", json={"reason": "no"}).status_code == 200
    verb(page, "Approve", "again")
    expect(page.get_by_role("alert")).to_contain_text("a denied rollout cannot approve")
    state(page).to_have_text("denied")
    expect(page.get_by_test_id("state-reason")).to_contain_text("Denied by token:admin")

    open_as(page, f"/ui/rollouts/{rid}", viewer)
    expect(page.get_by_role("heading", name="own change")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Approve|Deny|Start|Abort"))).to_have_count(0)
    # Posting the form anyway (a crafted request) is refused by role.
    r = page.request.post(f"/ui/rollouts/{rid}/abort", form={"reason": "x"})
    assert r.status == 403
    assert "your role (viewer) cannot abort" in r.text()
    page.goto("/ui/rollouts/999")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_text("There is no rollout 999.")).to_be_visible()


def test_emergency_start_by_admin_then_abort_and_roll_back(
    page: Page, live_server: LiveServer, api: httpx.Client
) -> None:
    require_tool(CHROMIUM)
    fleet, v2 = build_fleet(api)
    alice = api_token(api, "alice", "operator")["token"]
    rid = create_rollout(live_server, alice, v2, "CVE fix", approval={"required": False})["id"]
    waves = waves_of(api, rid)

    open_as(page, f"/ui/rollouts/{rid}", live_server.admin_token)
    state(page).to_have_text("ready")
    expect(page.get_by_test_id("emergency-banner")).to_have_count(0)
    page.get_by_label("Reason").fill("CVE-2026-0001 actively exploited")
    page.get_by_label(re.compile("Emergency start")).check()
    page.get_by_role("button", name="Start", exact=True).click()
    state(page).to_have_text("running")
    banner = page.get_by_test_id("emergency-banner")
    expect(banner).to_contain_text("EMERGENCY rollout, started by token:admin")
    expect(banner).to_contain_text("maintenance windows and soak times are ignored")
    assert timeline(page)[0] == [
        "start",
        "token:admin",
        "EMERGENCY start (windows and soak ignored): CVE-2026-0001 actively exploited",
    ]

    settle(live_server)
    report(api, by_id(fleet, waves[0][0]), "downloading", "installing", "succeeded")
    settle(live_server)
    page.reload()
    expect(page.get_by_test_id("progress-chart")).to_be_visible()
    shot(page, "rollout-emergency")

    # Abort and roll back: the canary gets edge@1.0 again; the rollout ends once it has it,
    # which the list shows by itself.
    verb(page, "Abort and roll back", "wrong build")
    state(page).to_have_text("rolling back")
    expect(page.get_by_test_id("state-reason")).to_contain_text(
        "Aborted, rolling back by token:admin"
    )
    expect(page.get_by_test_id("state-reason")).to_contain_text("wrong build")
    page.get_by_role("navigation").get_by_role("link", name="Rollouts").click()
    listed_state = page.locator(f"tr[data-rollout-id='{rid}'] td").nth(3)
    expect(listed_state).to_have_text("rolling back EMERGENCY")
    mark_page(page)
    report(api, by_id(fleet, waves[0][0]), "downloading", "installing", "succeeded")
    settle(live_server)
    expect(listed_state).to_have_text("aborted EMERGENCY", timeout=REFRESH_MS)
    assert still_same_page(page), "the rollout list reloaded instead of swapping its rows"

    page.get_by_role("link", name="CVE fix").click()
    state(page).to_have_text("aborted")
    expect(page.get_by_test_id("emergency-banner")).to_be_visible()  # history keeps the flag
    shown = facts(page.get_by_test_id("facts"))
    assert shown["Approved by"] == "not required"
    assert "Ended" in shown
    assert [row[0] for row in timeline(page)][:2] == ["rollback done", "abort + rollback"]
