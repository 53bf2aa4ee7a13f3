"""The real agent state machine against the real app, in-process (no sockets)."""

from __future__ import annotations

import hashlib
import json
import time

from fleetwarden.agent import Step
from tests.agent.conftest import drive
from tests.helpers import deploy, release, upload


def _device(api):
    return api.get("/api/v1/devices").json()["items"][0]


def _file_release(api, content: bytes, version: str, health=None):
    art = upload(
        api,
        content,
        name=f"app-conf-{version}",
        version=version,
        meta=["path=/etc/app.conf", "mode=0640"],
    )
    return release(api, "app", version, [art["id"]], health_checks=health)


def test_enroll_report_inventory_and_install_a_file(api, make_agent, device_root):
    agent = make_agent()
    drive(agent)
    dev = _device(api)
    assert dev["name"] == "lab-1"
    assert dev["os_name"] == "debian"
    assert dev["hardware_model"] == "gw-200"
    assert dev["site"] == "berlin"
    assert dev["labels"] == {"lab": "true"}

    rel = _file_release(api, b"port = 1\n", "1")
    deploy(api, rel["id"], selector="lab=true")
    drive(agent)
    target = device_root / "etc/app.conf"
    assert target.read_bytes() == b"port = 1\n"
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    dev = api.get(f"/api/v1/devices/{dev['id']}").json()
    assert dev["assignments"][0]["state"] == "succeeded"
    assert dev["installed_release"] == "app@1"
    history = [
        e["after"]["state"]
        for e in reversed(api.get("/api/v1/audit", params={"target_type": "assignment"}).json())
    ]
    assert history == ["downloading", "installing", "verifying", "succeeded"]
    # the agent re-sends its inventory after an install, so the server sees the new release
    drive(agent)
    inv = api.get(f"/api/v1/devices/{dev['id']}").json()["inventory"]["inventory"]
    assert inv["installed_release"] == "app@1"
    assert agent.journal.load() is None
    assert not any((agent.config.data_dir / "downloads").iterdir())


def test_failing_health_check_rolls_back_to_the_previous_file(api, make_agent, device_root):
    agent = make_agent()
    drive(agent)
    deploy(api, _file_release(api, b"good\n", "1")["id"], selector="lab=true")
    drive(agent)
    bad = _file_release(
        api,
        b"bad\n",
        "2",
        health=[{"command": ["sh", "-c", 'grep -q good "$FLEETWARDEN_ROOT/etc/app.conf"']}],
    )
    deploy(api, bad["id"], selector="lab=true")
    drive(agent)
    assert (device_root / "etc/app.conf").read_bytes() == b"good\n"
    latest = api.get(f"/api/v1/devices/{_device(api)['id']}").json()
    assert latest["assignments"][0]["state"] == "rolled_back"
    assert "health check" in latest["assignments"][0]["detail"]
    assert latest["installed_release"] == "app@1"
    assert latest["state"] == "failed"


def test_install_of_a_new_file_rolls_back_by_removing_it(api, make_agent, device_root):
    agent = make_agent(health_checks=[{"command": ["false"]}])
    drive(agent)
    deploy(api, _file_release(api, b"x\n", "1")["id"], selector="lab=true")
    drive(agent)
    assert not (device_root / "etc/app.conf").exists()
    assert api.get("/api/v1/assignments").json()[0]["state"] == "rolled_back"


def test_cancel_before_install_abandons_the_job(api, make_agent, device_root):
    agent = make_agent()
    drive(agent)
    deploy(api, _file_release(api, b"x\n", "1")["id"], selector="lab=true")
    agent.run_once()  # poll: the job is journalled
    job = agent.journal.load()
    assert job is not None
    assert job.step is Step.RECEIVED
    aid = job.assignment.assignment_id
    api.post(f"/api/v1/assignments/{aid}/cancel").raise_for_status()
    drive(agent)
    assert agent.journal.load() is None
    assert not (device_root / "etc/app.conf").exists()
    assert api.get("/api/v1/assignments").json()[0]["state"] == "cancelled"


def test_download_resumes_from_a_partial_file(api, make_agent, device_root):
    content = bytes(range(256)) * 4096  # 1 MiB
    agent = make_agent()
    drive(agent)
    deploy(api, _file_release(api, content, "1")["id"], selector="lab=true")
    agent.run_once()  # received
    sha = hashlib.sha256(content).hexdigest()
    downloads = agent.config.data_dir / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    (downloads / f"{sha}.part").write_bytes(content[:300_000])  # as left by a cut connection
    ranges: list[str | None] = []
    agent.client.http.event_hooks["request"].append(
        lambda req: ranges.append(req.headers.get("range"))
    )
    drive(agent)
    assert "bytes=300000-" in ranges
    assert (device_root / "etc/app.conf").read_bytes() == content


def test_download_rate_limit_paces_the_transfer(api, make_agent, device_root):
    """A lower bound only: 600 KiB at 2 MiB/s cannot arrive in under 0.29 s."""
    content = bytes(range(256)) * 2400
    agent = make_agent(download_rate_limit=2 * 1024 * 1024)
    drive(agent)
    deploy(api, _file_release(api, content, "1")["id"], selector="lab=true")
    started = time.monotonic()
    drive(agent)
    assert time.monotonic() - started >= len(content) / (2 * 1024 * 1024)
    assert (device_root / "etc/app.conf").read_bytes() == content


