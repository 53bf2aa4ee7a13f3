"""Image deltas on the server: built from two images, chosen per device, signed, and dropped
for the full image once a device refused one."""

from __future__ import annotations

import os

from fleetwarden.core.tuf_rules import director_path, image_path
from tests.helpers import deploy, device_headers, enroll, release, upload

V1 = os.urandom(32 * 1024) + bytes(200 * 1024)
V2 = V1[:1000] + os.urandom(64) + V1[1064:] + os.urandom(512)


def _images(api):
    a1 = upload(api, V1, name="os", version="1", type_="image")
    a2 = upload(api, V2, name="os", version="2", type_="image")
    return a1, a2


def _poll(api, dev):
    r = api.get("/device/v1/poll", headers=device_headers(dev))
    assert r.status_code == 200, r.text
    return r.json()["action"]


def _on_release(api, dev, label):
    api.put(
        "/device/v1/inventory",
        json={"hostname": "h", "installed_release": label},
        headers=device_headers(dev),
    ).raise_for_status()


def test_a_device_on_the_base_gets_the_delta_and_others_the_full_image(api, ctx):
    a1, a2 = _images(api)
    r = api.post(f"/api/v1/artifacts/{a2['id']}/deltas", json={"base_id": a1["id"]})
    assert r.status_code == 201, r.text
    delta = r.json()
    assert delta["name"] == "os"
    assert delta["version"] == "2+from.1"
    assert delta["type"] == "image"
    assert delta["size"] < len(V2) // 10
    assert delta["meta"]["delta_base"] == a1["sha256"]
    assert delta["meta"]["image_sha256"] == a2["sha256"]
    release(api, "os", "1", [a1["id"]])
    rel2 = release(api, "os", "2", [a2["id"]])

    on_base, fresh = enroll(api, hostname="on-base"), enroll(api, hostname="fresh")
    _on_release(api, on_base, "os@1")
    deploy(api, rel2["id"], devices=[on_base["device_id"], fresh["device_id"]])
    got = _poll(api, on_base)["artifacts"]
    assert [(a["id"], a["sha256"]) for a in got] == [(delta["id"], delta["sha256"])]
    assert [a["id"] for a in _poll(api, fresh)["artifacts"]] == [a2["id"]]
    # The director signs the delta for that device (and the image for the other).
    with ctx.db.read() as s:
        entries = ctx.tuf.director_entries(s)
    delta_path = director_path(
        on_base["device_id"], image_path(delta["id"], delta["name"], delta["version"])
    )
    full_path = director_path(fresh["device_id"], image_path(a2["id"], "os", "2"))
    assert entries[delta_path].hashes["sha256"] == delta["sha256"]
    assert entries[full_path].hashes["sha256"] == a2["sha256"]
    assert director_path(on_base["device_id"], image_path(a2["id"], "os", "2")) not in entries
    listed = {a["device_id"]: a for a in api.get("/api/v1/assignments").json()}
    assert listed[on_base["device_id"]]["delta_artifact_id"] == delta["id"]
    assert listed[fresh["device_id"]]["delta_artifact_id"] is None


def test_after_a_refused_delta_the_device_gets_the_full_image(api):
    a1, a2 = _images(api)
    api.post(f"/api/v1/artifacts/{a2['id']}/deltas", json={"base_id": a1["id"]})
    release(api, "os", "1", [a1["id"]])
    rel2 = release(api, "os", "2", [a2["id"]])
    dev = enroll(api, hostname="d")
    _on_release(api, dev, "os@1")
    deploy(api, rel2["id"], devices=[dev["device_id"]])
    action = _poll(api, dev)
    assert action["artifacts"][0]["meta"].get("delta_base") == a1["sha256"]
    for state, detail in [
        ("downloading", ""),
        ("failed", "pre-flight: delta refused: the running slot is not its base"),
    ]:
        r = api.post(
            f"/device/v1/assignments/{action['assignment_id']}/status",
            json={"state": state, "detail": detail},
            headers=device_headers(dev),
        )
        assert r.status_code == 200, r.text
    deploy(api, rel2["id"], devices=[dev["device_id"]])
    assert [a["id"] for a in _poll(api, dev)["artifacts"]] == [a2["id"]]


def test_bad_delta_requests_are_refused_by_name(api):
    a1, a2 = _images(api)
    other = upload(api, os.urandom(4096), name="other", version="1", type_="image")
    plain = upload(api, b"x", name="os-conf", version="1")
    unrelated = upload(api, os.urandom(len(V2)), name="os", version="3", type_="image")
    cases = [
        (a2["id"], other["id"], 400, "two versions of one image"),
        (a2["id"], plain["id"], 400, "between two image artifacts"),
        (a2["id"], 99999, 404, "no artifact 99999"),
        (unrelated["id"], a1["id"], 400, "not worth shipping"),
    ]
    for target, base, status, message in cases:
        r = api.post(f"/api/v1/artifacts/{target}/deltas", json={"base_id": base})
        assert r.status_code == status, r.text
        assert message in r.text
    assert api.post(f"/api/v1/artifacts/{a2['id']}/deltas", json={"base_id": a1["id"]}).is_success
    r = api.post(f"/api/v1/artifacts/{a2['id']}/deltas", json={"base_id": a1["id"]})
    assert r.status_code == 409
    assert "already exists" in r.text
