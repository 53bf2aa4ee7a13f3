"""Small builders shared by server, agent and e2e tests."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from fleetwarden.agent.identity import make_csr


def enroll(
    api: httpx.Client, *, hostname: str = "dev-a", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """Enroll a device through the real API; return ids, key and a session token."""
    token = api.post("/api/v1/enrollment-tokens", json={"labels": labels or {}}).json()["token"]
    key = ec.generate_private_key(ec.SECP256R1())
    r = api.post(
        "/device/v1/enroll",
        json={"enrollment_token": token, "csr": make_csr(key, hostname), "hostname": hostname},
        headers={"Authorization": ""},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    session = open_session(api, body["device_id"], body["certificate"], key)
    return {
        "device_id": body["device_id"],
        "certificate": body["certificate"],
        "key": key,
        "token": session,
    }


def open_session(
    api: httpx.Client, device_id: str, cert_pem: str, key: ec.EllipticCurvePrivateKey
) -> str:
    from cryptography.hazmat.primitives import hashes

    from fleetwarden.core.device_session import signed_message

    ch = api.post("/device/v1/session/challenge", headers={"Authorization": ""}).json()["challenge"]
    sig = key.sign(signed_message(ch, device_id), ec.ECDSA(hashes.SHA256()))
    r = api.post(
        "/device/v1/session",
        json={
            "device_id": device_id,
            "certificate": cert_pem,
            "challenge": ch,
            "signature": base64.b64encode(sig).decode(),
        },
        headers={"Authorization": ""},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def device_headers(device: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {device['token']}"}


def upload(
    api: httpx.Client,
    content: bytes,
    *,
    name: str,
    version: str,
    type_: str = "file",
    meta: list[str] | None = None,
    models: list[str] | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "name": name,
        "version": version,
        "type": type_,
        "meta": meta if meta is not None else (["path=/etc/demo.conf"] if type_ == "file" else []),
    }
    if models:
        params["compatible_model"] = models
    r = api.post(
        "/api/v1/artifacts",
        params=params,
        content=content,
        headers={"X-Content-SHA256": hashlib.sha256(content).hexdigest()},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def release(
    api: httpx.Client,
    name: str,
    version: str,
    artifact_ids: list[int],
    health_checks: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    r = api.post(
        "/api/v1/releases",
        json={
            "name": name,
            "version": version,
            "artifacts": artifact_ids,
            "health_checks": health_checks or [],
        },
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def deploy(
    api: httpx.Client,
    release_id: int,
    *,
    selector: str | None = None,
    devices: list[str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    r = api.post(
        "/api/v1/deployments",
        json={"release_id": release_id, "selector": selector, "devices": devices, "force": force},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())
