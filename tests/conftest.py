"""Shared fixtures.

Databases: every test that takes ``settings`` (or anything built on it) runs once on SQLite and
once on PostgreSQL (127.0.0.1:5432). Each test gets an empty database: a fresh SQLite file,
or a fresh PostgreSQL database created from a migrated template (fast: a file copy).

Tools: ``require_tool("dpkg")`` skips with a reason on a laptop that lacks the tool, but fails
under ``FLEETWARDEN_REQUIRE_ALL=1`` (set by .ci/run), so CI never silently skips.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fleetwarden.protocol.api import Role, TokenCreate
from fleetwarden.server import Settings, create_app
from fleetwarden.server.blobs import MemoryArtifactStore
from fleetwarden.server.context import ServerContext
from fleetwarden.server.db import Database
from fleetwarden.server.services import tokens

REQUIRE_ALL = os.environ.get("FLEETWARDEN_REQUIRE_ALL") == "1"
PG_ADMIN_URL = os.environ.get(
    "FLEETWARDEN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def require_tool(*names: str) -> None:
    """Skip (laptop) or fail (CI) when a command-line tool the test needs is missing."""
    missing = [n for n in names if shutil.which(n) is None and not Path(n).exists()]
    if missing:
        reason = f"needs {', '.join(missing)} (apt-get install it; .ci/run does)"
        if REQUIRE_ALL:
            pytest.fail(f"FLEETWARDEN_REQUIRE_ALL=1 but {reason}")
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- clock ------------------------------------------------------------------------------------
class FrozenClock:
    """A clock tests move by hand; passed to ``create_app(clock=...)``."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


# -- databases --------------------------------------------------------------------------------
@dataclass
class _PgTemplate:
    engine: sa.Engine
    template: str


_pg_state: dict[str, Any] = {}


def _pg_template() -> _PgTemplate:
    """Create (once per session) a database migrated to head, to clone per test."""
    if "error" in _pg_state:
        raise _pg_state["error"]
    if "template" not in _pg_state:
        try:
            engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with engine.connect() as c:
                c.execute(sa.text("SELECT 1"))
        except Exception as e:  # any failure means "no PostgreSQL here"
            _pg_state["error"] = RuntimeError(f"PostgreSQL at {PG_ADMIN_URL} unreachable: {e}")
            raise _pg_state["error"] from e
        name = f"fwtpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with engine.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        db = Database(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
        db.migrate()
        db.dispose()
        _pg_state["template"] = _PgTemplate(engine, name)
    return _pg_state["template"]


def _pg_clone() -> tuple[str, str]:
    tpl = _pg_template()
    name = f"fwt_{uuid.uuid4().hex[:12]}"
    with tpl.engine.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{tpl.template}"'))
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", name


def _pg_drop(name: str) -> None:
    tpl = _pg_template()
    with tpl.engine.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    tpl = _pg_state.get("template")
    if tpl is not None:
        with tpl.engine.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{tpl.template}" WITH (FORCE)'))
        tpl.engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleetwarden.db'}"
        return
    try:
        url, name = _pg_clone()
    except RuntimeError as e:
        if REQUIRE_ALL:
            pytest.fail(f"FLEETWARDEN_REQUIRE_ALL=1 but {e}")
        pytest.skip(str(e))
    try:
        yield url
    finally:
        _pg_drop(name)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        poll_interval_seconds=30,
        presence_flush_seconds=0.2,
        max_upload_bytes=8 * 1024 * 1024,
        log_format="text",
    )


@pytest.fixture
def app(settings: Settings, clock: FrozenClock) -> FastAPI:
    return create_app(settings, store=MemoryArtifactStore(), clock=clock, run_background_jobs=False)


@pytest.fixture
def ctx(app: FastAPI) -> ServerContext:
    return app.state.ctx  # type: ignore[no-any-return]


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def make_token(ctx: ServerContext, role: Role, name: str | None = None) -> str:
    with ctx.db.write() as s:
        return tokens.create_token(
            s,
            TokenCreate(name=name or f"{role.value}-{uuid.uuid4().hex[:6]}", role=role),
            actor="test",
            now=ctx.clock(),
        ).token


@pytest.fixture
def admin_token(ctx: ServerContext) -> str:
    return make_token(ctx, Role.ADMIN, "admin")


@pytest.fixture
def api(client: TestClient, admin_token: str) -> TestClient:
    """The in-process client with an admin token on every request."""
    client.headers["Authorization"] = f"Bearer {admin_token}"
    return client


# -- a real server on a socket ----------------------------------------------------------------
@dataclass
class LiveServer:
    url: str
    app: FastAPI
    admin_token: str

    @property
    def ctx(self) -> ServerContext:
        return self.app.state.ctx  # type: ignore[no-any-return]

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=30
        )


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """The real app under uvicorn on 127.0.0.1, in a thread of this process."""
    port = free_port()
    app = create_app(settings.model_copy(update={"port": port}))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("live server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(
            f"http://127.0.0.1:{port}", app, make_token(app.state.ctx, Role.ADMIN, "admin")
        )
    finally:
        server.should_exit = True
        thread.join(15)
