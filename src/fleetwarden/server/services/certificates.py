"""The device certificate lifecycle: renewal, CRL, CA rotation, expiry counts.

Renewal follows EST ``simplereenroll`` (RFC 7030 §4.2.2): a device that holds its current,
unrevoked, unexpired certificate (proven by the session it opened with it) sends a CSR for the
same or a new key and gets a new certificate for the *same* identity; the server names the
device, never the CSR. The new certificate is *pending* until the device first opens a session
with it; then it becomes current and the old one is superseded (listed on the CRL with reason
``superseded``). Until then the old certificate keeps working, so a renewal answer lost to a
crash or a dropped connection never locks a device out.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from fleetwarden.core.certificates import EXPIRING_WINDOW, CrlEntry, ExpiryState
from fleetwarden.errors import AuthenticationError
from fleetwarden.protocol.api import CaOut, CaStatus
from fleetwarden.protocol.device import ReenrollRequest, ReenrollResponse
from fleetwarden.server.context import ServerContext
from fleetwarden.server.models import Device, DeviceCertificate
from fleetwarden.server.pki import DeviceCA
from fleetwarden.server.services import audit
from fleetwarden.server.services.device_api import DeviceSession

__all__ = [
    "SUPERSEDED",
    "activate_pending",
    "ca_status",
    "crl_der",
    "crl_pem",
    "expiry_counts",
    "reenroll",
    "rotate_ca",
]

SUPERSEDED = "superseded"
#: Certificates start 5 minutes in the past (clock skew); a retired CA keeps this much slack.
_SKEW = timedelta(minutes=5)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _serial(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def _supersede(row: DeviceCertificate, *, now: datetime) -> None:
    if row.revoked_at is None:
        row.revoked_at, row.revocation_reason = now, SUPERSEDED


# -- renewal -------------------------------------------------------------------------------------
def reenroll(ctx: ServerContext, dev: DeviceSession, body: ReenrollRequest) -> ReenrollResponse:
    """Issue a renewed certificate for the device behind ``dev`` (pending until first used).

    Raises:
        InputError, VerificationError: the CSR is malformed, uses a key type we do not accept,
            or its signature does not verify (no proof of possession).
        AuthenticationError: the session's certificate is not the device's current, valid,
            unrevoked certificate, or the device is revoked.
    """
    now = ctx.clock()
    ca = ctx.ca.current
    # Sign first (pure CPU, may reject the CSR) outside the transaction; the subject and SAN
    # come from the server (DeviceCA.issue), so a CSR naming another device changes nothing.
    cert = ca.issue(
        body.csr.encode(), device_id=dev.device_id, now=now, days=ctx.settings.device_cert_days
    )
    serial, pem = _serial(cert), _pem(cert)
    with ctx.db.write() as s:
        d = s.get(Device, dev.device_id, with_for_update=True)
        if d is None or d.status != "active":
            raise AuthenticationError("device is unknown or revoked")
        if d.cert_serial is None or d.cert_serial != dev.cert_serial:
            raise AuthenticationError("only the device's current certificate may renew it")
        current = s.get(DeviceCertificate, d.cert_serial)
        if current is None or current.revoked_at is not None or current.not_after <= now:
            raise AuthenticationError("the current certificate is revoked or expired")
        replaced_pending = d.pending_cert_serial
        if replaced_pending is not None:
            # An earlier renewal the device never used (its answer was lost, say).
            pending = s.get(DeviceCertificate, replaced_pending)
            if pending is not None:
                _supersede(pending, now=now)
        s.add(
            DeviceCertificate(
                serial=serial,
                device_id=d.id,
                issued_at=now,
                not_after=cert.not_valid_after_utc,
                pem=pem,
                issuer_key_id=ca.key_id,
            )
        )
        d.pending_cert_serial = serial
        audit.record(
            s,
            at=now,
            actor=dev.actor,
            action="device.reenroll",
            target_type="device",
            target_id=d.id,
            before={"cert_serial": d.cert_serial, "pending_cert_serial": replaced_pending},
            after={
                "pending_cert_serial": serial,
                "not_after": cert.not_valid_after_utc.isoformat(),
                "issuer_key_id": ca.key_id,
            },
        )
    return ReenrollResponse(
        certificate=pem,
        ca_certificates=[c.cert_pem for c in ctx.ca.trusted(now=now)],
        not_after=cert.not_valid_after_utc,
    )


def activate_pending(ctx: ServerContext, device_id: str, serial: str, *, now: datetime) -> None:
    """The device opened a session with its renewed certificate: make it current, supersede
    the old one. Idempotent (two replicas may race on the same first session).

    Raises:
        AuthenticationError: ``serial`` is neither pending nor current any more.
    """
    with ctx.db.write() as s:
        d = s.get(Device, device_id, with_for_update=True)
        if d is None or d.status != "active":
            raise AuthenticationError("device is revoked")
        if d.cert_serial == serial:
            return
        if d.pending_cert_serial != serial:
            raise AuthenticationError("certificate is no longer this device's current certificate")
        new = s.get(DeviceCertificate, serial)
        if new is None or new.revoked_at is not None:
            raise AuthenticationError("certificate is revoked")
        old_serial = d.cert_serial
        if old_serial is not None:
            old = s.get(DeviceCertificate, old_serial)
            if old is not None:
                _supersede(old, now=now)
        d.cert_serial, d.cert_not_after, d.pending_cert_serial = serial, new.not_after, None
        audit.record(
            s,
            at=now,
            actor=f"device:{device_id}",
            action="device.certificate.activate",
            target_type="device",
            target_id=device_id,
            before={"cert_serial": old_serial},
            after={"cert_serial": serial, "superseded": old_serial},
        )


# -- CRL -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Crls:
    state: tuple[object, ...]
    built_at: datetime
    pem: bytes  # one CRL per trusted CA, the issuing CA's first
    der: bytes  # the issuing CA's CRL


class _CrlCache:
    """This replica's signed CRLs, rebuilt when the revocations in the database change (one
    aggregate read per request tells) or when half of their validity has passed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value: _Crls | None = None


