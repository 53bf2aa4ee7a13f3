"""Device sessions: proof of possession of a certified key, exchanged for a short-lived token.

The flow (ADR 0001): the server hands out a stateless *challenge*; the device signs
``DOMAIN || challenge || device id`` with the private key of its device certificate and sends
the certificate and signature; the server checks the certificate was issued by its CA and is
valid now, checks the signature, and issues a *session token* naming the device and the
certificate serial. Every device request presents the token; the shell then checks, on the
same database row it reads anyway, that the device is active and the serial is still its
current certificate, so a revocation takes effect on the very next request on every replica.

Rules:
  1. Nothing here reads a clock or draws randomness: ``now`` and ``nonce`` are parameters.
  2. A challenge is valid for ``max_age`` after issue and only if its MAC verifies; challenges
     and tokens are MACed with a server secret shared by all replicas, so any replica can
     verify what any other issued (load balancers need no stickiness).
  3. The certificate must chain directly to the given CA (or to one of the given CAs: during a
     CA rotation the previous CA stays trusted), be valid at ``now``, carry the clientAuth
     extended key usage and name exactly one device in its subject CN.
  4. The signature domain string keeps these signatures from being replayed in any other
     protocol that uses the same key.
  5. Every failure raises ``AuthenticationError`` (never a foreign exception).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleetwarden.errors import AuthenticationError

__all__ = [
    "SIGNATURE_DOMAIN",
    "SessionClaims",
    "VerifiedDevice",
    "issue_challenge",
    "issue_token",
    "signed_message",
    "verify_challenge",
    "verify_device_certificate",
    "verify_proof",
    "verify_token",
]

SIGNATURE_DOMAIN = b"fleetwarden-device-session-v1\n"
_MAC_BYTES = 20


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _unb64(text: str) -> bytes:
    """Strict unpadded base64url: exactly one string encodes each value, so a token is one
    string (no padding, other alphabets or non-zero spare bits are accepted)."""
    if not _B64URL.fullmatch(text):
        raise AuthenticationError("malformed token")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise AuthenticationError("malformed token") from e
    if _b64(data) != text:
        raise AuthenticationError("malformed token")
    return data


def _mac(secret: bytes, purpose: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, purpose + b"\0" + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _seal(secret: bytes, purpose: bytes, payload: bytes) -> str:
    return f"{_b64(payload)}.{_b64(_mac(secret, purpose, payload))}"


def _open(secret: bytes, purpose: bytes, sealed: str) -> bytes:
    if len(sealed) > 1024 or sealed.count(".") != 1:
        raise AuthenticationError("malformed token")
    body, mac = sealed.split(".")
    payload = _unb64(body)
    if not hmac.compare_digest(_mac(secret, purpose, payload), _unb64(mac)):
        raise AuthenticationError("token signature does not verify")
    return payload


def issue_challenge(secret: bytes, *, now: datetime, nonce: bytes) -> str:
    return _seal(secret, b"challenge", f"{int(now.timestamp())}|{nonce.hex()}".encode())


def verify_challenge(secret: bytes, challenge: str, *, now: datetime, max_age: timedelta) -> None:
    """Raises ``AuthenticationError`` unless the challenge is ours and fresh (rule 2)."""
    payload = _open(secret, b"challenge", challenge)
    try:
        issued = datetime.fromtimestamp(int(payload.split(b"|", 1)[0]), UTC)
        fresh = issued - timedelta(seconds=5) <= now <= issued + max_age
    except (ValueError, OverflowError, OSError) as e:
        raise AuthenticationError("malformed challenge") from e
    if not fresh:
        raise AuthenticationError("challenge expired; request a new one")


@dataclass(frozen=True, slots=True)
class SessionClaims:
    device_id: str
    cert_serial: str
    expires: datetime


def issue_token(secret: bytes, claims: SessionClaims) -> str:
    if "|" in claims.device_id or "|" in claims.cert_serial:
        raise ValueError("device ids and serials never contain '|'")
    payload = f"{claims.device_id}|{claims.cert_serial}|{int(claims.expires.timestamp())}"
    return _seal(secret, b"session", payload.encode())


def verify_token(secret: bytes, token: str, *, now: datetime) -> SessionClaims:
    """Raises ``AuthenticationError`` unless the token is ours and unexpired."""
    try:
        device_id, serial, exp = _open(secret, b"session", token).decode().split("|")
        expires = datetime.fromtimestamp(int(exp), UTC)
    except (ValueError, UnicodeDecodeError, OverflowError, OSError) as e:
        raise AuthenticationError("malformed token") from e
    if now >= expires:
        raise AuthenticationError("session token expired")
    return SessionClaims(device_id, serial, expires)


def signed_message(challenge: str, device_id: str) -> bytes:
    """The exact bytes a device signs (rule 4)."""
    return SIGNATURE_DOMAIN + challenge.encode() + b"\n" + device_id.encode()


def _issued_by_one_of(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> None:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return
    raise AuthenticationError("certificate was not issued by this server's CA")


def verify_device_certificate(
    cert: x509.Certificate,
    ca: x509.Certificate | Sequence[x509.Certificate],
    *,
    now: datetime,
) -> str:
    """Check rule 3 and return the device id named by the certificate."""
    _issued_by_one_of(cert, [ca] if isinstance(ca, x509.Certificate) else ca)
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise AuthenticationError("certificate is not valid at this time")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as e:
        raise AuthenticationError("certificate has no extended key usage") from e
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise AuthenticationError("certificate is not for client authentication")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise AuthenticationError("certificate must name exactly one device")
    value = names[0].value
    return value if isinstance(value, str) else value.decode()


@dataclass(frozen=True, slots=True)
class VerifiedDevice:
    device_id: str
    cert_serial: str
    cert_not_after: datetime


def verify_proof(
    *,
    cert_pem: bytes,
    signature: bytes,
    challenge: str,
    ca: x509.Certificate | Sequence[x509.Certificate],
    secret: bytes,
    now: datetime,
    max_age: timedelta,
) -> VerifiedDevice:
    """Verify a session request; return who proved what.

    Raises:
        AuthenticationError: any check failed (rule 5).
    """
    verify_challenge(secret, challenge, now=now, max_age=max_age)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        device_id = verify_device_certificate(cert, ca, now=now)
        public_key = cert.public_key()
    except (ValueError, TypeError, x509.InvalidVersion, UnsupportedAlgorithm) as e:
        # Malformed or unsupported certificates are an authentication failure (rule 5).
        raise AuthenticationError(f"certificate cannot be used: {e}") from e
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise AuthenticationError("device keys must be ECDSA")
    try:
        public_key.verify(
            signature, signed_message(challenge, device_id), ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature as e:
        raise AuthenticationError("signature does not verify with the certificate's key") from e
    return VerifiedDevice(device_id, format(cert.serial_number, "x"), cert.not_valid_after_utc)
