"""Fuzzing the parsers that see untrusted input: CSRs at enrollment and device API bodies.

Contracts pinned here:
  * ``fleetwarden.server.pki.load_csr``: "every failure is an ``InputError``".
  * ``DeviceCA.issue``: raises ``InputError`` (the CSR does not parse or uses a key type we do
    not accept) or ``VerificationError`` (the CSR's self-signature does not verify); per
    ``fleetwarden.errors``, foreign exceptions are translated at the boundary that called them.
  * ``fleetwarden.protocol.device`` models: malformed JSON values raise only
    ``pydantic.ValidationError``, and accepted values respect the declared bounds.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pydantic
import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetwarden.agent.identity import make_csr
from fleetwarden.core.assignments import AssignmentState
from fleetwarden.errors import InputError, VerificationError
from fleetwarden.protocol.device import EnrollRequest, Inventory, SessionRequest, StatusReport
from fleetwarden.server.pki import DeviceCA, load_csr

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DEVICE_ID = "dev-00112233aabbccdd"
CSR_BEGIN = b"-----BEGIN CERTIFICATE REQUEST-----\n"
CSR_END = b"-----END CERTIFICATE REQUEST-----\n"
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
P256 = "1.2.840.10045.3.1.7"
FOREIGN_FROM_ISSUE = (ValueError, UnsupportedAlgorithm, x509.InvalidVersion)

crypto_settings = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# -- a little DER, enough to take a CSR apart and put it back together -------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _children(content: bytes) -> list[bytes]:
    """The encoded TLVs directly inside a constructed value's content."""
    out, i = [], 0
    while i < len(content):
        length, j = content[i + 1], i + 2
        if length & 0x80:
            k = length & 0x7F
            length, j = int.from_bytes(content[j : j + k], "big"), j + k
        out.append(content[i : j + length])
        i = j + length
    return out


def _inner(encoded: bytes) -> bytes:
    """The content of one encoded TLV."""
    length, j = encoded[1], 2
    if length & 0x80:
        k = length & 0x7F
        length, j = int.from_bytes(encoded[2 : 2 + k], "big"), 2 + k
    return encoded[j : j + length]


def _oid(dotted: str) -> bytes:
    first, second, *rest = (int(p) for p in dotted.split("."))
    body = bytearray([40 * first + second])
    for arc in rest:
        chunk, rest_bits = [arc & 0x7F], arc >> 7
        while rest_bits:
            chunk.append(0x80 | (rest_bits & 0x7F))
            rest_bits >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _pem(der: bytes) -> bytes:
    return CSR_BEGIN + base64.encodebytes(der) + CSR_END


def _spki(algorithm: bytes, key_bits: bytes) -> bytes:
    return _tlv(0x30, _tlv(0x30, algorithm) + _tlv(0x03, b"\x00" + key_bits))


def _rebuilt_csr(key, *, version=None, spki=None, signature_algorithm=None, resign=True):
    """A CSR made by ``make_csr`` with parts replaced, re-signed by ``key`` unless told not to."""
    der = x509.load_pem_x509_csr(make_csr(key, "gw").encode()).public_bytes(
        serialization.Encoding.DER
    )
    info, algorithm, signature = _children(_inner(der))
    v, subject, public_key, attributes = _children(_inner(info))
    info = _tlv(0x30, (version or v) + subject + (spki or public_key) + attributes)
    if resign:
        signature = _tlv(0x03, b"\x00" + key.sign(info, ec.ECDSA(hashes.SHA256())))
    return _pem(_tlv(0x30, info + (signature_algorithm or algorithm) + signature))


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return DeviceCA.load_or_create(tmp_path_factory.mktemp("ca"), now=NOW)


@pytest.fixture(scope="module")
def key():
    """A fixed key, so that the derandomized fuzzing below sees the same CSR layout each run."""
    return ec.derive_private_key(0x5EED_F1EE7_3A2D, ec.SECP256R1())


@pytest.fixture(scope="module")
def csr_der(key):
    csr = x509.load_pem_x509_csr(make_csr(key, "gateway-7").encode())
    return csr.public_bytes(serialization.Encoding.DER)


