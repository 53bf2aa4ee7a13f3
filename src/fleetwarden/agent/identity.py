"""The device's identity: its private key (never leaves the device), its certificate and id."""

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
        pem = self.store.read("key.pem")
        if pem is not None:
            key = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise TypeError("device key is not an EC key")
            return key
        key = ec.generate_private_key(ec.SECP256R1())
        self.store.write(
            "key.pem",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return key

    def load(self) -> Identity | None:
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
