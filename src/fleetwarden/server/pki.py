"""The built-in device CA (ECDSA P-256) that certifies device keys at enrollment.

The CA key lives in ``<data_dir>/ca/ca.key`` (mode 0600). Replicas share it by sharing that
directory (a secret mount). Device keys never leave devices: the server only signs CSRs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleetwarden.atomicfile import write_atomic
from fleetwarden.errors import ConfigError, InputError, VerificationError

__all__ = ["DeviceCA", "load_or_create_secret"]

_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)
_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class DeviceCA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:
        return f"<DeviceCA {self.cert.subject.rfc4514_string()} until {self.cert.not_valid_after_utc:%Y-%m-%d}>"

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @classmethod
    def load_or_create(cls, directory: Path, *, now: datetime) -> DeviceCA:
        cert_path, key_path = directory / "ca.crt", directory / "ca.key"
        if cert_path.exists() and key_path.exists():
            try:
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            except ValueError as e:
                raise ConfigError(f"cannot read the device CA in {directory}: {e}") from e
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ConfigError(f"the device CA key in {key_path} is not an EC key")
            return cls(cert, key)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetwarden"),
                x509.NameAttribute(NameOID.COMMON_NAME, "fleetwarden device CA"),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
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
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(key_path, key_pem, mode=0o600)
        write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return cls(cert, key)

    def issue(
        self, csr_pem: bytes, *, device_id: str, now: datetime, days: int
    ) -> x509.Certificate:
        """Certify the key in a CSR for ``device_id``.

        The subject comes from the server, never from the CSR, so a device cannot ask for
        another device's identity.

        Raises:
            InputError: the CSR does not parse or uses a key type we do not accept.
            VerificationError: the CSR's self-signature does not verify (no proof of possession).
        """
        csr = load_csr(csr_pem)
        try:
            public_key = csr.public_key()
            signature_ok = csr.is_signature_valid
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise InputError(f"csr carries a key that cannot be used: {e}") from e
        if not (
            isinstance(public_key, ec.EllipticCurvePublicKey)
            and isinstance(public_key.curve, _ALLOWED_CURVES)
        ):
            raise InputError("device keys must be ECDSA P-256 or P-384")
        if not signature_ok:
            raise VerificationError("CSR signature does not verify: no proof of key possession")
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"urn:fleetwarden:device:{device_id}")]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )


def load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """Parse an untrusted PEM CSR; every failure is an ``InputError``."""
    try:
        return x509.load_pem_x509_csr(csr_pem)
    except (ValueError, TypeError, x509.InvalidVersion, UnsupportedAlgorithm) as e:
        raise InputError("csr is not a PEM certificate signing request") from e


def load_or_create_secret(path: Path) -> bytes:
    """A 32-byte server secret (MAC key for device challenges and session tokens)."""
    if path.exists():
        data = path.read_bytes()
        if len(data) < 32:
            raise ConfigError(f"server secret {path} is shorter than 32 bytes")
        return data
    data = secrets.token_bytes(32)
    write_atomic(path, data, mode=0o600)
    return data
