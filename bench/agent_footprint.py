"""Agent footprint: resident memory and idle CPU of one real ``fleetwarden agent`` process.

Starts a server (SQLite, temporary data dir), runs one agent against it with an enrollment
token, a scratch ``--root`` and data dir in a temporary directory (it never touches the real
system) and inventory collection that runs no tools (no dpkg-query, no fwupdmgr: the agent's
configuration file turns packages and firmware off). Once the agent has enrolled and settled,
samples its VmRSS and its utime+stime over a window (60 s; 20 s with ``--quick``) while it
idle-polls every 5 s.

Baseline: the RSS of ``python -c "import httpx, time; time.sleep(30)"`` (same interpreter),
measured in the same run. Prints one JSON line: figure = agent RSS in MiB (the largest sample),
target 40, ratio = agent/bare; extra keys cpu_percent and cpu_target (0.5).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchlib.common import FLEETWARDEN, Proc, cpu_seconds, emit, note, rss_mb, start_server

TARGET_RSS_MB = 40.0
TARGET_CPU_PERCENT = 0.5
POLL_INTERVAL = 5
_ENROLLED = re.compile(r"enrolled as (\S+)")


def bare_rss() -> float:
    """RSS of a bare interpreter that imported httpx, the agent's one heavy dependency."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import httpx, time; print('ready', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None  # noqa: S101
        proc.stdout.readline()
        time.sleep(0.5)
        return rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def polls(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        float(m.group(1))
        for m in re.finditer(r"^fleetwarden_device_polls_total\{[^}]*\} (\S+)$", text, re.MULTILINE)
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="20 s window instead of 60 s")
    p.add_argument("--window", type=float, help="seconds of sampling (60; quick: 20)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    window = args.window or (20.0 if args.quick else 60.0)
    settle = 8.0 if args.quick else 15.0

    tmp = Path(tempfile.mkdtemp(prefix="fw-bench-agent-"))
    root = tmp / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=benchos\nVERSION_ID="1"\n')
    config = tmp / "agent.toml"
    config.write_text(
        'hostname = "bench-agent"\n'
        'hardware_model = "bench"\n'
        "collect_packages = false\n"
        "collect_firmware = false\n"
    )
    try:
        server, url, admin = start_server(tmp / "data")
        with server:
            if admin is None:
                raise RuntimeError("the server printed no bootstrap admin token")
            r = httpx.post(
                url + "/api/v1/enrollment-tokens",
                json={"uses": 1, "note": "bench/agent_footprint.py"},
                headers={"Authorization": f"Bearer {admin}"},
                timeout=30,
            )
            r.raise_for_status()
            argv = [
                str(FLEETWARDEN),
                "agent",
                "--config",
                str(config),
                "--server",
                url,
                "--enroll-token",
                r.json()["token"],
                "--data-dir",
                str(tmp / "agent"),
                "--root",
                str(root),
                "--poll-interval",
                str(POLL_INTERVAL),
            ]
            with Proc(argv, log=tmp / "agent.log") as agent:
                device = agent.wait_for_line(_ENROLLED, timeout=60).group(1)
                note(f"agent {agent.pid} enrolled as {device}; settling {settle:.0f}s")
                time.sleep(settle)
                polls_before, cpu_before = polls(url), cpu_seconds(agent.pid)
                started = time.monotonic()
                samples = []
                while (elapsed := time.monotonic() - started) < window:
                    samples.append(rss_mb(agent.pid))
                    time.sleep(min(1.0, max(0.0, window - elapsed)))
                cpu_after = cpu_seconds(agent.pid)
                elapsed = time.monotonic() - started
                samples.append(rss_mb(agent.pid))
                polls_seen = polls(url) - polls_before
                if agent.popen.poll() is not None:
                    raise RuntimeError(f"the agent exited:\n{agent.output()[-2000:]}")
        bare = bare_rss()
    finally:
        if args.keep:
            note(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rss = max(samples)
    cpu = 100 * (cpu_after - cpu_before) / elapsed
    note(
        f"agent RSS max {rss:.1f} MiB (min {min(samples):.1f}), bare python+httpx {bare:.1f} MiB; "
        f"CPU {cpu:.3f}% over {elapsed:.0f}s, {polls_seen:.0f} polls"
    )
    emit(
        "agent_footprint",
        round(rss, 1),
        "MiB RSS",
        TARGET_RSS_MB,
        round(bare, 1),
        round(rss / bare, 2),
        met=rss <= TARGET_RSS_MB and cpu <= TARGET_CPU_PERCENT,
        cpu_percent=round(cpu, 3),
        cpu_target=TARGET_CPU_PERCENT,
        window_seconds=round(elapsed, 1),
        poll_interval=POLL_INTERVAL,
        polls=int(polls_seen),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
