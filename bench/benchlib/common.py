"""Processes, ports and the one JSON line each benchmark prints."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

import httpx

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent
FLEETWARDEN = VENV_BIN / "fleetwarden"
_TOKEN_LINE = re.compile(r"Bootstrap admin API token[^:]*:\s*(\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def emit(
    bench: str,
    figure: float,
    unit: str,
    target: float,
    baseline: float | None,
    ratio: float | None,
    **extra: Any,
) -> None:
    """Print the benchmark's one JSON line (the required keys first, then extras)."""
    line = {
        "bench": bench,
        "figure": figure,
        "unit": unit,
        "target": target,
        "baseline": baseline,
        "ratio": ratio,
        **extra,
    }
    print(json.dumps(line), flush=True)


def note(text: str) -> None:
    """Progress for people, on stderr (stdout carries only the JSON line)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Proc:
    """A child process in its own process group, with stderr captured to a file."""

    def __init__(
        self,
        argv: list[str],
        *,
        log: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = pattern.search(self.output())
            if m:
                return m
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"process did not print {pattern.pattern!r}:\n{self.output()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM the whole group (uvicorn workers too); SIGKILL after 15 s."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
            except ProcessLookupError:
                pass
        self._log_file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def wait_ready(proc: Proc, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.popen.returncode}:\n{proc.output()[-3000:]}"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s:\n{proc.output()[-3000:]}")


def start_server(
    data_dir: Path,
    *,
    workers: int = 1,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Proc, str, str | None]:
    """Start ``fleetwarden server`` (SQLite in ``data_dir``); return it, its URL and the
    bootstrap admin token (printed only by the first start on an empty data dir). ``env``
    adds ``FLEETWARDEN_*`` settings to the inherited environment."""
    port = free_port()
    argv = [str(FLEETWARDEN), "server", "--data-dir", str(data_dir), "--port", str(port)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    proc = Proc(argv + (extra or []), log=data_dir.parent / f"server-{port}.log", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url + "/readyz")
        m = _TOKEN_LINE.search(proc.output())
    except BaseException:
        proc.stop()
        raise
    return proc, url, m.group(1) if m else None


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (from /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in a process group (a server and its workers)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_mb(pid: int) -> float:
    """VmRSS of one process in MiB (the kernel reports KiB; "MB" in the reports means MiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")
