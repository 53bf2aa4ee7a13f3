"""The ASGI app factory: the server's composition root."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from sqlalchemy import text
from sqlalchemy.orm import Session

import fleetwarden
from fleetwarden.server.api import device, operator, pki, rollouts, tuf
from fleetwarden.server.api.errors import install_error_handlers
from fleetwarden.server.blobs import ArtifactStore, LocalArtifactStore
from fleetwarden.server.context import Clock, ServerContext, system_clock
from fleetwarden.server.db import Database
from fleetwarden.server.jobs import flush_presence, run_controller, run_jobs, run_tuf_refresh
from fleetwarden.server.leader import Leadership
from fleetwarden.server.metrics import Metrics, RequestMetricsMiddleware
from fleetwarden.server.pki import DeviceCAs, load_or_create_secret
from fleetwarden.server.services import certificates, devices
from fleetwarden.server.settings import Settings
from fleetwarden.server.tuf.service import TufService

__all__ = ["build_context", "create_app"]


def build_context(
    settings: Settings, *, store: ArtifactStore | None = None, clock: Clock = system_clock
) -> ServerContext:
    """Open the database (migrated to head), the CA, the secret and the blob store."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    db.migrate()
    ctx = ServerContext(
        settings=settings,
        db=db,
        store=store or LocalArtifactStore(settings.data_dir / "blobs"),
        ca=DeviceCAs(settings.data_dir / "ca", now=clock()),
        secret=load_or_create_secret(settings.data_dir / "secrets" / "session.key"),
        metrics=Metrics(),
        tuf=TufService(
            db,
            settings.data_dir / "tuf" / "keys",
            image_bin_bits=settings.tuf_image_bin_bits,
            director_bin_bits=settings.tuf_director_bin_bits,
        ),
        clock=clock,
    )

    def sign_changes(s: Session) -> None:
        withdraw = s.info.pop("tuf_withdraw", None)
        if withdraw:
            ctx.tuf.publish_image(s, ctx.clock(), withdraw=withdraw)
        if s.info.pop("tuf_director_changed", False):
            ctx.tuf.publish_director(s, ctx.clock())

    db.before_commit(sign_changes)
    ctx.tuf.bootstrap(
        clock(), dev_root_dir=settings.data_dir / "tuf" / "root" if settings.tuf_dev_keys else None
    )

    def fleet_snapshot() -> tuple[dict[str, int], dict[str, int]]:
        s = devices.summary(ctx)
        return s.states, s.assignments

    ctx.metrics.attach_fleet(fleet_snapshot)
    ctx.metrics.attach_certificates(lambda: certificates.expiry_counts(ctx), clock)
    return ctx


def create_app(
    settings: Settings,
    *,
    store: ArtifactStore | None = None,
    clock: Clock = system_clock,
    run_background_jobs: bool = True,
) -> FastAPI:
    ctx = build_context(settings, store=store, clock=clock)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks = []
        if run_background_jobs:
            leadership = Leadership(ctx.db, settings.data_dir / "controller.lock")
            tasks = [
                asyncio.create_task(run_jobs(ctx)),
                asyncio.create_task(run_controller(ctx, leadership)),
                asyncio.create_task(run_tuf_refresh(ctx)),
            ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):
                flush_presence(ctx)
            ctx.db.dispose()

    app = FastAPI(
        title="fleetwarden",
        version=fleetwarden.__version__,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    install_error_handlers(app)
    # Devices first: routing tries routes in order, and the device poll is the hot path.
    app.include_router(device.router)
    app.include_router(operator.router)
    app.include_router(rollouts.router)
    app.include_router(pki.router)
    app.include_router(tuf.router)
    from fleetwarden.server.web import routes as web

    app.include_router(web.router)
    web.mount_static(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        try:
            with ctx.db.read() as s:
                s.execute(text("SELECT 1"))
        except Exception as e:  # report, do not raise: a balancer only reads the status
            return JSONResponse({"ready": False, "database": str(e)[:200]}, status_code=503)
        return JSONResponse({"ready": True})

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            ctx.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.add_middleware(RequestMetricsMiddleware, metrics=ctx.metrics)
    return app
