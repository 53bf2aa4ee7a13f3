"""`fleetwarden keys init|rotate|status` on a server data directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetwarden.main import app
from fleetwarden.server import Settings, create_app
from fleetwarden.server.blobs import MemoryArtifactStore

ENV = {
    "FLEETWARDEN_ROOT_KEY_PASSPHRASE": "correct horse battery",
    "FLEETWARDEN_TUF_KEY_PASSPHRASE": "online key passphrase",
}


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env=ENV)
    assert result.exit_code == 0, result.output
    return result.output


def status(data: Path) -> dict[tuple[str, str], dict[str, object]]:
    rows = json.loads(run("keys", "status", "--data-dir", str(data), "-o", "json"))
    return {(r["repo"], r["role"]): r for r in rows}


def test_init_rotate_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data, offline = tmp_path / "data", tmp_path / "offline"
    out = run("keys", "init", "--data-dir", str(data), "--root-key-dir", str(offline))
    assert "3 root keys (2 needed to sign)" in out
    assert sorted(p.name for p in offline.glob("root-*.pem")) == [
        "root-1.pem",
        "root-2.pem",
        "root-3.pem",
    ]
    # Online keys are encrypted at rest with the configured passphrase, not a file beside them.
    assert b"ENCRYPTED PRIVATE KEY" in (data / "tuf/keys/timestamp.pem").read_bytes()
    assert not (data / "tuf/keys/passphrase").exists()
    before = status(data)
    assert before["image", "root"]["version"] == 1
    assert before["director", "timestamp"]["version"] == 1

    run("keys", "rotate", "timestamp", "--data-dir", str(data), "--root-key-dir", str(offline))
    after = status(data)
    assert after["image", "root"]["version"] == 2
    assert after["director", "root"]["version"] == 2
    assert after["image", "timestamp"]["version"] == 2  # re-signed with the new key

    # A second init is refused: the repositories exist.
    again = CliRunner().invoke(
        app, ["keys", "init", "--data-dir", str(data), "--root-key-dir", str(offline)], env=ENV
    )
    assert again.exit_code != 0
    assert "initialised already" in again.output

    # The server starts on these keys (no development key is created).
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    create_app(
        Settings(data_dir=data, tuf_dev_keys=False),
        store=MemoryArtifactStore(),
        run_background_jobs=False,
    )
    assert not (data / "tuf/root").exists()


def test_production_server_refuses_to_start_without_keys(tmp_path: Path):
    from fleetwarden.errors import ConfigError

    with pytest.raises(ConfigError, match="keys init"):
        create_app(
            Settings(data_dir=tmp_path / "d", tuf_dev_keys=False),
            store=MemoryArtifactStore(),
            run_background_jobs=False,
        )
