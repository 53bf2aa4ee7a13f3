"""Operator API tokens and device enrollment tokens.

Tokens are 256-bit random strings; only their SHA-256 is stored, so a database dump does not
leak usable credentials. A fast hash is right here (unlike passwords): the input has full
entropy, so there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from fleetwarden.errors import AuthenticationError, ConflictError, NotFoundError
from fleetwarden.protocol.api import (
    EnrollmentTokenCreate,
    EnrollmentTokenCreated,
    Role,
    TokenCreate,
    TokenCreated,
    TokenOut,
)
from fleetwarden.server.models import ApiToken, EnrollmentToken
from fleetwarden.server.services import audit

__all__ = [
    "API_PREFIX",
    "ENROLL_PREFIX",
    "Principal",
    "authenticate",
    "bootstrap_admin",
    "consume_enrollment_token",
    "create_enrollment_token",
    "create_token",
    "hash_token",
    "list_tokens",
    "revoke_token",
]

API_PREFIX = "fwt_"
ENROLL_PREFIX = "fwe_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"token:{self.name}"

    def allows(self, role: Role) -> bool:
        return self.role.rank >= role.rank


def authenticate(session: Session, token: str, *, now: datetime) -> Principal:
    """Raises ``AuthenticationError`` for an unknown, revoked or expired token."""
    if not token.startswith(API_PREFIX) or len(token) > 128:
        raise AuthenticationError("not an API token")
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        raise AuthenticationError("unknown or revoked API token")
    if row.expires_at is not None and now >= row.expires_at:
        raise AuthenticationError("API token expired")
    return Principal(row.id, row.name, Role(row.role))


def create_token(
    session: Session, body: TokenCreate, *, actor: str, now: datetime, secret: str | None = None
) -> TokenCreated:
    ensure_unused_name(session, body.name)
    token = secret or _new_token(API_PREFIX)
    expires = now + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    row = ApiToken(
        name=body.name,
        role=body.role.value,
        token_hash=hash_token(token),
        created_at=now,
        created_by=actor,
        expires_at=expires,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        at=now,
        actor=actor,
        action="token.create",
        target_type="api_token",
        target_id=row.id,
        after={"name": body.name, "role": body.role.value},
    )
    return TokenCreated(token=token, **TokenOut.model_validate(row).model_dump())


def bootstrap_admin(session: Session, *, now: datetime, secret: str | None = None) -> str | None:
    """Create the first admin token if no active admin token exists; return it, else None."""
    active_admins = session.scalar(
        select(func.count())
        .select_from(ApiToken)
        .where(ApiToken.role == Role.ADMIN.value, ApiToken.revoked_at.is_(None))
    )
    if active_admins:
        return None
    created = create_token(
        session,
        TokenCreate(name="bootstrap-admin", role=Role.ADMIN),
        actor=audit.SYSTEM,
        now=now,
        secret=secret,
    )
    return created.token


def list_tokens(session: Session) -> list[TokenOut]:
    return [
        TokenOut.model_validate(r) for r in session.scalars(select(ApiToken).order_by(ApiToken.id))
    ]


def revoke_token(session: Session, token_id: int, *, actor: str, now: datetime) -> TokenOut:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"no API token with id {token_id}")
    if row.revoked_at is None:
        row.revoked_at = now
        audit.record(
            session,
            at=now,
            actor=actor,
            action="token.revoke",
            target_type="api_token",
            target_id=row.id,
            before={"revoked_at": None},
            after={"revoked_at": now.isoformat()},
        )
    return TokenOut.model_validate(row)


def create_enrollment_token(
    session: Session, body: EnrollmentTokenCreate, *, actor: str, now: datetime
) -> EnrollmentTokenCreated:
    token = _new_token(ENROLL_PREFIX)
    row = EnrollmentToken(
        token_hash=hash_token(token),
        created_at=now,
        created_by=actor,
        expires_at=now + timedelta(hours=body.expires_in_hours),
        uses_allowed=body.uses,
        uses=0,
        labels=dict(body.labels),
        note=body.note,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        at=now,
        actor=actor,
        action="enrollment_token.create",
        target_type="enrollment_token",
        target_id=row.id,
        after={"uses": body.uses, "expires_at": row.expires_at.isoformat(), "labels": row.labels},
    )
    return EnrollmentTokenCreated(
        id=row.id, token=token, uses=row.uses_allowed, expires_at=row.expires_at, labels=row.labels
    )


def consume_enrollment_token(session: Session, token: str, *, now: datetime) -> EnrollmentToken:
    """Use up one use of an enrollment token, atomically.

    The conditional UPDATE makes two devices racing for the last use of a token unable to
    both win, on SQLite and PostgreSQL alike, without a separate lock.

    Raises:
        AuthenticationError: unknown, revoked, expired or used-up token.
    """
    row = session.scalar(
        select(EnrollmentToken).where(EnrollmentToken.token_hash == hash_token(token))
    )
    if row is None or row.revoked_at is not None:
        raise AuthenticationError("unknown enrollment token")
    if now >= row.expires_at:
        raise AuthenticationError("enrollment token expired")
    result = session.execute(
        update(EnrollmentToken)
        .where(EnrollmentToken.id == row.id, EnrollmentToken.uses < EnrollmentToken.uses_allowed)
        .values(uses=EnrollmentToken.uses + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise AuthenticationError("enrollment token already used")
    session.refresh(row)
    return row


def ensure_unused_name(session: Session, name: str) -> None:
    if session.scalar(
        select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
    ):
        raise ConflictError(f"an active token named {name!r} exists")
