"""A slow node (50 ms more round trip, added by a userspace delay line in its cable:
this kernel has no netem) still starts a desktop and streams through the head's proxy.

The start time (POST → READY) and the 1x1 round trip through the proxy (a non-incremental
FramebufferUpdateRequest for one pixel, until its update is read) are printed with and
without the delay; the only timing asserted is that the delay is really in the path.
"""

from __future__ import annotations

import statistics
import struct
import subprocess
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.cluster.conftest import Cluster
from tests.conftest import REPO, Daemon, wait_for_state
from tests.e2e.test_session_lifecycle import create, open_desktop
from tests.helpers.rfb_client import WsStream, full_framebuffer, handshake

pytestmark = pytest.mark.e2e

SLOW = "node3"
DELAY_MS = 50


def cluster_sh(*args: str) -> None:
    subprocess.run([str(REPO / "testbed" / "cluster.sh"), *args], check=True,
                   capture_output=True, timeout=60)  # fmt: skip


@pytest.fixture
def only_slow_node(cluster: Cluster) -> Iterator[None]:
    """Desktops can only land on SLOW: the other nodes are drained for the test."""
    others = [n for n in cluster.nodes if n != SLOW]
    for n in others:
        subprocess.run(["scontrol", "update", f"nodename={n}", "state=drain",
                        "reason=vizdesk slow-node test"], check=True)  # fmt: skip
    try:
        yield
    finally:
        for n in others:
            subprocess.run(["scontrol", "update", f"nodename={n}", "state=resume"], check=False)
        cluster_sh("delay", SLOW, "off")


async def one_pixel_rtts(stream: WsStream, bpp: int, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        await stream.write(struct.pack("!BBHHHH", 3, 0, 0, 0, 1, 1))
        while True:
            mtype = (await stream.read_exactly(1))[0]
            if mtype == 0:
                break
            if mtype == 2:  # Bell
                continue
            if mtype == 3:  # ServerCutText
                await stream.read_exactly(3)
                (length,) = struct.unpack("!I", await stream.read_exactly(4))
                await stream.read_exactly(length)
                continue
            raise ConnectionError(f"unexpected server message {mtype}")
        _, nrects = struct.unpack("!BH", await stream.read_exactly(3))
        for _ in range(nrects):
            _x, _y, w, h, _enc = struct.unpack("!HHHHi", await stream.read_exactly(12))
            await stream.read_exactly(w * h * bpp // 8)
        out.append((time.monotonic() - t0) * 1000)
    return out


async def start_and_probe(http: aiohttp.ClientSession, daemon: Daemon) -> tuple[float, float]:
    """(POST→READY seconds, median 1x1 round trip ms) of one desktop on SLOW."""
    t0 = time.monotonic()
    sid = (await create(http, daemon, geometry="640x480"))["id"]
    try:
        ready = await wait_for_state(http, daemon, sid, {"READY", "FAILED", "ENDED"}, timeout=60)
        start = time.monotonic() - t0
        assert ready["state"] == "READY" and ready["node"] == SLOW, ready
        ws = await open_desktop(http, daemon, sid)
        stream = WsStream(ws)
        init = await handshake(stream)
        covered, _ = await full_framebuffer(stream, init)  # also sets Raw encoding
        assert covered >= 640 * 480
        rtts = await one_pixel_rtts(stream, init.bpp, 20)
        await ws.close()
        return start, statistics.median(rtts)
    finally:
        async with http.delete(f"{daemon.url}/api/v1/sessions/{sid}",
                               headers=daemon.headers("alice")):  # fmt: skip
            pass
        await wait_for_state(http, daemon, sid, {"ENDED", "FAILED"}, timeout=30)


async def test_slow_node_starts_and_streams(
    http: aiohttp.ClientSession, daemon: Daemon, cluster: Cluster, only_slow_node: None
) -> None:
    base_start, base_rtt = await start_and_probe(http, daemon)
    cluster_sh("delay", SLOW, str(DELAY_MS))
    slow_start, slow_rtt = await start_and_probe(http, daemon)
    cluster_sh("delay", SLOW, "off")
    # the delay line is really in the proxy's path (a lower bound: never flaky from load)
    assert slow_rtt >= DELAY_MS, (slow_rtt, base_rtt)
    print(
        f"\n{SLOW} +{DELAY_MS} ms: POST→READY {base_start:.2f} s → {slow_start:.2f} s; "
        f"1x1 round trip via the proxy {base_rtt:.2f} ms → {slow_rtt:.2f} ms"
    )
