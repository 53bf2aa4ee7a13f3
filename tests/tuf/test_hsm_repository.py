"""Online TUF keys in a PKCS#11 token (SoftHSM2): `keys init --pkcs11-uri`, then the server
signs everything with keys that never leave the token, and a stock ngclient verifies it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tuf.api.metadata import Metadata, Timestamp
from tuf.ngclient import Updater

from fleetwarden.agent.trust import HttpxFetcher
from fleetwarden.core.tuf_rules import image_path
from fleetwarden.protocol.api import Role
from fleetwarden.server import Settings, create_app
from fleetwarden.server.blobs import MemoryArtifactStore
from fleetwarden.server.db import Database
from fleetwarden.server.tuf.service import TufService
from tests.conftest import FrozenClock, make_token
from tests.softhsm import softhsm_token


def test_server_signs_with_keys_in_a_pkcs11_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
):
    token = softhsm_token(tmp_path, monkeypatch)
    settings = Settings(data_dir=tmp_path / "srv", database_url=database_url, tuf_dev_keys=False)
    clock = FrozenClock()
    settings.data_dir.mkdir()
    db = Database(settings.effective_database_url)
    db.migrate()
    service = TufService(db, settings.data_dir / "tuf" / "keys")
    service.init(
        clock(),
        root_dir=tmp_path / "offline",
        root_passphrase=b"root pass",
        root_keys=3,
        threshold=2,
        pkcs11_uri=token.uri("placeholder"),
    )
    db.dispose()
    keys = settings.data_dir / "tuf" / "keys"
    assert sorted(p.name for p in keys.iterdir() if p.suffix == ".pkcs11") == [
        "director.pkcs11",
        "snapshot.pkcs11",
        "targets.pkcs11",
        "timestamp.pkcs11",
    ]
    assert not list(keys.glob("*.pem"))  # no online private key on disk
    assert len(list((tmp_path / "offline").glob("root-*.pem"))) == 3

    app = create_app(settings, store=MemoryArtifactStore(), clock=clock, run_background_jobs=False)
    with TestClient(app) as client:
        admin = make_token(app.state.ctx, Role.ADMIN, "admin")
        r = client.post(
            "/api/v1/artifacts",
            params={"name": "fw", "version": "1.0", "type": "file", "meta": ["path=/etc/x"]},
            content=b"signed in an HSM",
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert r.status_code == 201, r.text
        root = client.get("/tuf/metadata/1.root.json").content
        assert Metadata.from_bytes(root).signed.roles["root"].threshold == 2
        ts = Metadata[Timestamp].from_bytes(client.get("/tuf/metadata/timestamp.json").content)
        assert next(iter(ts.signatures.values())).signature  # ECDSA from the token
        (tmp_path / "meta").mkdir()
        (tmp_path / "dl").mkdir()
        u = Updater(
            metadata_dir=str(tmp_path / "meta"),
            metadata_base_url="http://testserver/tuf/metadata/",
            target_dir=str(tmp_path / "dl"),
            target_base_url="http://testserver/tuf/targets/",
            fetcher=HttpxFetcher(client),
            bootstrap=root,
        )
        u.refresh()
        info = u.get_targetinfo(image_path(r.json()["id"], "fw", "1.0"))
        assert info is not None
        assert Path(u.download_target(info)).read_bytes() == b"signed in an HSM"
