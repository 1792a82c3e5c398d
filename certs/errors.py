"""Errors raised by the certs package (it imports only cryptography and the stdlib).

CertError                 root
├── CertFormatError       bytes that are not a PEM/DER certificate or key we can read
└── CertExistsError       refusing to overwrite an existing key or certificate file
"""

from __future__ import annotations


class CertError(Exception):
    """Base of every error the certs package raises on purpose."""


class CertFormatError(CertError):
    """Input is not a readable certificate or key (`what` says which)."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(f"{what}: {message}")
        self.what = what
        self.message = message


class CertExistsError(CertError):
    """A file we would write already exists; pass overwrite=True to replace it."""
