"""Leader election for controllers that must act in one place at a time.

PostgreSQL (several replicas): a session-level advisory lock held on a dedicated connection
for as long as this process leads; if that connection dies, the lock is released by the
database and another replica takes over at its next attempt. SQLite (one machine, maybe
several worker processes): an exclusive ``flock`` on a file beside the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from fleetwarden.server.db import Database

__all__ = ["Leadership"]

log = logging.getLogger("fleetwarden.leader")
_LOCK_KEY = 724300102


class Leadership:
    def __init__(self, db: Database, lock_file: Path) -> None:
        self.db = db
        self.lock_file = lock_file
        self._conn: Any = None
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"<Leadership leading={self.leading}>"

    @property
    def leading(self) -> bool:
        return self._conn is not None or self._fd is not None

    def acquire(self) -> bool:
        """Lead, or keep leading; False if another process leads."""
        if self.db.is_sqlite:
            return self._acquire_file()
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
                return True
            except DBAPIError:
                log.warning("lost the controller lock's connection; re-electing")
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
        conn = self.db.engine.connect()
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_KEY}).scalar()
        conn.commit()  # the lock is session-level: it outlives this transaction
        if got:
            self._conn = conn
            log.info("this replica now runs the rollout controller")
            return True
        conn.close()
        return False

    def _acquire_file(self) -> bool:
        if self._fd is not None:
            return True
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                self._conn.commit()
                self._conn.close()
            self._conn = None
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None
