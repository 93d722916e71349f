"""VirtualGL device choice (GPU path unchanged; software EGL / 3D X server without a GPU)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vizdesk.config import Config, ConfigError, NodeConfig
from vizdesk.node.password import write_xauthority
from vizdesk.node.virtualgl import (
    is_x_display,
    merge_xauthority,
    vgl_device,
    xauthority_to_merge,
)


def test_with_a_gpu_the_configured_device_as_before() -> None:
    # The default and "always" both use node.vgl_device with a GPU; a 3D X server
    # configured for GPU-less nodes never replaces it.
    for mode in ("gpu", "always"):
        assert vgl_device(NodeConfig(virtualgl=mode), gpu=True) == "egl"
        node = NodeConfig(virtualgl=mode, vgl_device="/dev/dri/card1", virtualgl_display=":93")
        assert vgl_device(node, gpu=True) == "/dev/dri/card1"
        assert vgl_device(NodeConfig(virtualgl=mode, vgl_device=":0"), gpu=True) == ":0"
    assert vgl_device(NodeConfig(virtualgl="never"), gpu=True) is None


def test_without_a_gpu_only_when_always() -> None:
    assert vgl_device(NodeConfig(), gpu=False) is None
    assert vgl_device(NodeConfig(virtualgl_display=":93"), gpu=False) is None
    assert vgl_device(NodeConfig(virtualgl="never", virtualgl_display=":93"), gpu=False) is None
    # Mesa's software EGL device, or the GLX 3D X server when one is configured.
    assert vgl_device(NodeConfig(virtualgl="always"), gpu=False) == "egl"
    assert vgl_device(NodeConfig(virtualgl="always", virtualgl_display=":93"), gpu=False) == ":93"


def test_is_x_display() -> None:
    assert is_x_display(":93") and is_x_display("gpuhost:0.1")
    assert not is_x_display("egl") and not is_x_display("/dev/dri/card0")
    assert not is_x_display("egl0")


def test_xauthority_to_merge_only_for_the_3d_x_server() -> None:
    node = NodeConfig(virtualgl="always", virtualgl_display=":93", virtualgl_xauthority="/x/a")
    assert xauthority_to_merge(node, ":93") == "/x/a"
    assert xauthority_to_merge(node, "egl") is None
    assert xauthority_to_merge(node, None) is None
    assert xauthority_to_merge(node, ":0") is None  # a GPU's vgl_device display: not ours
    assert xauthority_to_merge(NodeConfig(virtualgl_display=":93"), ":93") is None


@pytest.mark.skipif(shutil.which("xauth") is None, reason="xauth (package xauth) not installed")
def test_merge_xauthority_puts_the_3d_x_servers_cookie_first(tmp_path: Path) -> None:
    session, extra = tmp_path / "session", tmp_path / "extra"
    write_xauthority(session, bytes.fromhex("11" * 16))  # the wrapper's wildcard entry
    session.chmod(0o600)
    extra.touch()
    subprocess.run(["xauth", "-f", str(extra), "add", ":93", ".", "22" * 16], check=True)
    merge_xauthority(str(session), str(extra))
    listed = subprocess.run(
        ["xauth", "-f", str(session), "list"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    # libXau takes the first match and the wildcard matches every display: the 3D X
    # server's entry must come before it.
    assert len(listed) == 2, listed
    assert listed[0].split()[0].endswith(":93") and listed[0].split()[-1] == "22" * 16
    assert listed[1].split()[-1] == "11" * 16
    assert session.stat().st_mode & 0o777 == 0o600


def test_merge_xauthority_unreadable_raises(tmp_path: Path) -> None:
    session = tmp_path / "session"
    session.touch()
    with pytest.raises(OSError):
        merge_xauthority(str(session), str(tmp_path / "missing"))


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"virtualgl": "sometimes"}, "node.virtualgl"),
        ({"virtualgl_display": "93"}, "node.virtualgl_display"),
        ({"virtualgl_display": ":93; id"}, "node.virtualgl_display"),
        ({"virtualgl_xauthority": "relative/file"}, "node.virtualgl_xauthority"),
    ],
)
def test_config_validation(node: dict[str, str], message: str) -> None:
    cfg = Config()
    for key, value in node.items():
        setattr(cfg.node, key, value)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()
