"""The operator CLI against a live server: verbs, JSON output, exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fleetwarden.main import app
from tests.helpers import enroll

runner = CliRunner()


@pytest.fixture
def database_url(tmp_path):
    return f"sqlite:///{tmp_path / 'fleetwarden.db'}"


@pytest.fixture
def cli(live_server):
    env = {"FLEETWARDEN_SERVER": live_server.url, "FLEETWARDEN_TOKEN": live_server.admin_token}

    def run(*args: str, code: int = 0, **extra_env: str):
        result = runner.invoke(app, list(args), env=env | extra_env)
        assert result.exit_code == code, (args, result.exit_code, result.output)
        return result

    return run


def test_upload_release_deploy_and_list(cli, live_server, tmp_path):
    with live_server.api() as api:
        dev = enroll(api, hostname="cli-dev", labels={"site": "berlin"})
    payload = tmp_path / "app.conf"
    payload.write_bytes(b"x = 1\n" * 1000)
    art = json.loads(
        cli(
            "artifact",
            "upload",
            str(payload),
            "--name",
            "app-conf",
            "--version",
            "1",
            "--type",
            "file",
            "--meta",
            "path=/etc/app.conf",
            "--model",
            "gw-200",
            "-o",
            "json",
        ).stdout
    )
    assert art["size"] == 6000
    assert art["compatible_models"] == ["gw-200"]
    rel = json.loads(
        cli(
            "release",
            "create",
            "app",
            "1",
            "--artifact",
            str(art["id"]),
            "--health-check",
            "true",
            "-o",
            "json",
        ).stdout
    )
    assert rel["health_checks"] == [{"command": ["sh", "-c", "true"], "timeout_seconds": 60}]
    out = cli("deploy", "app@1", "--select", "site=berlin").stdout
    assert "assigned to 0 device(s)" in out
    assert "not compatible" in out  # the device has reported no model yet
    cli("device", "label", dev["device_id"], "canary=true", "site-")
    devices = json.loads(cli("device", "list", "-o", "json", "--select", "canary=true").stdout)
    assert [d["id"] for d in devices] == [dev["device_id"]]
    assert devices[0]["labels"] == {"canary": "true"}
    assert "cli-dev" in cli("device", "list").stdout
    shown = json.loads(cli("device", "show", dev["device_id"], "-o", "json").stdout)
    assert shown["assignments"] == []
    assert json.loads(cli("release", "list", "-o", "json").stdout)[0]["artifact_names"] == [
        "app-conf@1"
    ]
    assert json.loads(cli("artifact", "list", "-o", "json").stdout)[0]["sha256"] == art["sha256"]
    audit = json.loads(cli("audit", "list", "-o", "json").stdout)
    assert {"artifact.upload", "release.create", "deployment.create", "device.label"} <= {
        a["action"] for a in audit
    }


def test_tokens(cli):
    created = json.loads(
        cli("token", "create", "ci-bot", "--role", "operator", "-o", "json").stdout
    )
    assert created["token"].startswith("fwt_")
    assert "ci-bot" in cli("token", "list").stdout
    out = cli("enroll-token", "create", "--uses", "5", "--label", "site=paris").stdout
    assert "fwe_" in out
    cli("token", "revoke", str(created["id"]))
    cli("device", "list", code=3, FLEETWARDEN_TOKEN=created["token"])


def test_errors_exit_with_the_code_of_their_root(cli):
    result = cli("device", "list", "--select", "site in (", code=2)
    assert "position" in result.output
    cli("device", "show", "dev-nope", code=4)
    cli("device", "list", code=3, FLEETWARDEN_TOKEN="fwt_wrong")
    cli("device", "list", code=6, FLEETWARDEN_SERVER="http://127.0.0.1:9")
    cli("device", "label", "dev-x", "notalabel", code=2)
