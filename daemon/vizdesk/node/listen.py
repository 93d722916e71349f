"""Where a desktop's VNC server listens: ``node.vnc_listen``.

``""`` (the default) keeps every interface. ``"hostname"`` is the node's cluster address:
the IPv4 or IPv6 address its own host name resolves to, the one the head node's proxy
reaches when it connects to the node Slurm names. Anything else must be a literal IP
address of the node. With an address, nothing on another interface (another network,
a second NIC facing users) reaches the VNC port, even without a firewall.
"""

from __future__ import annotations

import ipaddress
import socket

HOSTNAME = "hostname"


class ListenError(ValueError):
    """``node.vnc_listen`` names no usable address on this node."""


def listen_address(setting: str, hostname: str | None = None) -> str | None:
    """The address to bind (None: every interface)."""
    value = setting.strip()
    if not value:
        return None
    if value == HOSTNAME:
        name = hostname or socket.gethostname()
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ListenError(
                f"node.vnc_listen=hostname: {name!r} does not resolve: {exc}"
            ) from None
        addrs = [str(info[4][0]) for info in infos]
        usable = [a for a in addrs if not ipaddress.ip_address(a).is_loopback]
        if not usable:
            raise ListenError(
                f"node.vnc_listen=hostname: {name!r} resolves only to loopback ({', '.join(addrs)})"
            )
        v4 = [a for a in usable if ":" not in a]
        return (v4 or usable)[0]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ListenError(
            f"node.vnc_listen: {value!r} is neither '', 'hostname' nor an IP address"
        ) from None


def probe_host(address: str | None) -> str:
    """Where the wrapper itself checks the server's banner."""
    return address if address is not None else "127.0.0.1"
