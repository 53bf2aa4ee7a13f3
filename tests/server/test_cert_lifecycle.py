"""Device certificate lifecycle on the real app: revocation, expiry, foreign CAs, renewal
(EST simplereenroll semantics), the CRL, CA rotation with overlap, and expiry monitoring."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleetwarden.agent.identity import make_csr
from fleetwarden.core.device_session import signed_message
from fleetwarden.server.pki import DeviceCA
from tests.helpers import enroll

NOAUTH = {"Authorization": ""}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _session(api, device_id: str, cert_pem: str, key: ec.EllipticCurvePrivateKey):
    """Try to open a session; return the raw response."""
    ch = api.post("/device/v1/session/challenge", headers=NOAUTH).json()["challenge"]
    sig = key.sign(signed_message(ch, device_id), ec.ECDSA(hashes.SHA256()))
    return api.post(
        "/device/v1/session",
        headers=NOAUTH,
        json={
            "device_id": device_id,
            "certificate": cert_pem,
            "challenge": ch,
            "signature": base64.b64encode(sig).decode(),
        },
    )


def _reenroll(api, token: str, csr: str):
    return api.post("/device/v1/reenroll", headers=_bearer(token), json={"csr": csr})


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _serial(pem: str) -> int:
    return _cert(pem).serial_number


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _poll(api, token: str) -> int:
    return api.get("/device/v1/poll", headers=_bearer(token)).status_code


def _renew(api, dev):
    """Renew with a new key and open a session with it; return the new device dict."""
    key = ec.generate_private_key(ec.SECP256R1())
    r = _reenroll(api, dev["token"], make_csr(key, "anything"))
    assert r.status_code == 200, r.text
    cert_pem = r.json()["certificate"]
    s = _session(api, dev["device_id"], cert_pem, key)
    assert s.status_code == 200, s.text
    return dev | {"certificate": cert_pem, "key": key, "token": s.json()["token"]}


def _crl(api, path: str = "/pki/crl.der") -> x509.CertificateRevocationList:
    r = api.get(path, headers=NOAUTH)
    assert r.status_code == 200
    return x509.load_der_x509_crl(r.content)


# -- refusals ----------------------------------------------------------------------------------
def test_revoked_certificate_refused_for_existing_session_and_session_open(api):
    dev = enroll(api)
    assert _poll(api, dev["token"]) == 200
    assert api.post(f"/api/v1/devices/{dev['device_id']}/revoke").status_code == 200
    # The very next request on the existing session is refused (database check, not a cache).
    assert _poll(api, dev["token"]) == 401
    r = _session(api, dev["device_id"], dev["certificate"], dev["key"])
    assert r.status_code == 401
    assert "revoked" in r.json()["error"]["message"]
    # Nor can a revoked device renew.
    assert _reenroll(api, dev["token"], make_csr(dev["key"], "x")).status_code == 401


def test_expired_certificate_refused_for_existing_session_and_session_open(api, clock):
    dev = enroll(api)
    cert = _cert(dev["certificate"])
    clock.now = cert.not_valid_after_utc - timedelta(minutes=30)
    token = _session(api, dev["device_id"], dev["certificate"], dev["key"]).json()["token"]
    assert _poll(api, token) == 200
    clock.now = cert.not_valid_after_utc + timedelta(seconds=1)
    # A session never outlives its certificate.
    assert _poll(api, token) == 401
    r = _session(api, dev["device_id"], dev["certificate"], dev["key"])
    assert r.status_code == 401
    assert "not valid at this time" in r.json()["error"]["message"]


def test_foreign_ca_certificate_refused(api, tmp_path, clock):
    dev = enroll(api)
    rogue = DeviceCA.load_or_create(tmp_path / "rogue", now=clock())
    key = ec.generate_private_key(ec.SECP256R1())
    forged = rogue.issue(
        make_csr(key, "x").encode(), device_id=dev["device_id"], now=clock(), days=30
    )
    pem = forged.public_bytes(serialization.Encoding.PEM).decode()
    r = _session(api, dev["device_id"], pem, key)
    assert r.status_code == 401
    assert "CA" in r.json()["error"]["message"]


# -- renewal -------------------------------------------------------------------------------------
def test_renewal_issues_a_new_certificate_and_the_old_one_is_refused_afterwards(api, ctx):
    dev = enroll(api)
    new = _renew(api, dev)
    cert = _cert(new["certificate"])
    assert _cn(cert) == dev["device_id"]
    assert cert.public_key() == new["key"].public_key()
    cert.verify_directly_issued_by(ctx.ca.cert)
    assert _poll(api, new["token"]) == 200
    # The old certificate's session and the old certificate itself are refused.
    assert _poll(api, dev["token"]) == 401
    assert _session(api, dev["device_id"], dev["certificate"], dev["key"]).status_code == 401
    # The old one is superseded, on the CRL with that reason.
    entry = _crl(api).get_revoked_certificate_by_serial_number(_serial(dev["certificate"]))
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.superseded
    assert api.get(f"/api/v1/devices/{dev['device_id']}").json()[
        "cert_not_after"
    ] == cert.not_valid_after_utc.isoformat().replace("+00:00", "Z")
    actions = [a["action"] for a in api.get("/api/v1/audit").json()]
    assert "device.reenroll" in actions
    assert "device.certificate.activate" in actions


def test_old_certificate_keeps_working_until_the_new_one_is_used(api):
    """A renewal answer lost on the way must not lock the device out: the new certificate is
    pending until its first session, and a retried renewal supersedes the unused one."""
    dev = enroll(api)
    key = ec.generate_private_key(ec.SECP256R1())
    lost = _reenroll(api, dev["token"], make_csr(key, "x")).json()["certificate"]
    assert _poll(api, dev["token"]) == 200
    again = _session(api, dev["device_id"], dev["certificate"], dev["key"])
    assert again.status_code == 200
    retried = _reenroll(api, again.json()["token"], make_csr(key, "x"))
    assert retried.status_code == 200
    # The lost one was superseded by the retry and can no longer be used.
    assert _session(api, dev["device_id"], lost, key).status_code == 401
    assert _crl(api).get_revoked_certificate_by_serial_number(_serial(lost)) is not None
    assert _session(api, dev["device_id"], retried.json()["certificate"], key).status_code == 200


def test_renewal_with_the_same_key_is_accepted(api):
    dev = enroll(api)
    r = _reenroll(api, dev["token"], make_csr(dev["key"], "x"))
    assert r.status_code == 200
    assert _serial(r.json()["certificate"]) != _serial(dev["certificate"])
    assert _session(api, dev["device_id"], r.json()["certificate"], dev["key"]).status_code == 200


def test_csr_asking_for_another_identity_gets_the_server_chosen_identity(api):
    """P3: device A asks (subject and SAN) for B's identity; it gets its own."""
    a, b = enroll(api, hostname="a"), enroll(api, hostname="b")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, b["device_id"])]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"urn:fleetwarden:device:{b['device_id']}")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    r = _reenroll(api, a["token"], csr)
    assert r.status_code == 200
    cert = _cert(r.json()["certificate"])
    assert _cn(cert) == a["device_id"]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"urn:fleetwarden:device:{a['device_id']}"
    ]
    # It cannot be used as B either.
    assert _session(api, b["device_id"], r.json()["certificate"], key).status_code == 401


