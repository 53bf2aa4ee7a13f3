"""Uploads are streamed, content-addressed, verified, bounded and never stored half-way."""

from __future__ import annotations

import hashlib
import socket
import time

from tests.helpers import upload


def test_upload_and_list(api):
    a = upload(api, b"hello", name="hello", version="1.0", models=["gw-200"])
    assert a["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert a["size"] == 5
    assert a["compatible_models"] == ["gw-200"]
    assert [x["id"] for x in api.get("/api/v1/artifacts").json()] == [a["id"]]
    assert api.get(f"/api/v1/artifacts/{a['id']}").json() == a


def _count(api):
    return len(api.get("/api/v1/artifacts").json())


def test_sha256_mismatch_stores_nothing(api, ctx):
    r = api.post(
        "/api/v1/artifacts",
        params={"name": "x", "version": "1", "type": "file", "meta": "path=/x"},
        content=b"abc",
        headers={"X-Content-SHA256": "0" * 64},
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "integrity_mismatch"
    assert _count(api) == 0
    assert not ctx.store.exists(hashlib.sha256(b"abc").hexdigest())


def test_oversized_upload_is_refused(api, settings):
    body = b"x" * (settings.max_upload_bytes + 1)
    r = api.post(
        "/api/v1/artifacts", params={"name": "big", "version": "1", "type": "deb"}, content=body
    )
    assert r.status_code == 413
    assert _count(api) == 0


def test_duplicates_and_bad_metadata(api):
    upload(api, b"1", name="dup", version="1")
    r = api.post(
        "/api/v1/artifacts",
        params={"name": "dup", "version": "1", "type": "file", "meta": "path=/a"},
        content=b"2",
    )
    assert r.status_code == 409
    for meta in (
        [],
        ["path=relative/path"],
        ["path=/etc/../shadow"],
        ["path=/x", "mode=999"],
        ["nokey"],
    ):
        r = api.post(
            "/api/v1/artifacts",
            params={"name": "m", "version": "1", "type": "file", "meta": meta},
            content=b"2",
        )
        assert r.status_code == 400, meta
    r = api.post(
        "/api/v1/artifacts",
        params={"name": "bad name!", "version": "1", "type": "file"},
        content=b"2",
    )
    assert r.status_code == 422
    r = api.post(
        "/api/v1/artifacts", params={"name": "n", "version": "1", "type": "exe"}, content=b"2"
    )
    assert r.status_code == 422
    assert _count(api) == 1


def test_truncated_upload_over_a_real_socket_stores_nothing(live_server):
    host, port = live_server.url.removeprefix("http://").split(":")
    head = (
        f"POST /api/v1/artifacts?name=cut&version=1&type=deb HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {live_server.admin_token}\r\nContent-Length: 100000\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(head + b"y" * 40000)
        time.sleep(0.3)
    time.sleep(0.5)
    with live_server.api() as api:
        assert api.get("/api/v1/artifacts").json() == []
    tmp = live_server.ctx.settings.data_dir / "blobs" / "tmp"
    assert list(tmp.iterdir()) == []


def test_uploads_land_on_disk_by_hash(live_server):
    with live_server.api() as api:
        a = upload(api, b"on disk", name="d", version="1")
    path = live_server.ctx.settings.data_dir / "blobs" / "sha256" / a["sha256"][:2] / a["sha256"]
    assert path.read_bytes() == b"on disk"


def test_releases(api):
    a = upload(api, b"1", name="r-a", version="1")
    b = upload(api, b"2", name="r-b", version="1", type_="script-module")
    r = api.post(
        "/api/v1/releases",
        json={"name": "stack", "version": "2.0", "artifacts": [b["id"], a["id"]]},
    )
    assert r.status_code == 201
    rel = r.json()
    assert [x["name"] for x in rel["artifacts"]] == ["r-b", "r-a"]
    assert api.get("/api/v1/releases/stack@2.0").json()["id"] == rel["id"]
    assert api.get(f"/api/v1/releases/{rel['id']}").json()["name"] == "stack"
    assert (
        api.post(
            "/api/v1/releases", json={"name": "stack", "version": "2.0", "artifacts": [a["id"]]}
        ).status_code
        == 409
    )
    assert (
        api.post(
            "/api/v1/releases", json={"name": "s2", "version": "1", "artifacts": [999]}
        ).status_code
        == 404
    )
    assert (
        api.post(
            "/api/v1/releases", json={"name": "s3", "version": "1", "artifacts": [a["id"], a["id"]]}
        ).status_code
        == 400
    )
    assert (
        api.post(
            "/api/v1/releases", json={"name": "s4", "version": "1", "artifacts": []}
        ).status_code
        == 422
    )
    assert api.get("/api/v1/releases/nope@1").status_code == 404
