"""The CLI's REST client: httpx in, domain errors out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

import fleetwarden
from fleetwarden import errors

__all__ = ["ApiClient"]

_STATUS_ERRORS: dict[int, type[errors.FleetwardenError]] = {
    400: errors.InputError,
    401: errors.AuthenticationError,
    403: errors.PermissionDenied,
    404: errors.NotFoundError,
    409: errors.ConflictError,
    413: errors.PayloadTooLarge,
    422: errors.InputError,
}


class ApiClient:
    def __init__(self, server: str, token: str | None, *, http: httpx.Client | None = None) -> None:
        headers = {"User-Agent": f"fleetwarden-cli/{fleetwarden.__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = http or httpx.Client(base_url=server, timeout=httpx.Timeout(60.0, connect=10.0))
        self.http.headers.update(headers)
        self.server = server

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise errors.TransportError(f"cannot reach {self.server}: {e}") from e
        return self._decode(resp)

    @staticmethod
    def _decode(resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text[:300] or resp.reason_phrase
            if resp.status_code >= 500:
                raise errors.ServerError(f"server error {resp.status_code}: {message}")
            raise _STATUS_ERRORS.get(resp.status_code, errors.InputError)(message)
        return resp.json() if resp.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def upload(
        self, path: Path, params: dict[str, Any], *, sha256: str, progress: Callable[[int], None]
    ) -> Any:
        size = path.stat().st_size

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    progress(len(chunk))
                    yield chunk

        try:
            resp = self.http.post(
                "/api/v1/artifacts",
                params=params,
                content=chunks(),
                headers={
                    "Content-Length": str(size),
                    "X-Content-SHA256": sha256,
                    "Content-Type": "application/octet-stream",
                },
                timeout=httpx.Timeout(None, connect=10.0),
            )
        except httpx.HTTPError as e:
            raise errors.TransportError(f"upload to {self.server} failed: {e}") from e
        return self._decode(resp)
