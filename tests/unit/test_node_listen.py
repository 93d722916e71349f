"""node.vnc_listen: where a desktop's VNC server listens (TigerVNC/TurboVNC -interface)."""

from __future__ import annotations

import pytest

from vizdesk.node.listen import ListenError, listen_address, probe_host
from vizdesk.node.vnc_server import ServerSpec, TigerVNCServer, TurboVNCServer


def spec(listen: str | None) -> ServerSpec:
    return ServerSpec(port=5901, display=3, width=800, height=600, depth=24,
                      password_file="/p", xauthority="/x", private_dir="/d",
                      desktop=("xterm",), listen=listen)  # fmt: skip


def test_empty_setting_is_every_interface() -> None:
    assert listen_address("") is None and listen_address("  ") is None
    assert probe_host(None) == "127.0.0.1"


def test_literal_addresses() -> None:
    assert listen_address("10.199.0.12") == "10.199.0.12"
    assert listen_address("fd00::5") == "fd00::5"
    assert probe_host("10.199.0.12") == "10.199.0.12"


def test_hostname_resolves_to_a_non_loopback_address() -> None:
    assert listen_address("hostname", hostname="192.0.2.7") == "192.0.2.7"
    with pytest.raises(ListenError, match="only to loopback"):
        listen_address("hostname", hostname="localhost")
    with pytest.raises(ListenError, match="does not resolve"):
        listen_address("hostname", hostname="no-such-host.invalid")


def test_anything_else_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ListenError, match=r"node\.vnc_listen"):
        listen_address("eth0")


def test_server_argv_carries_the_interface_only_when_set() -> None:
    tiger = TigerVNCServer("Xvnc")
    argv = tiger.server_argv(spec("10.199.0.12"))
    assert argv[argv.index("-interface") + 1] == "10.199.0.12"
    assert "-interface" not in tiger.server_argv(spec(None))
    turbo = TurboVNCServer("/opt/TurboVNC/bin/vncserver")
    argv = turbo.server_argv(spec("10.199.0.12"))
    assert argv[argv.index("-interface") + 1] == "10.199.0.12"
    assert "-interface" not in turbo.server_argv(spec(None))
