"""One-time VNC password, its vncpasswd file and the private directory."""

from __future__ import annotations

import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from vizdesk.contract.vncauth import vncpasswd_obfuscate
from vizdesk.node.password import (
    PASSWORD_ALPHABET,
    PrivateDir,
    generate_password,
    write_vncpasswd,
    write_xauthority,
)


def test_password_is_8_random_alphanumerics() -> None:
    pws = {generate_password() for _ in range(200)}
    assert len(pws) == 200
    for pw in pws:
        assert len(pw) == 8
        assert set(pw) <= set(PASSWORD_ALPHABET)


def test_private_dir_is_0700_and_removed(tmp_path: Path) -> None:
    d = PrivateDir({"TMPDIR": str(tmp_path)})
    assert d.path.parent == tmp_path and d.path.name.startswith("vizdesk-")
    assert stat.S_IMODE(d.path.stat().st_mode) == 0o700
    write_vncpasswd(d.file("passwd"), "abcdefgh")
    d.cleanup()
    assert not d.path.exists()


def test_private_dir_falls_back_to_tmp_without_tmpdir() -> None:
    d = PrivateDir({"TMPDIR": "/nonexistent/dir"})
    try:
        assert d.path.parent == Path("/tmp")
    finally:
        d.cleanup()


def test_vncpasswd_file_format_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    write_vncpasswd(path, "Zx9kQ2mP")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == vncpasswd_obfuscate("Zx9kQ2mP")
    assert len(path.read_bytes()) == 8
    with pytest.raises(FileExistsError):  # never overwrites (or follows) an existing path
        write_vncpasswd(path, "other")


@pytest.mark.skipif(shutil.which("vncpasswd") is None, reason="vncpasswd not installed")
def test_vncpasswd_file_matches_the_real_tool(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    write_vncpasswd(path, "Zx9kQ2mP")
    real = subprocess.run(
        ["vncpasswd", "-f"], input=b"Zx9kQ2mP\n", capture_output=True, check=True
    ).stdout
    assert path.read_bytes() == real


def test_xauthority_is_one_wildcard_cookie(tmp_path: Path) -> None:
    path = tmp_path / "Xauthority"
    cookie = bytes(range(16))
    write_xauthority(path, cookie)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = path.read_bytes()
    (family,) = struct.unpack(">H", data[:2])
    assert family == 0xFFFF
    fields = []
    off = 2
    for _ in range(4):
        (n,) = struct.unpack(">H", data[off : off + 2])
        fields.append(data[off + 2 : off + 2 + n])
        off += 2 + n
    assert off == len(data)
    assert fields == [b"", b"", b"MIT-MAGIC-COOKIE-1", cookie]


@pytest.mark.skipif(shutil.which("xauth") is None, reason="xauth not installed")
def test_xauthority_is_readable_by_xauth(tmp_path: Path) -> None:
    path = tmp_path / "Xauthority"
    write_xauthority(path, bytes.fromhex("00112233445566778899aabbccddeeff"))
    out = subprocess.run(
        ["xauth", "-f", str(path), "list"], capture_output=True, text=True, check=True
    ).stdout
    assert "MIT-MAGIC-COOKIE-1" in out and "00112233445566778899aabbccddeeff" in out
