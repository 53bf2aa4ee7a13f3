"""Enrollment (token + CSR → device certificate) and device sessions (proof of possession)."""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from fleetwarden.core import device_session
from fleetwarden.errors import AuthenticationError
from fleetwarden.protocol.device import (
    ChallengeResponse,
    EnrollRequest,
    EnrollResponse,
    SessionRequest,
    SessionResponse,
)
from fleetwarden.server.context import ServerContext
from fleetwarden.server.models import Device, DeviceCertificate
from fleetwarden.server.pki import authority_key_id
from fleetwarden.server.services import audit, certificates
from fleetwarden.server.services.tokens import consume_enrollment_token

__all__ = ["challenge", "enroll", "open_session"]


def _new_device_id() -> str:
    return "dev-" + secrets.token_hex(8)


def enroll(ctx: ServerContext, body: EnrollRequest) -> EnrollResponse:
    """Certify a new device.

    Raises:
        AuthenticationError: the enrollment token is unknown, expired or used up.
        InputError, VerificationError: the CSR is malformed or its signature is wrong.
    """
    now = ctx.clock()
    device_id = _new_device_id()
    # Sign first (pure CPU, may reject the CSR) so that a bad CSR never uses up a token.
    cert = ctx.ca.issue(
        body.csr.encode(), device_id=device_id, now=now, days=ctx.settings.device_cert_days
    )
    serial = format(cert.serial_number, "x")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    with ctx.db.write() as s:
        token = consume_enrollment_token(s, body.enrollment_token, now=now)
        device = Device(
            id=device_id,
            name=body.hostname,
            status="active",
            labels=dict(token.labels),
            enrolled_at=now,
            enrollment_token_id=token.id,
            last_seen_at=now,
            cert_serial=serial,
            cert_not_after=cert.not_valid_after_utc,
            rev=1,
        )
        s.add(device)
        s.flush()
        s.add(
            DeviceCertificate(
                serial=serial,
                device_id=device_id,
                issued_at=now,
                not_after=cert.not_valid_after_utc,
                pem=cert_pem,
                issuer_key_id=authority_key_id(cert),
            )
        )
        audit.record(
            s,
            at=now,
            actor=f"device:{device_id}",
            action="device.enroll",
            target_type="device",
            target_id=device_id,
            after={
                "name": body.hostname,
                "labels": device.labels,
                "cert_serial": serial,
                "enrollment_token_id": token.id,
            },
        )
    return EnrollResponse(
        device_id=device_id,
        certificate=cert_pem,
        ca_certificates=[ctx.ca.cert_pem],
        poll_interval_seconds=ctx.settings.poll_interval_seconds,
        tuf_roots=tuf_roots(ctx),
    )


def challenge(ctx: ServerContext) -> ChallengeResponse:
    value = device_session.issue_challenge(
        ctx.secret, now=ctx.clock(), nonce=secrets.token_bytes(16)
    )
    return ChallengeResponse(
        challenge=value, expires_in_seconds=ctx.settings.challenge_max_age_seconds
    )


def open_session(ctx: ServerContext, body: SessionRequest) -> SessionResponse:
    """Exchange a signed challenge for a session token.

    Raises:
        AuthenticationError: bad proof, unknown or revoked device, superseded certificate.
    """
    now = ctx.clock()
    try:
        signature = base64.b64decode(body.signature, validate=True)
    except (binascii.Error, ValueError) as e:
        raise AuthenticationError("signature is not base64") from e
    proof = device_session.verify_proof(
        cert_pem=body.certificate.encode(),
        signature=signature,
        challenge=body.challenge,
        # The issuing CA and, after a rotation, the previous ones still in their overlap.
        ca=ctx.ca.trusted_certs(now=now),
        secret=ctx.secret,
        now=now,
        max_age=timedelta(seconds=ctx.settings.challenge_max_age_seconds),
    )
    device_id, serial = proof.device_id, proof.cert_serial
    if device_id != body.device_id:
        raise AuthenticationError("certificate names a different device")
    with ctx.db.read() as s:
        row = s.execute(
            select(Device.status, Device.cert_serial, Device.pending_cert_serial).where(
                Device.id == device_id
            )
        ).one_or_none()
    if row is None:
        raise AuthenticationError("unknown device")
    if row.status != "active":
        raise AuthenticationError("device is revoked")
    if row.pending_cert_serial is not None and row.pending_cert_serial == serial:
        # First use of a renewed certificate: it becomes current (services.certificates).
        certificates.activate_pending(ctx, device_id, serial, now=now)
    elif row.cert_serial != serial:
        raise AuthenticationError("certificate is no longer this device's current certificate")
    # A session never outlives the certificate that opened it.
    expires = min(now + timedelta(minutes=ctx.settings.session_token_minutes), proof.cert_not_after)
    token = device_session.issue_token(
        ctx.secret, device_session.SessionClaims(device_id, serial, expires)
    )
    return SessionResponse(token=token, expires_at=expires)


def tuf_roots(ctx: ServerContext) -> dict[str, str]:
    """The newest root of each TUF repository, for a device to pin at enrollment."""
    with ctx.db.read() as s:
        return {
            repo: ctx.tuf.repo(repo).file(s, "root.json").decode() for repo in ("image", "director")
        }