def _issue(ca, csr_pem):
    return ca.issue(csr_pem, device_id=DEVICE_ID, now=NOW, days=30)


def _issue_or_reject(ca, csr_pem):
    """Issue, or check that the only errors are InputError and VerificationError."""
    try:
        return _issue(ca, csr_pem)
    except (InputError, VerificationError):
        return None


# -- DeviceCA.issue: what it accepts ----------------------------------------------------------


def test_issue_certifies_the_key_for_the_server_chosen_device_id(ca, key):
    """DeviceCA.issue: the subject comes from the server, never from the CSR."""
    cert = _issue(ca, make_csr(key, "dev-someone-else").encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DEVICE_ID
    assert len(cert.subject) == 1
    assert cert.issuer == ca.cert.subject
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(ca.cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc == NOW + timedelta(days=30)
    assert cert.not_valid_before_utc <= NOW


def test_issue_accepts_p384(ca):
    """DeviceCA.issue: device keys may be ECDSA P-256 or P-384."""
    key = ec.generate_private_key(ec.SECP384R1())
    assert _issue(ca, make_csr(key, "gw").encode()).public_key() == key.public_key()


@pytest.mark.parametrize(
    "private_key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP256K1()), id="secp256k1"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP521R1()), id="p521"),
        pytest.param(ed25519.Ed25519PrivateKey.generate, id="ed25519"),
        pytest.param(
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), id="rsa"
        ),
    ],
)
def test_issue_rejects_other_key_types(ca, private_key):
    """DeviceCA.issue: InputError for a key type we do not accept."""
    private = private_key()
    algorithm = None if isinstance(private, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw")]))
        .sign(private, algorithm)
    )
    with pytest.raises(InputError, match="ECDSA"):
        _issue(ca, csr.public_bytes(serialization.Encoding.PEM))


def test_issue_rejects_a_csr_without_proof_of_possession(ca, key):
    """DeviceCA.issue: VerificationError when the CSR's self-signature does not verify."""
    other = ec.generate_private_key(ec.SECP256R1())
    their_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    spki = their_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(VerificationError):
        _issue(ca, _rebuilt_csr(other, spki=spki))
    rsa_oid = _tlv(0x30, _oid("1.2.840.113549.1.1.11") + b"\x05\x00")
    with pytest.raises(VerificationError):
        _issue(ca, _rebuilt_csr(key, signature_algorithm=rsa_oid))
    with pytest.raises(VerificationError):
        _issue(ca, _rebuilt_csr(key, resign=False, signature_algorithm=_tlv(0x30, _oid("1.2.3.4"))))


@pytest.mark.parametrize(
    "csr_pem",
    [
        b"",
        b"garbage",
        b"\xff" * 64,
        "é".encode(),
        CSR_BEGIN + CSR_END,
        CSR_BEGIN + b"!!!!\n" + CSR_END,
        CSR_BEGIN + b"AAAA\n" + CSR_END,
        CSR_BEGIN + base64.encodebytes(b"\x30\x00") + CSR_END,
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ],
)
def test_garbage_csr_is_an_input_error(ca, csr_pem):
    """load_csr: every failure is an InputError; issue passes it on."""
    with pytest.raises(InputError):
        load_csr(csr_pem)
    with pytest.raises(InputError):
        _issue(ca, csr_pem)


def test_der_and_certificate_are_not_csrs(ca, key, csr_der):
    """load_csr: a DER CSR (not PEM) and a certificate PEM are input errors."""
    with pytest.raises(InputError):
        load_csr(csr_der)
    cert_pem = _issue(ca, make_csr(key, "gw").encode()).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(InputError):
        load_csr(cert_pem)


# -- DeviceCA.issue: known foreign exceptions (bugs; see the report) ---------------------------


