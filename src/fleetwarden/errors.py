"""The one exception hierarchy of fleetwarden.

Roots are chosen by what the caller must do, not by where the error came from::

    FleetwardenError
    ├── InputError               the request or file is malformed: fix it, do not retry as is   (400/422)
    │   ├── SelectorError        a label selector does not parse
    │   ├── RangeNotSatisfiable  an HTTP Range lies outside the content                         (416)
    │   └── PayloadTooLarge      an upload is over the configured limit                         (413)
    ├── VerificationError        content failed a check: never use it, never retry the same bytes
    │   ├── IntegrityError       size or sha256 differs from what was promised
    │   └── TrustError           signed (TUF) metadata does not verify or does not allow it
    ├── AuthError
    │   ├── AuthenticationError  who you are is not proven (bad/expired/reused token, bad cert) (401)
    │   └── PermissionDenied     proven, but the role does not allow it                         (403)
    ├── NotFoundError            the named thing does not exist                                 (404)
    ├── ConflictError            the request clashes with current state                         (409)
    │   ├── IllegalTransition    a lifecycle event not allowed from the current state
    │   └── Deferred             not now: retry after ``retry_after`` seconds (a closed window)
    ├── TransportError           the network or the peer failed: retry with backoff
    │   └── ServerError          the peer answered 5xx
    ├── SigningError             a signing key (file or PKCS#11 token) cannot be used
    ├── InstallError             a step on the device failed: roll back and report
    │   └── HealthCheckFailed    the update installed but the device is not healthy
    └── ConfigError              configuration is missing or invalid: fix it, fatal at start

Foreign exceptions (httpx, SQLAlchemy, subprocess, cryptography) are translated at the
boundary that called the foreign code, most specific first, with ``raise ... from``; callers
above that boundary only ever see these classes.
"""

from __future__ import annotations


class FleetwardenError(Exception):
    """Base of every error fleetwarden raises on purpose."""

    #: Stable machine-readable code, used in JSON error bodies and CLI exit messages.
    code = "error"


class InputError(FleetwardenError):
    code = "invalid_input"


class SelectorError(InputError):
    code = "invalid_selector"

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.position = position


class RangeNotSatisfiable(InputError):
    code = "range_not_satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(f"requested range is outside the content of {size} bytes")
        self.size = size


class PayloadTooLarge(InputError):
    code = "payload_too_large"


class VerificationError(FleetwardenError):
    code = "verification_failed"


class IntegrityError(VerificationError):
    code = "integrity_mismatch"


class AuthError(FleetwardenError):
    code = "auth"


class AuthenticationError(AuthError):
    code = "unauthenticated"


class PermissionDenied(AuthError):
    code = "forbidden"


class NotFoundError(FleetwardenError):
    code = "not_found"


class ConflictError(FleetwardenError):
    code = "conflict"


class IllegalTransition(ConflictError):
    code = "illegal_transition"


class Deferred(ConflictError):
    """The request is valid but must wait, e.g. an install outside every maintenance window."""

    code = "deferred"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1.0, retry_after)


class TransportError(FleetwardenError):
    code = "transport"


class ServerError(TransportError):
    code = "server_error"


class InstallError(FleetwardenError):
    code = "install_failed"


class HealthCheckFailed(InstallError):
    code = "health_check_failed"


class ConfigError(FleetwardenError):
    code = "config"


class SigningError(FleetwardenError):
    """A signing key could not be used (locked token, wrong PIN, missing key). Signing fails
    closed: nothing is published unsigned. Messages never contain key material or PINs."""

    code = "signing"


class TrustError(VerificationError):
    """Signed metadata did not verify (TUF): the device installs nothing it names."""

    code = "untrusted"
