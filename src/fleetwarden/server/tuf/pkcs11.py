"""PKCS#11 keys for the server's online TUF roles (timestamp, snapshot, targets, director).

The private keys live in a PKCS#11 token (an HSM; SoftHSM2 in the tests) and never leave it:
they are generated inside the token as non-extractable, and the token makes every signature.
The server names a key by a PKCS#11 URI (RFC 7512), in this subset::

    pkcs11:token=<token label>;object=<key label>?module-path=<.so>&pin-source=file:<path>
    pkcs11:token=<token label>;object=<key label>?module-path=<.so>&pin-value=<PIN>

Rules:

1. A URI names one token (``token``, its CKA label) and one key pair (``object``, the
   CKA_LABEL of both halves). ``module-path`` defaults to ``$PKCS11_MODULE``, else SoftHSM2.
   Anything else (other attributes, duplicates, bad percent-encoding, both PIN attributes) is
   a ``ConfigError`` that names the problem: a typo in the configuration must stop start-up.
2. The PIN never appears in an error, a ``repr`` or a log line; ``Pkcs11Uri.redacted()`` (and
   ``str()``) is the form to show.
3. A key that cannot be used (module, token or key missing, PIN wrong or locked, session lost
   twice in a row) raises ``SigningError``: signing fails closed, nothing is published
   unsigned. python-pkcs11 exceptions are translated at the public functions of this module.
4. Signatures are ``ecdsa-sha2-nistp256``: SHA-256 is computed on the host and the token signs
   the digest with CKM_ECDSA (SoftHSM 2.6.1 has no CKM_ECDSA_SHA256); the raw r||s is
   DER-encoded, the form securesystemslib's ``SSlibKey.verify_signature`` expects.
5. One logged-in session per token, shared by every signer on it. A PKCS#11 login belongs to
   the application, not to a session (PKCS#11 v2.40 §5.6, C_Login): a second C_Login fails
   with CKR_USER_ALREADY_LOGGED_IN, and C_Logout on any session logs all of them out. The
   session is opened on first use, kept, and opened again once when it is lost (token
   restarted, library re-initialised).
6. Calls into one module are serialised by one lock: python-pkcs11 calls C_Initialize(NULL),
   which tells the module it need not be thread-safe (PKCS#11 v2.40 §5.4, C_Initialize). A
   P-256 signature takes about 0.1 ms in SoftHSM, so the lock costs nothing that matters.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import string
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, unquote_to_bytes

import pkcs11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    DeviceError,
    DeviceRemoved,
    KeyHandleInvalid,
    MultipleObjectsReturned,
    MultipleTokensReturned,
    NoSuchKey,
    NoSuchToken,
    ObjectHandleInvalid,
    PinExpired,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    SessionClosed,
    SessionHandleInvalid,
    TokenNotPresent,
    UserAlreadyLoggedIn,
    UserNotLoggedIn,
    UserPinNotInitialized,
)
from pkcs11.util.ec import encode_ecdsa_signature, encode_named_curve_parameters

# The ignore: with this project's mypy configuration the `strict` override for
# fleetwarden.core turns implicit re-exports off everywhere, and securesystemslib.signer
# re-exports its names without `as`. `unused-ignore` keeps it quiet once pyproject.toml
# re-enables implicit_reexport for securesystemslib.*.
from securesystemslib.signer import (
    ECDSA_SHA2_NISTP256,
    KEY_TYPE_ECDSA,
    SIGNER_FOR_URI_SCHEME,
    Key,
    SecretsHandler,
    Signature,
    Signer,
    SSlibKey,
)

from fleetwarden.errors import ConfigError, SigningError

__all__ = [
    "DEFAULT_MODULE",
    "MODULE_ENV",
    "Pkcs11Signer",
    "Pkcs11Uri",
    "generate_key",
    "load_signer",
    "parse_uri",
    "register_uri_scheme",
    "with_object",
]

log = logging.getLogger("fleetwarden.tuf.pkcs11")

MODULE_ENV = "PKCS11_MODULE"
DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
URI_SCHEME = "pkcs11"

T = TypeVar("T")

# -- URIs (RFC 7512 subset) ---------------------------------------------------------------------

# RFC 7512 §2.3: characters allowed unencoded in attribute values. The path may also hold "&",
# the query also "/", "?" and "|"; everything else must be percent-encoded.
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_RES_AVAIL = frozenset(":[]@!$'()*+,=")
_PATH_CHARS = _UNRESERVED | _RES_AVAIL | {"&"}
_QUERY_CHARS = _UNRESERVED | _RES_AVAIL | {"/", "?", "|"}
_PATH_ATTRIBUTES = ("token", "object")
_QUERY_ATTRIBUTES = ("module-path", "pin-source", "pin-value")
# Echo an attribute name in an error only when it looks like one: a mistyped URI could have
# the PIN where the name should be ("pin-value1234" lacks its "=").
_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")
# CK_TOKEN_INFO.label is 32 bytes of UTF-8, space-padded: a longer label can never match.
_TOKEN_LABEL_MAX = 32
_HEX = frozenset(string.hexdigits)


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed PKCS#11 URI naming one key pair in one token.

    ``pin_file`` (from ``pin-source=file:<path>``) is read when a signer is built, so a PIN
    file can be provisioned after the configuration. ``pin_value`` is kept out of ``repr``;
    ``str()`` is the redacted form.
    """

    token_label: str
    key_label: str
    module_path: str
    pin_file: str | None = None
    pin_value: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.token_label or not self.key_label:
            raise ConfigError("a PKCS#11 URI needs a non-empty token and object (key label)")
        if len(self.token_label.encode("utf-8", "surrogatepass")) > _TOKEN_LABEL_MAX:
            raise ConfigError(
                f"PKCS#11 token label {self.token_label!r} is longer than 32 bytes,"
                " so no token can carry it"
            )
        for name, path in (("module-path", self.module_path), ("pin-source", self.pin_file)):
            if path is not None and (not path.startswith("/") or "\0" in path):
                raise ConfigError(f"PKCS#11 URI {name} must be an absolute file path")
        if self.pin_file is not None and self.pin_value is not None:
            # RFC 7512 §2.4: a URI with both "SHOULD be refused as invalid".
            raise ConfigError("a PKCS#11 URI may have pin-source or pin-value, not both")
        if self.pin_value == "":
            raise ConfigError("PKCS#11 URI pin-value is empty")

    def __str__(self) -> str:
        return self.redacted()

    def to_uri(self) -> str:
        """The URI in canonical form, PIN included: for configuration files, not for logs."""
        return self._format(reveal=True)

    def redacted(self) -> str:
        """The URI with any ``pin-value`` replaced by ``***``: safe for logs and errors."""
        return self._format(reveal=False)

    def _format(self, *, reveal: bool) -> str:
        path = f"token={_encode(self.token_label)};object={_encode(self.key_label)}"
        query = [f"module-path={_encode(self.module_path, '/')}"]
        if self.pin_file is not None:
            # RFC 8089 form with an empty authority, so a path starting "//" stays a path.
            query.append(f"pin-source={_encode('file://' + self.pin_file, '/:')}")
        if self.pin_value is not None:
            query.append(f"pin-value={_encode(self.pin_value) if reveal else '***'}")
        return f"{URI_SCHEME}:{path}?{'&'.join(query)}"

    def read_pin(self) -> str:
        """The user PIN, from ``pin-value`` or the first line of the ``pin-source`` file.

        Raises:
            ConfigError: no PIN is configured, or the file cannot be read or is empty. The
                message names the file, never its content.
        """
        if self.pin_value is not None:
            return self.pin_value
        if self.pin_file is None:
            raise ConfigError(f"{self}: no pin-source or pin-value to log in to the token")
        try:
            text = Path(self.pin_file).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                f"cannot read the PKCS#11 PIN file {self.pin_file}: {e.strerror}"
            ) from e
        except UnicodeDecodeError as e:
            # The codec's message quotes a byte of the file; say only what is wrong.
            raise ConfigError(f"the PKCS#11 PIN file {self.pin_file} is not UTF-8") from e
        pin = text.splitlines()[0] if text else ""
        if not pin:
            raise ConfigError(f"the PKCS#11 PIN file {self.pin_file} is empty")
        return pin


