"""Enrollment with single-use tokens and CSRs; device sessions by proof of possession."""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleetwarden.agent.identity import make_csr
from fleetwarden.core.device_session import signed_message
from fleetwarden.server.pki import DeviceCA
from tests.helpers import enroll, open_session

NOAUTH = {"Authorization": ""}


def _enroll(api, token, key=None, hostname="edge-1"):
    key = key or ec.generate_private_key(ec.SECP256R1())
    return api.post(
        "/device/v1/enroll",
        json={"enrollment_token": token, "csr": make_csr(key, hostname), "hostname": hostname},
        headers=NOAUTH,
    )


def _token(api, **body):
    return api.post("/api/v1/enrollment-tokens", json=body).json()["token"]


def test_enrollment_issues_a_short_lived_client_certificate(api, ctx):
    r = _enroll(api, _token(api, labels={"site": "berlin"}))
    assert r.status_code == 201, r.text
    body = r.json()
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == body["device_id"]
    assert (
        ExtendedKeyUsageOID.CLIENT_AUTH
        in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 29 <= lifetime.days <= 31
    cert.verify_directly_issued_by(ctx.ca.cert)
    device = api.get(f"/api/v1/devices/{body['device_id']}").json()
    assert device["labels"] == {"site": "berlin"}
    assert device["name"] == "edge-1"
    audit = api.get("/api/v1/audit", params={"action": "device.enroll"}).json()
    assert audit[0]["target_id"] == body["device_id"]


def test_subject_comes_from_the_server_not_the_csr(api):
    """A device cannot ask for another device's identity (CSR subject is ignored)."""
    a = _enroll(api, _token(api)).json()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, a["device_id"])]))
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives import serialization

    r = api.post(
        "/device/v1/enroll",
        headers=NOAUTH,
        json={
            "enrollment_token": _token(api),
            "hostname": "evil",
            "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
        },
    )
    assert r.status_code == 201
    assert r.json()["device_id"] != a["device_id"]


def test_single_use_token_cannot_be_reused(api):
    token = _token(api)
    assert _enroll(api, token).status_code == 201
    r = _enroll(api, token)
    assert r.status_code == 401
    assert "already used" in r.json()["error"]["message"]


def test_multi_use_token_allows_exactly_its_uses(api):
    token = _token(api, uses=2)
    assert [_enroll(api, token).status_code for _ in range(3)] == [201, 201, 401]


def test_expired_and_unknown_tokens_are_refused(api, clock):
    token = _token(api, expires_in_hours=1)
    clock.advance(hours=2)
    r = _enroll(api, token)
    assert r.status_code == 401
    assert "expired" in r.json()["error"]["message"]
    assert _enroll(api, "fwe_made_up").status_code == 401
    assert api.get("/api/v1/devices").json()["total"] == 0


def test_bad_csr_is_refused_without_using_up_the_token(api):
    token = _token(api)
    r = api.post(
        "/device/v1/enroll",
        headers=NOAUTH,
        json={
            "enrollment_token": token,
            "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "hostname": "x",
        },
    )
    assert r.status_code == 400
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(rsa_key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives import serialization

    r = api.post(
        "/device/v1/enroll",
        headers=NOAUTH,
        json={
            "enrollment_token": token,
            "hostname": "x",
            "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
        },
    )
    assert r.status_code == 400
    assert "ECDSA" in r.json()["error"]["message"]
    assert _enroll(api, token).status_code == 201  # still usable


def test_session_requires_a_valid_proof(api, tmp_path, clock):
    dev = enroll(api)
    ch = api.post("/device/v1/session/challenge", headers=NOAUTH).json()["challenge"]
    other_key = ec.generate_private_key(ec.SECP256R1())

    def attempt(cert_pem, key, challenge=ch, device_id=dev["device_id"]):
        sig = key.sign(signed_message(challenge, device_id), ec.ECDSA(hashes.SHA256()))
        return api.post(
            "/device/v1/session",
            headers=NOAUTH,
            json={
                "device_id": device_id,
                "certificate": cert_pem,
                "challenge": challenge,
                "signature": base64.b64encode(sig).decode(),
            },
        )

    assert attempt(dev["certificate"], dev["key"]).status_code == 200
    assert attempt(dev["certificate"], other_key).status_code == 401  # wrong key
    # a certificate from an unknown CA, for the same device id
    rogue = DeviceCA.load_or_create(tmp_path / "rogue", now=clock())
    rogue_cert = rogue.issue(
        make_csr(other_key, "x").encode(), device_id=dev["device_id"], now=clock(), days=30
    )
    from cryptography.hazmat.primitives import serialization

    r = attempt(rogue_cert.public_bytes(serialization.Encoding.PEM).decode(), other_key)
    assert r.status_code == 401
    assert "CA" in r.json()["error"]["message"]
    # a forged challenge
    assert attempt(dev["certificate"], dev["key"], challenge=ch[:-2] + "AA").status_code == 401
    # an old challenge
    clock.advance(minutes=10)
    assert attempt(dev["certificate"], dev["key"]).status_code == 401


def test_revocation_takes_effect_at_once(api):
    dev = enroll(api)
    headers = {"Authorization": f"Bearer {dev['token']}"}
    assert api.get("/device/v1/poll", headers=headers).status_code == 200
    r = api.post(f"/api/v1/devices/{dev['device_id']}/revoke")
    assert r.json()["state"] == "revoked"
    assert api.get("/device/v1/poll", headers=headers).status_code == 401
    ch = api.post("/device/v1/session/challenge", headers=NOAUTH).json()["challenge"]
    sig = dev["key"].sign(signed_message(ch, dev["device_id"]), ec.ECDSA(hashes.SHA256()))
    r = api.post(
        "/device/v1/session",
        headers=NOAUTH,
        json={
            "device_id": dev["device_id"],
            "certificate": dev["certificate"],
            "challenge": ch,
            "signature": base64.b64encode(sig).decode(),
        },
    )
    assert r.status_code == 401
    assert "revoked" in r.json()["error"]["message"]


def test_session_tokens_expire(api, clock):
    dev = enroll(api)
    headers = {"Authorization": f"Bearer {dev['token']}"}
    clock.advance(minutes=61)
    assert api.get("/device/v1/poll", headers=headers).status_code == 401
    fresh = open_session(api, dev["device_id"], dev["certificate"], dev["key"])
    assert (
        api.get("/device/v1/poll", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    )
