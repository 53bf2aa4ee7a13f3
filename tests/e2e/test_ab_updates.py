"""Whole-image A/B updates end to end: a real server, a real agent process, file-backed slots
and the ``file`` boot loader played by the rig (tests/e2e/ab_rig.py)."""

from __future__ import annotations

import os
import random

import pytest

from fleetwarden.core.ab import SlotState
from tests.e2e.ab_rig import SlotDevice, device_release, dump, final_assignment, ship
from tests.e2e.conftest import wait_for
from tests.helpers import deploy, release, upload

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: Trials of the kill test; CI runs the full 200.
TRIALS = int(os.environ.get("FLEETWARDEN_AB_TRIALS", "200"))


@pytest.fixture
def database_url(tmp_path):
    """A/B safety is the agent's property; one database backend is enough here."""
    return f"sqlite:///{tmp_path / 'fleetwarden.db'}"


def _image(version: int) -> bytes:
    rng = random.Random(version)
    return rng.randbytes(32 * 1024) + bytes([version % 256]) * (96 * 1024)


@pytest.fixture
def device(server_process, tmp_path):
    dev = SlotDevice(tmp_path / "device", server_process, _image(0))
    with server_process.api() as api:
        token = api.post("/api/v1/enrollment-tokens", json={"labels": {"rig": "ab"}}).json()[
            "token"
        ]
        dev.start(enroll_token=token)
        wait_for(lambda: api.get("/api/v1/devices").json()["total"] == 1, what="enrollment")
    yield dev
    dev.stop()


def _update(api, dev, version, **run):
    ship(api, str(version), _image(version), "rig=ab")
    return dev.run_until(
        lambda: final_assignment(api, f"os@{version}"), what=f"os@{version} ends", **run
    )


def test_update_succeeds_and_survives_reboots(server_process, device):
    with server_process.api() as api:
        a = _update(api, device, 1)
        assert a["state"] == "succeeded", a
        assert device.booted() == "B"
        assert device.image_in("B") == _image(1)
        assert device.env().state("B") is SlotState.GOOD
        wait_for(lambda: device_release(api) == "os@1", what="inventory")
        # The server shows the slots as the device's boot environment has them.
        dev_id = api.get("/api/v1/devices").json()["items"][0]["id"]
        slots = api.get(f"/api/v1/devices/{dev_id}").json()["inventory"]["inventory"]["slots"]
        assert {(s["name"], s["state"], s["booted"], s["primary"]) for s in slots} == {
            ("A", "good", False, False),
            ("B", "good", True, True),
        }
        a = _update(api, device, 2)  # and back into A
        assert a["state"] == "succeeded", a
        assert device.booted() == "A"
        assert device.image_in("A") == _image(2)


def test_failed_health_check_rolls_back_to_the_old_slot(server_process, device):
    device.unhealthy.write_text("the new image's service does not start")
    with server_process.api() as api:
        a = _update(api, device, 1)
        assert a["state"] == "rolled_back", a
        assert "health check" in a["detail"]
        device.unhealthy.unlink()
        device.run_until(lambda: device.booted() == "A", what="back on A")
        assert device.env().state("B") is SlotState.BAD
        assert device.image_in("A") == _image(0)


def test_a_slot_that_crashes_at_boot_falls_back_after_three_tries(server_process, device):
    with server_process.api() as api:
        a = _update(api, device, 1, crash_new_slot=True)
        assert a["state"] == "rolled_back", a
        assert "fell back to slot A" in a["detail"], a
        assert device.boots[-4:] == ["B", "B", "B", "A"]
        assert device.booted() == "A"
        assert device_release(api) != "os@1"


def test_delta_update_and_fallback_to_the_full_image(server_process, device):
    with server_process.api() as api:
        assert _update(api, device, 1)["state"] == "succeeded"  # full image into B
        wait_for(lambda: device_release(api) == "os@1", what="inventory")
        arts = {a["version"]: a for a in api.get("/api/v1/artifacts").json()}
        v2 = upload(api, _image(2), name="os", version="2", type_="image")
        r = api.post(f"/api/v1/artifacts/{v2['id']}/deltas", json={"base_id": arts["1"]["id"]})
        assert r.status_code == 201, r.text
        delta = r.json()
        rel2 = release(api, "os", "2", [v2["id"]])
        deploy(api, rel2["id"], selector="rig=ab")
        a = device.run_until(lambda: final_assignment(api, "os@2"), what="os@2 via delta")
        assert a["state"] == "succeeded", a
        assert a["delta_artifact_id"] == delta["id"]
        assert device.image_in(device.booted()) == _image(2)
        wait_for(lambda: device_release(api) == "os@2", what="inventory")

        # A device whose running slot is not what the server thinks: the delta is refused
        # before anything is written, and the next try ships the full image.
        v3 = upload(api, _image(3), name="os", version="3", type_="image")
        api.post(f"/api/v1/artifacts/{v3['id']}/deltas", json={"base_id": v2["id"]})
        rel3 = release(api, "os", "3", [v3["id"]])
        running = device.slots[device.booted()]
        running.write_bytes(b"local change" + running.read_bytes()[12:])
        deploy(api, rel3["id"], selector="rig=ab")
        a = device.run_until(lambda: final_assignment(api, "os@3"), what="os@3 refused")
        assert a["state"] == "failed", a
        assert "delta refused" in a["detail"]
        deploy(api, rel3["id"], selector="rig=ab")
        device.run_until(
            lambda: any(
                x["release"] == "os@3" and x["state"] == "succeeded"
                for x in api.get("/api/v1/assignments").json()
            ),
            what="os@3 full image",
        )
        assert device.image_in(device.booted()) == _image(3)


def test_sigkill_at_random_points_always_leaves_a_good_slot(server_process, device, capsys):
    """Power cuts at random crash points of download, write, switch and commit (and every
    journal write): the device always boots a committed good slot, and the server ends up
    saying what the device runs."""
    rng = random.Random(20261125)
    with server_process.api() as api:
        # One clean update counts the crash points a whole update passes through.
        device.crash_budget = 10**6
        device.restart()
        assert _update(api, device, 1)["state"] == "succeeded"
        points = device.passed_now()
        device.crash_budget = 0
        assert points > 20, points
        outcomes: dict[str, int] = {}
        old, want = _image(1), "os@1"
        for trial in range(TRIALS):
            version = trial + 2
            device.crash_budget = rng.randint(1, points)
            device.restart()
            # The server converged on what the device ran after the previous trial.
            device.run_until(lambda w=want: device_release(api) == w, what=f"inventory {want}")
            a = _update(api, device, version)
            device.crash_budget = 0
            new = _image(version)
            # Power off and on: the device must come up on a committed good slot.
            device.stop()
            booted = device.power_on()
            assert device.env().state(booted) is SlotState.GOOD, dump(device)
            running = device.image_in(booted)
            if a["state"] == "succeeded":
                assert running == new, (trial, a, dump(device))
                old, want = new, f"os@{version}"
            else:
                assert running == old, (trial, a, dump(device))
            outcomes[a["state"]] = outcomes.get(a["state"], 0) + 1
        device.start()
        device.run_until(lambda: device_release(api) == want, what=f"inventory {want}")
        with capsys.disabled():  # the count belongs in the test log, CI's included
            print(f"\nA/B kill trials: {TRIALS} over {points} crash points; outcomes {outcomes}")
        assert sum(outcomes.values()) == TRIALS
        assert outcomes.get("succeeded", 0) > 0