def parse_uri(text: str, *, environ: Mapping[str, str] | None = None) -> Pkcs11Uri:
    """Parse a PKCS#11 URI of the subset in the module docstring.

    Args:
        text: the URI.
        environ: where ``PKCS11_MODULE`` is looked up when the URI has no ``module-path``;
            ``os.environ`` by default.

    Raises:
        ConfigError: the URI is malformed or outside the subset; the message says why and
            never contains the PIN.
    """
    attributes = _split(text)
    if "object" not in attributes:
        raise ConfigError("PKCS#11 URI has no object (the key label)")
    return _build(attributes, os.environ if environ is None else environ)


def with_object(
    uri: str | Pkcs11Uri, key_label: str, *, environ: Mapping[str, str] | None = None
) -> str:
    """``uri`` naming the key ``key_label`` (replacing any ``object``), in canonical form.

    Lets one token URI from the configuration (``pkcs11:token=...?pin-source=...``) name each
    online key by its role. The result includes the PIN if ``uri`` has a ``pin-value``, and
    the module path (``environ`` as in ``parse_uri``), so a stored URI keeps naming the same
    module.

    Raises:
        ConfigError: ``uri`` is malformed or ``key_label`` is empty.
    """
    if isinstance(uri, Pkcs11Uri):
        return replace(uri, key_label=key_label).to_uri()
    attributes = _split(uri)
    attributes["object"] = key_label
    return _build(attributes, os.environ if environ is None else environ).to_uri()


