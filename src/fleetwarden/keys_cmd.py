"""``fleetwarden keys …``: the TUF keys, run on the server machine (they open the database and
the key directory directly, and root keys come from offline media; nothing goes over the API).

- ``keys init``: root keys (``--root-keys N --threshold T``) in ``--root-key-dir``, online keys
  in ``<data dir>/tuf/keys`` (files encrypted with ``FLEETWARDEN_TUF_KEY_PASSPHRASE``, or in a
  PKCS#11 token with ``--pkcs11-uri``), and root v1 of both repositories.
- ``keys rotate ROLE``: a new key for ``root``, ``targets``, ``snapshot``, ``timestamp`` or
  ``director``; root N+1 signed by the old root keys (and the new ones for ``root``).
- ``keys status``: version and expiry of every top-level role of both repositories.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from fleetwarden import errors
from fleetwarden.cli.app import _emit, app, fail

__all__ = ["keys_app"]

keys_app = typer.Typer(no_args_is_help=True, help="TUF signing keys: init, rotate, status.")
app.add_typer(keys_app, name="keys")

Config = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="FLEETWARDEN_CONFIG", help="TOML settings file"),
]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="the server's data directory")]
RootDir = Annotated[
    Path, typer.Option("--root-key-dir", help="directory of the root keys (offline media)")
]
ROOT_ENV = "FLEETWARDEN_ROOT_KEY_PASSPHRASE"


def _service(config: Path | None, data_dir: Path | None) -> Any:
    from fleetwarden.server import Settings
    from fleetwarden.server.db import Database
    from fleetwarden.server.tuf.service import TufService

    settings = Settings.load(config, **({"data_dir": data_dir} if data_dir else {}))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    db.migrate()
    return TufService(
        db,
        settings.data_dir / "tuf" / "keys",
        image_bin_bits=settings.tuf_image_bin_bits,
        director_bin_bits=settings.tuf_director_bin_bits,
    )


def _root_passphrase(*, confirm: bool) -> bytes:
    value = os.environ.get(ROOT_ENV) or typer.prompt(
        "Root key passphrase", hide_input=True, confirmation_prompt=confirm
    )
    if len(value) < 8:
        raise errors.ConfigError("the root key passphrase must have at least 8 characters")
    return str(value).encode()


def _status_rows(service: Any) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "repo": r.repo,
            "role": r.role,
            "version": r.version,
            "expires": r.expires.isoformat(),
            "days_left": round((r.expires - now).total_seconds() / 86400, 1),
        }
        for r in service.status()
    ]


COLUMNS = [
    ("Repository", "repo"),
    ("Role", "role"),
    ("Version", "version"),
    ("Expires", "expires"),
    ("Days left", "days_left"),
]


@keys_app.command("init")
def keys_init(
    root_key_dir: RootDir,
    root_keys: Annotated[int, typer.Option(min=1, max=15, help="number of root keys")] = 3,
    threshold: Annotated[int, typer.Option(min=1, help="root signatures required")] = 2,
    pkcs11_uri: Annotated[
        str | None,
        typer.Option("--pkcs11-uri", help="pkcs11:token=...?pin-source=file:... for online keys"),
    ] = None,
    config: Config = None,
    data_dir: DataDir = None,
) -> None:
    """Create the root keys (keep them offline), the online keys and the first roots."""
    try:
        if threshold > root_keys:
            raise errors.ConfigError("--threshold cannot exceed --root-keys")
        service = _service(config, data_dir)
        service.init(
            datetime.now(UTC),
            root_dir=root_key_dir,
            root_passphrase=_root_passphrase(confirm=True),
            root_keys=root_keys,
            threshold=threshold,
            pkcs11_uri=pkcs11_uri,
        )
        typer.echo(
            f"created {root_keys} root keys ({threshold} needed to sign) in {root_key_dir}: "
            "move them to offline media"
        )
        _emit(_status_rows(service), "table", COLUMNS, title="TUF repositories")
    except errors.FleetwardenError as e:
        fail(e)


@keys_app.command("rotate")
def keys_rotate(
    role: Annotated[str, typer.Argument(help="root, targets, snapshot, timestamp or director")],
    root_key_dir: RootDir,
    config: Config = None,
    data_dir: DataDir = None,
) -> None:
    """Replace one role's key; devices follow the new root at their next refresh."""
    try:
        service = _service(config, data_dir)
        versions = service.rotate(
            role,
            datetime.now(UTC),
            root_dir=root_key_dir,
            root_passphrase=_root_passphrase(confirm=False),
        )
        typer.echo(f"rotated the {role} key: root is now version {max(versions)}")
        _emit(_status_rows(service), "table", COLUMNS, title="TUF repositories")
    except errors.FleetwardenError as e:
        fail(e)


@keys_app.command("status")
def keys_status(
    config: Config = None,
    data_dir: DataDir = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json")] = "table",
) -> None:
    """Version and expiry of root, targets, snapshot and timestamp of both repositories."""
    try:
        _emit(_status_rows(_service(config, data_dir)), output, COLUMNS, title="TUF repositories")
    except errors.FleetwardenError as e:
        fail(e)
