"""The baseline of ``checkin.py``: the smallest FastAPI app, one ``GET /bare`` with a small JSON.

Served by ``python -m benchlib.bare_app --port P --workers W`` (from ``bench/``) with the same
uvicorn options as ``fleetwarden.server.run.serve``: default loop and HTTP parser (uvloop and
httptools when installed), no access log, no log config.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.get("/bare")
async def bare() -> dict[str, object]:
    return {"device_id": "bare", "poll_interval_seconds": 300, "action": None}


@app.get("/readyz")
async def readyz() -> dict[str, bool]:
    return {"ready": True}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args()
    common: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": a.port,
        "log_config": None,
        "access_log": False,
    }
    if a.workers > 1:
        uvicorn.run("benchlib.bare_app:app", workers=a.workers, **common)
    else:
        uvicorn.run(app, **common)


if __name__ == "__main__":
    main()