def _ec_point(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


CRAFTED = {
    "unknown-key-algorithm": lambda k: _rebuilt_csr(k, spki=_spki(_oid("1.2.3.4"), _ec_point(k))),
    "unknown-named-curve": lambda k: _rebuilt_csr(
        k, spki=_spki(_oid(EC_PUBLIC_KEY) + _oid("1.2.3.4"), _ec_point(k))
    ),
    "point-not-on-curve": lambda k: _rebuilt_csr(
        k, spki=_spki(_oid(EC_PUBLIC_KEY) + _oid(P256), b"\x04" + b"\x01" * 64)
    ),
    "empty-point": lambda k: _rebuilt_csr(k, spki=_spki(_oid(EC_PUBLIC_KEY) + _oid(P256), b"")),
    "csr-version-1": lambda k: _rebuilt_csr(k, version=_tlv(0x02, b"\x01")),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_csr_raises_only_input_or_verification_error(ca, key, name):
    """DeviceCA.issue raises InputError or VerificationError for any CSR.

    Reproducers, each a well-formed PEM CSR correctly self-signed by a P-256 key:
    unknown SPKI algorithm OID → UnsupportedAlgorithm; EC key on an unknown named-curve OID →
    UnsupportedAlgorithm; P-256 point not on the curve, or empty → ValueError("Invalid key")
    (all from ``csr.public_key()``, outside any try); CSR version INTEGER 1 →
    x509.InvalidVersion, which is not a ValueError, so even load_csr lets it through.
    """
    csr_pem = CRAFTED[name](key)
    with pytest.raises((InputError, VerificationError)):
        _issue(ca, csr_pem)


def test_load_csr_with_unknown_version_is_an_input_error(key):
    """load_csr: every failure is an InputError."""
    with pytest.raises(InputError):
        load_csr(CRAFTED["csr-version-1"](key))


# -- fuzzing ----------------------------------------------------------------------------------


@given(st.binary(max_size=2048))
@crypto_settings
def test_load_csr_fuzz_bytes(data):
    """load_csr: every failure is an InputError."""
    with contextlib.suppress(InputError):
        load_csr(data)


@given(st.binary(max_size=1024))
@crypto_settings
def test_load_csr_fuzz_pem_wrapped_bytes(data):
    """load_csr: every failure is an InputError (past the PEM armour, into the DER parser)."""
    with contextlib.suppress(InputError):
        load_csr(_pem(data))


@given(st.one_of(st.binary(max_size=2048), st.binary(max_size=1024).map(_pem)))
@crypto_settings
def test_issue_fuzz_bytes(ca, data):
    """DeviceCA.issue: only InputError or VerificationError may escape."""
    assert _issue_or_reject(ca, data) is None


@given(st.data())
@settings(crypto_settings, derandomize=True, report_multiple_bugs=False)
def test_issue_fuzz_mutated_csr(ca, key, csr_der, data):
    """DeviceCA.issue: only InputError or VerificationError may escape, for a real CSR with
    1-3 bytes changed (about a third of such CSRs currently raise ValueError("Invalid key")).

    Derandomized so that the xfail is stable; remove the mark once issue() is fixed.
    """
    der = bytearray(csr_der)
    point_at = der.index(_ec_point(key))
    positions = st.one_of(
        st.integers(min_value=0, max_value=len(der) - 1),
        st.integers(min_value=point_at, max_value=point_at + 64),
    )
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        i = data.draw(positions)
        der[i] = data.draw(st.integers(min_value=0, max_value=255))
    cert = _issue_or_reject(ca, _pem(bytes(der)))
    if cert is not None:
        assert cert.public_key() == x509.load_der_x509_csr(bytes(der)).public_key()


# -- device API models ------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-2, max_value=102),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from([s.value for s in AssignmentState]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
not_strings = st.one_of(
    st.none(), st.booleans(), st.integers(), st.lists(st.text(max_size=3), max_size=2)
)


def _sized(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    """Strings of length min_size..max_size, long ones built cheaply from a repeated character."""
    if max_size <= 16:
        return st.text(min_size=min_size, max_size=max_size)
    return st.builds(
        lambda prefix, fill, n: prefix + fill * (n - len(prefix)),
        st.text(max_size=4),
        st.characters(codec="utf-8"),
        st.integers(min_value=max(4, min_size), max_value=max_size),
    )


def _within(limit: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Strings that respect a bound: short ones, and ones at the very limit."""
    return st.one_of(st.text(min_size=min_size, max_size=8), _sized(limit - 1, limit))


def _beyond(limit: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Values that break a string bound: just too long, empty when that is too short, or not
    a string at all."""
    too_short = [st.just("")] if min_size > 0 else []
    return st.one_of(_sized(limit + 1, limit + 3), not_strings, *too_short)


@dataclass(frozen=True)
class Field:
    valid: st.SearchStrategy
    invalid: st.SearchStrategy
    required: bool = False


def _string(limit: int, min_size: int = 0, *, required: bool = False) -> Field:
    return Field(_within(limit, min_size), _beyond(limit, min_size), required)


@st.composite
def _documents(draw, spec: dict[str, Field]):
    """``(document, expectation)``: a valid document, or one with a single field broken
    ("invalid": must be rejected), replaced by any JSON value ("any"), or a required field
    missing ("invalid"). Unknown fields are mixed in and must be ignored."""
    extras = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=2))
    doc = {k: v for k, v in extras.items() if k not in spec}
    for name, field in spec.items():
        if field.required or draw(st.booleans()):
            doc[name] = draw(field.valid)
    kind = draw(st.sampled_from(["valid", "invalid", "any", "missing"]))
    name = draw(st.sampled_from(sorted(spec)))
    if kind == "invalid":
        doc[name] = draw(spec[name].invalid)
    elif kind == "any":
        doc[name] = draw(json_values)
    elif kind == "missing":
        required = sorted(n for n, f in spec.items() if f.required)
        if not required:
            return doc, "valid"
        del doc[draw(st.sampled_from(required))]
        kind = "invalid"
    return doc, kind


def _valid_lists(spec: dict[str, Field], max_size: int = 3):
    return st.lists(
        _documents(spec).filter(lambda d: d[1] == "valid").map(lambda d: d[0]), max_size=max_size
    )


def _lists_with_one_bad(spec: dict[str, Field]):
    bad = _documents(spec).filter(lambda d: d[1] == "invalid").map(lambda d: d[0])
    return st.builds(
        lambda good, b, i: [*good[:i], b, *good[i:]], _valid_lists(spec, 2), bad, st.integers(0, 2)
    )


valid_label_keys = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,62}", fullmatch=True)
bad_label_keys = st.one_of(
    st.just(""),
    st.from_regex(r"[A-Za-z0-9_]{1,8}\n", fullmatch=True),
    st.from_regex(r"[.\-/][A-Za-z0-9_]{0,8}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]{63,64}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_]{1,4}[ :=é][A-Za-z0-9_]{0,4}", fullmatch=True),
)
LABELS = Field(
    valid=st.one_of(
        st.dictionaries(valid_label_keys, _within(128), max_size=4),
        st.just({f"k{i}": "v" for i in range(64)}),
    ),
    invalid=st.one_of(
        st.builds(lambda k: {"site": "x", k: "v"}, bad_label_keys),
        st.builds(lambda v: {"site": v}, _beyond(128)),
        st.just({f"k{i}": "v" for i in range(65)}),
        st.lists(st.text(max_size=3), max_size=2),
        st.text(max_size=5),
    ),
)
PACKAGE = {
    "name": _string(256, 1, required=True),
    "version": _string(256, required=True),
    "arch": _string(32),
}
FIRMWARE = {
    "name": _string(256, required=True),
    "version": _string(256, required=True),
    "vendor": _string(256),
    "device_id": _string(256),
    "plugin": _string(256),
    "guids": Field(
        valid=st.one_of(st.lists(_within(256), max_size=3), st.just(["g"] * 64)),
        invalid=st.one_of(
            st.just(["g"] * 65),
            st.builds(lambda g: ["ok", g], _beyond(256)),
            st.text(max_size=3),
        ),
    ),
}
INVENTORY = {
    "hostname": _string(253, 1, required=True),
    **{
        name: _string(256)
        for name in (
            "os_name",
            "os_version",
            "kernel",
            "arch",
            "hardware_model",
            "agent_version",
            "site",
            "zone",
            "installed_release",
        )
    },
    "labels": LABELS,
    "packages": Field(
        _valid_lists(PACKAGE),
        _lists_with_one_bad(PACKAGE) | json_scalars.filter(lambda v: not isinstance(v, list)),
    ),
    "firmware": Field(
        _valid_lists(FIRMWARE),
        _lists_with_one_bad(FIRMWARE) | json_scalars.filter(lambda v: not isinstance(v, list)),
    ),
}
states = st.sampled_from([s.value for s in AssignmentState])
MODELS = {
    EnrollRequest: {
        "enrollment_token": _string(256, 1, required=True),
        "csr": _string(16384, 1, required=True),
        "hostname": _string(253, 1, required=True),
    },
    SessionRequest: {
        "device_id": _string(253, 1, required=True),
        "certificate": _string(16384, 1, required=True),
        "challenge": _string(1024, 1, required=True),
        "signature": _string(1024, 1, required=True),
    },
    StatusReport: {
        "state": Field(
            states,
            st.one_of(
                st.text(max_size=12).filter(lambda s: s not in set(AssignmentState)), not_strings
            ),
            required=True,
        ),
        "detail": _string(4096),
        "progress": Field(
            st.one_of(st.none(), st.integers(min_value=0, max_value=100)),
            st.one_of(st.integers(max_value=-1), st.integers(min_value=101), st.just("half")),
        ),
    },
    Inventory: INVENTORY,
}
MODEL_IDS = [m.__name__ for m in MODELS]
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,62}")


