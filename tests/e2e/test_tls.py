"""The server terminates TLS itself; the agent verifies it with a configured CA and enrolls."""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import free_port
from tests.e2e.conftest import ADMIN, Proc, spawn, wait_for

pytestmark = pytest.mark.e2e


def _tls_pair(tmp_path):
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test TLS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def test_agent_enrolls_over_verified_tls(tmp_path):
    _tls_pair(tmp_path)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    server = spawn(
        ["server", "--data-dir", str(tmp_path / "srv"), "--port", str(port)],
        env={
            "FLEETWARDEN_TLS_CERT_FILE": str(tmp_path / "server.pem"),
            "FLEETWARDEN_TLS_KEY_FILE": str(tmp_path / "server.key"),
            "FLEETWARDEN_BOOTSTRAP_ADMIN_TOKEN": ADMIN,
            "FLEETWARDEN_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        },
    )
    agent: Proc | None = None
    try:
        api = httpx.Client(
            base_url=url,
            verify=ssl.create_default_context(cafile=str(tmp_path / "ca.pem")),
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        with api:
            wait_for(lambda: _ok(api), what=f"TLS server\n{server.output()}")
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{url}/healthz")  # not trusted without the CA
            token = api.post("/api/v1/enrollment-tokens", json={}).json()["token"]
            (tmp_path / "agent.toml").write_text(
                f'server = "{url}"\nserver_ca_file = "{tmp_path / "ca.pem"}"\nenroll_token = "{token}"\n'
                f'data_dir = "{tmp_path / "agent"}"\nroot = "{tmp_path / "root"}"\npoll_interval = 0.5\n'
                "collect_packages = false\ncollect_firmware = false\n"
            )
            agent = spawn(["agent", "--config", str(tmp_path / "agent.toml")])
            wait_for(
                lambda: api.get("/api/v1/devices").json()["total"] == 1,
                what=f"enrollment\n{agent.output()}",
            )
    finally:
        if agent:
            agent.stop()
        server.stop()


def test_agent_reports_a_bad_config_file_and_exits(tmp_path):
    (tmp_path / "bad.toml").write_text('server = "http://x"\nunknown_key = 1\n')
    r = subprocess.run(
        [sys.executable, "-m", "fleetwarden", "agent", "--config", str(tmp_path / "bad.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 8
    assert "unknown_key" in r.stderr


def _ok(api: httpx.Client) -> bool:
    try:
        return api.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False
