"""Operator verbs. Every listing takes ``--output json``; failures print one line and exit
non-zero with a code chosen by the error's root (see ``exit_code_for``)."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from fleetwarden import errors
from fleetwarden.cli.api import ApiClient

__all__ = ["app", "exit_code_for", "fail"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="fleetwarden: OS and firmware management for Linux fleets",
)
device_app = typer.Typer(no_args_is_help=True, help="Devices: list, show, label, revoke.")
token_app = typer.Typer(no_args_is_help=True, help="Operator API tokens.")
enroll_app = typer.Typer(no_args_is_help=True, help="Enrollment tokens for new devices.")
artifact_app = typer.Typer(no_args_is_help=True, help="Artifacts: upload, list, and image deltas.")
release_app = typer.Typer(
    no_args_is_help=True, help="Releases: named, versioned sets of artifacts."
)
assignment_app = typer.Typer(no_args_is_help=True, help="Assignments: one release on one device.")
audit_app = typer.Typer(no_args_is_help=True, help="The audit trail.")
for sub, name in [
    (device_app, "device"),
    (token_app, "token"),
    (enroll_app, "enroll-token"),
    (artifact_app, "artifact"),
    (release_app, "release"),
    (assignment_app, "assignment"),
    (audit_app, "audit"),
]:
    app.add_typer(sub, name=name)

out = Console()
err = Console(stderr=True)

Server = Annotated[
    str, typer.Option("--server", envvar="FLEETWARDEN_SERVER", help="Control plane URL")
]
Token = Annotated[
    str | None, typer.Option("--token", envvar="FLEETWARDEN_TOKEN", help="API token (fwt_...)")
]
Output = Annotated[str, typer.Option("--output", "-o", help="table or json")]
DEFAULT_SERVER = "http://127.0.0.1:8080"


def exit_code_for(exc: errors.FleetwardenError) -> int:
    for kind, code in (
        (errors.InputError, 2),
        (errors.AuthError, 3),
        (errors.NotFoundError, 4),
        (errors.ConflictError, 5),
        (errors.TransportError, 6),
        (errors.VerificationError, 7),
        (errors.ConfigError, 8),
    ):
        if isinstance(exc, kind):
            return code
    return 1


def fail(exc: errors.FleetwardenError) -> NoReturn:
    """Print one line and exit with the code for the error's root."""
    err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
    raise typer.Exit(exit_code_for(exc))


