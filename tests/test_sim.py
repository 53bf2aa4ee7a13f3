"""The fleet simulator: the real agent state machine with a simulated installer and faults."""

from __future__ import annotations

import threading

import pytest

from fleetwarden.sim import Fleet, SimConfig
from tests.e2e.conftest import wait_for
from tests.helpers import deploy, release, upload


@pytest.fixture
def database_url(tmp_path):
    return f"sqlite:///{tmp_path / 'fleetwarden.db'}"


def _run_fleet(live_server, **faults):
    with live_server.api() as api:
        token = api.post("/api/v1/enrollment-tokens", json={"uses": 4}).json()["token"]
    fleet = Fleet(
        SimConfig(
            server=live_server.url,
            enroll_token=token,
            devices=4,
            poll_interval=0.2,
            install_duration=0.0,
            workers=4,
            **faults,
        )
    )
    stop = threading.Event()
    thread = threading.Thread(target=fleet.run, args=(stop,), daemon=True)
    thread.start()
    return fleet, stop, thread


def _outcomes(live_server, **faults):
    fleet, stop, thread = _run_fleet(live_server, **faults)
    try:
        with live_server.api() as api:
            wait_for(
                lambda: api.get("/api/v1/devices").json()["total"] == 4, what="simulated enrollment"
            )
            devices = api.get("/api/v1/devices").json()["items"]
            assert {d["site"] for d in devices} <= {"berlin", "paris", "madrid", "warsaw", "lyon"}
            assert all(d["labels"]["sim"] == "true" for d in devices)
            rel = release(
                api, "sim-app", "1", [upload(api, b"sim", name="sim-app", version="1")["id"]]
            )
            deploy(api, rel["id"], selector="sim=true")

            def done():
                rows = api.get("/api/v1/assignments").json()
                finished = [a for a in rows if a["state"] in {"succeeded", "rolled_back", "failed"}]
                return rows if len(finished) == 4 else None

            return wait_for(done, timeout=180, what="simulated installs")
    finally:
        stop.set()
        thread.join(10)
        fleet.close()


def test_simulated_fleet_installs(live_server):
    rows = _outcomes(live_server)
    assert {a["state"] for a in rows} == {"succeeded"}


def test_injected_install_failures_roll_back(live_server):
    rows = _outcomes(live_server, failure_rate=1.0)
    assert {a["state"] for a in rows} == {"rolled_back"}
    assert all("simulated install failure" in a["detail"] for a in rows)


def test_injected_health_failures_roll_back(live_server):
    rows = _outcomes(live_server, health_failure_rate=1.0)
    assert {a["state"] for a in rows} == {"rolled_back"}
    assert all("simulated health check failure" in a["detail"] for a in rows)