def test_csr_without_proof_of_possession_is_refused(api):
    """P3: the CSR must be signed by the key it certifies."""
    dev = enroll(api)
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    good = x509.load_pem_x509_csr(make_csr(key, "x").encode())
    forged = x509.load_pem_x509_csr(make_csr(other, "x").encode())
    # Splice: key's public key info, other's signature.
    der = good.public_bytes(serialization.Encoding.DER)
    tampered = der.replace(good.signature, forged.signature[: len(good.signature)])
    pem = (
        "-----BEGIN CERTIFICATE REQUEST-----\n"
        + base64.encodebytes(tampered).decode()
        + "-----END CERTIFICATE REQUEST-----\n"
    )
    r = _reenroll(api, dev["token"], pem)
    assert r.status_code in (400, 422)
    assert _poll(api, dev["token"]) == 200  # the device keeps its certificate


def test_renewal_needs_a_session(api):
    assert api.post("/device/v1/reenroll", headers=NOAUTH, json={"csr": "x"}).status_code == 401


# -- CRL -------------------------------------------------------------------------------------------
def test_crl_is_signed_by_the_ca_and_lists_the_revoked_serial(api, ctx, clock):
    dev = enroll(api)
    before = _crl(api)
    assert before.get_revoked_certificate_by_serial_number(_serial(dev["certificate"])) is None
    api.post(f"/api/v1/devices/{dev['device_id']}/revoke")
    ca = x509.load_pem_x509_certificate(api.get("/pki/ca.pem", headers=NOAUTH).content)
    for crl in (_crl(api), x509.load_pem_x509_crl(api.get("/pki/crl.pem").content)):
        assert crl.issuer == ca.subject
        assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
        assert crl.get_revoked_certificate_by_serial_number(_serial(dev["certificate"]))
        assert crl.next_update_utc is not None
        assert crl.next_update_utc - crl.last_update_utc == timedelta(hours=24)
        assert crl.last_update_utc == clock().replace(microsecond=0)
    # Regenerated before it goes stale.
    clock.advance(hours=13)
    assert _crl(api).last_update_utc == clock().replace(microsecond=0)