def _split(text: str) -> dict[str, str]:
    """The URI's attributes, percent-decoded, by name; only the names we support, each once."""
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() != URI_SCHEME:
        raise ConfigError("a PKCS#11 URI starts with 'pkcs11:'")
    path, question, query = rest.partition("?")
    attributes = _attributes(path, ";", _PATH_CHARS, _PATH_ATTRIBUTES, "path")
    if question:
        attributes.update(_attributes(query, "&", _QUERY_CHARS, _QUERY_ATTRIBUTES, "query"))
    return attributes


def _attributes(
    part: str, separator: str, allowed: frozenset[str], names: tuple[str, ...], where: str
) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in part.split(separator):
        name, equals, raw = item.partition("=")
        if not equals:
            raise ConfigError(f"PKCS#11 URI {where} has an element without '=' (name=value)")
        if name not in names:
            shown = repr(name) if _NAME.fullmatch(name) else "with an invalid name"
            raise ConfigError(
                f"PKCS#11 URI {where} attribute {shown} is not supported"
                f" (supported: {', '.join(names)})"
            )
        if name in found:
            raise ConfigError(f"PKCS#11 URI has {name} more than once")
        found[name] = _decode(raw, allowed, name)
    return found


def _decode(raw: str, allowed: frozenset[str], name: str) -> str:
    """Percent-decode one value (RFC 7512 §2.3: octets, then UTF-8), refusing stray characters."""
    i = 0
    while i < len(raw):
        if raw[i] == "%":
            if len(raw) < i + 3 or not set(raw[i + 1 : i + 3]) <= _HEX:
                raise ConfigError(f"PKCS#11 URI {name} has a '%' not followed by two hex digits")
            i += 3
        elif raw[i] in allowed:
            i += 1
        else:
            raise ConfigError(
                f"PKCS#11 URI {name} has a character that must be percent-encoded at position {i}"
            )
    try:
        value = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"PKCS#11 URI {name} is not UTF-8 once percent-decoded") from e
    if not value:
        raise ConfigError(f"PKCS#11 URI {name} is empty")
    return value


def _encode(value: str, safe: str = "") -> str:
    # quote() leaves only unreserved characters and `safe` alone: a subset of what RFC 7512
    # allows unencoded, so the output always parses back to the same value.
    return quote(value, safe=safe, encoding="utf-8", errors="strict")


def _build(attributes: Mapping[str, str], environ: Mapping[str, str]) -> Pkcs11Uri:
    if "token" not in attributes:
        raise ConfigError("PKCS#11 URI has no token (the token label)")
    pin_file = None
    if "pin-source" in attributes:
        pin_file = _file_path(attributes["pin-source"])
    return Pkcs11Uri(
        token_label=attributes["token"],
        key_label=attributes.get("object", ""),
        module_path=attributes.get("module-path") or environ.get(MODULE_ENV) or DEFAULT_MODULE,
        pin_file=pin_file,
        pin_value=attributes.get("pin-value"),
    )


