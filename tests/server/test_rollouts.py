"""Rollouts through the REST API, with the controller ticked by hand and the clock moved by hand."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from fleetwarden.protocol.api import Role
from fleetwarden.server.services.rollout_tick import tick_all
from tests.conftest import make_token
from tests.helpers import device_headers, enroll, open_session, release, upload


@pytest.fixture
def tokens(ctx) -> dict[str, dict[str, str]]:
    return {
        name: {"Authorization": f"Bearer {make_token(ctx, role, name)}"}
        for name, role in [
            ("alice", Role.OPERATOR),
            ("bob", Role.APPROVER),
            ("carol", Role.ADMIN),
            ("vic", Role.VIEWER),
        ]
    }


@pytest.fixture
def fleet(api) -> list[dict[str, Any]]:
    """Six devices: three zones, two models; device 0 labelled canary."""
    devs = []
    for i in range(6):
        labels = {"site": "berlin", "zone": f"z{i % 3}"} | ({"canary": "true"} if i == 0 else {})
        d = enroll(api, hostname=f"edge-{i}", labels=labels)
        api.put(
            "/device/v1/inventory",
            headers=device_headers(d),
            json={
                "hostname": f"edge-{i}",
                "hardware_model": "gw-100" if i % 2 else "gw-200",
            },
        ).raise_for_status()
        devs.append(d)
    return devs


def _release(api, version="2"):
    return release(
        api,
        "app",
        version,
        [upload(api, f"app {version}".encode(), name=f"app-{version}", version="1")["id"]],
    )


def _create(client, tokens, rel, strategy=None, who="alice", selector="site=berlin"):
    r = client.post(
        "/api/v1/rollouts",
        headers=tokens[who],
        json={
            "name": "r",
            "release_id": rel["id"],
            "selector": selector,
            "strategy": strategy or {},
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


def _verb(client, tokens, rid, verb, who="alice", **body):
    return client.post(f"/api/v1/rollouts/{rid}/{verb}", headers=tokens[who], json=body)


def _go(client, tokens, rid, **start):
    assert _verb(client, tokens, rid, "approve", who="bob").status_code == 200
    r = _verb(client, tokens, rid, "start", who=start.pop("who", "alice"), **start)
    assert r.status_code == 200, r.text
    return r.json()


def _active(api, rid):
    return [
        a
        for a in api.get("/api/v1/assignments").json()
        if a["state"] in ("pending", "downloading", "installing", "verifying")
    ]


def _by_device(fleet):
    return {d["device_id"]: d for d in fleet}


def _fresh(api, dev):
    """Device headers with a session opened now (the tests move the clock past expiries)."""
    return {
        "Authorization": f"Bearer {open_session(api, dev['device_id'], dev['certificate'], dev['key'])}"
    }


def _report(api, fleet, assignment, *states):
    dev = _by_device(fleet)[assignment["device_id"]]
    headers = _fresh(api, dev)
    for state in states:
        r = api.post(
            f"/device/v1/assignments/{assignment['id']}/status",
            json={"state": state},
            headers=headers,
        )
        assert r.status_code == 200, r.text


def _finish_all(api, fleet, rid, state="succeeded"):
    for a in _active(api, rid):
        _report(api, fleet, a, "downloading", "installing", state)


def _get(api, rid):
    return api.get(f"/api/v1/rollouts/{rid}").json()


def _run_to_end(api, fleet, ctx, rid, ticks=30):
    """Tick and let every assigned device succeed until the rollout stops running."""
    for _ in range(ticks):
        tick_all(ctx)
        _finish_all(api, fleet, rid)
        if _get(api, rid)["state"] != "running":
            return _get(api, rid)
    raise AssertionError("rollout did not end")


def test_create_plans_waves_and_needs_four_eyes(api, client, tokens, fleet):
    rel = _release(api)
    r = _create(
        client,
        tokens,
        rel,
        {"canary": {"count": 1, "selector": "canary=true"}, "waves": {"kind": "fixed", "size": 2}},
    )
    assert r["state"] == "waiting_for_approval"
    assert [w["size"] for w in r["waves"]] == [1, 2, 2, 1]
    assert r["totals"]["total"] == 6
    members = api.get(f"/api/v1/rollouts/{r['id']}/members", params={"wave": 0}).json()
    assert [m["device_id"] for m in members] == [fleet[0]["device_id"]]
    assert {x["model"] for x in r["risk"]} == {"gw-100", "gw-200"}
    assert all(0 < x["success"] < 1 for x in r["risk"])
    denied = _verb(client, tokens, r["id"], "approve", who="alice")
    assert denied.status_code == 403  # an operator is not an approver
    carol_rollout = _create(client, tokens, rel, who="carol")
    four_eyes = _verb(client, tokens, carol_rollout["id"], "approve", who="carol")
    assert four_eyes.status_code == 403
    assert "four eyes" in four_eyes.json()["error"]["message"]
    assert _verb(client, tokens, r["id"], "start").status_code == 409  # not approved yet
    approved = _verb(client, tokens, r["id"], "approve", who="bob", reason="CAB-123")
    assert approved.json()["state"] == "ready"
    assert approved.json()["approved_by"] == "token:bob"
    assert _verb(client, tokens, r["id"], "start", who="vic").status_code == 403
    assert _verb(client, tokens, r["id"], "start").json()["state"] == "running"
    audit = api.get(
        "/api/v1/audit", params={"target_type": "rollout", "target_id": str(r["id"])}
    ).json()
    actions = {(a["action"], a["actor"]) for a in audit}
    assert {
        ("rollout.create", "token:alice"),
        ("rollout.approve", "token:bob"),
        ("rollout.start", "token:alice"),
    } <= actions
    assert any(a["after"].get("reason") == "CAB-123" for a in audit)


def test_no_approval_and_self_approval_when_the_strategy_says_so(api, client, tokens, fleet):
    rel = _release(api)
    assert _create(client, tokens, rel, {"approval": {"required": False}})["state"] == "ready"
    own = _create(client, tokens, rel, {"approval": {"allow_self": True}}, who="bob")
    assert _verb(client, tokens, own["id"], "approve", who="bob").status_code == 200


def test_waves_advance_on_success_with_a_budget_per_zone(api, client, tokens, fleet, ctx, clock):
    rel = _release(api)
    r = _create(
        client,
        tokens,
        rel,
        {
            "canary": {"count": 1},
            "waves": {"kind": "fixed", "size": 5, "soak": "10m"},
            "budget": {"group_by": "zone", "max_in_progress": 1},
        },
    )
    _go(client, tokens, r["id"])
    tick_all(ctx)
    assert len(_active(api, r["id"])) == 1  # the canary
    _finish_all(api, fleet, r["id"])
    tick_all(ctx)
    assert _get(api, r["id"])["current_wave"] == 0  # soaking
    clock.advance(minutes=11)
    tick_all(ctx)
    tick_all(ctx)
    active = _active(api, r["id"])
    zones = [api.get(f"/api/v1/devices/{a['device_id']}").json()["labels"]["zone"] for a in active]
    assert len(zones) == len(set(zones)) == 3  # one per zone at a time
    for _ in range(4):
        _finish_all(api, fleet, r["id"])
        tick_all(ctx)
    out = _get(api, r["id"])
    assert out["state"] == "finished", out
    assert out["totals"]["succeeded"] == 6
    assert {
        api.get(f"/api/v1/devices/{d['device_id']}").json()["installed_release"] for d in fleet
    } == {"app@2"}
    kinds = [e["kind"] for e in out["events"]]
    assert "wave" in kinds
    assert "progress" in kinds


def test_failure_gate_pauses_with_the_reason_and_abort_rollback_restores(
    api, client, tokens, fleet, ctx
):
    v1, v2 = _release(api, "1"), _release(api, "2")
    first = _create(
        client,
        tokens,
        v1,
        {"approval": {"required": False}, "canary": {"count": 2}, "budget": None},
    )
    _verb(client, tokens, first["id"], "start")
    assert _run_to_end(api, fleet, ctx, first["id"])["state"] == "finished"
    r = _create(
        client,
        tokens,
        v2,
        {"approval": {"required": False}, "canary": {"count": 2}, "budget": None},
    )
    _verb(client, tokens, r["id"], "start")
    tick_all(ctx)
    canary = _active(api, r["id"])
    assert len(canary) == 2
    _report(api, fleet, canary[0], "downloading", "installing", "succeeded")
    _report(api, fleet, canary[1], "downloading", "installing", "rolled_back")
    tick_all(ctx)
    out = _get(api, r["id"])
    assert out["state"] == "paused"
    assert "failure gate breached in wave 0" in out["reason"]
    assert "gw-" in out["reason"]  # names the hardware model
    assert _verb(client, tokens, r["id"], "resume").json()["state"] == "running"
    tick_all(ctx)
    assert _get(api, r["id"])["state"] == "paused"  # the gate still holds
    rolled = _verb(client, tokens, r["id"], "abort", rollback=True, reason="bad on gw")
    assert rolled.json()["state"] == "rolling_back"
    back = _active(api, r["id"])
    assert [a["release"] for a in back] == ["app@1"]
    assert back[0]["device_id"] == canary[0]["device_id"]
    _report(api, fleet, back[0], "downloading", "installing", "succeeded")
    tick_all(ctx)
    out = _get(api, r["id"])
    assert out["state"] == "aborted"
    assert (
        api.get(f"/api/v1/devices/{canary[0]['device_id']}").json()["installed_release"] == "app@1"
    )


def test_gate_can_abort_and_roll_back_by_itself(api, client, tokens, fleet, ctx):
    v1, v2 = _release(api, "1"), _release(api, "2")
    first = _create(
        client,
        tokens,
        v1,
        {"approval": {"required": False}, "budget": None, "canary": {"count": 6}},
    )
    _verb(client, tokens, first["id"], "start")
    assert _run_to_end(api, fleet, ctx, first["id"])["state"] == "finished"
    r = _create(
        client,
        tokens,
        v2,
        {
            "approval": {"required": False},
            "budget": None,
            "canary": {"count": 3},
            "gates": {"on_failure": "abort_and_rollback", "failure_percent": 50, "min_finished": 3},
        },
    )
    _verb(client, tokens, r["id"], "start")
    tick_all(ctx)
    canary = _active(api, r["id"])
    _report(api, fleet, canary[0], "downloading", "installing", "succeeded")
    _report(api, fleet, canary[1], "downloading", "installing", "failed")
    tick_all(ctx)
    assert _get(api, r["id"])["state"] == "running"  # 2 finished < min_finished 3
    _report(api, fleet, canary[2], "downloading", "installing", "failed")
    tick_all(ctx)
    out = _get(api, r["id"])
    assert out["state"] == "rolling_back"
    assert "rolling back 1 device" in out["reason"]


def test_maintenance_windows_defer_and_emergency_ignores_them(
    api, client, tokens, fleet, ctx, clock
):
    hour = (clock.now.hour + 6) % 24  # a window that is closed now
    w = api.post(
        "/api/v1/windows",
        json={
            "name": "nights",
            "cron": f"0 {hour} * * *",
            "duration": "1h",
            "timezone": "UTC",
            "selector": "site=berlin",
        },
    )
    assert w.status_code == 201, w.text
    assert w.json()["open_now"] is False
    rel = _release(api)
    r = _create(client, tokens, rel, {"approval": {"required": False}, "budget": None})
    _verb(client, tokens, r["id"], "start")
    tick_all(ctx)
    assert _active(api, r["id"]) == []
    clock.advance(hours=6, minutes=1)  # inside the window
    tick_all(ctx)
    assert len(_active(api, r["id"])) == 1
    # an emergency rollout needs an admin, and ignores the (now closed again) window
    clock.advance(hours=2)
    em = _create(
        client,
        tokens,
        _release(api, "3"),
        {"approval": {"required": False}, "budget": None, "canary": {"count": 2}},
        selector="zone=z1",
    )
    assert _verb(client, tokens, em["id"], "start", emergency=True).status_code == 403
    started = _verb(
        client, tokens, em["id"], "start", who="carol", emergency=True, reason="CVE-2026-0001"
    ).json()
    assert started["emergency"] is True
    tick_all(ctx)
    assert any(a["release"] == "app@3" for a in _active(api, em["id"]))


def test_install_outside_a_window_is_deferred(api, client, tokens, fleet, ctx, clock):
    hour = (clock.now.hour + 1) % 24
    api.post(
        "/api/v1/windows",
        json={"name": "soon", "cron": f"0 {hour} * * *", "duration": "1h", "selector": "zone=z0"},
    )
    r = _create(
        client,
        tokens,
        _release(api),
        {"approval": {"required": False}, "budget": None, "windows": {"download_lead": "2h"}},
        selector="zone=z0",
    )
    _verb(client, tokens, r["id"], "start")
    tick_all(ctx)
    a = _active(api, r["id"])[0]  # assigned early so it can download
    dev = _by_device(fleet)[a["device_id"]]
    api.post(
        f"/device/v1/assignments/{a['id']}/status",
        json={"state": "downloading"},
        headers=device_headers(dev),
    )
    deferred = api.post(
        f"/device/v1/assignments/{a['id']}/status",
        json={"state": "installing"},
        headers=device_headers(dev),
    )
    assert deferred.status_code == 409
    assert deferred.json()["error"]["code"] == "deferred"
    assert 0 < int(deferred.headers["retry-after"]) <= 3600
    clock.advance(hours=1)
    ok = api.post(
        f"/device/v1/assignments/{a['id']}/status",
        json={"state": "installing"},
        headers=_fresh(api, dev),
    )
    assert ok.status_code == 200


def test_timeouts_fail_and_retries_come_back_with_backoff(api, client, tokens, fleet, ctx, clock):
    r = _create(
        client,
        tokens,
        _release(api),
        {
            "approval": {"required": False},
            "budget": None,
            "canary": {"count": 1},
            "gates": {
                "timeout": "1h",
                "max_retries": 1,
                "retry_backoff": "10m",
                "failure_count": 2,
                "failure_percent": None,
            },
        },
    )
    _verb(client, tokens, r["id"], "start")
    tick_all(ctx)
    a = _active(api, r["id"])[0]
    _report(api, fleet, a, "downloading", "installing")
    clock.advance(hours=2)
    tick_all(ctx)
    timed_out = api.get("/api/v1/assignments", params={"device": a["device_id"]}).json()[0]
    assert timed_out["state"] == "failed"
    assert "timed out" in timed_out["detail"]
    assert _active(api, r["id"]) == []  # backoff
    clock.advance(minutes=11)
    tick_all(ctx)
    retry = _active(api, r["id"])
    assert [x["device_id"] for x in retry] == [a["device_id"]]


def test_blocked_devices_wait_for_their_other_assignment(api, client, tokens, fleet, ctx):
    other = _release(api, "9")
    busy = fleet[0]["device_id"]
    api.post(
        "/api/v1/deployments", json={"release_id": other["id"], "devices": [busy]}
    ).raise_for_status()
    r = _create(
        client,
        tokens,
        _release(api),
        {"approval": {"required": False}, "budget": None, "canary": {"count": 6}},
    )
    _verb(client, tokens, r["id"], "start")
    tick_all(ctx)
    mine = [a for a in _active(api, r["id"]) if a["release"] == "app@2"]
    assert busy not in {a["device_id"] for a in mine}
    assert len(mine) == 5
    with ctx.db.read() as s:  # never two unfinished assignments for one device
        dup = s.execute(
            sa.text(
                "SELECT device_id, count(*) FROM assignments WHERE state IN "
                "('pending','downloading','installing','rebooting','verifying') GROUP BY device_id HAVING count(*) > 1"
            )
        ).all()
    assert dup == []


def test_dynamic_rollouts_pick_up_new_devices(api, client, tokens, fleet, ctx):
    r = _create(
        client,
        tokens,
        _release(api),
        {"approval": {"required": False}, "budget": None, "canary": {"count": 6}},
    )
    _verb(client, tokens, r["id"], "start")
    late = enroll(api, hostname="late", labels={"site": "berlin"})
    tick_all(ctx)
    members = {m["device_id"] for m in api.get(f"/api/v1/rollouts/{r['id']}/members").json()}
    assert late["device_id"] in members
    assert _get(api, r["id"])["totals"]["total"] == 7


def test_manual_advance_retry_failed_and_illegal_verbs(api, client, tokens, fleet, ctx):
    r = _create(
        client,
        tokens,
        _release(api),
        {
            "approval": {"required": False},
            "budget": None,
            "canary": {"count": 1},
            "waves": {"advance": "manual", "kind": "fixed", "size": 5},
            "gates": {"failure_percent": None},
        },
    )
    _verb(client, tokens, r["id"], "start")
    tick_all(ctx)
    _finish_all(api, fleet, r["id"], state="failed")
    tick_all(ctx)
    out = _get(api, r["id"])
    assert out["state"] == "paused"
    assert "below the 100% needed" in out["reason"]
    retried = _verb(client, tokens, r["id"], "retry-failed")
    assert "1 failed device(s) queued again" in retried.json()["events"][0]["message"]
    _verb(client, tokens, r["id"], "resume")
    tick_all(ctx)
    _finish_all(api, fleet, r["id"])
    tick_all(ctx)
    assert _get(api, r["id"])["current_wave"] == 0  # manual advance
    assert _verb(client, tokens, r["id"], "advance").json()["current_wave"] == 1
    assert _verb(client, tokens, r["id"], "advance").status_code == 409  # already the last wave
    assert _verb(client, tokens, r["id"], "approve", who="bob").status_code == 409
    aborted = _verb(client, tokens, r["id"], "abort", reason="enough")
    assert aborted.json()["state"] == "aborted"
    assert _verb(client, tokens, r["id"], "resume").status_code == 409


def test_bad_rollout_requests(api, client, tokens, fleet):
    rel = _release(api)
    bad = [
        ({"name": "x", "release_id": 999, "selector": "site=berlin"}, 404),
        ({"name": "x", "release_id": rel["id"], "selector": "site in ("}, 400),
        ({"name": "x", "release_id": rel["id"], "selector": "site=nowhere"}, 400),
        (
            {
                "name": "x",
                "release_id": rel["id"],
                "selector": "site=berlin",
                "strategy": {"waves": {"soak": "soon"}},
            },
            400,
        ),
        (
            {
                "name": "x",
                "release_id": rel["id"],
                "selector": "site=berlin",
                "strategy": {"gates": {"on_failure": "explode"}},
            },
            422,
        ),
        (
            {
                "name": "x",
                "release_id": rel["id"],
                "selector": "site=berlin",
                "strategy": {"waves": {"kind": "percent", "size": 150}},
            },
            422,
        ),
        (
            {
                "name": "x",
                "release_id": rel["id"],
                "selector": "site=berlin",
                "strategy": {"unknown": 1},
            },
            422,
        ),
    ]
    for body, status in bad:
        r = client.post("/api/v1/rollouts", headers=tokens["alice"], json=body)
        assert r.status_code == status, (body, r.status_code, r.text)
    w = api.post(
        "/api/v1/windows",
        json={"name": "w", "cron": "61 * * * *", "duration": "1h", "selector": "a=b"},
    )
    assert w.status_code == 400
    w = api.post(
        "/api/v1/windows",
        json={
            "name": "w",
            "cron": "0 2 * * *",
            "duration": "1h",
            "timezone": "Mars/Olympus",
            "selector": "a=b",
        },
    )
    assert w.status_code == 400
    assert api.get("/api/v1/rollouts").json() == []


def test_the_database_refuses_a_second_active_assignment(api, ctx, fleet):
    from datetime import UTC, datetime

    rel = _release(api)
    api.post(
        "/api/v1/deployments", json={"release_id": rel["id"], "devices": [fleet[0]["device_id"]]}
    ).raise_for_status()
    now = datetime.now(UTC)
    with pytest.raises(sa.exc.IntegrityError), ctx.db.write() as s:
        s.execute(
            sa.text(
                "INSERT INTO assignments (device_id, release_id, state, detail, created_at, updated_at, from_release, hardware_model) "
                "VALUES (:d, :r, 'pending', '', :n, :n, '', '')"
            ),
            {"d": fleet[0]["device_id"], "r": rel["id"], "n": now},
        )
