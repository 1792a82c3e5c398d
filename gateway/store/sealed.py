"""Secrets we must give back later (an RTSP camera's password), sealed with the node secret.

Device passwords are kept as digest HA1 only (whitelist.model.Credential): we verify, never send
them. A pull source is the other way round — the gateway logs in to the camera — so the password
must be recoverable. It is sealed with AES-256-GCM under a key derived (HKDF-SHA256, its own
label) from the node secret in the data directory (0600); the channel ID is the associated data,
so a sealed value copied to another row does not open. A database dump alone reveals nothing.
Several nodes sharing one PostgreSQL must share the node secret file to open each other's sources.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import GbgateError

_PREFIX = "v1."
_LABEL = b"gbgate pull-source credentials v1"


class SealError(GbgateError):
    """A sealed value does not open with this node's secret (other node, tampered, corrupt)."""


class Sealer:
    """seal/open with a key derived from the node secret."""

    __slots__ = ("_aead",)

    def __init__(self, node_secret: bytes) -> None:
        if len(node_secret) < 16:
            raise ValueError("node secret too short")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LABEL).derive(node_secret)
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "Sealer(<hidden>)"

    def seal(self, plaintext: str, context: str) -> str:
        """"" stays "" (no secret); otherwise `v1.` + base64url(nonce ‖ ciphertext ‖ tag)."""
        if not plaintext:
            return ""
        nonce = os.urandom(12)
        ct = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return _PREFIX + base64.urlsafe_b64encode(nonce + ct).decode("ascii")

    def open(self, sealed: str, context: str) -> str:
        if not sealed:
            return ""
        if not sealed.startswith(_PREFIX):
            raise SealError("unknown sealed-value format")
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_PREFIX):])
            return self._aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (InvalidTag, ValueError) as exc:
            raise SealError("sealed value does not open with this node's secret") from exc
