"""Free-port selection for the VNC server."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from vizdesk.node.ports import NoFreePortError, candidate_order, pick_free_port, port_is_free


def test_candidate_order_covers_range_once_from_start() -> None:
    order = list(candidate_order(5901, 5905, start=5904))
    assert order == [5904, 5905, 5901, 5902, 5903]


def test_candidate_order_start_is_randomised() -> None:
    firsts = {next(candidate_order(20000, 20999)) for _ in range(50)}
    assert len(firsts) > 5  # not always the lowest port
    assert all(20000 <= p <= 20999 for p in firsts)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield s.getsockname()[1]


def test_listening_port_is_not_free(busy_port: int) -> None:
    assert not port_is_free(busy_port)


def test_pick_skips_busy_and_excluded_ports(busy_port: int) -> None:
    # Range of three ports starting at the busy one: the busy one is skipped.
    port = pick_free_port(busy_port, busy_port + 2, start=busy_port)
    assert port != busy_port and busy_port < port <= busy_port + 2
    other = pick_free_port(busy_port, busy_port + 2, exclude=[port], start=busy_port)
    assert other not in (busy_port, port)


def test_no_free_port_raises(busy_port: int) -> None:
    with pytest.raises(NoFreePortError):
        pick_free_port(busy_port, busy_port)
    with pytest.raises(NoFreePortError):
        pick_free_port(busy_port + 1, busy_port + 1, exclude=[busy_port + 1])
