#!/usr/bin/env python3
"""A userspace delay line between two network interfaces (this kernel has no netem).

Every Ethernet frame that arrives on one interface leaves the other one DELAY_MS / 2
later, in both directions, so a TCP round trip across the relay gets DELAY_MS longer.
testbed/cluster.sh puts it between a node's cable and the bridge:

    node's eth0 ── v-NODE ══ relay ══ d-NODE-a ── d-NODE-b ── br0

    delay_relay.py IFACE_A IFACE_B DELAY_MS     (run in the namespace of both interfaces)

Frames are read with AF_PACKET sockets (one per interface, frames we sent ourselves are
skipped), kept in arrival order and sent when due: constant delay, no reordering, no
loss. Offloads must be off on both interfaces (frames bigger than the MTU cannot be sent).
SIGTERM ends it.
"""

from __future__ import annotations

import collections
import signal
import socket
import sys
import threading
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
MAX_FRAME = 65536
MAX_QUEUED = 20000  # frames per direction; beyond that new frames are dropped


class Direction:
    """Frames from one interface to the other, each sent at its due time."""

    def __init__(self, src: socket.socket, dst: socket.socket, delay: float) -> None:
        self.src, self.dst, self.delay = src, dst, delay
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.ready = threading.Condition()

    def receive(self) -> None:
        while True:
            frame, addr = self.src.recvfrom(MAX_FRAME)
            if addr[2] == PACKET_OUTGOING:
                continue  # our own transmission, seen by our own socket
            with self.ready:
                if len(self.queue) < MAX_QUEUED:
                    self.queue.append((time.monotonic() + self.delay, frame))
                    self.ready.notify()

    def send(self) -> None:
        while True:
            with self.ready:
                while not self.queue:
                    self.ready.wait()
                due, frame = self.queue.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                self.dst.send(frame)
            except OSError:
                pass  # interface down (cable pulled): the frame is lost, as on a wire


def bind(iface: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind((iface, 0))
    return s


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: delay_relay.py IFACE_A IFACE_B DELAY_MS", file=sys.stderr)
        return 2
    a, b = bind(argv[0]), bind(argv[1])
    one_way = float(argv[2]) / 2000.0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for d in (Direction(a, b, one_way), Direction(b, a, one_way)):
        for target in (d.receive, d.send):
            threading.Thread(target=target, daemon=True).start()
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
