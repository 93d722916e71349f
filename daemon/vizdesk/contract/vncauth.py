"""VNC Authentication (RFB security type 2) and the vncpasswd file format.

Both use DES with the bits of each key byte reversed, the historical quirk of the
RFB protocol. DES comes from ``cryptography`` (TripleDES with one 8-byte key is DES).
"""

from __future__ import annotations

import warnings

from cryptography.hazmat.primitives.ciphers import Cipher, modes

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:  # cryptography >= 43
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # pragma: no cover - older cryptography
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

# The fixed key that vncpasswd uses to obfuscate stored passwords (d3des "fixedkey").
_VNCPASSWD_KEY = bytes([23, 82, 107, 6, 35, 78, 88, 7])


def _reverse_bits(b: int) -> int:
    return int(f"{b:08b}"[::-1], 2)


def _des_encrypt(key: bytes, data: bytes) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = Cipher(TripleDES(key), modes.ECB()).encryptor()  # noqa: S305 - protocol-defined
    return enc.update(data) + enc.finalize()


def _password_key(password: str) -> bytes:
    raw = password.encode("latin-1", errors="replace")[:8].ljust(8, b"\0")
    return bytes(_reverse_bits(b) for b in raw)


def vnc_auth_response(password: str, challenge: bytes) -> bytes:
    """The 16-byte response to a 16-byte VNC Authentication challenge."""
    if len(challenge) != 16:
        raise ValueError("VNC challenge must be 16 bytes")
    return _des_encrypt(_password_key(password), challenge)


def vncpasswd_obfuscate(password: str) -> bytes:
    """The 8 bytes a ``vncpasswd`` file holds for ``password`` (only 8 chars count)."""
    raw = password.encode("latin-1", errors="replace")[:8].ljust(8, b"\0")
    return _des_encrypt(bytes(_reverse_bits(b) for b in _VNCPASSWD_KEY), raw)
