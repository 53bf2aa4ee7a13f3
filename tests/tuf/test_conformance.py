"""The image repository is standard TUF: a stock python-tuf ``ngclient.Updater``, given only
the server's root.json and URLs, refreshes, finds and downloads a released artifact."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from tuf.api.exceptions import RepositoryError
from tuf.ngclient import Updater

from fleetwarden.core.tuf_rules import image_path
from tests.conftest import LiveServer


def upload(api: httpx.Client, name: str, version: str, data: bytes) -> dict[str, object]:
    r = api.post(
        "/api/v1/artifacts",
        params={"name": name, "version": version, "type": "file", "meta": ["path=/etc/x.conf"]},
        content=data,
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def updater(server: LiveServer, tmp: Path, root: bytes) -> Updater:
    (tmp / "meta").mkdir(exist_ok=True)
    (tmp / "dl").mkdir(exist_ok=True)
    return Updater(
        metadata_dir=str(tmp / "meta"),
        metadata_base_url=f"{server.url}/tuf/metadata/",
        target_dir=str(tmp / "dl"),
        target_base_url=f"{server.url}/tuf/targets/",
        bootstrap=root,
    )


def test_stock_client_downloads_a_released_artifact(live_server: LiveServer, tmp_path: Path):
    data = b"firmware blob\n" * 1000
    with live_server.api() as api:
        art = upload(api, "gw-fw", "1.2.3", data)
        root = httpx.get(f"{live_server.url}/tuf/metadata/1.root.json").content

    u = updater(live_server, tmp_path, root)
    u.refresh()
    path = image_path(int(art["id"]), "gw-fw", "1.2.3")  # type: ignore[call-overload]
    info = u.get_targetinfo(path)
    assert info is not None
    assert info.length == len(data)
    assert info.hashes["sha256"] == hashlib.sha256(data).hexdigest()
    assert info.custom["release_counter"] == 1
    local = u.download_target(info)
    assert Path(local).read_bytes() == data
    # Not signed, not there: a path the repository never released.
    assert u.get_targetinfo("artifacts/999/other-1.0") is None


def test_new_release_appears_after_refresh(live_server: LiveServer, tmp_path: Path):
    with live_server.api() as api:
        root = httpx.get(f"{live_server.url}/tuf/metadata/1.root.json").content
        u = updater(live_server, tmp_path, root)
        u.refresh()
        art = upload(api, "app", "2.0", b"two")
    path = image_path(int(art["id"]), "app", "2.0")  # type: ignore[call-overload]
    u2 = updater(live_server, tmp_path, root)  # a later run of the same client, cached metadata
    u2.refresh()
    info = u2.get_targetinfo(path)
    assert info is not None
    assert Path(u2.download_target(info)).read_bytes() == b"two"


def test_tampered_blob_is_refused_by_the_stock_client(live_server: LiveServer, tmp_path: Path):
    """The blob store alone cannot make a client accept other bytes."""
    data = b"genuine"
    with live_server.api() as api:
        art = upload(api, "tamper", "1.0", data)
        root = httpx.get(f"{live_server.url}/tuf/metadata/1.root.json").content
    sha = hashlib.sha256(data).hexdigest()
    store = live_server.ctx.store
    local = store.local_path(sha)
    assert local is not None
    local.write_bytes(b"evil!!!")  # same length, other bytes
    u = updater(live_server, tmp_path, root)
    u.refresh()
    info = u.get_targetinfo(image_path(int(art["id"]), "tamper", "1.0"))  # type: ignore[call-overload]
    assert info is not None
    with pytest.raises(RepositoryError):
        u.download_target(info)
