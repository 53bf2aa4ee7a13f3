"""The device's identity: its private key (never leaves the device), its certificate and id.

Files in the agent's store: ``key.pem``, ``cert.pem``, ``ca.pem``, ``device.json`` (written
last at enrollment: its presence means "enrolled").

Renewal is crash-safe: a crash at any moment leaves a usable identity.
  1. The new key is saved as ``next-key.pem`` *before* the CSR is sent (a retry reuses it).
  2. The renewed certificate is saved as ``next-cert.pem`` (and ``next-ca.pem``): the commit
     point. Until then ``key.pem``/``cert.pem`` are the old pair, which the server keeps
     accepting until the device first uses the new one.
  3. ``key.pem``, ``cert.pem`` and ``ca.pem`` are replaced, then the ``next-*`` files removed
     (``next-key.pem`` first). ``load`` repeats step 3 whenever it finds a matching
     ``next-key.pem`` and ``next-cert.pem``, so an interruption anywhere in it is completed,
     and drops a ``next-cert.pem`` left alone (step 3 had finished).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleetwarden.agent.store import Store
from fleetwarden.core.device_session import signed_message

__all__ = ["Identity", "IdentityStore", "make_csr"]

_NEXT_KEY, _NEXT_CERT, _NEXT_CA = "next-key.pem", "next-cert.pem", "next-ca.pem"


@dataclass(frozen=True)
class Identity:
    device_id: str
    key: ec.EllipticCurvePrivateKey
    certificate_pem: str
    ca_pem: str

    def __repr__(self) -> str:  # never print key material
        return f"<Identity {self.device_id}>"

    def sign_challenge(self, challenge: str) -> bytes:
        return self.key.sign(signed_message(challenge, self.device_id), ec.ECDSA(hashes.SHA256()))

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem.encode())


def make_csr(key: ec.EllipticCurvePrivateKey, hostname: str) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


class IdentityStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def pending_key(self) -> ec.EllipticCurvePrivateKey:
        """The device key: created once and kept, so a retried enrollment reuses it."""
        return self._key("key.pem")

    def next_key(self) -> ec.EllipticCurvePrivateKey:
        """The key for the next certificate (renewal step 1): kept until the renewal is saved,
        so a renewal retried after a crash or a lost answer reuses it."""
        return self._key(_NEXT_KEY)

    def _key(self, name: str) -> ec.EllipticCurvePrivateKey:
        pem = self.store.read(name)
        if pem is not None:
            return _load_key(pem)
        key = ec.generate_private_key(ec.SECP256R1())
        self.store.write(name, _key_pem(key))
        return key

    def save_renewed(self, identity: Identity) -> None:
        """Save a renewed identity whose key came from ``next_key`` (steps 2 and 3)."""
        self.store.write(_NEXT_CA, identity.ca_pem.encode())
        self.store.write(_NEXT_CERT, identity.certificate_pem.encode())
        self._finish_renewal()

    def _finish_renewal(self) -> None:
        key_pem, cert_pem = self.store.read(_NEXT_KEY), self.store.read(_NEXT_CERT)
        if cert_pem is None:
            return
        if key_pem is not None and _matches(key_pem, cert_pem):
            self.store.write("key.pem", key_pem)
            self.store.write("cert.pem", cert_pem)
            ca_pem = self.store.read(_NEXT_CA)
            if ca_pem is not None:
                self.store.write("ca.pem", ca_pem)
        self.store.delete(_NEXT_KEY)
        self.store.delete(_NEXT_CERT)
        self.store.delete(_NEXT_CA)

    def load(self) -> Identity | None:
        self._finish_renewal()
        info, cert, ca = (
            self.store.read("device.json"),
            self.store.read("cert.pem"),
            self.store.read("ca.pem"),
        )
        if info is None or cert is None or ca is None:
            return None
        return Identity(
            json.loads(info)["device_id"], self.pending_key(), cert.decode(), ca.decode()
        )

    def save(self, identity: Identity) -> None:
        self.store.write("cert.pem", identity.certificate_pem.encode())
        self.store.write("ca.pem", identity.ca_pem.encode())
        # device.json last: its presence means "enrolled".
        self.store.write("device.json", json.dumps({"device_id": identity.device_id}).encode())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("device key is not an EC key")
    return key


def _matches(key_pem: bytes, cert_pem: bytes) -> bool:
    """Whether a stored certificate certifies a stored key (both written by this module)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        return cert.public_key() == _load_key(key_pem).public_key()
    except (ValueError, TypeError):
        return False
