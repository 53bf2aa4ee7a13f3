"""Operator authentication and roles on /api/v1."""

from __future__ import annotations

import pytest

from fleetwarden.protocol.api import Role
from tests.conftest import make_token


def _api_routes(app):
    """Every operation the OpenAPI document lists under /api/v1."""
    for path, operations in app.openapi()["paths"].items():
        if path.startswith("/api/v1/"):
            for method in operations:
                yield method.upper(), path


def test_every_api_endpoint_requires_a_token(app, client):
    """Every /api/v1 endpoint requires a token: 401 with a JSON error body."""
    routes = list(_api_routes(app))
    assert len(routes) > 15
    for method, path in routes:
        url = (
            path.replace("{device_id}", "dev-x")
            .replace("{token_id}", "1")
            .replace("{artifact_id}", "1")
            .replace("{assignment_id}", "1")
            .replace("{ref}", "1")
        )
        r = client.request(method, url)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.json()["error"]["code"] == "unauthenticated"
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header", ["Bearer nonsense", "Bearer fwt_unknown", "Basic abc", "Bearer "]
)
def test_bad_tokens_are_refused(client, header):
    r = client.get("/api/v1/devices", headers={"Authorization": header})
    assert r.status_code == 401
    assert "error" in r.json()


def test_roles_are_ordered(client, ctx):
    viewer = {"Authorization": f"Bearer {make_token(ctx, Role.VIEWER)}"}
    operator = {"Authorization": f"Bearer {make_token(ctx, Role.OPERATOR)}"}
    assert client.get("/api/v1/devices", headers=viewer).status_code == 200
    r = client.post("/api/v1/enrollment-tokens", json={}, headers=viewer)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    assert "operator" in r.json()["error"]["message"]
    assert client.post("/api/v1/enrollment-tokens", json={}, headers=operator).status_code == 201
    assert (
        client.post(
            "/api/v1/tokens", json={"name": "x", "role": "viewer"}, headers=operator
        ).status_code
        == 403
    )


def test_token_lifecycle_and_audit(api, client, clock):
    r = api.post("/api/v1/tokens", json={"name": "ci", "role": "operator", "expires_in_days": 1})
    assert r.status_code == 201
    created = r.json()
    secret = created["token"]
    assert secret.startswith("fwt_")
    listed = {t["name"]: t for t in api.get("/api/v1/tokens").json()}
    assert "token" not in listed["ci"]  # the secret is shown once only
    other = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/devices", headers=other).status_code == 200
    # duplicate active name refused
    assert api.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"}).status_code == 409
    # expiry
    clock.advance(days=2)
    assert client.get("/api/v1/devices", headers=other).status_code == 401
    # revocation
    r = api.post(f"/api/v1/tokens/{created['id']}/revoke")
    assert r.json()["revoked_at"] is not None
    actions = [a["action"] for a in api.get("/api/v1/audit").json()]
    assert "token.create" in actions
    assert "token.revoke" in actions


def test_tokens_are_hashed_at_rest(api, ctx):
    from sqlalchemy import select

    from fleetwarden.server.models import ApiToken

    secret = api.post("/api/v1/tokens", json={"name": "h", "role": "viewer"}).json()["token"]
    with ctx.db.read() as s:
        stored = s.scalars(select(ApiToken.token_hash)).all()
    assert secret not in stored
    assert all(len(h) == 64 for h in stored)