def _validate(model, value):
    try:
        return model.model_validate(value)
    except pydantic.ValidationError:
        return None


def _check_bounds(obj) -> None:
    """The bounds every accepted object must respect, as declared in protocol.device."""
    if isinstance(obj, Inventory):
        assert 1 <= len(obj.hostname) <= 253
        for name in ("os_name", "os_version", "kernel", "arch", "hardware_model"):
            assert len(getattr(obj, name)) <= 256
        for name in ("agent_version", "site", "zone", "installed_release"):
            assert len(getattr(obj, name)) <= 256
        assert len(obj.labels) <= 64
        for k, v in obj.labels.items():
            assert LABEL_KEY_RE.fullmatch(k), k
            assert isinstance(v, str)
            assert len(v) <= 128
        assert len(obj.packages) <= 100_000
        for p in obj.packages:
            assert 1 <= len(p.name) <= 256
            assert len(p.version) <= 256
            assert len(p.arch) <= 32
        assert len(obj.firmware) <= 4096
        for f in obj.firmware:
            for name in ("name", "version", "vendor", "device_id", "plugin"):
                assert len(getattr(f, name)) <= 256
            assert len(f.guids) <= 64
            assert all(len(g) <= 256 for g in f.guids)
    elif isinstance(obj, EnrollRequest):
        assert 1 <= len(obj.enrollment_token) <= 256
        assert 1 <= len(obj.csr) <= 16384
        assert 1 <= len(obj.hostname) <= 253
    elif isinstance(obj, SessionRequest):
        assert 1 <= len(obj.device_id) <= 253
        assert 1 <= len(obj.certificate) <= 16384
        assert 1 <= len(obj.challenge) <= 1024
        assert 1 <= len(obj.signature) <= 1024
    elif isinstance(obj, StatusReport):
        assert isinstance(obj.state, AssignmentState)
        assert len(obj.detail) <= 4096
        assert obj.progress is None or 0 <= obj.progress <= 100


