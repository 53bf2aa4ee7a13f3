"""Bad input on every endpoint gets a clear 4xx and stores nothing."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import device_headers, enroll

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _json_operations(app):
    for path, ops in app.openapi()["paths"].items():
        for method, op in ops.items():
            content = op.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                yield method.upper(), path


def _fill(path: str) -> str:
    for name, value in {"{device_id}": "dev-x", "{assignment_id}": "1", "{token_id}": "1"}.items():
        path = path.replace(name, value)
    return path


def _table_counts(ctx):
    from sqlalchemy import func, select

    from fleetwarden.server.models import Base

    with ctx.db.read() as s:
        return {
            t.name: s.scalar(select(func.count()).select_from(t))
            for t in Base.metadata.sorted_tables
        }


def test_malformed_json_on_every_endpoint(app, api, ctx):
    dev = enroll(api)
    headers = {"Content-Type": "application/json"}
    before = _table_counts(ctx)
    ops = list(_json_operations(app))
    assert len(ops) >= 9
    for method, path in ops:
        auth = device_headers(dev) if path.startswith("/device/") else {}
        for body in (b"{not json", b'{"a": ', b"\xff\xfe", b""):
            r = api.request(method, _fill(path), content=body, headers=headers | auth)
            assert r.status_code in (400, 422), (method, path, body, r.status_code, r.text)
            assert "error" in r.json()
        for body in ("[]", "null", "42", json.dumps({"unexpected": "x" * 10})):
            r = api.request(method, _fill(path), content=body, headers=headers | auth)
            assert 400 <= r.status_code < 500, (method, path, body, r.status_code)
    assert _table_counts(ctx) == before


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"state": st.text(max_size=20), "detail": json_values, "progress": json_values}
        ),
        st.fixed_dictionaries(
            {"hostname": json_values, "packages": json_values, "labels": json_values}
        ),
        st.fixed_dictionaries(
            {"enrollment_token": json_values, "csr": st.text(max_size=200), "hostname": json_values}
        ),
    ),
    target=st.sampled_from(["status", "inventory", "enroll", "session"]),
)
def test_device_endpoints_never_fail_on_arbitrary_json(client, admin_token, body, target):
    """Device input is untrusted: any JSON gets a 4xx or a valid answer, never a 500."""
    paths = {
        "status": ("POST", "/device/v1/assignments/1/status"),
        "inventory": ("PUT", "/device/v1/inventory"),
        "enroll": ("POST", "/device/v1/enroll"),
        "session": ("POST", "/device/v1/session"),
    }
    method, path = paths[target]
    r = client.request(method, path, json=body)
    assert r.status_code < 500, r.text


# -- certificate renewal: malformed CSRs ---------------------------------------------------------
def _valid_csr_der() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from fleetwarden.agent.identity import make_csr

    csr = make_csr(ec.generate_private_key(ec.SECP256R1()), "fuzz")
    return x509.load_pem_x509_csr(csr.encode()).public_bytes(serialization.Encoding.DER)


_CSR_DER = _valid_csr_der()


def _pem(der: bytes) -> str:
    import base64

    body = base64.encodebytes(der).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


def _mutated(data: st.DataObject) -> str:
    der = bytearray(_CSR_DER)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(der) - 1))
        der[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(der)))
    return _pem(bytes(der[:cut]))


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_reenroll_never_fails_on_malformed_csrs(api, ctx, data):
    """A renewal CSR is untrusted input: garbage, truncated or bit-flipped CSRs get a 4xx
    (or, when a flip happens to keep the CSR valid, a certificate for the same device),
    never a 500, and the device keeps its current certificate."""
    from sqlalchemy import func, select

    from fleetwarden.server.models import DeviceCertificate

    dev = enroll(api)
    kind = data.draw(st.sampled_from(["text", "binary", "mutated"]))
    if kind == "text":
        csr = data.draw(st.text(min_size=1, max_size=300))
    elif kind == "binary":
        csr = _pem(data.draw(st.binary(min_size=1, max_size=300)))
    else:
        csr = _mutated(data)
    with ctx.db.read() as s:
        before = s.scalar(select(func.count()).select_from(DeviceCertificate))
    r = api.post("/device/v1/reenroll", headers=device_headers(dev), json={"csr": csr})
    assert r.status_code in (200, 400, 422), r.text
    with ctx.db.read() as s:
        after = s.scalar(select(func.count()).select_from(DeviceCertificate))
    assert after == before + (1 if r.status_code == 200 else 0)
    assert api.get("/device/v1/poll", headers=device_headers(dev)).status_code == 200
