"""The built-in device CA (ECDSA P-256) that certifies device keys at enrollment.

The CA key lives in ``<data_dir>/ca/ca.key`` (mode 0600). Replicas share it by sharing that
directory (a secret mount). Device keys never leave devices: the server only signs CSRs.

CA rotation (``DeviceCAs``) keeps that layout: ``ca.crt``/``ca.key`` are always the issuing CA;
earlier CAs move to ``ca/previous/<key id>.{crt,key,json}`` and stay trusted (and keep signing
their CRL) until the last certificate they issued expires. A rotation is crash-safe: the new CA
is first written to ``ca/next.{crt,key}``; loading finishes an interrupted rotation.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleetwarden.atomicfile import write_atomic
from fleetwarden.core.certificates import CrlEntry, crl_entries, still_trusted
from fleetwarden.errors import ConfigError, InputError, VerificationError

__all__ = ["DeviceCA", "DeviceCAs", "PreviousCA", "authority_key_id", "load_or_create_secret"]

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
            return cls.load(cert_path, key_path)
        ca = cls.generate(now=now)
        ca.save(directory)
        return ca

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> DeviceCA:
        """Raises ``ConfigError`` when the files do not hold a matching EC CA pair."""
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read the device CA {cert_path}: {e}") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"the device CA key in {key_path} is not an EC key")
        if key.public_key() != cert.public_key():
            raise ConfigError(f"{key_path} is not the key of {cert_path}")
        return cls(cert, key)

    @property
    def key_id(self) -> str:
        """The subject key identifier (hex): names this CA in files and database rows."""
        return x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()).digest.hex()

    def save(self, directory: Path, stem: str = "ca") -> None:
        key_pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(directory / f"{stem}.key", key_pem, mode=0o600)
        write_atomic(directory / f"{stem}.crt", self.cert.public_bytes(serialization.Encoding.PEM))

    @classmethod
    def generate(cls, *, now: datetime, name: str = "fleetwarden device CA") -> DeviceCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetwarden"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
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
        return cls(cert, key)

    def sign_crl(
        self, entries: Iterable[CrlEntry], *, now: datetime, next_update: datetime
    ) -> x509.CertificateRevocationList:
        """A CRL (RFC 5280) of this CA listing ``entries`` (rule 4 of core.certificates).

        The CRL number is the issue time in seconds: it grows with every CRL any replica
        issues, without a shared counter.
        """
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now)
            .next_update(next_update)
            .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        for e in crl_entries(entries, now=now):
            revoked = (
                x509.RevokedCertificateBuilder()
                .serial_number(e.serial)
                .revocation_date(e.revoked_at)
            )
            if e.reason == "superseded":
                revoked = revoked.add_extension(
                    x509.CRLReason(x509.ReasonFlags.superseded), critical=False
                )
            builder = builder.add_revoked_certificate(revoked.build())
        return builder.sign(self.key, hashes.SHA256())

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


@dataclass(frozen=True)
class PreviousCA:
    """A CA that issued device certificates before a rotation; trusted until ``retire_after``."""

    ca: DeviceCA
    rotated_at: datetime
    retire_after: datetime


class DeviceCAs:
    """The issuing device CA and the previous CAs that are still trusted (rotation overlap).

    Read from ``<data_dir>/ca/``; a directory written before rotations existed (just
    ``ca.crt``/``ca.key``) is the same thing with no previous CAs. Replicas share the directory:
    each checks it for changes at most every ``recheck_seconds``, so a rotation made on one
    replica reaches all of them within that time. Between a rotation and that check a replica
    still issues with the previous CA, which stays trusted, so nothing breaks.

    It offers ``cert``, ``cert_pem``, ``key_id`` and ``issue`` of the issuing CA, so code that
    used a single ``DeviceCA`` keeps working.
    """

    def __init__(self, directory: Path, *, now: datetime, recheck_seconds: float = 2.0) -> None:
        self.directory = directory
        self._recheck = recheck_seconds
        self._lock = threading.Lock()
        self._finish_rotation(clean=True)
        self._current = DeviceCA.load_or_create(directory, now=now)
        self._previous = self._load_previous()
        self._stamp = self._fingerprint()
        self._checked = time.monotonic()

    def __repr__(self) -> str:
        return f"<DeviceCAs issuing={self._current!r} previous={len(self._previous)}>"

    # -- the issuing CA ---------------------------------------------------------------------
    @property
    def current(self) -> DeviceCA:
        self._maybe_reload()
        return self._current

    @property
    def cert(self) -> x509.Certificate:
        return self.current.cert

    @property
    def cert_pem(self) -> str:
        return self.current.cert_pem

    @property
    def key_id(self) -> str:
        return self.current.key_id

    def issue(
        self, csr_pem: bytes, *, device_id: str, now: datetime, days: int
    ) -> x509.Certificate:
        """``DeviceCA.issue`` with the issuing CA."""
        return self.current.issue(csr_pem, device_id=device_id, now=now, days=days)

    # -- trust --------------------------------------------------------------------------------
    @property
    def previous(self) -> list[PreviousCA]:
        self._maybe_reload()
        return list(self._previous)

    def trusted(self, *, now: datetime) -> list[DeviceCA]:
        """The issuing CA first, then every previous CA not yet retired."""
        current = self.current
        return [current] + [
            p.ca
            for p in self._previous
            if still_trusted(p.retire_after, now=now) and p.ca.key_id != current.key_id
        ]

    def trusted_certs(self, *, now: datetime) -> list[x509.Certificate]:
        return [ca.cert for ca in self.trusted(now=now)]

    def bundle_pem(self, *, now: datetime) -> str:
        return "".join(ca.cert_pem for ca in self.trusted(now=now))

    # -- rotation -----------------------------------------------------------------------------
    def rotate(self, *, now: datetime, retire_after: datetime) -> DeviceCA:
        """Make a new CA the issuing CA; the old one stays trusted until ``retire_after``.

        Order matters for crash safety: the old CA is saved under ``previous/`` first, then
        the new one as ``next.*`` (the commit point is ``next.crt`` being written), then it
        replaces ``ca.*``. ``_finish_rotation`` completes a rotation interrupted after the
        commit point; before it, ``ca.*`` is still the old CA and nothing changed.
        """
        with self._lock:
            self._reload()
            old = self._current
            new = DeviceCA.generate(now=now, name=f"fleetwarden device CA {now:%Y%m%d%H%M%S}")
            previous = self.directory / "previous"
            old.save(previous, old.key_id)
            meta = {"rotated_at": now.isoformat(), "retire_after": retire_after.isoformat()}
            write_atomic(previous / f"{old.key_id}.json", json.dumps(meta).encode())
            new.save(self.directory, "next")
            new.save(self.directory, "ca")
            (self.directory / "next.crt").unlink(missing_ok=True)
            (self.directory / "next.key").unlink(missing_ok=True)
            self._reload()
            return new

    # -- files --------------------------------------------------------------------------------
    def _finish_rotation(self, *, clean: bool = False) -> None:
        """Complete a rotation that passed its commit point (both ``next.*`` files exist).

        With ``clean`` (at start only: another replica may be writing them right now) a lone
        ``next.key`` is removed: it is a rotation that never reached its commit point.
        """
        nxt_crt, nxt_key = self.directory / "next.crt", self.directory / "next.key"
        if nxt_crt.exists() and nxt_key.exists():
            DeviceCA.load(nxt_crt, nxt_key).save(self.directory, "ca")
            nxt_crt.unlink(missing_ok=True)
            nxt_key.unlink(missing_ok=True)
        elif clean:
            nxt_key.unlink(missing_ok=True)

    def _load_previous(self) -> list[PreviousCA]:
        found = []
        previous = self.directory / "previous"
        for meta_path in sorted(previous.glob("*.json")) if previous.is_dir() else []:
            stem = meta_path.stem
            try:
                meta = json.loads(meta_path.read_text())
                rotated_at = datetime.fromisoformat(meta["rotated_at"]).astimezone(UTC)
                retire_after = datetime.fromisoformat(meta["retire_after"]).astimezone(UTC)
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"cannot read {meta_path}: {e}") from e
            ca = DeviceCA.load(previous / f"{stem}.crt", previous / f"{stem}.key")
            found.append(PreviousCA(ca, rotated_at, retire_after))
        return sorted(found, key=lambda p: p.rotated_at, reverse=True)

    def _fingerprint(self) -> tuple[object, ...]:
        def stat(p: Path) -> tuple[int, int, int] | None:
            try:
                st = p.stat()
            except FileNotFoundError:
                return None
            return (st.st_mtime_ns, st.st_size, st.st_ino)

        previous = self.directory / "previous"
        listing = sorted(p.name for p in previous.iterdir()) if previous.is_dir() else []
        return (stat(self.directory / "ca.crt"), stat(self.directory / "ca.key"), *listing)

    def _reload(self) -> None:
        self._current = DeviceCA.load(self.directory / "ca.crt", self.directory / "ca.key")
        self._previous = self._load_previous()
        self._stamp = self._fingerprint()
        self._checked = time.monotonic()

    def _maybe_reload(self) -> None:
        if time.monotonic() - self._checked < self._recheck:
            return
        with self._lock:
            self._checked = time.monotonic()
            if self._fingerprint() != self._stamp:
                self._finish_rotation()
                self._reload()


def authority_key_id(cert: x509.Certificate) -> str | None:
    """The issuing CA's key id (hex) named by a certificate we issued, if it names one."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    return aki.key_identifier.hex() if aki.key_identifier is not None else None


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
