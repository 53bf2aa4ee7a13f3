"""The agent renews its device certificate by itself, crash-safely (agent.identity)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleetwarden.agent import FileStore
from fleetwarden.agent.identity import IdentityStore
from tests.agent.conftest import drive


def _current_serial(api, device_id: str) -> int:
    """The serial of the certificate the server now accepts for new sessions."""
    rows = api.get("/api/v1/audit", params={"target_id": device_id}).json()
    activations = [r for r in rows if r["action"] == "device.certificate.activate"]
    return int(activations[0]["after"]["cert_serial"], 16) if activations else 0


def _cert(store: FileStore) -> x509.Certificate:
    pem = store.read("cert.pem")
    assert pem is not None
    return x509.load_pem_x509_certificate(pem)


def test_agent_renews_when_a_third_of_the_lifetime_is_left(make_agent, api, clock):
    agent = make_agent()
    agent.clock = clock
    drive(agent)
    store = agent.store
    first = _cert(store)
    key_before = store.read("key.pem")
    # Day 19 of 30: more than a third left, nothing happens.
    clock.advance(days=19)
    drive(agent)
    assert _cert(store).serial_number == first.serial_number
    # Day 21: less than a third left; the next loop renews, with a new key.
    clock.advance(days=2)
    drive(agent)
    renewed = _cert(store)
    assert renewed.serial_number != first.serial_number
    assert renewed.not_valid_after_utc > first.not_valid_after_utc
    assert store.read("key.pem") != key_before
    assert store.read("next-key.pem") is None
    assert store.read("next-cert.pem") is None
    # The server made it current (the agent opened a session with it) ...
    assert _current_serial(api, agent.identity.device_id) == renewed.serial_number
    # ... and the agent keeps working with it, across a restart.
    restarted = make_agent()  # same data directory
    restarted.clock = clock
    drive(restarted)
    assert _cert(store).serial_number == renewed.serial_number


class _CrashingStore(FileStore):
    """Power cut: every write of ``name`` fails (and nothing after it happens)."""

    def __init__(self, inner: FileStore, name: str) -> None:
        super().__init__(inner.dir)
        self.crash_on = name

    def write(self, name: str, data: bytes) -> None:
        if name == self.crash_on:
            raise KeyboardInterrupt(f"power cut while writing {name}")
        super().write(name, data)


def self_signed(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_a_crash_during_renewal_leaves_a_usable_identity(make_agent, api, clock):
    """Crash after the server issued the new certificate but before the agent saved it: the
    old certificate still works (the new one is pending), and the next start renews again."""
    agent = make_agent()
    agent.clock = clock
    drive(agent)
    store = agent.store
    first = _cert(store)
    clock.advance(days=21)
    crashing = _CrashingStore(store, "next-cert.pem")
    agent.identity_store = IdentityStore(crashing)
    with pytest.raises(KeyboardInterrupt):
        agent.run_once()
    assert _cert(store).serial_number == first.serial_number
    assert store.read("next-key.pem") is not None
    # Restart: the old identity opens sessions and polls; then the renewal completes.
    restarted = make_agent()  # same data directory
    restarted.clock = clock
    drive(restarted)
    renewed = _cert(store)
    assert renewed.serial_number != first.serial_number
    assert _current_serial(api, restarted.identity.device_id) == renewed.serial_number


def test_an_interrupted_commit_is_completed_on_load(tmp_path):
    """Crash after ``next-cert.pem`` was saved (the commit point): loading finishes the
    switch, so key and certificate always match."""
    store = FileStore(tmp_path)
    ids = IdentityStore(store)
    ids.pending_key()
    store.write("cert.pem", b"old")
    store.write("ca.pem", b"ca")
    store.write("device.json", b'{"device_id": "dev-1"}')
    key = ids.next_key()
    store.write("next-cert.pem", self_signed(key))
    identity = ids.load()
    assert identity is not None
    assert identity.key.public_key() == key.public_key()
    assert identity.certificate.public_key() == key.public_key()
    assert store.read("next-key.pem") is None
    assert store.read("next-cert.pem") is None
    assert store.read("key.pem") == key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
