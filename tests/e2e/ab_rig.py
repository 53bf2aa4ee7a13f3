"""The A/B slot simulator: a device made of files, driven by a real agent process.

Two slot files, the ``file`` boot loader's environment, and a kernel command line. The agent's
reboot command kills it (``kill -9`` of its parent, i.e. the agent); the rig then plays the
boot loader (``core.ab.boot`` on the environment file, the chosen slot written to the command
line) and starts the agent again, as a device coming back up would. A power cut is the same
without the agent asking for it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from fleetwarden.agent.boot.file import dump_env, load_env
from fleetwarden.core import ab
from fleetwarden.core.ab import BootEnv, SlotState
from tests.e2e.conftest import Proc, ServerProc, spawn
from tests.helpers import deploy, release, upload

SLOTS = ("A", "B")


@dataclass
class SlotDevice:
    dir: Path
    server: ServerProc
    factory_image: bytes
    #: Crash points left to pass before the agent kills itself (0: none).
    crash_budget: int = 0
    boots: list[str] = field(default_factory=list)
    #: Crash points passed by agents that exited since ``restart``.
    passed: int = 0
    _budgeted: bool = False

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.slots = {s: self.dir / f"slot-{s}.img" for s in SLOTS}
        self.slots["A"].write_bytes(self.factory_image)
        self.slots["B"].write_bytes(b"")
        self.env_file = self.dir / "bootenv.json"
        self.env_file.write_bytes(dump_env(BootEnv.fresh(SLOTS, "A")))
        self.cmdline = self.dir / "cmdline"
        self.cmdline.write_text("quiet fleetwarden.slot=A\n")
        self.unhealthy = self.dir / "unhealthy"
        self.counter = self.dir / "crash-count"
        root = self.dir / "root"
        (root / "etc").mkdir(parents=True)
        (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
        self.config = self.dir / "agent.toml"
        self.config.write_text(
            "\n".join(
                [
                    f'server = "{self.server.url}"',
                    f'data_dir = "{self.dir / "agent"}"',
                    f'root = "{root}"',
                    "poll_interval = 0.3",
                    "lean_idle = false",
                    "collect_packages = false",
                    "collect_firmware = false",
                    "reach_server_within = 60",
                    'reboot_command = ["sh", "-c", "kill -9 $PPID"]',
                    "health_checks = [",
                    f'  {{command = ["sh", "-c", "test ! -e {self.unhealthy}"]}},',
                    "]",
                    "[ab]",
                    'bootloader = "file"',
                    f'env_file = "{self.env_file}"',
                    f'cmdline = "{self.cmdline}"',
                    "attempts = 3",
                    f'slots = {{A = "{self.slots["A"]}", B = "{self.slots["B"]}"}}',
                ]
            )
            + "\n"
        )
        self.agent: Proc | None = None
        self.history: list[str] = []

    # -- the device --------------------------------------------------------------------------
    def env(self) -> BootEnv:
        return load_env(self.env_file.read_bytes(), SLOTS, what="rig")

    def booted(self) -> str:
        return self.cmdline.read_text().split("fleetwarden.slot=")[1].split()[0]

    def power_on(self, *, crash_new_slot: bool = False) -> str:
        """The boot loader's turn. With ``crash_new_slot`` a slot on trial "crashes" before
        the agent starts, so the boot loader tries again, until it falls back."""
        while True:
            slot, env = ab.boot(self.env())
            self.env_file.write_bytes(dump_env(env))
            self.cmdline.write_text(f"quiet fleetwarden.slot={slot}\n")
            self.boots.append(slot)
            if crash_new_slot and env.state(slot) is SlotState.TRYING:
                continue
            return slot

    def start(self, enroll_token: str | None = None) -> Proc:
        env = {"FLEETWARDEN_AGENT_HOLD_AT_STEP": ""}
        self._budgeted = bool(self.crash_budget)
        if self._budgeted:
            self.counter.write_text("0")
            env |= {
                "FLEETWARDEN_AGENT_CRASH_AT": str(self.crash_budget),
                "FLEETWARDEN_AGENT_CRASH_COUNT": str(self.counter),
            }
        args = ["agent", "--config", str(self.config)]
        if enroll_token:
            args += ["--enroll-token", enroll_token]
        self.agent = spawn(args, env)
        return self.agent

    def restart(self) -> None:
        """Stop the agent and start it again (no reboot), e.g. to give it a crash budget."""
        self.stop()
        self.passed = 0
        self.start()

    def passed_now(self) -> int:
        """Crash points passed since ``restart``, the running process included."""
        running = int(self.counter.read_text() or 0) if self.counter.exists() else 0
        return self.passed + (running if self._budgeted else 0)

    def _exited(self) -> bool:
        """If the agent died (reboot or crash point): account for it, boot, and restart."""
        if self.agent is None or self.agent.popen.poll() is None:
            return False
        self.agent.stop()
        self.history = [*self.history[-300:], "--- agent exited ---", *self.agent.lines[-100:]]
        if self._budgeted:
            crashed = any("crash point" in line for line in self.agent.lines)
            passed = int(self.counter.read_text() or 0)
            self.passed += passed
            self.crash_budget = 0 if crashed else max(0, self.crash_budget - passed)
        return True

    def run_until(self, done, *, timeout: float = 90, crash_new_slot: bool = False, what=""):
        """Keep the device running (rebooting when the agent asks) until ``done()``."""
        deadline = time.monotonic() + timeout
        while True:
            value = done()
            if value:
                return value
            if self._exited():
                self.power_on(crash_new_slot=crash_new_slot)
                self.start()
            if time.monotonic() > deadline:
                out = "\n".join(self.history[-200:])
                out += "\n--- running agent ---\n" + (self.agent.output() if self.agent else "")
                raise AssertionError(f"timed out waiting for {what}\n{out}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()

    def image_in(self, slot: str) -> bytes:
        return self.slots[slot].read_bytes()


def ship(api: httpx.Client, version: str, image: bytes, selector: str) -> dict:
    """Upload an OS image, make it a release and deploy it; returns the release."""
    art = upload(api, image, name="os", version=version, type_="image")
    rel = release(api, "os", version, [art["id"]])
    deploy(api, rel["id"], selector=selector)
    return rel


def final_assignment(api: httpx.Client, release_label: str) -> dict | None:
    for a in api.get("/api/v1/assignments").json():
        if a["release"] == release_label and a["state"] in {"succeeded", "rolled_back", "failed"}:
            return a
    return None


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def device_release(api: httpx.Client) -> str | None:
    items = api.get("/api/v1/devices").json()["items"]
    return items[0]["installed_release"] if items else None


def dump(device: SlotDevice) -> str:
    return json.dumps(
        {"booted": device.booted(), "boots": device.boots[-10:], "env": str(device.env())}
    )