def _file_path(source: str) -> str:
    """The path of a ``pin-source``: ``file:/p`` or ``file:///p`` (RFC 8089, empty authority).

    Other sources (``|command``, remote files) are refused rather than silently ignored.
    """
    scheme, colon, path = source.partition(":")
    if not colon or scheme.lower() != "file":
        raise ConfigError("PKCS#11 URI pin-source must be a file: URI (file:/path/to/pin)")
    if path.startswith("//"):
        authority, slash, rest = path[2:].partition("/")
        if authority or not slash:
            raise ConfigError("PKCS#11 URI pin-source must be a local file (file:/path)")
        path = "/" + rest
    return path


# -- sessions ---------------------------------------------------------------------------------

# Errors after which the session (or the library under it) is gone and opening a new one may
# work: the token was restarted or removed and put back, or the library was re-initialised.
_SESSION_LOST: tuple[type[PKCS11Error], ...] = (
    SessionHandleInvalid,
    SessionClosed,
    UserNotLoggedIn,
    KeyHandleInvalid,
    ObjectHandleInvalid,
    DeviceRemoved,
    TokenNotPresent,
    DeviceError,
)


def _is_session_lost(error: PKCS11Error) -> bool:
    # python-pkcs11 raises the bare PKCS11Error for CKR_CRYPTOKI_NOT_INITIALIZED (the library
    # was finalised under us); opening again initialises it.
    return isinstance(error, _SESSION_LOST) or type(error) is PKCS11Error


def _alive(session: pkcs11.Session) -> bool:
    """Whether ``session`` still works, by a call that starts no operation (C_GenerateRandom)."""
    try:
        session.generate_random(64)
    except PKCS11Error as e:
        # A token without an RNG says nothing about the session: count only session loss.
        return not _is_session_lost(e)
    return True


class _TokenSession:
    """The one logged-in session of this process to one token (rule 5), opened lazily."""

    def __init__(self, module_path: str, token_label: str, lock: threading.RLock) -> None:
        self.module_path = module_path
        self.token_label = token_label
        self.lock = lock
        self.generation = 0  # bumped on every open; cached key handles carry it
        self._session: pkcs11.Session | None = None
        self._pin: bytes | None = None

    def __repr__(self) -> str:
        state = "open" if self._session is not None else "closed"
        return f"<_TokenSession {self.token_label!r} in {self.module_path} {state}>"

    def run(
        self,
        pin: str,
        action: Callable[[pkcs11.Session, int], T],
        *,
        searches: Callable[[int], bool] = lambda _generation: True,
    ) -> T:
        """``action(session, generation)`` under the module lock, again once on a lost session.

        ``searches(generation)`` says whether the action will look objects up. A kept session
        is checked before a search: python-pkcs11 0.10.1 leaves a search that failed to start
        marked active, and its ``__del__`` then raises ``SessionHandleInvalid`` into
        ``sys.unraisablehook``. Signing with a known key handle needs no check: a dead
        session fails cleanly there.
        """
        with self.lock:
            session, kept = self._open(pin)
            if kept and searches(self.generation) and not _alive(session):
                self._discard()
                session, kept = self._open(pin)
            try:
                return action(session, self.generation)
            except PKCS11Error as e:
                if not _is_session_lost(e):
                    raise
                log.warning(
                    "PKCS#11 session to token %r lost (%s); logging in again",
                    self.token_label,
                    type(e).__name__,
                )
                self._discard()
            session, _ = self._open(pin)
            return action(session, self.generation)

    def _open(self, pin: str) -> tuple[pkcs11.Session, bool]:
        """The session, and whether it was kept from before (rather than opened now)."""
        if self._session is not None:
            if self._pin is not None and hmac.compare_digest(self._pin, pin.encode()):
                return self._session, True
            # Another PIN than the one this session logged in with: let the token judge it
            # rather than accept it because someone else logged in first.
            self._discard()
        token = _find_token(self.module_path, self.token_label)
        try:
            # Read/write, so the same session can also generate keys. A failed C_Login leaves
            # python-pkcs11's freshly opened session handle open (0.10.1); it goes with the
            # process or the next C_Finalize.
            session = token.open(user_pin=pin, rw=True)
        except UserAlreadyLoggedIn:
            # Code outside this module logged this process in already; the login is the
            # application's, so a public session signs too, but our PIN went unchecked.
            log.warning(
                "token %r was already logged in by other code; using that login",
                self.token_label,
            )
            session = token.open(rw=True)
        self._session, self._pin = session, pin.encode()
        self.generation += 1
        return session, False

    def _discard(self) -> None:
        session, self._session, self._pin = self._session, None, None
        if session is not None:
            # It is usually dead already (that is why we are here); closing is best effort.
            with suppress(PKCS11Error):
                session.close()


