"""``fleetwarden ca …``: the device CA (status, rotation), over the REST API."""

from __future__ import annotations

import typer

from fleetwarden.cli.app import DEFAULT_SERVER, Output, Server, Token, _emit, _with, app

__all__ = ["ca_app"]

ca_app = typer.Typer(no_args_is_help=True, help="The device CA: status and rotation.")
app.add_typer(ca_app, name="ca")

CA_COLUMNS = [
    ("Role", "role"),
    ("Key id", "key_id"),
    ("Subject", "subject"),
    ("Expires", "not_after"),
    ("Trusted until", "trusted_until"),
]


@ca_app.command("status")
def ca_status(
    server: Server = DEFAULT_SERVER, token: Token = None, output: Output = "table"
) -> None:
    """The issuing CA and the previous CAs still trusted for device certificates."""
    data = _with(server, token, lambda c: c.get("/api/v1/ca"))
    _emit(data["cas"], output, CA_COLUMNS, title="Device CAs")


@ca_app.command("rotate")
def ca_rotate(
    server: Server = DEFAULT_SERVER, token: Token = None, output: Output = "table"
) -> None:
    """Make a new CA the issuing CA (admin). The previous CA stays trusted until the last
    certificate it issued expires; devices move to the new CA when they renew."""
    data = _with(server, token, lambda c: c.post("/api/v1/ca/rotate"))
    _emit(data["cas"], output, CA_COLUMNS, title="Device CAs")
