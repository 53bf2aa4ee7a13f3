"""Check-in throughput: an idle fleet polling a real fleetwarden server, against a bare endpoint.

1. Start ``fleetwarden server`` (SQLite) in a temporary data dir, enroll N devices through the
   real API (one enrollment token with uses=N) and open a session for each.
2. Poll once per device to learn its ETag.
3. Drive polls with ``wrk`` over keep-alive connections: every request carries one device's own
   session token and last ETag (rotating through all N devices), so nearly every answer is 304,
   as for a real idle fleet; a small share of devices sends no ETag (just restarted: 200).
4. Same load, same headers, against ``GET /bare`` of a minimal FastAPI app under the same
   uvicorn options, in its own process: the baseline. Both with 1 and with 2 workers.

Prints one JSON line: figure = real polls/s of the better worker configuration, baseline = bare
requests/s in that configuration, ratio = real/bare. Target: >= 5,000 polls/s and >= 0.30.
Needs ``wrk`` (Debian: ``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from benchlib.common import BENCH, Proc, emit, free_port, note, start_server, wait_ready
from fleetwarden.agent.identity import make_csr
from fleetwarden.core.device_session import signed_message

TARGET_RPS = 5000.0
TARGET_RATIO = 0.30
_WRK_JSON = re.compile(r"^WRKJSON (\{.*\})$", re.MULTILINE)

# Rotates through every device's prebuilt request; one Lua state per wrk thread, each starting
# at its own offset. `done` prints the numbers as one JSON line for this script to parse.
_LUA = """
local devices = {%(devices)s}
local path = "%(path)s"
local reqs = {}
local i = 0
function setup(thread)
  thread:set("offset", %(offset)s)
end
function init(args)
  for k, d in ipairs(devices) do
    local h = {["Authorization"] = "Bearer " .. d[1]}
    if d[2] ~= "" then h["If-None-Match"] = d[2] end
    reqs[k] = wrk.format("GET", path, h)
  end
  i = tonumber(offset or 0) %% #reqs
end
function request()
  i = i %% #reqs + 1
  return reqs[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, '
    .. '"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


# -- setup: enroll and open sessions through the real API -------------------------------------
def enroll_fleet(url: str, admin: str, n: int) -> list[dict[str, str]]:
    api = httpx.Client(
        base_url=url,
        timeout=60,
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
    )
    r = api.post(
        "/api/v1/enrollment-tokens",
        json={"uses": n, "labels": {"bench": "checkin"}, "note": "bench/checkin.py"},
        headers={"Authorization": f"Bearer {admin}"},
    )
    r.raise_for_status()
    enroll_token = r.json()["token"]

    def one(i: int) -> dict[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        hostname = f"bench-{i:05d}"
        r = api.post(
            "/device/v1/enroll",
            json={
                "enrollment_token": enroll_token,
                "csr": make_csr(key, hostname),
                "hostname": hostname,
            },
        )
        r.raise_for_status()
        body = r.json()
        ch = api.post("/device/v1/session/challenge").json()["challenge"]
        sig = key.sign(signed_message(ch, body["device_id"]), ec.ECDSA(hashes.SHA256()))
        r = api.post(
            "/device/v1/session",
            json={
                "device_id": body["device_id"],
                "certificate": body["certificate"],
                "challenge": ch,
                "signature": base64.b64encode(sig).decode(),
            },
        )
        r.raise_for_status()
        token = r.json()["token"]
        # The first poll: a 200 with the ETag the device sends from now on.
        r = api.get("/device/v1/poll", headers={"Authorization": f"Bearer {token}"})
        r.raise_for_status()
        return {"device_id": body["device_id"], "token": token, "etag": r.headers["etag"]}

    try:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(n)))
    finally:
        api.close()


# -- load ---------------------------------------------------------------------------------------
def write_lua(path: Path, devices: list[dict[str, str]], url_path: str, full_share: float) -> None:
    every = round(1 / full_share) if full_share > 0 else 0
    rows = []
    for k, d in enumerate(devices):
        etag = "" if every and k % every == every - 1 else d["etag"]
        rows.append("{%s,%s}" % (json.dumps(d["token"]), json.dumps(etag)))  # noqa: UP031
    path.write_text(
        _LUA
        % {
            "devices": ",\n".join(rows),
            "path": url_path,
            "offset": "math.random(1, 1000000)",
        }
    )


def wrk(
    url: str, script: Path, *, seconds: float, connections: int, threads: int
) -> dict[str, Any]:
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    import subprocess

    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 60)
    m = _WRK_JSON.search(out.stdout)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    r: dict[str, Any] = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["socket_errors"] = r["connect"] + r["read"] + r["write"] + r["timeout"]
    return r