_registry_lock = threading.Lock()
_module_locks: dict[str, threading.RLock] = {}
_token_sessions: dict[tuple[str, str], _TokenSession] = {}


def _token_session(uri: Pkcs11Uri) -> _TokenSession:
    # Keyed by the path as written, as python-pkcs11 caches modules: name a module by one
    # path throughout a process, or it is initialised twice (CKR_CRYPTOKI_ALREADY_INITIALIZED).
    module = uri.module_path
    with _registry_lock:
        found = _token_sessions.get((module, uri.token_label))
        if found is None:
            lock = _module_locks.setdefault(module, threading.RLock())
            found = _TokenSession(module, uri.token_label, lock)
            _token_sessions[module, uri.token_label] = found
        return found


def _find_token(module_path: str, token_label: str) -> pkcs11.Token:
    """The token labelled ``token_label`` in the module (loaded and initialised on first use;
    python-pkcs11 keeps it loaded per path and initialises it again after a C_Finalize)."""
    try:
        library = pkcs11.lib(module_path)
    except PKCS11Error as e:
        # The message is the dlopen() error, which names only the file.
        raise SigningError(f"cannot load the PKCS#11 module {module_path}: {e}") from e
    return library.get_token(token_label=token_label)


# What each python-pkcs11 error means for the operator, most specific first (rule 3).
_ERROR_MESSAGES: tuple[tuple[tuple[type[PKCS11Error], ...], str], ...] = (
    ((PinIncorrect, PinInvalid, PinLenRange), "the token refused the PIN"),
    ((PinLocked,), "the user PIN is locked; unlock it with the SO PIN"),
    ((PinExpired,), "the user PIN has expired; set a new one"),
    ((UserPinNotInitialized,), "the token has no user PIN yet"),
    ((NoSuchToken,), "no such token in {module}"),
    ((MultipleTokensReturned,), "several tokens carry that label"),
    ((TokenNotPresent, DeviceRemoved), "the token is not present"),
    ((NoSuchKey,), "no such EC key pair in the token"),
    ((MultipleObjectsReturned,), "several keys carry that label"),
)


def _signing_error(uri: Pkcs11Uri, error: PKCS11Error) -> SigningError:
    """The ``SigningError`` for ``error``: names the token and key, never the PIN."""
    message = next((m for types, m in _ERROR_MESSAGES if isinstance(error, types)), None)
    if message is None:
        lost = _is_session_lost(error)
        message = "lost the session twice in a row" if lost else f"error {type(error).__name__}"
    where = f"PKCS#11 key {uri.key_label!r} on token {uri.token_label!r}"
    return SigningError(f"{where}: {message.format(module=uri.module_path)}")


@contextmanager
def _signing_errors(uri: Pkcs11Uri) -> Iterator[None]:
    """Translate python-pkcs11 errors at the public boundary of this module."""
    try:
        yield
    except PKCS11Error as e:
        raise _signing_error(uri, e) from e


# -- keys -----------------------------------------------------------------------------------

_P256_PARAMS = encode_named_curve_parameters("secp256r1")
_P256_POINT_LEN = 65  # 0x04 || X || Y


