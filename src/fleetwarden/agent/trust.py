"""The agent's TUF client: python-tuf's ngclient over both repositories, and the Uptane-style
cross-check (``core.tuf_rules``) before anything is downloaded.

Trust starts from the two root.json files the device received at enrollment (over the TLS
channel it enrolled on) or was given in its configuration; after that only metadata signed
by keys that root delegates to is believed, whatever the server's database or blob store say.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile
from tuf.ngclient import Updater, UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface

from fleetwarden import errors
from fleetwarden.atomicfile import write_atomic
from fleetwarden.core.tuf_rules import (
    Entry,
    Installed,
    TrustedArtifact,
    check_artifact,
    director_path,
    image_path,
)
from fleetwarden.protocol.device import Action

__all__ = ["HttpxFetcher", "TufTrust"]

log = logging.getLogger("fleetwarden.agent.trust")
_REPOS = {"image": "/tuf", "director": "/tuf/director"}


class HttpxFetcher(FetcherInterface):
    """ngclient's network seam on the agent's own httpx client (its TLS settings and CA)."""

    def __init__(self, http: httpx.Client, timeout: float = 30.0) -> None:
        self.http = http
        self.timeout = timeout

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            with self.http.stream("GET", url, timeout=self.timeout) as resp:
                if resp.status_code != 200:
                    raise tuf_errors.DownloadHTTPError(
                        f"GET {url}: HTTP {resp.status_code}", resp.status_code
                    )
                yield from resp.iter_bytes(64 * 1024)
        except httpx.TimeoutException as e:
            raise tuf_errors.SlowRetrievalError(f"GET {url}: {e}") from e
        except httpx.HTTPError as e:
            raise tuf_errors.DownloadError(f"GET {url}: {e}") from e


class TufTrust:
    """Both repositories for one device; metadata cached under ``directory``."""

    def __init__(self, http: httpx.Client, server: str, directory: Path) -> None:
        self.http = http
        self.server = server.rstrip("/")
        self.directory = directory
        self.fetcher = HttpxFetcher(http)
        self._installed_file = directory / "installed.json"

    def __repr__(self) -> str:
        return f"<TufTrust {self.directory}>"

    # -- roots -------------------------------------------------------------------------------
    def has_roots(self) -> bool:
        return all((self.directory / r / "root.json").exists() for r in _REPOS)

    def install_roots(self, roots: dict[str, str]) -> None:
        """Keep the trusted roots given at enrollment (never replaces a root already held:
        later roots arrive by signed rotation only)."""
        for repo in _REPOS:
            if repo not in roots:
                raise errors.TrustError(f"no {repo} root.json given")
            path = self.directory / repo / "root.json"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                write_atomic(path, roots[repo].encode())

    def fetch_roots_tofu(self) -> None:
        """For a device enrolled before the server signed with TUF: take the current roots
        from the server once, over the channel it already trusts, and pin them."""
        roots = {}
        for repo, prefix in _REPOS.items():
            try:
                resp = self.http.get(f"{self.server}{prefix}/metadata/root.json")
            except httpx.HTTPError as e:
                raise errors.TransportError(f"cannot fetch the {repo} root: {e}") from e
            if resp.status_code != 200:
                raise errors.TransportError(f"cannot fetch the {repo} root: {resp.status_code}")
            roots[repo] = resp.text
        log.warning("no TUF roots held: pinned the server's current roots (trust on first use)")
        self.install_roots(roots)

    def _updater(self, repo: str) -> Updater:
        meta = self.directory / repo
        targets = self.directory / "targets"
        targets.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Updater(
            metadata_dir=str(meta),
            metadata_base_url=f"{self.server}{_REPOS[repo]}/metadata/",
            target_dir=str(targets),
            target_base_url=f"{self.server}/tuf/targets/",
            fetcher=self.fetcher,
            config=UpdaterConfig(app_user_agent="fleetwarden-agent"),
            bootstrap=None,
        )

    # -- installed counters ------------------------------------------------------------------
    def _installed(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self._installed_file.read_bytes())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def record_installed(self, artifacts: list[TrustedArtifact], names: list[str]) -> None:
        """After a committed install: remember each name's counter and path (rule 6)."""
        data = self._installed()
        for art, name in zip(artifacts, names, strict=True):
            data[name] = {"counter": art.counter, "path": art.path}
        write_atomic(self._installed_file, json.dumps(data, sort_keys=True).encode())

    # -- verification ------------------------------------------------------------------------
    def verify(self, action: Action, *, device_id: str, model: str) -> list[TrustedArtifact]:
        """Refresh both repositories and check every artifact of ``action``.

        Raises:
            TrustError: metadata did not verify, or a rule of core.tuf_rules refused.
            TransportError: the repositories could not be reached (retry later).
        """
        if not self.has_roots():
            self.fetch_roots_tofu()
        try:
            image, director = self._updater("image"), self._updater("director")
            image.refresh()
            director.refresh()
            installed_state = self._installed()
            out = []
            for ref in action.artifacts:
                path = image_path(ref.id, ref.name, ref.version)
                prior = installed_state.get(ref.name)
                installed = None
                if isinstance(prior, dict) and isinstance(prior.get("counter"), int):
                    prior_info = image.get_targetinfo(str(prior.get("path", "")))
                    withdrawn = bool(prior_info and prior_info.custom.get("withdrawn"))
                    installed = Installed(int(prior["counter"]), withdrawn)  # type: ignore[call-overload]
                out.append(
                    check_artifact(
                        name=ref.name,
                        path=path,
                        director=_entry(director.get_targetinfo(director_path(device_id, path))),
                        image=_entry(image.get_targetinfo(path)),
                        assignment_id=action.assignment_id,
                        model=model,
                        installed=installed,
                    )
                )
            return out
        except tuf_errors.DownloadError as e:
            if isinstance(e, tuf_errors.DownloadLengthMismatchError):
                raise errors.TrustError(f"TUF metadata refused: {type(e).__name__}: {e}") from e
            raise errors.TransportError(f"TUF repository unreachable: {e}") from e
        except tuf_errors.RepositoryError as e:
            raise errors.TrustError(f"TUF metadata refused: {type(e).__name__}: {e}") from e
        except (OSError, ValueError) as e:
            raise errors.TrustError(f"TUF metadata unusable: {type(e).__name__}: {e}") from e


def _entry(info: TargetFile | None) -> Entry | None:
    if info is None:
        return None
    return Entry(info.length, dict(info.hashes), dict(info.custom))