def _revocation_state(s: Session) -> tuple[object, ...]:
    count, latest = s.execute(
        select(func.count(), func.max(DeviceCertificate.revoked_at)).where(
            DeviceCertificate.revoked_at.is_not(None)
        )
    ).one()
    return (count, latest)


def _build(ctx: ServerContext, s: Session, state: tuple[object, ...], now: datetime) -> _Crls:
    trusted = ctx.ca.trusted(now=now)
    # Rows from before migration 0004 carry no issuer: the first CA issued them.
    previous = ctx.ca.previous
    first = min(previous, key=lambda p: p.rotated_at).ca.key_id if previous else trusted[0].key_id
    by_issuer: dict[str, list[CrlEntry]] = {ca.key_id: [] for ca in trusted}
    rows = s.execute(
        select(
            DeviceCertificate.serial,
            DeviceCertificate.revoked_at,
            DeviceCertificate.not_after,
            DeviceCertificate.revocation_reason,
            DeviceCertificate.issuer_key_id,
        ).where(DeviceCertificate.revoked_at.is_not(None), DeviceCertificate.not_after > now)
    )
    for serial, revoked_at, not_after, reason, issuer in rows:
        entries = by_issuer.get(issuer or first)
        if entries is not None and revoked_at is not None:
            entries.append(CrlEntry(int(serial, 16), revoked_at, not_after, reason or ""))
    next_update = now + timedelta(hours=ctx.settings.crl_validity_hours)
    crls = [ca.sign_crl(by_issuer[ca.key_id], now=now, next_update=next_update) for ca in trusted]
    return _Crls(
        state=state,
        built_at=now,
        pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in crls),
        der=crls[0].public_bytes(serialization.Encoding.DER),
    )


