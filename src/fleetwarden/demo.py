"""``fleetwarden demo``: the server on SQLite, a simulated fleet, and a sample staged rollout.

A composition root like ``main``: it starts the server in a thread, talks to it over its own
REST API (as any operator would), and drives a simulated fleet against it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvicorn

from fleetwarden.errors import ConfigError, ConflictError, FleetwardenError
from fleetwarden.protocol.api import Role, TokenCreate
from fleetwarden.server import Settings, create_app
from fleetwarden.server.context import ServerContext
from fleetwarden.server.logsetup import configure_logging
from fleetwarden.server.services import tokens
from fleetwarden.sim import Fleet, SimConfig

__all__ = ["run_demo"]

log = logging.getLogger("fleetwarden.demo")
HOST = "127.0.0.1"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _admin_token(ctx: ServerContext) -> str:
    with ctx.db.write() as s:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        created = tokens.create_token(
            s,
            TokenCreate(name=f"demo-admin-{stamp}", role=Role.ADMIN, expires_in_days=7),
            actor="system",
            now=ctx.clock(),
        )
    return created.token


DEMO_STRATEGY = {
    "approval": {"required": False},
    "canary": {"count": 3, "selector": "canary=true"},
    "waves": {"kind": "percent", "size": 30, "soak": "15s"},
    "gates": {"failure_percent": 20, "min_finished": 5, "max_retries": 1, "retry_backoff": "20s"},
    "budget": {"group_by": "zone", "max_in_progress": 4},
}


def _sample_rollout(api: httpx.Client, devices: int, stop: threading.Event) -> None:
    """Wait for the fleet to enroll, then start a staged rollout of demo-app 1.0."""
    deadline = time.monotonic() + 120
    while not stop.is_set() and time.monotonic() < deadline:
        if api.get("/api/v1/devices", params={"limit": 1}).json()["total"] >= devices:
            break
        stop.wait(1)
    releases = {f"{r['name']}@{r['version']}": r for r in api.get("/api/v1/releases").json()}
    release = releases.get("demo-app@1.0")
    if release is None:
        content = b"# demo-app configuration\nlisten = 0.0.0.0:9000\n"
        art = api.post(
            "/api/v1/artifacts",
            params={
                "name": "demo-app-conf",
                "version": "1.0",
                "type": "file",
                "meta": ["path=/etc/demo-app.conf"],
            },
            content=content,
        )
        if art.status_code == 409:
            art_id = next(
                a["id"] for a in api.get("/api/v1/artifacts").json() if a["name"] == "demo-app-conf"
            )
        else:
            art_id = art.json()["id"]
        release = api.post(
            "/api/v1/releases",
            json={
                "name": "demo-app",
                "version": "1.0",
                "artifacts": [art_id],
                "description": "demo",
            },
        ).json()
    if stop.is_set() or api.get("/api/v1/rollouts").json():
        return  # a rollout from an earlier run is there to look at
    rollout = api.post(
        "/api/v1/rollouts",
        json={
            "name": "demo-app 1.0",
            "release_id": release["id"],
            "selector": "sim=true",
            "strategy": DEMO_STRATEGY,
        },
    ).json()
    api.post(f"/api/v1/rollouts/{rollout['id']}/start", json={"reason": "demo"}).raise_for_status()
    waves = ", ".join(str(w["size"]) for w in rollout["waves"])
    print(
        f"  started rollout {rollout['id']} of demo-app@1.0: waves of {waves} devices", flush=True
    )


def run_demo(
    *, port: int = 8080, devices: int = 50, data_dir: Path = Path("fleetwarden-data")
) -> None:
    """Block until Ctrl-C, then stop the fleet and the server cleanly.

    Raises:
        ConfigError: the port is taken.
    """
    if not _port_free(port):
        raise ConfigError(f"port {port} is in use; try `fleetwarden demo --port {port + 1}`")
    configure_logging("warning", "text")
    settings = Settings.load(
        None,
        data_dir=data_dir,
        host=HOST,
        port=port,
        poll_interval_seconds=10,
        presence_flush_seconds=5,
        offline_after_seconds=60,
        log_format="text",
        log_level="warning",
    )
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host=HOST, port=port, log_config=None, access_log=False)
    )
    server_thread = threading.Thread(target=server.run, name="server", daemon=True)
    server_thread.start()
    while not server.started:
        if not server_thread.is_alive():
            raise ConfigError(f"the server did not start on {HOST}:{port}")
        time.sleep(0.05)

    base = f"http://{HOST}:{port}"
    admin = _admin_token(app.state.ctx)
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    enroll = api.post(
        "/api/v1/enrollment-tokens",
        json={"uses": devices, "expires_in_hours": 1, "labels": {"demo": "true"}},
    )
    enroll.raise_for_status()
    stop = threading.Event()
    fleet = Fleet(
        SimConfig(
            server=base,
            enroll_token=enroll.json()["token"],
            devices=devices,
            poll_interval=10,
            failure_rate=0.05,
            offline_rate=0.01,
            install_duration=2.0,
            data_dir=data_dir / "sim",
        )
    )
    fleet_thread = threading.Thread(target=fleet.run, args=(stop,), name="fleet", daemon=True)
    fleet_thread.start()

    print(
        f"\nfleetwarden demo is running with {devices} simulated devices.\n"
        f"  Dashboard:        {base}/ui/\n"
        f"  Admin API token:  {admin}   (shown once; log in with it)\n"
        f"  API docs:         {base}/api/v1/docs\n"
        f"  Try:              FLEETWARDEN_TOKEN={admin} fleetwarden device list\n"
        "Press Ctrl-C to stop.\n",
        flush=True,
    )

    def sample() -> None:
        try:
            _sample_rollout(api, devices, stop)
        except (httpx.HTTPError, FleetwardenError, KeyError, ConflictError) as e:
            log.warning("sample deployment did not complete: %s", e)

    threading.Thread(target=sample, name="sample", daemon=True).start()
    try:
        while server_thread.is_alive():
            server_thread.join(0.5)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
    finally:
        stop.set()
        fleet_thread.join(10)
        fleet.close()
        api.close()
        server.should_exit = True
        server_thread.join(10)
    print("stopped.", flush=True)
