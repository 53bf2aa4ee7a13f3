"""The ``fleetwarden`` entry point: the one composition root that may reach into every part.

Operator verbs come from ``fleetwarden.cli``; ``server``, ``agent``, ``sim`` and ``demo`` are
added here, importing their part lazily so that ``fleetwarden device list`` does not pay for
loading the server.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from fleetwarden import errors
from fleetwarden import keys_cmd as _keys  # noqa: F401 - registers `keys`
from fleetwarden.cli import app
from fleetwarden.cli.app import fail

__all__ = ["main"]


@app.command("server")
def server_cmd(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="FLEETWARDEN_CONFIG", help="TOML settings file"),
    ] = None,
    host: Annotated[str | None, typer.Option(help="listen address")] = None,
    port: Annotated[int | None, typer.Option(help="listen port")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="SQLite, blobs and keys")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes")] = None,
) -> None:
    """Run the control plane (SQLite under ./fleetwarden-data unless configured)."""
    from fleetwarden.server import Settings, serve

    overrides = {
        k: v
        for k, v in {"host": host, "port": port, "data_dir": data_dir, "workers": workers}.items()
        if v is not None
    }
    try:
        serve(Settings.load(config, **overrides))
    except errors.FleetwardenError as e:
        fail(e)


@app.command("agent")
def agent_cmd(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", envvar="FLEETWARDEN_AGENT_CONFIG", help="TOML agent configuration"
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option("--server", envvar="FLEETWARDEN_AGENT_SERVER", help="control plane URL"),
    ] = None,
    enroll_token: Annotated[
        str | None, typer.Option("--enroll-token", envvar="FLEETWARDEN_AGENT_ENROLL_TOKEN")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", envvar="FLEETWARDEN_AGENT_DATA_DIR")
    ] = None,
    root: Annotated[
        Path | None, typer.Option("--root", help="filesystem root to install into (default /)")
    ] = None,
    poll_interval: Annotated[
        float | None, typer.Option("--poll-interval", help="seconds; default: the server's")
    ] = None,
) -> None:
    """Run the device agent: enroll once, then poll and install what is assigned."""
    from fleetwarden.agent import AgentConfig, run

    try:
        cfg = AgentConfig.load(
            config,
            server=server,
            enroll_token=enroll_token,
            data_dir=data_dir,
            root=root,
            poll_interval=poll_interval,
            hold_at_step=_env("FLEETWARDEN_AGENT_HOLD_AT_STEP"),
        )
        run(cfg, argv=sys.argv[1:])
    except errors.FleetwardenError as e:
        fail(e)


def _env(name: str) -> str | None:
    import os

    return os.environ.get(name) or None


@app.command("sim")
def sim_cmd(
    server: Annotated[str, typer.Option("--server", envvar="FLEETWARDEN_SERVER")],
    enroll_token: Annotated[
        str, typer.Option("--enroll-token", help="a token with at least N uses")
    ],
    devices: Annotated[int, typer.Option("--devices", "-n")] = 50,
    poll_interval: float = 10.0,
    failure_rate: Annotated[float, typer.Option(help="share of installs that fail")] = 0.0,
    health_failure_rate: Annotated[
        float, typer.Option(help="share of installs whose health check fails")
    ] = 0.0,
    offline_rate: Annotated[
        float, typer.Option(help="chance per wake-up of dropping offline")
    ] = 0.0,
    latency: Annotated[float, typer.Option(help="seconds added to every request")] = 0.0,
    fail_model: Annotated[
        list[str] | None,
        typer.Option("--fail-model", help="every install on this hardware model fails"),
    ] = None,
    seed: int = 1,
) -> None:
    """Run N simulated devices (real agent state machine, simulated installer) against a server."""
    from fleetwarden.sim import Fleet, SimConfig

    fleet = Fleet(
        SimConfig(
            server=server,
            enroll_token=enroll_token,
            devices=devices,
            poll_interval=poll_interval,
            failure_rate=failure_rate,
            health_failure_rate=health_failure_rate,
            offline_rate=offline_rate,
            latency=latency,
            fail_models=frozenset(fail_model or []),
            seed=seed,
        )
    )
    stop = threading.Event()
    typer.echo(f"simulating {devices} devices against {server}; Ctrl-C to stop")
    try:
        fleet.run(stop)
    except KeyboardInterrupt:
        stop.set()
    finally:
        fleet.close()


@app.command("demo")
def demo_cmd(
    port: Annotated[int, typer.Option(envvar="FLEETWARDEN_DEMO_PORT")] = 8080,
    devices: Annotated[int, typer.Option("--devices", "-n")] = 50,
    data_dir: Annotated[Path, typer.Option("--data-dir")] = Path("fleetwarden-data"),
) -> None:
    """Server + simulated fleet + a sample staged rollout; prints the dashboard URL."""
    from fleetwarden.demo import run_demo

    try:
        run_demo(port=port, devices=devices, data_dir=data_dir)
    except errors.FleetwardenError as e:
        fail(e)


def main() -> None:
    app()