def _public_key(session: pkcs11.Session, uri: Pkcs11Uri) -> ec.EllipticCurvePublicKey:
    """The P-256 public key labelled ``uri.key_label``, from its EC_PARAMS and EC_POINT."""
    key = session.get_key(
        object_class=ObjectClass.PUBLIC_KEY, key_type=KeyType.EC, label=uri.key_label
    )
    if key[Attribute.EC_PARAMS] != _P256_PARAMS:
        raise SigningError(f"{uri}: the key is not on the P-256 curve")
    point = bytes(key[Attribute.EC_POINT])
    # PKCS#11 v2.40 says EC_POINT is a DER OCTET STRING (04 41 || point); some modules return
    # the bare point. The two lengths differ, so the forms cannot be confused.
    if len(point) == _P256_POINT_LEN + 2 and point[:2] == b"\x04\x41":
        point = point[2:]
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as e:
        raise SigningError(f"{uri}: the token returned an invalid EC point") from e


def _private_key(session: pkcs11.Session, uri: Pkcs11Uri) -> pkcs11.SignMixin:
    key = session.get_key(
        object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC, label=uri.key_label
    )
    if not isinstance(key, pkcs11.SignMixin):
        raise SigningError(f"{uri}: the private key cannot sign")
    return key


def _sign_digest(key: pkcs11.SignMixin, digest: bytes) -> bytes:
    """DER ECDSA signature over a SHA-256 ``digest`` (rule 4)."""
    return encode_ecdsa_signature(key.sign(digest, mechanism=Mechanism.ECDSA))


def _sslib_key(public: ec.EllipticCurvePublicKey) -> SSlibKey:
    # from_crypto computes the keyid the standard securesystemslib way (hash of the canonical
    # key JSON), so the key matches what other TUF tooling computes for it.
    return SSlibKey.from_crypto(public, scheme=ECDSA_SHA2_NISTP256)


def _as_uri(uri: str | Pkcs11Uri) -> Pkcs11Uri:
    return uri if isinstance(uri, Pkcs11Uri) else parse_uri(uri)


def generate_key(uri: str | Pkcs11Uri) -> SSlibKey:
    """Create a P-256 key pair labelled ``object`` in the token and return its public key.

    The private half is a token object that is sensitive and not extractable, and may only
    sign: it cannot be copied out, and a stolen server disk holds no key. Refuses to reuse a
    label, because two pairs under one label make every later lookup ambiguous (the check and
    the creation are not atomic across processes; key creation is an operator's one-off).

    Raises:
        ConfigError: the URI is malformed, the PIN file unreadable, or the label taken.
        SigningError: the token cannot be used (see ``load_signer``).
    """
    uri = _as_uri(uri)
    pin = uri.read_pin()

    def create(session: pkcs11.Session, _generation: int) -> ec.EllipticCurvePublicKey:
        # list(): run the search to its end, which finishes the C_FindObjects operation.
        if list(session.get_objects({Attribute.LABEL: uri.key_label})):
            raise ConfigError(f"{uri}: a key labelled {uri.key_label!r} already exists")
        session.generate_keypair(
            KeyType.EC,
            store=True,
            label=uri.key_label,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template={Attribute.EC_PARAMS: _P256_PARAMS, Attribute.TOKEN: True},
            private_template={
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.DERIVE: False,
            },
        )
        return _public_key(session, uri)

    with _signing_errors(uri):
        public = _token_session(uri).run(pin, create)
    key = _sslib_key(public)
    log.info("generated PKCS#11 key %s (keyid %s)", uri, key.keyid)
    return key


def load_signer(uri: str | Pkcs11Uri) -> Pkcs11Signer:
    """The signer for an existing key pair, checked now rather than at the first signature.

    Logs in, finds both halves by label and signs a probe that the public half must verify,
    so a wrong PIN, a missing key or mismatched halves stop the server at start-up.

    Raises:
        ConfigError: the URI is malformed or the PIN file unreadable.
        SigningError: the module, token or key is missing, or the PIN is wrong or locked;
            the message names the token and the key label, never the PIN.
    """
    uri = _as_uri(uri)
    pin = uri.read_pin()
    probe = hashlib.sha256(b"fleetwarden pkcs11 probe").digest()

    def check(session: pkcs11.Session, _generation: int) -> ec.EllipticCurvePublicKey:
        public = _public_key(session, uri)
        signature = _sign_digest(_private_key(session, uri), probe)
        try:
            public.verify(signature, probe, ec.ECDSA(Prehashed(hashes.SHA256())))
        except InvalidSignature as e:
            raise SigningError(f"{uri}: the private and public keys are not one pair") from e
        return public

    with _signing_errors(uri):
        public = _token_session(uri).run(pin, check)
    return Pkcs11Signer(uri, _sslib_key(public))


