"""The device API after enrollment: poll with ETag, status reports, inventory, downloads."""

from __future__ import annotations

import contextlib
import hashlib

from sqlalchemy import event

from fleetwarden.server.jobs import flush_presence
from tests.helpers import deploy, device_headers, enroll, release, upload


@contextlib.contextmanager
def writes(engine):
    """Collect every INSERT/UPDATE/DELETE the engine sends."""
    seen: list[str] = []

    def before(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def test_unchanged_poll_is_304_and_writes_nothing(api, ctx):
    dev = enroll(api)
    h = device_headers(dev)
    first = api.get("/device/v1/poll", headers=h)
    assert first.status_code == 200
    etag = first.headers["etag"]
    with writes(ctx.db.engine) as stmts:
        for _ in range(5):
            r = api.get("/device/v1/poll", headers=h | {"If-None-Match": etag})
            assert r.status_code == 304
            assert r.headers["etag"] == etag
    assert stmts == []


def test_presence_is_written_in_batches(api, ctx, clock):
    dev = enroll(api)
    clock.advance(minutes=5)
    api.get("/device/v1/poll", headers=device_headers(dev))
    assert flush_presence(ctx) == 1
    seen = api.get(f"/api/v1/devices/{dev['device_id']}").json()["last_seen_at"]
    assert seen.startswith(clock.now.strftime("%Y-%m-%dT%H:%M"))
    assert flush_presence(ctx) == 0


def test_deployment_changes_the_poll_answer(api):
    dev = enroll(api)
    h = device_headers(dev)
    etag = api.get("/device/v1/poll", headers=h).headers["etag"]
    art = upload(api, b"config v1\n", name="app-conf", version="1")
    rel = release(api, "app", "1", [art["id"]], health_checks=[{"command": ["true"]}])
    assert deploy(api, rel["id"], devices=[dev["device_id"]])["assigned"] == 1
    r = api.get("/device/v1/poll", headers=h | {"If-None-Match": etag})
    assert r.status_code == 200
    assert r.headers["etag"] != etag
    action = r.json()["action"]
    assert action["release_name"] == "app"
    assert action["state"] == "pending"
    assert action["artifacts"][0]["sha256"] == hashlib.sha256(b"config v1\n").hexdigest()
    assert action["artifacts"][0]["url"].startswith("/device/v1/artifacts/")
    assert action["health_checks"] == [{"command": ["true"], "timeout_seconds": 60}]


def _assigned(api, content=b"payload", name="app"):
    dev = enroll(api)
    art = upload(api, content, name=f"{name}-conf", version="1")
    rel = release(api, name, "1", [art["id"]])
    deploy(api, rel["id"], devices=[dev["device_id"]])
    action = api.get("/device/v1/poll", headers=device_headers(dev)).json()["action"]
    return dev, action


def test_status_reports_move_the_assignment_forward(api):
    dev, action = _assigned(api)
    h = device_headers(dev)
    url = f"/device/v1/assignments/{action['assignment_id']}/status"
    for state in ["downloading", "installing", "verifying", "succeeded"]:
        r = api.post(url, json={"state": state, "detail": f"now {state}"}, headers=h)
        assert r.status_code == 200, r.text
        assert r.json() == {"state": state, "changed": True}
    # idempotent repeat, and a stale earlier report, change nothing
    assert api.post(url, json={"state": "succeeded"}, headers=h).json()["changed"] is False
    r = api.post(url, json={"state": "installing"}, headers=h)
    assert r.status_code == 409
    device = api.get(f"/api/v1/devices/{dev['device_id']}").json()
    assert device["installed_release"] == "app@1"
    assert device["state"] == "online"
    assert device["assignments"][0]["state"] == "succeeded"
    assert api.get("/device/v1/poll", headers=h).json()["action"] is None
    audit = [
        a["action"] for a in api.get("/api/v1/audit", params={"target_type": "assignment"}).json()
    ]
    assert "assignment.succeeded" in audit


def test_cancelled_assignment_answers_409(api):
    dev, action = _assigned(api)
    api.post(f"/api/v1/assignments/{action['assignment_id']}/cancel").raise_for_status()
    r = api.post(
        f"/device/v1/assignments/{action['assignment_id']}/status",
        json={"state": "downloading"},
        headers=device_headers(dev),
    )
    assert r.status_code == 409
    assert "cancelled" in r.json()["error"]["message"]


def test_a_device_cannot_report_on_another_devices_assignment(api):
    _, action = _assigned(api)
    other = enroll(api, hostname="other")
    r = api.post(
        f"/device/v1/assignments/{action['assignment_id']}/status",
        json={"state": "downloading"},
        headers=device_headers(other),
    )
    assert r.status_code == 404


def test_downloads_honour_range_and_assignment(api):
    content = bytes(range(256)) * 40
    dev, action = _assigned(api, content=content)
    h = device_headers(dev)
    url = action["artifacts"][0]["url"]
    full = api.get(url, headers=h)
    assert full.status_code == 200
    assert full.content == content
    part = api.get(url, headers=h | {"Range": "bytes=100-"})
    assert part.status_code == 206
    assert part.content == content[100:]
    assert part.headers["content-range"] == f"bytes 100-{len(content) - 1}/{len(content)}"
    assert api.get(url, headers=h | {"Range": f"bytes={len(content)}-"}).status_code == 416
    other = enroll(api, hostname="other")
    assert api.get(url, headers=device_headers(other)).status_code == 404
    assert api.get(url).status_code == 401


def test_inventory_is_stored_once_per_change_with_history(api):
    dev = enroll(api)
    h = device_headers(dev)
    inv = {
        "hostname": "edge-1",
        "os_name": "debian",
        "os_version": "12",
        "kernel": "6.1.0",
        "hardware_model": "gw-200",
        "site": "berlin",
        "labels": {"rack": "r1"},
        "packages": [{"name": "openssl", "version": "3.0.15-1~deb12u1", "arch": "amd64"}],
        "firmware": [{"name": "BIOS", "version": "1.2.3", "guids": ["abc"]}],
    }
    first = api.put("/device/v1/inventory", json=inv, headers=h).json()
    assert first["changed"] is True
    assert api.put("/device/v1/inventory", json=inv, headers=h).json() == first | {"changed": False}
    inv2 = inv | {"os_version": "12.8"}
    assert api.put("/device/v1/inventory", json=inv2, headers=h).json()["changed"] is True
    device = api.get(f"/api/v1/devices/{dev['device_id']}").json()
    assert device["os_version"] == "12.8"
    assert device["hardware_model"] == "gw-200"
    assert device["labels"]["rack"] == "r1"
    assert device["inventory"]["inventory"]["packages"][0]["name"] == "openssl"
    history = api.get(f"/api/v1/devices/{dev['device_id']}/inventory").json()
    assert [x["inventory"]["os_version"] for x in history] == ["12.8", "12"]
    # the poll advertises what the server holds, so the agent knows not to resend
    assert (
        api.get("/device/v1/poll", headers=h).json()["inventory_fingerprint"]
        == history[0]["fingerprint"]
    )
    # reported labels feed selectors; operator labels win on a clash
    api.patch(f"/api/v1/devices/{dev['device_id']}/labels", json={"set": {"rack": "r9"}})
    assert (
        api.get("/api/v1/devices", params={"selector": "rack=r9 and model=gw-200"}).json()["total"]
        == 1
    )