@pytest.mark.parametrize("model", list(MODELS), ids=MODEL_IDS)
@given(value=json_values)
@settings(max_examples=200)
def test_models_fuzz_arbitrary_json(model, value):
    """Device API models: any JSON value either validates or raises pydantic.ValidationError."""
    obj = _validate(model, value)
    if obj is not None:
        _check_bounds(obj)


@pytest.mark.parametrize("model", list(MODELS), ids=MODEL_IDS)
@given(data=st.data())
@settings(
    max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
def test_models_fuzz_near_valid_documents(model, data):
    """Device API models: documents within the declared bounds are accepted; a document with one
    field out of bounds is rejected with pydantic.ValidationError; anything accepted respects
    the bounds."""
    document, expectation = data.draw(_documents(MODELS[model]))
    obj = _validate(model, document)
    if expectation == "valid":
        assert obj is not None, document
    elif expectation == "invalid":
        assert obj is None, document
    if obj is not None:
        _check_bounds(obj)
        # Accepted objects survive a JSON round trip unchanged.
        assert model.model_validate_json(obj.model_dump_json()) == obj


@pytest.mark.parametrize("model", list(MODELS), ids=MODEL_IDS)
@given(raw=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
@settings(max_examples=100)
def test_models_fuzz_raw_json_bytes(model, raw):
    """Device API models: arbitrary request bodies raise only pydantic.ValidationError."""
    try:
        obj = model.model_validate_json(raw)
    except pydantic.ValidationError:
        return
    _check_bounds(obj)


def test_inventory_accepts_a_minimal_and_a_full_document():
    """Inventory: only hostname is required; unknown fields are ignored."""
    assert Inventory.model_validate({"hostname": "gw-1"}).labels == {}
    inv = Inventory.model_validate(
        {
            "hostname": "gw-1",
            "os_name": "Debian GNU/Linux",
            "labels": {"site": "berlin", "a.b/c-d_e": "x" * 128},
            "packages": [{"name": "openssl", "version": "3.0.15-1", "arch": "amd64"}],
            "firmware": [{"name": "bios", "version": "1.2", "guids": ["g"] * 64}],
            "future_field": {"anything": [1, 2]},
        }
    )
    _check_bounds(inv)
    assert not hasattr(inv, "future_field")


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"hostname": ""},
        {"hostname": "h" * 254},
        {"hostname": 7},
        {"hostname": None},
        {"hostname": "gw", "os_name": "x" * 257},
        {"hostname": "gw", "labels": {"": "v"}},
        {"hostname": "gw", "labels": {"-k": "v"}},
        {"hostname": "gw", "labels": {"k\n": "v"}},
        {"hostname": "gw", "labels": {"k" * 64: "v"}},
        {"hostname": "gw", "labels": {"k": "v" * 129}},
        {"hostname": "gw", "labels": {"k": 1}},
        {"hostname": "gw", "labels": {f"k{i}": "v" for i in range(65)}},
        {"hostname": "gw", "packages": [{"name": "", "version": "1"}]},
        {"hostname": "gw", "packages": [{"name": "p", "version": "1", "arch": "a" * 33}]},
        {"hostname": "gw", "packages": [{"name": "p"}]},
        {"hostname": "gw", "firmware": [{"name": "f", "version": "1", "guids": ["g"] * 65}]},
        {"hostname": "gw", "firmware": [{"name": "f", "version": "1", "guids": ["g" * 257]}]},
        {"hostname": "gw", "firmware": [{"name": "f", "version": "1"}] * 4097},
        {"hostname": "gw", "packages": [{"name": "p", "version": "1"}] * 100_001},
        [],
        "gw",
        None,
    ],
    ids=lambda d: json.dumps(d)[:40],
)
def test_inventory_rejects_out_of_bounds_documents(document):
    """Inventory: the declared bounds are enforced at the boundary."""
    with pytest.raises(pydantic.ValidationError):
        Inventory.model_validate(document)


@pytest.mark.parametrize(
    "document",
    [
        {"state": "exploded"},
        {"state": "installing", "progress": 101},
        {"state": "installing", "progress": -1},
        {"state": "installing", "detail": "d" * 4097},
        {},
    ],
)
def test_status_report_rejects_out_of_bounds_documents(document):
    """StatusReport: the state is a known assignment state; progress is 0..100."""
    with pytest.raises(pydantic.ValidationError):
        StatusReport.model_validate(document)


def test_label_keys_at_the_bound():
    """Inventory: a label key is at most 63 characters."""
    assert Inventory.model_validate({"hostname": "gw", "labels": {"k" * 63: "v"}}).labels
    assert (
        len(
            Inventory.model_validate(
                {"hostname": "gw", "labels": dict.fromkeys([f"k{i}" for i in range(64)], "v")}
            ).labels
        )
        == 64
    )
