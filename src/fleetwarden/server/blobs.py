"""Content-addressed artifact storage (sha256).

``ArtifactStore.put`` is the one public way in: it streams, hashes and bounds the upload,
checks any declared hash and size, and only then makes the blob visible under its sha256.
A failed, oversized or truncated upload leaves nothing behind. Implementations provide the
small abstract hooks: ``LocalArtifactStore`` (a directory, shared between replicas by a
shared filesystem) and ``MemoryArtifactStore`` (tests, demos).
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import io
import os
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from fleetwarden.errors import IntegrityError, NotFoundError, PayloadTooLarge

__all__ = ["ArtifactStore", "BlobInfo", "LocalArtifactStore", "MemoryArtifactStore"]


@dataclass(frozen=True, slots=True)
class BlobInfo:
    sha256: str
    size: int


class ArtifactStore(abc.ABC):
    async def put(
        self,
        chunks: AsyncIterator[bytes],
        *,
        max_bytes: int,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
    ) -> BlobInfo:
        """Store a stream; return its sha256 and size.

        Raises:
            PayloadTooLarge: more than ``max_bytes`` arrived.
            IntegrityError: the content does not match ``expected_sha256``/``expected_size``.
        """
        digest = hashlib.sha256()
        size = 0
        handle = await anyio.to_thread.run_sync(self._begin)
        try:
            async for chunk in chunks:
                size += len(chunk)
                _check_size(size, max_bytes)
                digest.update(chunk)
                await anyio.to_thread.run_sync(self._append, handle, chunk)
            sha = digest.hexdigest()
            _check_integrity(size, sha, expected_size, expected_sha256)
            await anyio.to_thread.run_sync(self._commit, handle, sha)
        except BaseException:
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(self._abort, handle)
            raise
        return BlobInfo(sha, size)

    def size(self, sha256: str) -> int:
        """Raises ``NotFoundError`` if the blob is absent."""
        size = self._size(sha256)
        if size is None:
            raise NotFoundError(f"blob {sha256} is not in the store")
        return size

    def exists(self, sha256: str) -> bool:
        return self._size(sha256) is not None

    def iter_range(
        self, sha256: str, start: int, stop: int, chunk: int = 256 * 1024
    ) -> Iterator[bytes]:
        """Yield the bytes ``[start, stop)`` of a blob."""
        with self._open(sha256) as f:
            f.seek(start)
            remaining = stop - start
            while remaining > 0:
                data = f.read(min(chunk, remaining))
                if not data:
                    return
                remaining -= len(data)
                yield data

    def local_path(self, sha256: str) -> Path | None:  # noqa: ARG002 - a hook
        """A filesystem path to the blob, if the store has one (lets the server use sendfile)."""
        return None

    # -- hooks for implementations ---------------------------------------------------------
    @abc.abstractmethod
    def _begin(self) -> Any: ...
    @abc.abstractmethod
    def _append(self, handle: Any, chunk: bytes) -> None: ...
    @abc.abstractmethod
    def _commit(self, handle: Any, sha256: str) -> None: ...
    @abc.abstractmethod
    def _abort(self, handle: Any) -> None: ...
    @abc.abstractmethod
    def _size(self, sha256: str) -> int | None: ...
    @abc.abstractmethod
    def _open(self, sha256: str) -> BinaryIO: ...


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise PayloadTooLarge(f"upload exceeds the limit of {max_bytes} bytes")


def _check_integrity(
    size: int, sha: str, expected_size: int | None, expected_sha256: str | None
) -> None:
    if expected_size is not None and size != expected_size:
        raise IntegrityError(f"received {size} bytes, expected {expected_size}")
    if expected_sha256 is not None and sha != expected_sha256.lower():
        raise IntegrityError(f"content sha256 is {sha}, expected {expected_sha256}")


class LocalArtifactStore(ArtifactStore):
    """Blobs as files ``<root>/sha256/ab/abcdef…``; partial uploads under ``<root>/tmp``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        (root / "sha256").mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"<LocalArtifactStore {self.root}>"

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise NotFoundError(f"not a sha256: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / sha256

    def _begin(self) -> Any:
        fd, name = _mkstemp(self.root / "tmp")
        return (os.fdopen(fd, "wb"), Path(name))

    def _append(self, handle: Any, chunk: bytes) -> None:
        handle[0].write(chunk)

    def _commit(self, handle: Any, sha256: str) -> None:
        f, tmp = handle
        f.flush()
        os.fsync(f.fileno())
        f.close()
        final = self._path(sha256)
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp, final)  # same content under the same name: re-uploads are harmless

    def _abort(self, handle: Any) -> None:
        f, tmp = handle
        f.close()
        tmp.unlink(missing_ok=True)

    def _size(self, sha256: str) -> int | None:
        try:
            return self._path(sha256).stat().st_size
        except (FileNotFoundError, NotFoundError):
            return None

    def _open(self, sha256: str) -> BinaryIO:
        try:
            return self._path(sha256).open("rb")
        except FileNotFoundError as e:
            raise NotFoundError(f"blob {sha256} is not in the store") from e

    def local_path(self, sha256: str) -> Path | None:
        path = self._path(sha256)
        return path if path.exists() else None


def _mkstemp(directory: Path) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(dir=directory, prefix="upload-")


class MemoryArtifactStore(ArtifactStore):
    """Blobs in a dict: for tests and throwaway demos. Not shared between processes."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<MemoryArtifactStore {len(self._blobs)} blobs>"

    def inject(self, sha256: str, data: bytes) -> None:
        """Store bytes under a name whatever their hash: fault injection for tests that play
        a compromised blob store (what the agent's TUF checks must catch)."""
        with self._lock:
            self._blobs[sha256] = data

    def _begin(self) -> Any:
        return io.BytesIO()

    def _append(self, handle: Any, chunk: bytes) -> None:
        handle.write(chunk)

    def _commit(self, handle: Any, sha256: str) -> None:
        with self._lock:
            self._blobs[sha256] = handle.getvalue()

    def _abort(self, handle: Any) -> None:
        handle.close()

    def _size(self, sha256: str) -> int | None:
        blob = self._blobs.get(sha256)
        return None if blob is None else len(blob)

    def _open(self, sha256: str) -> BinaryIO:
        try:
            return io.BytesIO(self._blobs[sha256])
        except KeyError as e:
            raise NotFoundError(f"blob {sha256} is not in the store") from e
