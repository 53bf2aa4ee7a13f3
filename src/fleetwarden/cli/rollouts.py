"""``fleetwarden rollout …`` and ``fleetwarden window …``."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from fleetwarden import errors
from fleetwarden.cli.api import ApiClient
from fleetwarden.cli.app import (
    DEFAULT_SERVER,
    Output,
    Server,
    Token,
    _emit,
    _with,
    app,
    err,
    fail,
    out,
)

__all__ = ["rollout_app", "window_app"]

rollout_app = typer.Typer(
    no_args_is_help=True, help="Staged rollouts: waves, gates, windows, budgets."
)
window_app = typer.Typer(
    no_args_is_help=True, help="Maintenance windows (cron + duration + time zone)."
)
app.add_typer(rollout_app, name="rollout")
app.add_typer(window_app, name="window")

ROLLOUT_COLUMNS = [
    ("ID", "id"),
    ("Name", "name"),
    ("Release", "release"),
    ("State", "state"),
    ("Wave", "wave_label"),
    ("Succeeded", "totals.succeeded"),
    ("Failed", "totals.failed"),
    ("Devices", "totals.total"),
    ("Reason", "reason"),
]
Reason = Annotated[str, typer.Option("--reason", "-r", help="why (recorded in the audit trail)")]


def _row(r: dict[str, Any]) -> dict[str, Any]:
    flag = " EMERGENCY" if r.get("emergency") else ""
    return r | {"wave_label": f"{r['current_wave'] + 1}/{r['wave_count']}{flag}"}


def _load_strategy(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        fail(errors.InputError(f"cannot read strategy {path}: {e}"))


@rollout_app.command("create")
def rollout_create(
    release: Annotated[str, typer.Option("--release", help="release id or name@version")],
    selector: Annotated[str, typer.Option("--select", "-l", help="label selector for the targets")],
    strategy: Annotated[
        Path | None, typer.Option("--strategy", help="strategy TOML (see docs/rollouts.md)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="a name; default: the release")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    """Plan a rollout. It waits for an approver unless its strategy says otherwise."""
    spec = _load_strategy(strategy)

    def create(c: ApiClient) -> Any:
        rel = c.get(f"/api/v1/releases/{release}")
        body = {
            "name": name or f"{rel['name']}@{rel['version']}",
            "release_id": rel["id"],
            "selector": selector,
            "strategy": spec,
        }
        return c.post("/api/v1/rollouts", body)

    r = _with(server, token, create)
    if output == "json":
        _emit(r, output, [])
        return
    sizes = ", ".join(str(w["size"]) for w in r["waves"])
    out.print(
        f"Rollout {r['id']} ({r['release']}): {r['totals']['total']} devices in {r['wave_count']} waves ({sizes}); state {r['state']}."
    )
    for row in r["risk"][:5]:
        out.print(
            f"  risk: {row['model'] or '?'} {row['from_release'] or '(none)'} → {row['to_release']}: "
            f"{row['success']:.0%} expected success ({row['observed']} observed, {row['devices']} devices)"
        )


def _verb(
    verb: str, rollout_id: int, server: str, token: str | None, output: str, body: dict[str, Any]
) -> None:
    r = _with(server, token, lambda c: c.post(f"/api/v1/rollouts/{rollout_id}/{verb}", body))
    _emit(_row(r), output, ROLLOUT_COLUMNS)


@rollout_app.command("approve")
def rollout_approve(
    rollout_id: int,
    reason: Reason = "",
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    """Approve (needs the approver role, and someone other than the creator)."""
    _verb("approve", rollout_id, server, token, output, {"reason": reason})


@rollout_app.command("deny")
def rollout_deny(
    rollout_id: int,
    reason: Reason = "",
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    _verb("deny", rollout_id, server, token, output, {"reason": reason})


@rollout_app.command("start")
def rollout_start(
    rollout_id: int,
    reason: Reason = "",
    emergency: Annotated[
        bool, typer.Option("--emergency", help="zero-day: ignore windows and soak (admin only)")
    ] = False,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    _verb("start", rollout_id, server, token, output, {"reason": reason, "emergency": emergency})


@rollout_app.command("pause")
def rollout_pause(
    rollout_id: int,
    reason: Reason = "",
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    _verb("pause", rollout_id, server, token, output, {"reason": reason})


@rollout_app.command("resume")
def rollout_resume(
    rollout_id: int,
    reason: Reason = "",
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    _verb("resume", rollout_id, server, token, output, {"reason": reason})


@rollout_app.command("abort")
def rollout_abort(
    rollout_id: int,
    reason: Reason = "",
    rollback: Annotated[
        bool, typer.Option("--rollback", help="send succeeded devices their previous release")
    ] = False,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    _verb("abort", rollout_id, server, token, output, {"reason": reason, "rollback": rollback})


@rollout_app.command("retry-failed")
def rollout_retry(
    rollout_id: int,
    reason: Reason = "",
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    _verb("retry-failed", rollout_id, server, token, output, {"reason": reason})


@rollout_app.command("advance")
def rollout_advance(
    rollout_id: int,
    reason: Reason = "",
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    """Start the next wave now (for manual advance)."""
    _verb("advance", rollout_id, server, token, output, {"reason": reason})


@rollout_app.command("list")
def rollout_list(
    server: Server = DEFAULT_SERVER, token: Token = None, output: Output = "table"
) -> None:
    rows = [_row(r) for r in _with(server, token, lambda c: c.get("/api/v1/rollouts"))]
    _emit(rows, output, ROLLOUT_COLUMNS)


def _status_table(r: dict[str, Any]) -> Table:
    flag = "  [bold red]EMERGENCY[/bold red]" if r["emergency"] else ""
    table = Table(
        title=f"Rollout {r['id']} {r['name']} · {r['release']} · {r['state']}{flag}",
        header_style="bold",
    )
    for col in ("Wave", "Progress", "Succeeded", "Active", "Waiting", "Failed", "Size"):
        table.add_column(col)
    for w in r["waves"]:
        done = w["succeeded"] + w["failed"]
        width = 24
        filled = round(width * w["succeeded"] / w["size"]) if w["size"] else 0
        failed = round(width * w["failed"] / w["size"]) if w["size"] else 0
        bar = (
            "[green]"
            + "█" * filled
            + "[/green][red]"
            + "█" * failed
            + "[/red]"
            + "·" * max(0, width - filled - failed)
        )
        marker = (
            "▶ "
            if w["index"] == r["current_wave"] and r["state"] in ("running", "paused")
            else "  "
        )
        table.add_row(
            f"{marker}{w['index']}",
            bar,
            str(w["succeeded"]),
            str(w["active"]),
            str(w["waiting"]),
            str(w["failed"]),
            f"{done}/{w['size']}",
        )
    if r["reason"]:
        table.caption = f"reason: {r['reason']}"
    return table


@rollout_app.command("status")
def rollout_status(
    rollout_id: int,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="refresh until the rollout ends")
    ] = False,
    interval: float = 2.0,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    """Progress per wave (a live view with --watch)."""

    def fetch() -> dict[str, Any]:
        result: dict[str, Any] = _with(
            server, token, lambda c: c.get(f"/api/v1/rollouts/{rollout_id}")
        )
        return result

    r = fetch()
    if output == "json":
        _emit(r, output, [])
        return
    if not watch:
        out.print(_status_table(r))
        return
    with Live(_status_table(r), console=out, refresh_per_second=4) as live:
        while r["state"] in ("running", "paused", "rolling_back", "waiting_for_approval", "ready"):
            time.sleep(interval)
            r = fetch()
            live.update(_status_table(r))
    err.print(f"rollout {rollout_id} is {r['state']}")


WINDOW_COLUMNS = [
    ("ID", "id"),
    ("Name", "name"),
    ("Cron", "cron"),
    ("Duration", "duration"),
    ("Zone", "timezone"),
    ("Selector", "selector"),
    ("Open now", "open_now"),
    ("Next open", "next_open"),
]


@window_app.command("create")
def window_create(
    name: str,
    cron: Annotated[str, typer.Option(help="e.g. '0 2 * * *' for 02:00 every night")],
    duration: Annotated[str, typer.Option(help="e.g. 3h, 90m")],
    selector: Annotated[str, typer.Option("--select", "-l", help="the devices it applies to")],
    timezone: Annotated[str, typer.Option("--tz", help="IANA zone, e.g. Europe/Berlin")] = "UTC",
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    body = {
        "name": name,
        "cron": cron,
        "duration": duration,
        "timezone": timezone,
        "selector": selector,
    }
    _emit(_with(server, token, lambda c: c.post("/api/v1/windows", body)), output, WINDOW_COLUMNS)


@window_app.command("list")
def window_list(
    server: Server = DEFAULT_SERVER, token: Token = None, output: Output = "table"
) -> None:
    _emit(_with(server, token, lambda c: c.get("/api/v1/windows")), output, WINDOW_COLUMNS)


@window_app.command("delete")
def window_delete(window_id: int, server: Server = DEFAULT_SERVER, token: Token = None) -> None:
    _with(server, token, lambda c: c.request("DELETE", f"/api/v1/windows/{window_id}"))
    out.print(f"window {window_id} deleted")
