"""The agent's side of the device API, over an injected ``httpx.Client``.

Injecting the client is the seam: production passes a real one (TLS, timeouts), the tests pass
Starlette's ``TestClient`` around the real app, the simulator shares one pooled client among
thousands of virtual devices. Foreign exceptions stop here (errors.py): httpx transport
failures become ``TransportError``, HTTP error answers the matching domain error.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from fleetwarden import errors
from fleetwarden.agent import crashpoint
from fleetwarden.protocol.device import (
    ChallengeResponse,
    EnrollRequest,
    EnrollResponse,
    Inventory,
    InventoryAck,
    PollResponse,
    ReenrollRequest,
    ReenrollResponse,
    SessionRequest,
    SessionResponse,
    StatusAck,
    StatusReport,
)

__all__ = ["DeviceClient", "PollResult", "sha256_file"]

M = TypeVar("M", bound=BaseModel)
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class PollResult:
    response: PollResponse | None  # None: 304, nothing changed
    etag: str | None


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        message = resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = resp.text[:200] or resp.reason_phrase
    status = resp.status_code
    if status == 401:
        raise errors.AuthenticationError(message)
    if status == 403:
        raise errors.PermissionDenied(message)
    if status == 404:
        raise errors.NotFoundError(message)
    if status == 409:
        code = _error_code(resp)
        if code == errors.Deferred.code:
            retry = resp.headers.get("retry-after", "60")
            raise errors.Deferred(message, float(retry) if retry.isdigit() else 60.0)
        raise errors.IllegalTransition(message)
    if status == 416:
        raise errors.RangeNotSatisfiable(0)
    if status >= 500:
        raise errors.ServerError(f"server answered {status}: {message}")
    raise errors.InputError(f"server refused the request ({status}): {message}")


def _error_code(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


class DeviceClient:
    def __init__(self, http: httpx.Client, *, base_url: str = "") -> None:
        self.http = http
        self.base = base_url.rstrip("/")
        self.token: str | None = None
        self.token_expires: datetime | None = None

    def __repr__(self) -> str:
        return f"<DeviceClient {self.base or self.http.base_url}>"

    def _request(self, method: str, path: str, *, auth: bool = True, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            resp = self.http.request(method, self.base + path, headers=headers, **kw)
        except httpx.TimeoutException as e:
            raise errors.TransportError(f"timed out talking to the server: {e}") from e
        except httpx.HTTPError as e:
            raise errors.TransportError(f"cannot reach the server: {e}") from e
        _raise_for(resp)
        return resp

    @staticmethod
    def _parse(model: type[M], resp: httpx.Response) -> M:
        try:
            return model.model_validate_json(resp.content)
        except ValidationError as e:
            raise errors.ServerError(f"server sent a malformed {model.__name__}: {e}") from e

    # -- identity ------------------------------------------------------------------------------
    def enroll(self, body: EnrollRequest) -> EnrollResponse:
        return self._parse(
            EnrollResponse,
            self._request("POST", "/device/v1/enroll", auth=False, json=body.model_dump()),
        )

    def open_session(
        self, device_id: str, certificate_pem: str, sign: Callable[[str], bytes]
    ) -> SessionResponse:
        ch = self._parse(
            ChallengeResponse, self._request("POST", "/device/v1/session/challenge", auth=False)
        )
        body = SessionRequest(
            device_id=device_id,
            certificate=certificate_pem,
            challenge=ch.challenge,
            signature=base64.b64encode(sign(ch.challenge)).decode(),
        )
        answer = self._parse(
            SessionResponse,
            self._request("POST", "/device/v1/session", auth=False, json=body.model_dump()),
        )
        self.token, self.token_expires = answer.token, answer.expires_at
        return answer

    def reenroll(self, body: ReenrollRequest) -> ReenrollResponse:
        """Renew the device certificate over the current session (EST simplereenroll)."""
        resp = self._request("POST", "/device/v1/reenroll", json=body.model_dump())
        return self._parse(ReenrollResponse, resp)

    # -- work ----------------------------------------------------------------------------------
    def poll(self, etag: str | None) -> PollResult:
        headers = {"If-None-Match": etag} if etag else {}
        resp = self._request("GET", "/device/v1/poll", headers=headers)
        if resp.status_code == 304:
            return PollResult(None, etag)
        return PollResult(self._parse(PollResponse, resp), resp.headers.get("etag"))

    def report(self, assignment_id: int, report: StatusReport) -> StatusAck:
        resp = self._request(
            "POST",
            f"/device/v1/assignments/{assignment_id}/status",
            json=report.model_dump(mode="json"),
        )
        return self._parse(StatusAck, resp)

    def put_inventory(self, inventory: Inventory) -> InventoryAck:
        resp = self._request("PUT", "/device/v1/inventory", json=inventory.model_dump(mode="json"))
        return self._parse(InventoryAck, resp)

    def download(
        self,
        url: str,
        dest: Path,
        *,
        size: int,
        progress: Callable[[int], None] | None = None,
        rate_limit: float | None = None,
    ) -> None:
        """Download to ``dest``, resuming a partial ``dest.part`` with ``Range``, at most
        ``rate_limit`` bytes per second on average if given.

        The hash is checked by the caller's verify step, separately journalled.

        Raises:
            TransportError: the connection failed (the partial file is kept for resuming).
            IntegrityError: more or fewer bytes than promised (the partial file is deleted).
        """
        part = dest.with_name(dest.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have < size:
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with self.http.stream(
                    "GET", self.base + url, headers=headers | self._auth_header()
                ) as resp:
                    if resp.status_code == 200 and have:
                        have = 0  # server ignored the range: start over
                    elif resp.status_code not in (200, 206):
                        resp.read()
                        _raise_for(resp)
                    pace = _Pacer(rate_limit, have)
                    with part.open("r+b" if have else "wb") as f:
                        f.seek(have)
                        f.truncate()
                        for chunk in resp.iter_bytes(_CHUNK):
                            f.write(chunk)
                            have += len(chunk)
                            crashpoint.hit("download.chunk")
                            pace(have)
                            if have > size:
                                break
                            if progress:
                                progress(have)
                        f.flush()
                        os.fsync(f.fileno())
            except httpx.HTTPError as e:
                raise errors.TransportError(f"download interrupted at {have} bytes: {e}") from e
        if part.stat().st_size != size:
            got = part.stat().st_size
            part.unlink(missing_ok=True)
            raise errors.IntegrityError(f"server sent {got} bytes, expected {size}")
        os.replace(part, dest)

    def _auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


class _Pacer:
    """Sleeps as needed to keep a transfer at or under ``rate`` bytes per second."""

    def __init__(self, rate: float | None, start_at: int) -> None:
        self.rate, self.start_at, self.started = rate, start_at, time.monotonic()

    def __call__(self, have: int) -> None:
        if self.rate:
            ahead = (have - self.start_at) / self.rate - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