def test_a_corrupt_partial_download_is_detected_and_fetched_again(api, make_agent, device_root):
    content = b"A" * 100_000
    agent = make_agent()
    drive(agent)
    deploy(api, _file_release(api, content, "1")["id"], selector="lab=true")
    agent.run_once()
    sha = hashlib.sha256(content).hexdigest()
    downloads = agent.config.data_dir / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    (downloads / f"{sha}.part").write_bytes(
        b"B" * 50_000
    )  # wrong bytes: resumed file fails its hash
    drive(agent)
    assert (device_root / "etc/app.conf").read_bytes() == content
    assert api.get("/api/v1/assignments").json()[0]["state"] == "succeeded"


def test_script_module_protocol(api, make_agent, device_root):
    module = b"""#!/bin/sh
set -e
log="$FLEETWARDEN_STATE_DIR/calls"
echo "$1" >> "$log"
case "$1" in
  supports-rollback) echo yes ;;
  needs-reboot) echo no ;;
  install) echo "$FLEETWARDEN_ARTIFACT" > "$FLEETWARDEN_ROOT/etc/module-installed" ;;
  rollback) rm -f "$FLEETWARDEN_ROOT/etc/module-installed" ;;
esac
"""
    agent = make_agent()
    drive(agent)
    art = upload(api, module, name="mod", version="1", type_="script-module")
    rel = release(api, "mod", "1", [art["id"]], health_checks=[{"command": ["true"]}])
    deploy(api, rel["id"], selector="lab=true")
    drive(agent)
    assert (device_root / "etc/module-installed").read_text() == "mod@1\n"
    calls = (agent.config.data_dir / "installers/script-module/calls").read_text().split()
    assert calls == ["download", "supports-rollback", "install", "needs-reboot", "commit"]
    art2 = upload(api, module, name="mod", version="2", type_="script-module")
    rel2 = release(api, "mod", "2", [art2["id"]], health_checks=[{"command": ["false"]}])
    deploy(api, rel2["id"], selector="lab=true")
    drive(agent)
    assert not (device_root / "etc/module-installed").exists()
    assert api.get("/api/v1/assignments").json()[0]["state"] == "rolled_back"


def test_unreachable_server_backs_off(tmp_path):
    import httpx

    from fleetwarden.agent import Agent, AgentConfig, DeviceClient, MemoryStore
    from fleetwarden.agent.health import CommandHealthChecker
    from fleetwarden.protocol.device import Inventory

    cfg = AgentConfig(server="http://127.0.0.1:9", data_dir=tmp_path, enroll_token="fwe_x")
    agent = Agent(
        cfg,
        client=DeviceClient(httpx.Client(base_url=cfg.server, timeout=2)),
        store=MemoryStore(),
        installers={},
        inventory=lambda _: Inventory(hostname="h"),
        health=CommandHealthChecker(),
    )
    delays = [agent.run_once() for _ in range(3)]
    assert all(d > 0 for d in delays)
    assert delays[2] > delays[0] / 2  # grows (with jitter)


def test_journal_survives_as_json(tmp_path):
    from fleetwarden.agent import FileStore, Job
    from fleetwarden.agent.journal import Journal

    journal = Journal(FileStore(tmp_path))
    job = Job(
        action={
            "assignment_id": 1,
            "state": "pending",
            "release_name": "a",
            "release_version": "1",
            "artifacts": [],
        }
    )
    job.step = Step.PREPARED
    journal.save(job)
    raw = json.loads((tmp_path / "journal.json").read_text())
    assert raw["step"] == "prepared"
    assert journal.load() == job
    assert oct((tmp_path / "journal.json").stat().st_mode & 0o777) == "0o600"


def test_corrupted_blob_on_the_server_is_refused_and_nothing_installed(
    live_server, tmp_path, device_root
):
    """A sha256 mismatch on download (a tampered blob store): the agent retries, then reports
    failed with the reason, and the device is left as it was."""
    import httpx

    from fleetwarden.agent import Agent, AgentConfig, CommandHealthChecker, DeviceClient, FileStore
    from fleetwarden.agent.installers import default_installers
    from fleetwarden.protocol.device import Inventory

    with live_server.api() as api:
        token = api.post("/api/v1/enrollment-tokens", json={}).json()["token"]
        art = upload(api, b"genuine content\n", name="cfg", version="1")
        blob = (
            live_server.ctx.settings.data_dir / "blobs/sha256" / art["sha256"][:2] / art["sha256"]
        )
        blob.write_bytes(b"tampered content")  # same length is not required: size differs too
        cfg = AgentConfig(
            server=live_server.url,
            data_dir=tmp_path / "a",
            enroll_token=token,
            root=device_root,
            poll_interval=0.1,
        )
        with httpx.Client(base_url=live_server.url) as http:
            agent = Agent(
                cfg,
                client=DeviceClient(http),
                store=FileStore(cfg.data_dir / "state"),
                installers=default_installers(),
                inventory=lambda _: Inventory(hostname="t"),
                health=CommandHealthChecker(),
            )
            drive(agent)
            deploy(api, release(api, "cfg", "1", [art["id"]])["id"], selector="name=t")
            drive(agent)
        final = api.get("/api/v1/assignments").json()[0]
    assert final["state"] == "failed"
    assert "3 times" in final["detail"]
    assert not (device_root / "etc/demo.conf").exists()
