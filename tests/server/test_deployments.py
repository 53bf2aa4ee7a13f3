"""Deployments: which devices get an assignment, which are skipped and why."""

from __future__ import annotations

from tests.helpers import deploy, device_headers, enroll, release, upload


def _inventory(api, dev, **facts):
    body = {"hostname": facts.pop("hostname", "h"), **facts}
    api.put("/device/v1/inventory", json=body, headers=device_headers(dev)).raise_for_status()


def test_selector_deploy_skips_incompatible_and_busy_devices(api):
    berlin = enroll(api, hostname="b1", labels={"site": "berlin"})
    paris = enroll(api, hostname="p1", labels={"site": "paris"})
    madrid = enroll(api, hostname="m1", labels={"site": "madrid"})
    _inventory(api, berlin, hostname="b1", hardware_model="gw-200")
    _inventory(api, paris, hostname="p1", hardware_model="gw-100")
    _inventory(api, madrid, hostname="m1", hardware_model="gw-200")
    art = upload(api, b"fw", name="gw-conf", version="2", models=["gw-200"])
    rel = release(api, "gw", "2", [art["id"]])
    d = deploy(api, rel["id"], selector="site in (berlin,paris)")
    assert d["assigned"] == 1
    assert "not compatible" in d["skipped"][paris["device_id"]]
    # busy: already has an unfinished assignment
    again = deploy(api, rel["id"], selector="site=berlin")
    assert again["assigned"] == 0
    assert "still pending" in again["skipped"][berlin["device_id"]]
    listed = api.get("/api/v1/assignments", params={"deployment": d["id"]}).json()
    assert [a["device_id"] for a in listed] == [berlin["device_id"]]
    deployments = api.get("/api/v1/deployments").json()
    assert deployments[-1]["assigned"] == 1


def test_force_replaces_a_pending_assignment_but_not_an_installing_one(api):
    dev = enroll(api)
    rel1 = release(api, "a", "1", [upload(api, b"1", name="a1", version="1")["id"]])
    rel2 = release(api, "a", "2", [upload(api, b"2", name="a2", version="1")["id"]])
    first = deploy(api, rel1["id"], devices=[dev["device_id"]])
    assert first["assigned"] == 1
    second = deploy(api, rel2["id"], devices=[dev["device_id"]], force=True)
    assert second["assigned"] == 1
    states = {
        a["release"]: a["state"]
        for a in api.get("/api/v1/assignments", params={"device": dev["device_id"]}).json()
    }
    assert states == {"a@1": "cancelled", "a@2": "pending"}
    action = api.get("/device/v1/poll", headers=device_headers(dev)).json()["action"]
    assert action["release_name"] == "a"
    assert action["release_version"] == "2"
    api.post(
        f"/device/v1/assignments/{action['assignment_id']}/status",
        json={"state": "installing"},
        headers=device_headers(dev),
    ).raise_for_status()
    third = deploy(api, rel1["id"], devices=[dev["device_id"]], force=True)
    assert third["assigned"] == 0
    assert "can no longer be cancelled" in third["skipped"][dev["device_id"]]
    r = api.post(f"/api/v1/assignments/{action['assignment_id']}/cancel")
    assert r.status_code == 409


def test_revoked_unknown_and_current_devices_are_skipped(api):
    dev = enroll(api)
    rel = release(api, "x", "1", [upload(api, b"x", name="x", version="1")["id"]])
    done = enroll(api, hostname="done")
    d = deploy(api, rel["id"], devices=[done["device_id"]])
    aid = api.get("/device/v1/poll", headers=device_headers(done)).json()["action"]["assignment_id"]
    for state in ("downloading", "installing", "succeeded"):
        api.post(
            f"/device/v1/assignments/{aid}/status",
            json={"state": state},
            headers=device_headers(done),
        )
    api.post(f"/api/v1/devices/{dev['device_id']}/revoke").raise_for_status()
    d = deploy(api, rel["id"], devices=[dev["device_id"], "dev-missing", done["device_id"]])
    assert d["assigned"] == 0
    assert d["skipped"] == {
        dev["device_id"]: "device is revoked",
        "dev-missing": "no such device",
        done["device_id"]: "already runs x@1",
    }


def test_bad_deploy_requests(api):
    rel = release(api, "y", "1", [upload(api, b"y", name="y", version="1")["id"]])
    r = api.post(
        "/api/v1/deployments", json={"release_id": rel["id"], "selector": "site in (berlin"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_selector"
    assert "position" in r.json()["error"]["message"]
    assert api.post("/api/v1/deployments", json={"release_id": rel["id"]}).status_code == 400
    assert (
        api.post("/api/v1/deployments", json={"release_id": 999, "selector": "a=b"}).status_code
        == 404
    )
    assert (
        api.post(
            "/api/v1/deployments", json={"release_id": rel["id"], "selector": "a=b", "extra": 1}
        ).status_code
        == 422
    )
    assert api.get("/api/v1/deployments").json() == []


def test_device_listing_filters(api):
    a = enroll(api, hostname="alpha", labels={"canary": "true"})
    enroll(api, hostname="beta")
    assert (
        api.get("/api/v1/devices", params={"q": "alp"}).json()["items"][0]["id"] == a["device_id"]
    )
    assert api.get("/api/v1/devices", params={"selector": "canary=true"}).json()["total"] == 1
    assert api.get("/api/v1/devices", params={"selector": "!canary"}).json()["total"] == 1
    assert api.get("/api/v1/devices", params={"state": "online"}).json()["total"] == 2
    assert api.get("/api/v1/devices", params={"selector": "(("}).status_code == 400
    r = api.patch(
        f"/api/v1/devices/{a['device_id']}/labels",
        json={"set": {"zone": "z1"}, "remove": ["canary"]},
    )
    assert r.json()["labels"] == {"zone": "z1"}
    summary = api.get("/api/v1/fleet/summary").json()
    assert summary["total"] == 2
    assert summary["states"]["online"] == 2
