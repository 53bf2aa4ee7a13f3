"""The PKCS#11 signer for the online TUF keys, against a real SoftHSM2 token.

Rules under test are those of ``fleetwarden.server.tuf.pkcs11``: keys stay in the token, TUF
verifies what it signs, unusable keys fail closed with ``SigningError`` and no PIN in any
message, and the URI parser only ever raises ``ConfigError``.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pkcs11
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from hypothesis import example, given
from hypothesis import strategies as st
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.exceptions import AttributeSensitive
from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.signer import Signer, SSlibKey
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, MetaFile, Root, Timestamp

from fleetwarden.errors import ConfigError, SigningError
from fleetwarden.server.tuf.pkcs11 import (
    DEFAULT_MODULE,
    Pkcs11Signer,
    Pkcs11Uri,
    generate_key,
    load_signer,
    parse_uri,
    register_uri_scheme,
    with_object,
)
from tests.softhsm import SoftHsmToken, softhsm_token

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsmToken:
    return softhsm_token(tmp_path, monkeypatch)


@pytest.fixture
def signer(token: SoftHsmToken) -> Pkcs11Signer:
    generate_key(token.uri("timestamp"))
    return load_signer(token.uri("timestamp"))


def _timestamp(version: int = 1) -> Metadata[Timestamp]:
    return Metadata(Timestamp(version=version, expires=EXPIRES, snapshot_meta=MetaFile(1)))


# -- signing ------------------------------------------------------------------------------------


def test_signed_timestamp_verifies_against_root(token):
    """Rule 4: a timestamp signed in the token verifies as TUF metadata, also after a
    round trip through JSON, and the key is the standard securesystemslib ECDSA key."""
    key = generate_key(token.uri("timestamp"))
    signer = load_signer(token.uri("timestamp"))
    assert signer.public_key == key
    assert (key.keytype, key.scheme) == ("ecdsa", "ecdsa-sha2-nistp256")
    standard = SSlibKey.from_crypto(load_pem_public_key(key.keyval["public"].encode()))
    assert standard.keyid == key.keyid

    root = Root(expires=EXPIRES)
    root.add_key(key, "timestamp")
    md = _timestamp()
    md.sign(signer)
    root.verify_delegate("timestamp", md.signed_bytes, md.signatures)
    Metadata(root).verify_delegate("timestamp", Metadata.from_bytes(md.to_bytes()))

    signature = md.signatures[key.keyid]
    key.verify_signature(signature, md.signed_bytes)
    decode_dss_signature(bytes.fromhex(signature.signature))  # DER, not raw r||s


def test_signature_over_other_bytes_fails(signer):
    """A signature binds its payload: other bytes, or metadata changed after signing, fail."""
    key = signer.public_key
    signature = signer.sign(b"snapshot version 7")
    key.verify_signature(signature, b"snapshot version 7")
    with pytest.raises(UnverifiedSignatureError):
        key.verify_signature(signature, b"snapshot version 8")

    root = Root(expires=EXPIRES)
    root.add_key(key, "timestamp")
    md = _timestamp()
    md.sign(signer)
    md.signed.version = 2
    with pytest.raises(UnsignedMetadataError):
        root.verify_delegate("timestamp", md.signed_bytes, md.signatures)


def test_private_key_is_not_extractable(token, signer):
    """The private key is sensitive, never extractable, and may only sign: reading its
    value fails; the signer keeps working after the library is re-initialised for this."""
    lib = pkcs11.lib(str(token.module))
    lib.reinitialize()  # drops the signer's login, so this test can log in itself
    with lib.get_token(token_label=token.label).open(user_pin=token.pin) as session:
        private = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, label="timestamp")
        with pytest.raises(AttributeSensitive):
            private[Attribute.VALUE]
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.TOKEN] is True
        assert private[Attribute.DERIVE] is False
    signer.public_key.verify_signature(signer.sign(b"x"), b"x")


def test_concurrent_threads_all_get_valid_signatures(token, signer):
    """Two threads signing at once through one token both get valid signatures."""
    other = load_signer(token.uri("timestamp"))
    start = threading.Barrier(2)
    results: dict[str, list[tuple[bytes, object]]] = {"a": [], "b": []}

    def work(name: str, s: Pkcs11Signer) -> None:
        start.wait()
        for i in range(50):
            payload = f"{name}-{i}".encode()
            results[name].append((payload, s.sign(payload)))

    threads = [
        threading.Thread(target=work, args=("a", signer)),
        threading.Thread(target=work, args=("b", other)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [len(r) for r in results.values()] == [50, 50]
    for payload, signature in results["a"] + results["b"]:
        signer.public_key.verify_signature(signature, payload)


@pytest.mark.parametrize("how", ["close session", "reinitialize", "finalize"])
def test_signer_recovers_when_its_session_disappears(token, signer, how):
    """Rule 5: when the session dies underneath (closed, or the library re-initialised or
    finalised, as after a token restart), the signer logs in again once and signs."""
    signer.sign(b"warm up")  # the session is open and the key handle cached
    if how == "close session":
        signer._token._session.close()
    else:
        getattr(pkcs11.lib(str(token.module)), how)()
    signer.public_key.verify_signature(signer.sign(b"after"), b"after")


def test_loading_after_the_session_died_needs_no_second_try(token, signer):
    """A kept but dead session is noticed before a key lookup, so loading another signer
    works (and python-pkcs11 gets no half-started search to choke on when collected)."""
    pkcs11.lib(str(token.module)).reinitialize()
    generate_key(token.uri("snapshot"))
    load_signer(token.uri("snapshot")).sign(b"x")


def test_two_keys_in_one_token_share_the_login(token):
    """Rule 5: several online keys in one token sign side by side (one login per token)."""
    for name in ("snapshot", "timestamp"):
        generate_key(token.uri(name))
    snapshot, timestamp = load_signer(token.uri("snapshot")), load_signer(token.uri("timestamp"))
    assert snapshot.public_key.keyid != timestamp.public_key.keyid
    for s in (snapshot, timestamp, snapshot):
        s.public_key.verify_signature(s.sign(b"x"), b"x")


def test_pin_from_file(token, tmp_path):
    pin_file = tmp_path / "pin"
    pin_file.write_text(token.pin + "\n")
    uri = Pkcs11Uri(token.label, "targets", str(token.module), pin_file=str(pin_file))
    key = generate_key(uri.to_uri())
    signer = load_signer(uri)
    key.verify_signature(signer.sign(b"x"), b"x")


def test_from_priv_key_uri(token, signer):
    """securesystemslib's factory builds the signer; signatures carry the caller's keyid."""
    register_uri_scheme()
    uri = parse_uri(token.uri("timestamp"))
    without_pin = replace(uri, pin_value=None).to_uri()
    named = SSlibKey("custom-keyid", "ecdsa", "ecdsa-sha2-nistp256", signer.public_key.keyval)
    prompted: list[str] = []

    def secrets(name: str) -> str:
        prompted.append(name)
        return token.pin

    built = Signer.from_priv_key_uri(without_pin, named, secrets)
    assert isinstance(built, Pkcs11Signer)
    assert prompted == ["PIN"]
    assert built.sign(b"x").keyid == "custom-keyid"

    generate_key(token.uri("snapshot"))
    with pytest.raises(SigningError, match="another key"):
        Signer.from_priv_key_uri(token.uri("snapshot"), named)


# -- failing closed ------------------------------------------------------------------------------


@pytest.mark.parametrize("logged_in_before", [False, True])
def test_wrong_pin_is_a_signing_error_without_the_pin(token, logged_in_before):
    """Rules 2-3: a wrong PIN fails with SigningError naming token and key, never the PIN,
    even when this process is already logged in to the token with the right PIN."""
    generate_key(token.uri("timestamp"))
    good = load_signer(token.uri("timestamp")) if logged_in_before else None
    wrong = "9999-not-the-pin"
    with pytest.raises(SigningError) as caught:
        load_signer(token.uri("timestamp", pin=wrong))
    message = str(caught.value)
    assert "'timestamp'" in message
    assert repr(token.label) in message
    assert "refused the PIN" in message
    assert wrong not in message
    assert token.pin not in message
    assert wrong not in repr(caught.value.__cause__)
    assert caught.value.__cause__ is not None  # translated with `raise ... from`
    if good is not None:  # the right PIN logs in again
        good.public_key.verify_signature(good.sign(b"x"), b"x")


def test_missing_key_is_a_signing_error(token):
    with pytest.raises(SigningError, match=r"'director' on token 'fleet-test': no such"):
        load_signer(token.uri("director"))


def test_missing_token_is_a_signing_error(token):
    uri = token.uri("timestamp").replace("token=fleet-test", "token=no-such-token")
    with pytest.raises(SigningError, match="'no-such-token': no such token"):
        load_signer(uri)


def test_missing_module_is_a_signing_error(token, tmp_path):
    uri = Pkcs11Uri(token.label, "timestamp", str(tmp_path / "nope.so"), pin_value=token.pin)
    with pytest.raises(SigningError, match="cannot load the PKCS#11 module"):
        load_signer(uri)


def test_generating_an_existing_label_is_refused(token):
    generate_key(token.uri("timestamp"))
    with pytest.raises(ConfigError, match="already exists"):
        generate_key(token.uri("timestamp"))


# -- URIs -----------------------------------------------------------------------------------------

_text = st.characters(exclude_categories=("Cs",))
_labels = st.text(_text, min_size=1, max_size=20)
_paths = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"), max_size=30)


@st.composite
def _uris(draw: st.DrawFn) -> Pkcs11Uri:
    pin = draw(st.sampled_from(["file", "value", "none"]))
    return Pkcs11Uri(
        token_label=draw(_labels.filter(lambda s: len(s.encode()) <= 32)),
        key_label=draw(_labels),
        module_path="/" + draw(_paths),
        pin_file="/" + draw(_paths) if pin == "file" else None,
        pin_value=draw(st.text(_text, min_size=1, max_size=12)) if pin == "value" else None,
    )


@given(_uris())
@example(Pkcs11Uri("t", "k", "/m.so", pin_file="//"))  # not read as a file://host/ authority
@example(Pkcs11Uri("t;?&=%", "k/é", "/a b?&.so", pin_value="p&?=%/"))
def test_uri_round_trip(uri):
    """parse(format(x)) == x, for any labels, paths and PINs (percent-encoding, RFC 7512)."""
    assert parse_uri(uri.to_uri(), environ={}) == uri


@given(_uris())
def test_redacted_uri_hides_the_pin(uri):
    """Rule 2: ``redacted()``, ``str`` and ``repr`` never show the PIN value."""
    shown = (uri.redacted(), str(uri), repr(uri))
    if uri.pin_value is not None:
        encoded = "pin-value=" + quote(uri.pin_value, safe="")
        assert all(encoded not in s for s in shown)
        assert "pin-value=***" in uri.redacted()
        assert "pin_value" not in repr(uri)
        assert encoded in uri.to_uri()
    assert parse_uri(uri.redacted(), environ={}) == replace(
        uri, pin_value=None if uri.pin_value is None else "***"
    )


_pieces = st.sampled_from(
    [
        "pkcs11:", "pkcs11", "PKCS11:", "token", "object", "module-path", "pin-source",
        "pin-value", "id", "=", ";", "?", "&", "%", "%2", "%41", "%ff", "%c3%a9", "file:", "file:/",
        "file://", "file://host/", "/", "a", "é", " ", "\0", "|cmd",
    ]
)  # fmt: skip


@given(st.one_of(st.text(), st.lists(_pieces, max_size=16).map("".join)))
def test_garbage_uri_raises_only_config_error(text):
    """Whatever the configuration holds, parsing fails only with ConfigError."""
    try:
        parsed = parse_uri(text, environ={})
    except ConfigError:
        return
    assert isinstance(parsed, Pkcs11Uri)


def test_uri_percent_decoding_and_defaults():
    uri = parse_uri(
        "pkcs11:token=Fleet%20HSM;object=time%3Bstamp?pin-source=file:/etc/fleet%20pin",
        environ={},
    )
    assert (uri.token_label, uri.key_label, uri.pin_file) == (
        "Fleet HSM",
        "time;stamp",
        "/etc/fleet pin",
    )
    assert uri.module_path == DEFAULT_MODULE
    from_env = parse_uri("pkcs11:token=t;object=k", environ={"PKCS11_MODULE": "/opt/hsm.so"})
    assert from_env.module_path == "/opt/hsm.so"
    assert (
        parse_uri("pkcs11:token=t;object=k?pin-source=file:///run/pin", environ={}).pin_file
        == "/run/pin"
    )
    assert parse_uri("pkcs11:object=k;token=%c3%a9", environ={}).token_label == "é"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("file:/x", "starts with 'pkcs11:'"),
        ("pkcs11:token=t", "no object"),
        ("pkcs11:object=k", "no token"),
        ("pkcs11:token=t;object=k;id=%01", "'id' is not supported"),
        ("pkcs11:token=t;token=u;object=k", "token more than once"),
        ("pkcs11:token=t;object=k?pin-value=1&pin-source=file:/p", "not both"),
        ("pkcs11:token=t;object=k?pin-value=", "pin-value is empty"),
        ("pkcs11:token=a b;object=k", "must be percent-encoded"),
        ("pkcs11:token=%zz;object=k", "two hex digits"),
        ("pkcs11:token=%ff;object=k", "not UTF-8"),
        ("pkcs11:token=t;object=k?module-path=lib.so", "absolute"),
        ("pkcs11:token=t;object=k?pin-source=|/bin/pin", "file: URI"),
        ("pkcs11:token=t;object=k?pin-source=file://host/pin", "local file"),
        ("pkcs11:token=" + "x" * 33 + ";object=k", "longer than 32 bytes"),
        ("pkcs11:token=t;object=k?pin-value1234", "without '='"),
    ],
)
def test_bad_uris_name_the_problem(text, problem):
    with pytest.raises(ConfigError, match=problem.replace("|", r"\|")) as caught:
        parse_uri(text, environ={})
    assert "1234" not in str(caught.value)


def test_with_object_names_each_online_key():
    base = "pkcs11:token=fleet?module-path=/m.so&pin-source=file:/etc/pin"
    uri = parse_uri(with_object(base, "snapshot"))
    assert (uri.token_label, uri.key_label, uri.pin_file) == ("fleet", "snapshot", "/etc/pin")
    assert parse_uri(with_object(uri, "director")).key_label == "director"


def test_pin_file_problems_are_config_errors(tmp_path):
    uri = Pkcs11Uri("t", "k", "/m.so", pin_file=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="cannot read the PKCS#11 PIN file"):
        uri.read_pin()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        replace(uri, pin_file=str(tmp_path / "empty")).read_pin()
    with pytest.raises(ConfigError, match="no pin-source or pin-value"):
        replace(uri, pin_file=None).read_pin()
