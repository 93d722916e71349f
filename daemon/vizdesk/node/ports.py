"""Free TCP port selection in the configured range, by bind-testing.

The scan starts at a random port of the range so that concurrent sessions on one node
rarely test the same port first; a clash that still happens (another session binds the
port between our test and the VNC server's bind) is handled by the wrapper retrying
with another port.
"""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import Iterable, Iterator

_rng = random.SystemRandom()


class NoFreePortError(RuntimeError):
    """Every port of the range is in use."""


def _bind_ok(family: socket.AddressFamily, addr: str, port: int) -> bool:
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return True  # the address family is not available: nothing can clash there
    try:
        # Xvnc sets SO_REUSEADDR too, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr, port))
        return True
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            return True  # no such address configured (e.g. IPv6 disabled)
        return False
    finally:
        sock.close()


def port_is_free(port: int) -> bool:
    """True if ``port`` can be bound on all IPv4 and IPv6 interfaces right now."""
    return _bind_ok(socket.AF_INET, "0.0.0.0", port) and _bind_ok(socket.AF_INET6, "::", port)


def candidate_order(port_min: int, port_max: int, start: int | None = None) -> Iterator[int]:
    """Every port of ``[port_min, port_max]`` once, cyclically from ``start`` (random)."""
    if port_min > port_max:
        raise ValueError("port_min > port_max")
    span = port_max - port_min + 1
    first = _rng.randrange(span) if start is None else (start - port_min) % span
    for i in range(span):
        yield port_min + (first + i) % span


def pick_free_port(
    port_min: int,
    port_max: int,
    exclude: Iterable[int] = (),
    start: int | None = None,
) -> int:
    """A port of the range that binds now and is not in ``exclude``."""
    skip = set(exclude)
    for port in candidate_order(port_min, port_max, start):
        if port not in skip and port_is_free(port):
            return port
    raise NoFreePortError(f"no free TCP port in {port_min}-{port_max}")