# -- CA rotation -----------------------------------------------------------------------------------
def test_renewal_works_across_a_ca_rotation(api, ctx, clock):
    dev = enroll(api)
    ca1 = ctx.ca.cert
    r = api.post("/api/v1/ca/rotate")
    assert r.status_code == 200, r.text
    status = r.json()["cas"]
    assert [c["role"] for c in status] == ["issuing", "previous"]
    ca2 = ctx.ca.cert
    assert ca2 != ca1
    # The device enrolled under CA1 keeps working: its session, and new sessions.
    assert _poll(api, dev["token"]) == 200
    fresh = _session(api, dev["device_id"], dev["certificate"], dev["key"])
    assert fresh.status_code == 200
    dev = dev | {"token": fresh.json()["token"]}
    # It renews onto CA2.
    new = _renew(api, dev)
    cert = _cert(new["certificate"])
    cert.verify_directly_issued_by(ca2)
    assert cert.issuer == ca2.subject != ca1.subject
    assert _poll(api, new["token"]) == 200
    # Both CAs are published while the overlap lasts; each CRL is signed by its own CA and
    # the superseded CA1 certificate is on CA1's CRL.
    bundle = x509.load_pem_x509_certificates(api.get("/pki/ca.pem").content)
    assert bundle == [ca2, ca1]
    crls = [
        x509.load_pem_x509_crl(b"-----BEGIN X509 CRL-----" + block)
        for block in api.get("/pki/crl.pem").content.split(b"-----BEGIN X509 CRL-----")[1:]
    ]
    assert [c.issuer for c in crls] == [ca2.subject, ca1.subject]
    assert crls[1].is_signature_valid(ca1.public_key())  # type: ignore[arg-type]
    assert crls[1].get_revoked_certificate_by_serial_number(_serial(dev["certificate"]))
    # New enrollments get CA2 certificates.
    other = enroll(api, hostname="later")
    _cert(other["certificate"]).verify_directly_issued_by(ca2)
    # After the last CA1 certificate expired, CA1 is no longer trusted.
    clock.advance(days=31)
    assert [c["role"] for c in api.get("/api/v1/ca").json()["cas"]] == ["issuing"]


def test_ca_rotation_survives_a_restart_and_keeps_the_file_layout(api, ctx, settings, clock):
    from fleetwarden.server.pki import DeviceCAs

    ca1 = ctx.ca.cert
    api.post("/api/v1/ca/rotate")
    directory = settings.data_dir / "ca"
    assert x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes()) == ctx.ca.cert
    reloaded = DeviceCAs(directory, now=clock())
    assert reloaded.cert == ctx.ca.cert
    assert [c.cert for c in reloaded.trusted(now=clock())] == [ctx.ca.cert, ca1]


def test_ca_rotation_is_admin_only(client, ctx):
    from fleetwarden.protocol.api import Role
    from tests.conftest import make_token

    token = make_token(ctx, Role.OPERATOR)
    r = client.post("/api/v1/ca/rotate", headers=_bearer(token))
    assert r.status_code == 403


# -- monitoring ------------------------------------------------------------------------------------
def _gauge(api, state: str) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(f'fleetwarden_device_certificates{{state="{state}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no gauge for {state}")


def test_metrics_count_certificates_by_time_to_expiry(api, ctx, clock):
    enroll(api)
    assert (_gauge(api, "valid"), _gauge(api, "expiring_7d"), _gauge(api, "expired")) == (1, 0, 0)
    clock.advance(days=25)
    assert (_gauge(api, "valid"), _gauge(api, "expiring_7d"), _gauge(api, "expired")) == (0, 1, 0)
    clock.advance(days=6)
    assert (_gauge(api, "valid"), _gauge(api, "expiring_7d"), _gauge(api, "expired")) == (0, 0, 1)


def test_cli_ca_rotate_and_status(live_server):
    from typer.testing import CliRunner

    from fleetwarden.main import app

    env = {"FLEETWARDEN_SERVER": live_server.url, "FLEETWARDEN_TOKEN": live_server.admin_token}
    runner = CliRunner()
    before = runner.invoke(app, ["ca", "status", "-o", "json"], env=env)
    assert before.exit_code == 0, before.output
    assert [c["role"] for c in json.loads(before.output)] == ["issuing"]
    rotated = runner.invoke(app, ["ca", "rotate", "-o", "json"], env=env)
    assert rotated.exit_code == 0, rotated.output
    cas = json.loads(rotated.output)
    assert [c["role"] for c in cas] == ["issuing", "previous"]
    assert cas[1]["key_id"] == json.loads(before.output)[0]["key_id"]


def test_dashboard_warns_of_certificates_near_expiry(api, client, admin_token, clock):
    from fleetwarden.server.web.common import COOKIE

    dev = enroll(api)
    client.cookies.set(COOKIE, admin_token)
    page = client.get(f"/ui/devices/{dev['device_id']}", headers=NOAUTH)
    assert page.status_code == 200
    assert 'class="cert-valid"' in page.text
    clock.advance(days=25)
    page = client.get(f"/ui/devices/{dev['device_id']}", headers=NOAUTH)
    assert 'class="cert-expiring_7d"' in page.text
    assert "expires within 7 days" in page.text
    listing = client.get("/ui/devices", headers=NOAUTH)
    assert 'class="cert-expiring_7d"' in listing.text
