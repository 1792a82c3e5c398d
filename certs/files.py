"""Writing PEM files: private keys 0600 from the moment they exist (no chmod race), no silent overwrite."""

from __future__ import annotations

import os
from pathlib import Path

from certs.errors import CertExistsError


def _write(path: Path, data: bytes, mode: int, overwrite: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise CertExistsError(f"{path} exists (pass overwrite=True to replace it)") from None
    try:
        os.fchmod(fd, mode)              # O_CREAT's mode is masked by umask; a reused file keeps its own
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def write_private(path: str | Path, data: bytes, *, overwrite: bool = False) -> Path:
    return _write(Path(path), data, 0o600, overwrite)


def write_public(path: str | Path, data: bytes, *, overwrite: bool = False) -> Path:
    return _write(Path(path), data, 0o644, overwrite)
