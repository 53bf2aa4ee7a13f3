"""TUF signing keys: online keys the server holds, offline root keys it never holds.

Online keys (``targets``, ``snapshot``, ``timestamp``, ``director``) live in the server's key
directory, one per role, as either

- ``<role>.pem``: an Ed25519 private key in PKCS#8, encrypted with the key passphrase
  (``FLEETWARDEN_TUF_KEY_PASSPHRASE``, or the file ``passphrase`` beside the keys, mode 0600,
  for a development server), or
- ``<role>.pkcs11``: a PKCS#11 URI naming a non-extractable key in a token (an HSM; SoftHSM2
  in the tests). The private key never leaves the token.

Root keys are created by ``fleetwarden keys init`` in a separate directory meant for offline
media (each encrypted with the root passphrase) and are only needed to sign a new root:
``keys init`` and ``keys rotate``. A development server that starts without any TUF keys
creates a one-of-one root key under its data directory and says so in its log.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from securesystemslib.signer import CryptoSigner, Key, Signer

from fleetwarden.atomicfile import write_atomic
from fleetwarden.errors import ConfigError, SigningError

__all__ = [
    "ONLINE_KEYS",
    "Keyring",
    "create_file_key",
    "create_online_keys",
    "create_root_keys",
    "load_keyring",
    "load_root_keys",
    "read_passphrase",
]

ONLINE_KEYS = ("targets", "snapshot", "timestamp", "director")
PASSPHRASE_ENV = "FLEETWARDEN_TUF_KEY_PASSPHRASE"  # noqa: S105 - a variable name
ROOT_PASSPHRASE_ENV = "FLEETWARDEN_ROOT_KEY_PASSPHRASE"  # noqa: S105 - a variable name


@dataclass
class Keyring:
    """The online signers, by key name; ``backend`` says where each key lives."""

    signers: dict[str, Signer] = field(default_factory=dict)
    backend: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<Keyring {', '.join(f'{k}:{v}' for k, v in sorted(self.backend.items()))}>"

    def signer(self, name: str) -> Signer:
        try:
            return self.signers[name]
        except KeyError:
            raise SigningError(f"no online TUF key {name!r} in the key directory") from None

    def public(self, name: str) -> Key:
        return self.signer(name).public_key


def read_passphrase(key_dir: Path, *, create: bool = False, env: str = PASSPHRASE_ENV) -> bytes:
    """The passphrase that encrypts file keys: the environment first, then the file beside
    the keys (created with ``create`` for a development server)."""
    value = os.environ.get(env)
    if value:
        return value.encode()
    path = key_dir / "passphrase"
    if path.exists():
        return path.read_bytes().strip()
    if not create:
        raise ConfigError(f"set {env} or put the key passphrase in {path}")
    value = secrets.token_urlsafe(32)
    write_atomic(path, value.encode(), mode=0o600)
    return value.encode()


def create_file_key(path: Path, passphrase: bytes) -> Signer:
    """A new Ed25519 key, written encrypted at rest (mode 0600); refuses to overwrite."""
    if path.exists():
        raise ConfigError(f"{path} exists: refusing to overwrite a signing key")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    write_atomic(path, pem, mode=0o600)
    return CryptoSigner(key)


def _load_file_key(path: Path, passphrase: bytes) -> Signer:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
    except (ValueError, TypeError) as e:
        # Wrong passphrase and corrupt file read the same to cryptography; say both.
        raise SigningError(f"cannot open {path}: wrong passphrase or not a key file") from e
    return CryptoSigner(key)


def _load_pkcs11(path: Path) -> Signer:
    from fleetwarden.server.tuf import pkcs11

    return pkcs11.load_signer(path.read_text().strip())


def create_online_keys(
    key_dir: Path, passphrase: bytes, *, pkcs11_uri: str | None = None, names: Iterable[str] = ()
) -> Keyring:
    """Create the named online keys (all by default) as files or in a PKCS#11 token.

    With ``pkcs11_uri`` (``pkcs11:token=...?pin-source=...``), each key is generated in the
    token with the key name as its object label and ``<name>.pkcs11`` records its URI.
    """
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in tuple(names) or ONLINE_KEYS:
        if pkcs11_uri is not None:
            from fleetwarden.server.tuf import pkcs11

            uri = pkcs11.with_object(pkcs11_uri, name)
            pkcs11.generate_key(uri)
            write_atomic(key_dir / f"{name}.pkcs11", uri.encode(), mode=0o600)
        else:
            create_file_key(key_dir / f"{name}.pem", passphrase)
    return load_keyring(key_dir, passphrase)


def load_keyring(key_dir: Path, passphrase: bytes | None) -> Keyring:
    """Every online key found in ``key_dir`` (files need the passphrase)."""
    ring = Keyring()
    for name in ONLINE_KEYS:
        pem, hsm = key_dir / f"{name}.pem", key_dir / f"{name}.pkcs11"
        if hsm.exists():
            ring.signers[name], ring.backend[name] = _load_pkcs11(hsm), "pkcs11"
        elif pem.exists():
            if passphrase is None:
                raise ConfigError(f"the TUF key {pem} needs its passphrase ({PASSPHRASE_ENV})")
            ring.signers[name], ring.backend[name] = _load_file_key(pem, passphrase), "file"
    return ring


def create_root_keys(root_dir: Path, count: int, passphrase: bytes) -> list[Signer]:
    """``count`` new root keys ``root-<n>.pem`` in ``root_dir`` (meant for offline media)."""
    root_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    start = 1 + len(list(root_dir.glob("root-*.pem")))
    return [
        create_file_key(root_dir / f"root-{n}.pem", passphrase) for n in range(start, start + count)
    ]


def load_root_keys(root_dir: Path, passphrase: bytes) -> list[Signer]:
    """Every root key in ``root_dir`` that the passphrase opens."""
    paths = sorted(root_dir.glob("root-*.pem"))
    if not paths:
        raise ConfigError(f"no root keys (root-*.pem) in {root_dir}")
    return [_load_file_key(p, passphrase) for p in paths]
