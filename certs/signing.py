"""Ed25519 key pair that signs whitelist policy bundles (whitelist/bundle.py verifies them).

key_id = SHA-256 (hex) of the raw 32-byte public key; the bundle names the key it was signed with
so a wrong key is reported as such rather than as a bad signature.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from certs.errors import CertFormatError
from certs.files import write_private, write_public

PRIVATE_NAME = "policy-signing.key"
PUBLIC_NAME = "policy-signing.pub"


def generate_signing_key(directory: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Create a key pair under `directory`: private key PEM (0600) and public key PEM."""
    d = Path(directory)
    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path = write_private(d / PRIVATE_NAME, priv, overwrite=overwrite)
    public_path = write_public(d / PUBLIC_NAME, pub, overwrite=overwrite)
    return private_path, public_path


def load_private(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise CertFormatError(str(path), f"cannot read private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CertFormatError(str(path), "not an Ed25519 private key")
    return key


def load_public(path: str | Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (ValueError, TypeError, OSError) as exc:
        raise CertFormatError(str(path), f"cannot read public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CertFormatError(str(path), "not an Ed25519 public key")
    return key


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()
