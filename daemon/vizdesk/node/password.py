"""One-time VNC password and the private files that hold session secrets.

The password is 8 characters from ``secrets`` (VNC Authentication uses only the first
8 bytes of a password). It is written in ``vncpasswd`` format to a 0600 file inside a
0700 directory private to the wrapper (under ``$TMPDIR`` or ``/tmp``), next to an
Xauthority file with a random MIT-MAGIC-COOKIE-1 so that other users on the node cannot
connect to the session's X display. The directory is removed when the wrapper exits.
"""

from __future__ import annotations

import os
import secrets
import shutil
import string
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path

from vizdesk.contract.vncauth import vncpasswd_obfuscate

PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 8  # VNC auth truncates to 8 bytes: more would only look stronger

FAMILY_WILD = 0xFFFF  # Xauthority entry matching any address and display
COOKIE_NAME = b"MIT-MAGIC-COOKIE-1"


def generate_password(length: int = PASSWORD_LENGTH) -> str:
    """A random password of letters and digits (about 47.6 bits for 8 characters)."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` (must not exist) with mode 0600 and write ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # independent of the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def write_vncpasswd(path: Path, password: str) -> None:
    """Write ``password`` in ``vncpasswd -f`` format (8 obfuscated bytes), mode 0600."""
    _write_private(path, vncpasswd_obfuscate(password))


def xauthority_entry(cookie: bytes, family: int = FAMILY_WILD, address: bytes = b"") -> bytes:
    """One Xauthority record (libXau format) for MIT-MAGIC-COOKIE-1 on any display."""

    def counted(b: bytes) -> bytes:
        return struct.pack(">H", len(b)) + b

    return (
        struct.pack(">H", family)
        + counted(address)
        + counted(b"")
        + counted(COOKIE_NAME)
        + counted(cookie)
    )


def write_xauthority(path: Path, cookie: bytes) -> None:
    """Write an Xauthority file holding ``cookie`` for any display, mode 0600."""
    _write_private(path, xauthority_entry(cookie))


class PrivateDir:
    """A 0700 temporary directory for the session's secret files, removed by ``cleanup``."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="vizdesk-", dir=self.base(env)))
        os.chmod(self.path, 0o700)

    @staticmethod
    def base(env: Mapping[str, str]) -> Path:
        """Where private directories go: ``$TMPDIR`` if it is a directory, else /tmp."""
        base = env.get("TMPDIR") or ""
        return Path(base if base and os.path.isdir(base) else "/tmp")

    def file(self, name: str) -> Path:
        return self.path / name

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