class Pkcs11Signer(Signer):
    """Signs with a P-256 key held in a PKCS#11 token (module docstring, rules 3-6).

    Build it with ``load_signer`` (checks the key now) or ``Signer.from_priv_key_uri`` after
    ``register_uri_scheme()``. The constructor itself does not touch the token: the session
    is opened by the first ``sign``. Safe to share between threads.
    """

    SCHEME = URI_SCHEME

    def __init__(self, uri: Pkcs11Uri, public_key: SSlibKey) -> None:
        """A signer that opens its session on the first ``sign``.

        Args:
            uri: names the key pair and how to log in.
            public_key: its public half; signatures carry this key's keyid.

        Raises:
            ConfigError: the key is not ecdsa-sha2-nistp256, or the PIN cannot be read.
        """
        if (public_key.keytype, public_key.scheme) != (KEY_TYPE_ECDSA, ECDSA_SHA2_NISTP256):
            raise ConfigError(f"{uri}: only {ECDSA_SHA2_NISTP256} keys are supported")
        self._uri = uri
        self._public_key = public_key
        self._pin = uri.read_pin()
        self._token = _token_session(uri)
        self._key: tuple[int, pkcs11.SignMixin] | None = None  # (session generation, key)

    def __repr__(self) -> str:
        return f"<Pkcs11Signer {self._uri.redacted()} keyid={self._public_key.keyid[:12]}>"

    @property
    def uri(self) -> Pkcs11Uri:
        return self._uri

    @property
    def public_key(self) -> SSlibKey:
        return self._public_key

    def sign(self, payload: bytes) -> Signature:
        """Sign ``payload`` with ``ecdsa-sha2-nistp256``.

        Raises:
            SigningError: the token cannot sign now, even after logging in again once.
        """
        digest = hashlib.sha256(payload).digest()

        def sign_digest(session: pkcs11.Session, generation: int) -> bytes:
            # Object handles belong to a session: look the key up again after a re-open.
            if self._key is None or self._key[0] != generation:
                self._key = (generation, _private_key(session, self._uri))
            return _sign_digest(self._key[1], digest)

        def searches(generation: int) -> bool:
            return self._key is None or self._key[0] != generation

        with _signing_errors(self._uri):
            der = self._token.run(self._pin, sign_digest, searches=searches)
        return Signature(self._public_key.keyid, der.hex())

    @classmethod
    def from_priv_key_uri(
        cls,
        priv_key_uri: str,
        public_key: Key,
        secrets_handler: SecretsHandler | None = None,
    ) -> Pkcs11Signer:
        """The securesystemslib factory: ``Signer.from_priv_key_uri("pkcs11:...", key)``.

        ``public_key`` is the key the metadata names; the token must hold exactly that key
        (its keyid may differ from the default one, and signatures carry the given keyid).
        Without a PIN in the URI, ``secrets_handler("PIN")`` supplies it.

        Raises:
            ConfigError: the URI is malformed or no PIN is available.
            SigningError: the key cannot be used, or the token holds a different key.
        """
        uri = parse_uri(priv_key_uri)
        if uri.pin_file is None and uri.pin_value is None and secrets_handler is not None:
            uri = replace(uri, pin_value=secrets_handler("PIN"))
        if not isinstance(public_key, SSlibKey):
            raise ConfigError(f"{uri}: expected an SSlibKey, got {type(public_key).__name__}")
        held = load_signer(uri).public_key
        if (held.keytype, held.scheme, held.keyval) != (
            public_key.keytype,
            public_key.scheme,
            public_key.keyval,
        ):
            raise SigningError(f"{uri}: the token holds another key than {public_key.keyid}")
        return cls(uri, public_key)


def register_uri_scheme() -> None:
    """Let ``Signer.from_priv_key_uri`` build a ``Pkcs11Signer`` from a ``pkcs11:`` URI.

    Called by the composition root rather than at import, so importing this module changes no
    global state of securesystemslib.
    """
    SIGNER_FOR_URI_SCHEME[URI_SCHEME] = Pkcs11Signer
