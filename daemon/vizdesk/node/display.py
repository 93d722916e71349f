"""X display number selection by scanning, for servers that cannot use ``-displayfd``.

TigerVNC's ``Xvnc -displayfd FD`` picks a free display itself and writes its number
to FD when it is ready (verified with TigerVNC 1.12, also through ``apptainer exec``).
TurboVNC's ``vncserver`` gets an explicit ``:N`` chosen here: a display is taken if its
lock file, its socket in ``/tmp/.X11-unix`` or its abstract socket exists (the checks
TurboVNC's own ``vncserver`` makes); a lost race is retried with another display.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable
from pathlib import Path

_rng = random.SystemRandom()

X_TMP = Path("/tmp")

DISPLAY_MIN = 1
DISPLAY_MAX = 99


class NoFreeDisplayError(RuntimeError):
    """Every display number of the scanned range is in use."""


def _abstract_socket_free(n: int) -> bool:
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError:
        return True
    try:
        sock.bind(f"\0/tmp/.X11-unix/X{n}")
        return True
    except OSError:
        return False
    finally:
        sock.close()


def display_is_free(n: int, tmp: Path = X_TMP) -> bool:
    """True if no X server appears to own display ``:n``."""
    if (tmp / f".X{n}-lock").exists() or (tmp / ".X11-unix" / f"X{n}").exists():
        return False
    return _abstract_socket_free(n)


def pick_free_display(
    exclude: Iterable[int] = (),
    tmp: Path = X_TMP,
    low: int = DISPLAY_MIN,
    high: int = DISPLAY_MAX,
) -> int:
    """A free display number, scanning from a random start to avoid concurrent clashes."""
    skip = set(exclude)
    span = high - low + 1
    first = _rng.randrange(span)
    for i in range(span):
        n = low + (first + i) % span
        if n not in skip and display_is_free(n, tmp):
            return n
    raise NoFreeDisplayError(f"no free X display in :{low}-:{high}")


def x_socket_exists(n: int, tmp: Path = X_TMP) -> bool:
    return (tmp / ".X11-unix" / f"X{n}").exists()


def parse_displayfd_output(data: bytes) -> int | None:
    """The display number Xvnc wrote to its ``-displayfd`` pipe, or None if malformed."""
    text = data.decode("ascii", errors="replace").strip()
    if text.isdigit() and len(text) <= 5:
        return int(text)
    return None
