"""Rollouts against the fleet simulator, with the server's own controller ticking."""

from __future__ import annotations

import threading

import pytest

from fleetwarden.server import Settings
from fleetwarden.sim import Fleet, SimConfig
from tests.e2e.conftest import wait_for
from tests.helpers import release, upload

pytestmark = pytest.mark.slow


@pytest.fixture
def database_url(tmp_path):
    return f"sqlite:///{tmp_path / 'fleetwarden.db'}"


@pytest.fixture
def settings(tmp_path, database_url):
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        rollout_tick_seconds=0.2,
        poll_interval_seconds=1,
        presence_flush_seconds=0.5,
        log_format="text",
    )


@pytest.fixture
def fleet(live_server):
    """15 simulated devices: models gw-100, gw-200, srv-10 (5 each); gw-100 breaks on app@2."""
    with live_server.api() as api:
        token = api.post("/api/v1/enrollment-tokens", json={"uses": 15}).json()["token"]
    sim = Fleet(
        SimConfig(
            server=live_server.url,
            enroll_token=token,
            devices=15,
            poll_interval=0.2,
            install_duration=0.0,
            workers=8,
            fail_models=frozenset({"gw-100"}),
            fail_release="app@2",
        )
    )
    stop = threading.Event()
    thread = threading.Thread(target=sim.run, args=(stop,), daemon=True)
    thread.start()
    with live_server.api() as api:
        wait_for(lambda: api.get("/api/v1/devices").json()["total"] == 15, what="enrollment")
        wait_for(
            lambda: all(d["hardware_model"] for d in api.get("/api/v1/devices").json()["items"]),
            what="inventory",
        )
    yield sim
    stop.set()
    thread.join(10)
    sim.close()


def _rollout(api, version, strategy):
    rel = release(
        api,
        "app",
        version,
        [upload(api, version.encode(), name=f"app-{version}", version="1")["id"]],
    )
    r = api.post(
        "/api/v1/rollouts",
        json={
            "name": f"app {version}",
            "release_id": rel["id"],
            "selector": "sim=true",
            "strategy": {"approval": {"required": False}, "budget": None} | strategy,
        },
    )
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert api.post(f"/api/v1/rollouts/{rid}/start", json={}).status_code == 200
    return rid


def _state(api, rid, *states):
    r = api.get(f"/api/v1/rollouts/{rid}").json()
    return r if r["state"] in states else None


def test_healthy_release_reaches_everyone_then_a_bad_one_is_stopped_and_rolled_back(
    live_server, fleet
):
    with live_server.api() as api:
        rid = _rollout(api, "1", {"canary": {"count": 3}, "waves": {"kind": "percent", "size": 40}})
        done = wait_for(
            lambda: _state(api, rid, "finished", "paused", "aborted"), timeout=90, what="v1 rollout"
        )
        assert done["state"] == "finished", done
        assert done["totals"]["succeeded"] == 15
        assert len(done["waves"]) == 4
        devices = api.get("/api/v1/devices").json()["items"]
        assert {d["installed_release"] for d in devices} == {"app@1"}

        rid2 = _rollout(
            api,
            "2",
            {
                "canary": {"count": 10, "selector": "model in (gw-100,gw-200)"},
                "gates": {"min_finished": 10, "failure_percent": 20},
            },
        )
        paused = wait_for(
            lambda: _state(api, rid2, "paused", "finished", "aborted"), timeout=90, what="v2 gate"
        )
        assert paused["state"] == "paused", paused
        assert paused["current_wave"] == 0  # stopped in the canary
        assert "failure gate breached in wave 0: 5 of 10" in paused["reason"]
        assert "gw-100: 5" in paused["reason"]
        by_model: dict[str, set[str]] = {}
        for d in api.get("/api/v1/devices").json()["items"]:
            by_model.setdefault(d["hardware_model"], set()).add(d["installed_release"])
        assert by_model == {"gw-100": {"app@1"}, "gw-200": {"app@2"}, "srv-10": {"app@1"}}

        r = api.post(
            f"/api/v1/rollouts/{rid2}/abort", json={"rollback": True, "reason": "breaks gw-100"}
        )
        assert r.json()["state"] == "rolling_back"
        aborted = wait_for(lambda: _state(api, rid2, "aborted"), timeout=90, what="rollback")
        assert aborted["reason"] == "breaks gw-100"
        devices = api.get("/api/v1/devices").json()["items"]
        assert {d["installed_release"] for d in devices} == {"app@1"}
