"""Run the control plane: prepare once (migrate, bootstrap admin), then serve."""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI

from fleetwarden.server.app import build_context, create_app
from fleetwarden.server.logsetup import configure_logging
from fleetwarden.server.services import tokens
from fleetwarden.server.settings import Settings

__all__ = ["bootstrap_admin_token", "serve"]

log = logging.getLogger("fleetwarden.server")
_SETTINGS_ENV = "FLEETWARDEN__WORKER_SETTINGS"


def bootstrap_admin_token(settings: Settings) -> str | None:
    """Migrate, and create the first admin token if there is none; return it (or None)."""
    ctx = build_context(settings)
    try:
        secret = settings.bootstrap_admin_token
        with ctx.db.write() as s:
            return tokens.bootstrap_admin(
                s, now=ctx.clock(), secret=secret.get_secret_value() if secret else None
            )
    finally:
        ctx.db.dispose()


def _worker_app() -> FastAPI:
    """Factory for extra worker processes, which receive the settings through the env."""
    return _frozen(create_app(Settings.model_validate_json(os.environ[_SETTINGS_ENV])))


def _frozen(app: FastAPI) -> FastAPI:
    """Exempt everything built at start-up from garbage collection, just before serving.

    Modules, models, routes and metadata are a few hundred thousand objects that live as long
    as the process; left in the collector's oldest generation, every full collection walks all
    of them again (tens of milliseconds each, a latency spike for the requests waiting).
    """
    gc.collect()
    gc.freeze()
    return app


def serve(settings: Settings, *, announce: Callable[[str], None] | None = None) -> None:
    """Block serving HTTP until interrupted."""
    configure_logging(settings.log_level, settings.log_format)
    token = bootstrap_admin_token(settings)
    say = announce or (lambda text: print(text, file=sys.stderr, flush=True))
    if token and settings.bootstrap_admin_token is None:
        say(f"Bootstrap admin API token (shown once, store it now): {token}")
    scheme = "https" if settings.tls_cert_file else "http"
    say(f"fleetwarden listening on {scheme}://{settings.host}:{settings.port}  (dashboard: /ui/)")
    tls = {}
    if settings.tls_cert_file and settings.tls_key_file:
        tls = {
            "ssl_certfile": str(settings.tls_cert_file),
            "ssl_keyfile": str(settings.tls_key_file),
        }
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        **tls,
    }
    if settings.workers > 1:
        os.environ[_SETTINGS_ENV] = settings.model_dump_json()
        uvicorn.run(
            "fleetwarden.server.run:_worker_app", factory=True, workers=settings.workers, **common
        )
    else:
        uvicorn.run(_frozen(create_app(settings)), **common)
