"""The lean idle poller: what the agent process becomes while it has nothing to do.

The full agent carries pydantic, cryptography and every installer — about 57 MB resident —
which an idle device should not pay for between updates. So when the full agent is idle (no
job in its journal, a session valid for a while, no inventory due soon) it writes a hand-off
(``idle.json``, mode 0600: the session token, the poll ETag, when it must wake) and
``exec``\\ s this module: same PID, same systemd unit, only httpx and the standard library in
memory. It polls with the ETag; while the answer is 304 it sleeps. On anything else — a new
action, an expired session, an error answer — or when the hand-off's wake time comes (session
renewal, inventory), it removes the hand-off and ``exec``\\ s the full agent again, with the
original command line. The journal makes both transitions safe at any moment: a power cut
between them only means the next start is a full one.

Rules:
  1. This module imports nothing that pulls in pydantic or cryptography (checked by a test).
  2. It never decides anything about an update: every answer but 304 goes to the full agent.
  3. Network failures back off exponentially (to 5 minutes) without leaving lean mode.
"""

from __future__ import annotations

import json
import os
import random
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import httpx

__all__ = ["HANDOFF", "main"]

HANDOFF = "idle.json"


def _log(message: str) -> None:
    print(f"fleetwarden-agent (idle): {message}", file=sys.stderr, flush=True)


def _back_to_full(store: Path, handoff: dict[str, Any], reason: str) -> NoReturn:
    _log(f"{reason}; resuming the full agent")
    (store / HANDOFF).unlink(missing_ok=True)
    os.execv(sys.executable, [sys.executable, "-m", "fleetwarden", *handoff["argv"]])


def _client(handoff: dict[str, Any]) -> httpx.Client:
    verify: ssl.SSLContext | bool = True
    if handoff.get("ca_file"):
        verify = ssl.create_default_context(cafile=handoff["ca_file"])
    return httpx.Client(
        base_url=handoff["server"],
        verify=verify,
        timeout=httpx.Timeout(30.0, connect=10.0),
        headers={"User-Agent": handoff.get("user_agent", "fleetwarden-agent")},
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    store = Path(args[0])
    try:
        handoff: dict[str, Any] = json.loads((store / HANDOFF).read_text())
    except (OSError, ValueError, IndexError) as e:
        _log(f"no usable hand-off ({e}); starting the full agent")
        os.execv(sys.executable, [sys.executable, "-m", "fleetwarden", *args[1:]])
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    headers = {"Authorization": f"Bearer {handoff['token']}", "If-None-Match": handoff["etag"]}
    interval, jitter = float(handoff["poll_interval"]), float(handoff.get("jitter", 0.1))
    rng = random.Random()  # noqa: S311 - jitter, not security
    failures = 0
    with _client(handoff) as http:
        while True:
            if time.time() >= handoff["wake_full_at"]:
                _back_to_full(store, handoff, "scheduled work is due")
            try:
                status = http.get("/device/v1/poll", headers=headers).status_code
            except httpx.HTTPError as e:
                failures += 1
                delay = min(300.0, 2.0 ** min(failures, 9)) * (0.5 + rng.random())
                _log(f"server unreachable ({e}); retrying in {delay:.0f}s")
                time.sleep(delay)
                continue
            failures = 0
            if status != 304:
                _back_to_full(store, handoff, f"the server answered {status}")
            time.sleep(interval * (1 + jitter * (2 * rng.random() - 1)))


if __name__ == "__main__":
    main()