def _run(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except errors.FleetwardenError as e:
        fail(e)


def _with(server: str, token: str | None, fn: Callable[[ApiClient], Any]) -> Any:
    """Run one API call (or a few) with a client that is closed afterwards."""
    client = ApiClient(server, token)
    try:
        return _run(lambda: fn(client))
    finally:
        client.close()


def _emit(
    data: Any, output: str, columns: Sequence[tuple[str, str]], title: str | None = None
) -> None:
    """Print a list (or one object) as JSON or as a Rich table of the given columns."""
    if output == "json":
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    if output != "table":
        raise typer.BadParameter("--output must be table or json")
    rows = data if isinstance(data, list) else [data]
    table = Table(title=title, header_style="bold")
    for header, _ in columns:
        table.add_column(header)
    for row in rows:
        table.add_row(*[_cell(row, key) for _, key in columns])
    out.print(table)


def _cell(row: dict[str, Any], key: str) -> str:
    value: Any = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


# -- devices -------------------------------------------------------------------------------------
DEVICE_COLUMNS = [
    ("ID", "id"),
    ("Name", "name"),
    ("State", "state"),
    ("Site", "site"),
    ("Model", "hardware_model"),
    ("Release", "installed_release"),
    ("Last seen", "last_seen_at"),
]


@device_app.command("list")
def device_list(
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
    selector: Annotated[str | None, typer.Option("--select", "-l", help="label selector")] = None,
    search: Annotated[str | None, typer.Option("--search", "-q")] = None,
    state: Annotated[str | None, typer.Option("--state")] = None,
    limit: int = 100,
) -> None:
    """List devices, optionally filtered by selector, name search or state."""
    page = _with(
        server,
        token,
        lambda c: c.get("/api/v1/devices", selector=selector, q=search, state=state, limit=limit),
    )
    _emit(page["items"], output, DEVICE_COLUMNS, title=f"{page['total']} devices")


@device_app.command("show")
def device_show(
    device_id: str, server: Server = DEFAULT_SERVER, token: Token = None, output: Output = "table"
) -> None:
    """One device: identity, inventory and assignment history."""
    d = _with(server, token, lambda c: c.get(f"/api/v1/devices/{device_id}"))
    if output == "json":
        _emit(d, output, [])
        return
    _emit(
        d,
        output,
        [*DEVICE_COLUMNS, ("Labels", "labels"), ("OS", "os_version"), ("Kernel", "kernel")],
    )
    if d["assignments"]:
        _emit(d["assignments"], output, ASSIGNMENT_COLUMNS, title="Assignments")


@device_app.command("label")
def device_label(
    device_id: str,
    labels: Annotated[list[str], typer.Argument(help="key=value to set, key- to remove")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    """Set or remove operator labels on a device."""
    body: dict[str, Any] = {"set": {}, "remove": []}
    for item in labels:
        if item.endswith("-") and "=" not in item:
            body["remove"].append(item[:-1])
        elif "=" in item:
            k, v = item.split("=", 1)
            body["set"][k] = v
        else:
            fail(errors.InputError(f"expected key=value or key-, got {item!r}"))
    d = _with(server, token, lambda c: c.patch(f"/api/v1/devices/{device_id}/labels", body))
    _emit(d, output, [*DEVICE_COLUMNS, ("Labels", "labels")])


@device_app.command("revoke")
def device_revoke(
    device_id: str, server: Server = DEFAULT_SERVER, token: Token = None, output: Output = "table"
) -> None:
    """Revoke a device and its certificate (takes effect on its next request)."""
    d = _with(server, token, lambda c: c.post(f"/api/v1/devices/{device_id}/revoke"))
    _emit(d, output, DEVICE_COLUMNS)


# -- tokens --------------------------------------------------------------------------------------
TOKEN_COLUMNS = [
    ("ID", "id"),
    ("Name", "name"),
    ("Role", "role"),
    ("Created", "created_at"),
    ("Expires", "expires_at"),
    ("Revoked", "revoked_at"),
]


@token_app.command("create")
def token_create(
    name: str,
    role: Annotated[str, typer.Option(help="viewer, operator, approver or admin")] = "viewer",
    expires_in_days: Annotated[int | None, typer.Option("--expires-in-days")] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    """Create an API token; its value is printed once."""
    t = _with(
        server,
        token,
        lambda c: c.post(
            "/api/v1/tokens", {"name": name, "role": role, "expires_in_days": expires_in_days}
        ),
    )
    if output == "json":
        _emit(t, output, [])
    else:
        out.print(f"Token for [bold]{name}[/bold] ({role}), shown once:\n{t['token']}")


@token_app.command("list")
def token_list(
    server: Server = DEFAULT_SERVER, token: Token = None, output: Output = "table"
) -> None:
    _emit(_with(server, token, lambda c: c.get("/api/v1/tokens")), output, TOKEN_COLUMNS)


@token_app.command("revoke")
def token_revoke(
    token_id: int, server: Server = DEFAULT_SERVER, token: Token = None, output: Output = "table"
) -> None:
    _emit(
        _with(server, token, lambda c: c.post(f"/api/v1/tokens/{token_id}/revoke")),
        output,
        TOKEN_COLUMNS,
    )


@enroll_app.command("create")
def enroll_token_create(
    uses: Annotated[int, typer.Option(help="how many devices may enroll with it")] = 1,
    expires_in_hours: Annotated[int, typer.Option("--expires-in-hours")] = 24,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="key=value given to enrolled devices")
    ] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    """Create an enrollment token for `fleetwarden agent --enroll-token`."""
    labels = dict(item.split("=", 1) for item in (label or []) if "=" in item)
    t = _with(
        server,
        token,
        lambda c: c.post(
            "/api/v1/enrollment-tokens",
            {"uses": uses, "expires_in_hours": expires_in_hours, "labels": labels},
        ),
    )
    if output == "json":
        _emit(t, output, [])
    else:
        out.print(f"Enrollment token (uses: {t['uses']}, expires {t['expires_at']}):\n{t['token']}")


# -- artifacts and releases ---------------------------------------------------------------------
ARTIFACT_COLUMNS = [
    ("ID", "id"),
    ("Name", "name"),
    ("Version", "version"),
    ("Type", "type"),
    ("Size", "size"),
    ("SHA-256", "sha256"),
    ("Models", "compatible_models"),
]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@artifact_app.command("upload")
def artifact_upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    name: Annotated[str, typer.Option(help="artifact name")],
    version: Annotated[str, typer.Option(help="artifact version")],
    type_: Annotated[
        str, typer.Option("--type", help="deb, file, script-module, image, swu, raucb, firmware")
    ] = "file",
    model: Annotated[
        list[str] | None, typer.Option("--model", help="compatible hardware model (repeatable)")
    ] = None,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="key=value, e.g. path=/etc/app.conf")
    ] = None,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    """Upload a file (streamed, with a progress bar; the server checks its SHA-256)."""
    params = {
        "name": name,
        "version": version,
        "type": type_,
        "compatible_model": model or [],
        "meta": meta or [],
    }
    digest = _sha256(file)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(f"uploading {file.name}", total=file.stat().st_size)
        a = _with(
            server,
            token,
            lambda c: c.upload(
                file, params, sha256=digest, progress=lambda n: bar.advance(task, n)
            ),
        )
    _emit(a, output, ARTIFACT_COLUMNS)


@artifact_app.command("delta")
def artifact_delta(
    artifact_id: Annotated[int, typer.Argument(help="the new image artifact")],
    base: Annotated[int, typer.Option("--base", help="the image artifact devices run now")],
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    """Build a binary delta from image BASE to image ARTIFACT_ID on the server (zstd).

    Devices that run BASE are sent the delta instead of the full image from then on; any
    other device, or one that refuses it, gets the full image.
    """
    with err.status("building the delta on the server…"):
        a = _with(
            server,
            token,
            lambda c: c.post(f"/api/v1/artifacts/{artifact_id}/deltas", {"base_id": base}),
        )
    full = int(a.get("meta", {}).get("image_size", 0) or 0)
    if full and output == "table":
        err.print(f"delta: {a['size']:,} bytes, {a['size'] / full:.1%} of the image")
    _emit(a, output, ARTIFACT_COLUMNS)


@artifact_app.command("list")
def artifact_list(
    server: Server = DEFAULT_SERVER, token: Token = None, output: Output = "table"
) -> None:
    _emit(_with(server, token, lambda c: c.get("/api/v1/artifacts")), output, ARTIFACT_COLUMNS)


RELEASE_COLUMNS = [
    ("ID", "id"),
    ("Name", "name"),
    ("Version", "version"),
    ("Artifacts", "artifact_names"),
    ("Created", "created_at"),
]


def _with_names(r: dict[str, Any]) -> dict[str, Any]:
    return r | {"artifact_names": [f"{a['name']}@{a['version']}" for a in r.get("artifacts", [])]}


@release_app.command("create")
def release_create(
    name: str,
    version: str,
    artifact: Annotated[
        list[int],
        typer.Option("--artifact", "-a", help="artifact id (repeatable, in install order)"),
    ],
    health_check: Annotated[
        list[str] | None, typer.Option("--health-check", help="shell command run after install")
    ] = None,
    description: str = "",
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    """Create a release from uploaded artifacts."""
    body = {
        "name": name,
        "version": version,
        "artifacts": artifact,
        "description": description,
        "health_checks": [{"command": ["sh", "-c", c]} for c in (health_check or [])],
    }
    r = _with(server, token, lambda c: c.post("/api/v1/releases", body))
    _emit(_with_names(r), output, RELEASE_COLUMNS)


@release_app.command("list")
def release_list(
    server: Server = DEFAULT_SERVER, token: Token = None, output: Output = "table"
) -> None:
    rows = [_with_names(r) for r in _with(server, token, lambda c: c.get("/api/v1/releases"))]
    _emit(rows, output, RELEASE_COLUMNS)


# -- deploy and assignments ----------------------------------------------------------------------
ASSIGNMENT_COLUMNS = [
    ("ID", "id"),
    ("Device", "device_id"),
    ("Release", "release"),
    ("State", "state"),
    ("Detail", "detail"),
    ("Updated", "updated_at"),
]


@app.command("deploy")
def deploy(
    release: Annotated[str, typer.Argument(help="release id or name@version")],
    selector: Annotated[
        str | None,
        typer.Option("--select", "-l", help="label selector, e.g. 'site=berlin and model=gw-200'"),
    ] = None,
    device: Annotated[
        list[str] | None, typer.Option("--device", "-d", help="device id (repeatable)")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="replace assignments that have not started installing")
    ] = False,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    """Assign a release to devices chosen by selector and/or id."""

    def create(c: ApiClient) -> Any:
        rel = c.get(f"/api/v1/releases/{release}")
        body = {"release_id": rel["id"], "selector": selector, "devices": device, "force": force}
        return c.post("/api/v1/deployments", body)

    d = _with(server, token, create)
    if output == "json":
        _emit(d, output, [])
        return
    out.print(f"Deployment {d['id']}: {d['release']} assigned to {d['assigned']} device(s).")
    for did, why in d["skipped"].items():
        out.print(f"  skipped {did}: {why}")


@assignment_app.command("list")
def assignment_list(
    device: Annotated[str | None, typer.Option("--device", "-d")] = None,
    deployment: Annotated[int | None, typer.Option("--deployment")] = None,
    state: Annotated[str | None, typer.Option("--state")] = None,
    limit: int = 200,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    rows = _with(
        server,
        token,
        lambda c: c.get(
            "/api/v1/assignments", device=device, deployment=deployment, state=state, limit=limit
        ),
    )
    _emit(rows, output, ASSIGNMENT_COLUMNS)


@assignment_app.command("cancel")
def assignment_cancel(
    assignment_id: int,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    """Withdraw an assignment that has not started installing."""
    _emit(
        _with(server, token, lambda c: c.post(f"/api/v1/assignments/{assignment_id}/cancel")),
        output,
        ASSIGNMENT_COLUMNS,
    )


@audit_app.command("list")
def audit_list(
    target_type: Annotated[str | None, typer.Option("--type")] = None,
    target_id: Annotated[str | None, typer.Option("--id")] = None,
    action: str | None = None,
    limit: int = 50,
    server: Server = DEFAULT_SERVER,
    token: Token = None,
    output: Output = "table",
) -> None:
    rows = _with(
        server,
        token,
        lambda c: c.get(
            "/api/v1/audit",
            target_type=target_type,
            target_id=target_id,
            action=action,
            limit=limit,
        ),
    )
    _emit(
        rows,
        output,
        [
            ("ID", "id"),
            ("At", "at"),
            ("Actor", "actor"),
            ("Action", "action"),
            ("Target", "target_type"),
            ("Target id", "target_id"),
        ],
    )
