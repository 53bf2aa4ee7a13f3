"""Two server processes on one PostgreSQL run their rollout controllers at once: exactly one
leads, no device is ever assigned twice, and when the leader dies the other takes over."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from fleetwarden.sim import Fleet, SimConfig
from tests import conftest
from tests.conftest import free_port
from tests.e2e.conftest import ADMIN, ServerProc, spawn, wait_for
from tests.helpers import release, upload

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]
LEADER_LOG = "this replica now runs the rollout controller"


@pytest.fixture
def database_url() -> Iterator[str]:
    """PostgreSQL only: leader election across processes is what is under test."""
    try:
        url, name = conftest._pg_clone()
    except RuntimeError as e:
        if conftest.REQUIRE_ALL:
            pytest.fail(f"FLEETWARDEN_REQUIRE_ALL=1 but {e}")
        pytest.skip(str(e))
    try:
        yield url
    finally:
        conftest._pg_drop(name)


def _server(data_dir: Path, database_url: str) -> ServerProc:
    port = free_port()
    proc = spawn(
        ["server", "--data-dir", str(data_dir), "--port", str(port)],
        env={
            "FLEETWARDEN_DATABASE_URL": database_url,
            "FLEETWARDEN_BOOTSTRAP_ADMIN_TOKEN": ADMIN,
            "FLEETWARDEN_ROLLOUT_TICK_SECONDS": "0.2",
            "FLEETWARDEN_LOG_FORMAT": "text",
        },
    )
    return ServerProc(f"http://127.0.0.1:{port}", proc)


def _ready(server: ServerProc) -> bool:
    import httpx

    if server.proc.popen.poll() is not None:
        raise AssertionError(f"server exited:\n{server.proc.output()}")
    try:
        return httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _fleet(
    server: ServerProc, name: str, devices: int
) -> tuple[Fleet, threading.Event, threading.Thread]:
    with server.api() as api:
        token = api.post("/api/v1/enrollment-tokens", json={"uses": devices}).json()["token"]
    fleet = Fleet(
        SimConfig(
            server=server.url,
            enroll_token=token,
            devices=devices,
            poll_interval=0.2,
            install_duration=0.05,
            workers=6,
            name_prefix=name,
            extra_labels={"via": name},
        )
    )
    stop = threading.Event()
    thread = threading.Thread(target=fleet.run, args=(stop,), daemon=True)
    thread.start()
    return fleet, stop, thread


def _rollout(api, version: str, selector: str) -> int:
    rel = release(
        api, "ha", version, [upload(api, version.encode(), name=f"ha-{version}", version="1")["id"]]
    )
    r = api.post(
        "/api/v1/rollouts",
        json={
            "name": f"ha {version}",
            "release_id": rel["id"],
            "selector": selector,
            "strategy": {
                "approval": {"required": False},
                "budget": None,
                "canary": {"count": 4},
                "waves": {"kind": "percent", "size": 50},
            },
        },
    )
    assert r.status_code == 201, r.text
    api.post(f"/api/v1/rollouts/{r.json()['id']}/start", json={}).raise_for_status()
    return int(r.json()["id"])


def _finished(api, rid: int) -> bool:
    return api.get(f"/api/v1/rollouts/{rid}").json()["state"] == "finished"


def test_two_replicas_one_controller_no_double_assignment(tmp_path, database_url):
    data = tmp_path / "shared"  # replicas share the CA, the session secret and the blob store
    a = _server(data, database_url)
    wait_for(lambda: _ready(a), what="server a")
    b = _server(data, database_url)
    fleets = []
    try:
        wait_for(lambda: _ready(b), what="server b")
        fleets = [_fleet(a, "a", 12), _fleet(b, "b", 12)]
        with a.api() as api:
            wait_for(lambda: api.get("/api/v1/devices").json()["total"] == 24, what="enrollment")
            rid = _rollout(api, "1", "sim=true")
            wait_for(
                lambda: _finished(api, rid),
                timeout=120,
                what=f"rollout across replicas\n{a.proc.output()}",
            )
        leaders = [s for s in (a, b) if any(LEADER_LOG in line for line in s.proc.lines)]
        assert len(leaders) == 1, "exactly one replica must lead"

        engine = sa.create_engine(database_url)
        with engine.connect() as c:
            per_device = Counter(
                d
                for (d,) in c.execute(
                    sa.text("SELECT device_id FROM assignments WHERE rollout_id = :r"), {"r": rid}
                )
            )
        engine.dispose()
        assert len(per_device) == 24
        assert set(per_device.values()) == {1}, "a device was assigned twice"

        # The leader dies; the other replica takes over and runs a rollout of its own devices.
        leader = leaders[0]
        survivor = b if leader is a else a
        leader.proc.kill9()
        with survivor.api() as api:
            via = "b" if survivor is b else "a"
            rid2 = _rollout(api, "2", f"via={via}")
            wait_for(
                lambda: _finished(api, rid2),
                timeout=120,
                what=f"failover\n{survivor.proc.output()}",
            )
        assert any(LEADER_LOG in line for line in survivor.proc.lines)
    finally:
        for fleet, stop, thread in fleets:
            stop.set()
            thread.join(10)
            fleet.close()
        a.proc.stop()
        b.proc.stop()