def _crls(ctx: ServerContext) -> _Crls:
    cache = ctx.memo("certificates.crl_cache", float("inf"), _CrlCache)
    now = ctx.clock()
    half_life = timedelta(hours=ctx.settings.crl_validity_hours) / 2
    with ctx.db.read() as s:
        keys = tuple(ca.key_id for ca in ctx.ca.trusted(now=now))
        state = (*_revocation_state(s), *keys)
        with cache.lock:
            hit = cache.value
            if hit is None or hit.state != state or now - hit.built_at >= half_life:
                hit = cache.value = _build(ctx, s, state, now)
    return hit


def crl_pem(ctx: ServerContext) -> bytes:
    """The CRLs of every trusted device CA, PEM, the issuing CA's first."""
    return _crls(ctx).pem


def crl_der(ctx: ServerContext) -> bytes:
    """The issuing CA's CRL, DER."""
    return _crls(ctx).der


# -- CA rotation ---------------------------------------------------------------------------------
def _ca_out(ca: DeviceCA, role: str, trusted_until: datetime | None = None) -> CaOut:
    return CaOut(
        key_id=ca.key_id,
        subject=ca.cert.subject.rfc4514_string(),
        not_after=ca.cert.not_valid_after_utc,
        role=role,
        trusted_until=trusted_until,
    )


def ca_status(ctx: ServerContext) -> CaStatus:
    now = ctx.clock()
    current = ctx.ca.current
    return CaStatus(
        cas=[_ca_out(current, "issuing")]
        + [
            _ca_out(p.ca, "previous", p.retire_after)
            for p in ctx.ca.previous
            if p.retire_after > now and p.ca.key_id != current.key_id
        ]
    )


def rotate_ca(ctx: ServerContext, *, actor: str) -> CaStatus:
    """A new issuing CA; the old one stays trusted until the last certificate it issued
    expires, so devices keep working and move to the new CA at their next renewal."""
    now = ctx.clock()
    old = ctx.ca.current
    with ctx.db.write() as s:
        issued_by_old = (DeviceCertificate.issuer_key_id == old.key_id) | (
            DeviceCertificate.issuer_key_id.is_(None)
        )
        last = s.scalar(
            select(func.max(DeviceCertificate.not_after)).where(
                DeviceCertificate.revoked_at.is_(None), issued_by_old
            )
        )
        # Another replica may still issue with the old CA until it notices the rotation: the
        # longest certificate it could issue from now on bounds the overlap from below.
        floor = now + timedelta(days=ctx.settings.device_cert_days) + _SKEW
        retire_after = max(last or floor, floor)
        new = ctx.ca.rotate(now=now, retire_after=retire_after)
        audit.record(
            s,
            at=now,
            actor=actor,
            action="ca.rotate",
            target_type="ca",
            target_id=new.key_id,
            before={"issuing_key_id": old.key_id},
            after={
                "issuing_key_id": new.key_id,
                "previous_trusted_until": retire_after.isoformat(),
            },
        )
    return ca_status(ctx)


# -- monitoring ----------------------------------------------------------------------------------
def expiry_counts(ctx: ServerContext) -> dict[str, int]:
    """Active devices' current certificates by ``core.certificates.ExpiryState``."""
    now = ctx.clock()
    soon = now + EXPIRING_WINDOW
    not_after = Device.cert_not_after
    with ctx.db.read() as s:
        expired, expiring, valid = s.execute(
            select(
                func.coalesce(func.sum(case((not_after <= now, 1), else_=0)), 0),
                func.coalesce(
                    func.sum(case(((not_after > now) & (not_after < soon), 1), else_=0)), 0
                ),
                func.coalesce(func.sum(case((not_after >= soon, 1), else_=0)), 0),
            ).where(Device.status == "active", not_after.is_not(None))
        ).one()
    return {
        ExpiryState.EXPIRED.value: int(expired),
        ExpiryState.EXPIRING_7D.value: int(expiring),
        ExpiryState.VALID.value: int(valid),
    }