def poll_counts(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    counts = {}
    for line in text.splitlines():
        m = re.match(r'fleetwarden_device_polls_total\{result="(\d+)"\} (\S+)', line)
        if m:
            counts[m.group(1)] = float(m.group(2))
    return counts


def measure(
    name: str,
    url: str,
    script: Path,
    *,
    seconds: float,
    warmup: float,
    connections: int,
    threads: int,
) -> dict[str, Any]:
    wrk(url, script, seconds=warmup, connections=connections, threads=threads)
    r = wrk(url, script, seconds=seconds, connections=connections, threads=threads)
    note(
        f"{name}: {r['rps']:,.0f} req/s  p50 {r['p50_us'] / 1000:.2f} ms  "
        f"p99 {r['p99_us'] / 1000:.2f} ms  errors: status {r['status']}, socket {r['socket_errors']}"
    )
    return r


def bare_server(workers: int, log: Path) -> tuple[Proc, str]:
    port = free_port()
    argv = [sys.executable, "-m", "benchlib.bare_app", "--port", str(port)]
    argv += ["--workers", str(workers)]
    proc = Proc(argv, log=log, cwd=BENCH)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url + "/readyz")
    except BaseException:
        proc.stop()
        raise
    return proc, url


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short measurements (same scale)")
    p.add_argument("--devices", type=int, default=1000, help="simulated devices (default 1000)")
    p.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--seconds", type=float, help="seconds per measurement (15; quick: 4)")
    p.add_argument("--full-share", type=float, default=0.01, help="polls without ETag")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="configurations")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    if shutil.which("wrk") is None:
        print(
            "bench/checkin.py needs wrk, the HTTP load generator: apt-get install -y wrk",
            file=sys.stderr,
        )
        return 2
    seconds = args.seconds or (4.0 if args.quick else 15.0)
    warmup = 1.0 if args.quick else 3.0
    load = {"seconds": seconds, "warmup": warmup}
    load |= {"connections": args.connections, "threads": args.threads}

    tmp = Path(tempfile.mkdtemp(prefix="fw-bench-checkin-"))
    data = tmp / "data"
    results: dict[int, dict[str, Any]] = {}
    try:
        started = time.monotonic()
        server, url, admin = start_server(data)
        try:
            if admin is None:
                raise RuntimeError("the server printed no bootstrap admin token")
            devices = enroll_fleet(url, admin, args.devices)
            note(f"enrolled {len(devices)} devices in {time.monotonic() - started:.1f}s")
            real_lua, bare_lua = tmp / "real.lua", tmp / "bare.lua"
            write_lua(real_lua, devices, "/device/v1/poll", args.full_share)
            write_lua(bare_lua, devices, "/bare", args.full_share)
            for w in args.workers:
                if w != 1 or server.popen.poll() is not None:
                    server.stop()
                    server, url, _ = start_server(data, workers=w)
                bare_proc, bare_url = bare_server(w, tmp / f"bare-{w}.log")
                with bare_proc:
                    bare = measure(f"bare  workers={w}", bare_url + "/bare", bare_lua, **load)
                before = poll_counts(url) if w == 1 else {}
                real = measure(f"poll  workers={w}", url + "/device/v1/poll", real_lua, **load)
                if real["status"]:
                    raise RuntimeError(f"{real['status']} polls were refused (4xx/5xx)")
                results[w] = {"real": real, "bare": bare}
                if w == 1:
                    after = poll_counts(url)
                    n304 = after.get("304", 0) - before.get("304", 0)
                    n200 = after.get("200", 0) - before.get("200", 0)
                    results[w]["share_304"] = n304 / max(1.0, n304 + n200)
        finally:
            server.stop()
    finally:
        if args.keep:
            note(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    best = max(results, key=lambda w: results[w]["real"]["rps"])
    real, bare = results[best]["real"], results[best]["bare"]
    ratio = real["rps"] / bare["rps"]
    emit(
        "checkin",
        round(real["rps"], 1),
        "polls/s",
        TARGET_RPS,
        round(bare["rps"], 1),
        round(ratio, 3),
        ratio_target=TARGET_RATIO,
        met=real["rps"] >= TARGET_RPS and ratio >= TARGET_RATIO,
        workers=best,
        devices=args.devices,
        connections=args.connections,
        seconds=seconds,
        p50_ms=round(real["p50_us"] / 1000, 2),
        p99_ms=round(real["p99_us"] / 1000, 2),
        bare_p50_ms=round(bare["p50_us"] / 1000, 2),
        bare_p99_ms=round(bare["p99_us"] / 1000, 2),
        share_304=round(results[1]["share_304"], 4) if 1 in results else None,
        configs={
            str(w): {
                "real": round(r["real"]["rps"], 1),
                "bare": round(r["bare"]["rps"], 1),
                "ratio": round(r["real"]["rps"] / r["bare"]["rps"], 3),
            }
            for w, r in results.items()
        },
        cores=_cores(),
    )
    return 0


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
