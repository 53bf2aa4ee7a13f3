"""Where the agent keeps its small state documents (identity, journal, installed release).

One seam, two implementations: ``FileStore`` (a directory; every write is atomic and fsynced,
mode 0600) for real devices, ``MemoryStore`` for the thousands of virtual devices of the
simulator.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from fleetwarden.atomicfile import write_atomic

__all__ = ["FileStore", "MemoryStore", "Store"]


class Store(Protocol):
    def read(self, name: str) -> bytes | None: ...
    def write(self, name: str, data: bytes) -> None: ...
    def delete(self, name: str) -> None: ...


class FileStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def __repr__(self) -> str:
        return f"<FileStore {self.dir}>"

    def read(self, name: str) -> bytes | None:
        try:
            return (self.dir / name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        write_atomic(self.dir / name, data, mode=0o600)

    def delete(self, name: str) -> None:
        (self.dir / name).unlink(missing_ok=True)


class MemoryStore:
    def __init__(self) -> None:
        self._docs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def read(self, name: str) -> bytes | None:
        return self._docs.get(name)

    def write(self, name: str, data: bytes) -> None:
        with self._lock:
            self._docs[name] = data

    def delete(self, name: str) -> None:
        with self._lock:
            self._docs.pop(name, None)
