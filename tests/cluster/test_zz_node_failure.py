"""Failures a real cluster has: a compute node's cable pulled mid-session, and a node that
loses the head's Redis for a while (Slurm still reaches it).

* Link cut: the session leaves READY with a reason naming the node (never a silent
  PENDING: desktops are submitted with --no-requeue, so Slurm ends the job NODE_FAIL
  instead of requeueing it); once the link is back the node returns to service and
  nothing of the desktop is left on it.
* Redis lost for less than the registration TTL: the desktop stays READY all along and
  streams again (the wrapper re-registers). For longer: the daemon gives up after one
  more TTL of grace, cancels the job, and the node is left clean, as on one node.

Named test_zz_* so that it runs after the tier's other modules (it takes nodes away).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.cluster.conftest import Cluster
from tests.conftest import Daemon, wait_for_state
from tests.e2e.test_session_lifecycle import create, open_desktop
from tests.helpers.rfb_client import WsStream, full_framebuffer, handshake

pytestmark = pytest.mark.e2e

GEOMETRY = "640x480"


async def get(http: aiohttp.ClientSession, daemon: Daemon, sid: str) -> dict[str, Any]:
    async with http.get(f"{daemon.url}/api/v1/sessions/{sid}",
                        headers=daemon.headers("alice")) as r:  # fmt: skip
        return await r.json()  # type: ignore[no-any-return]


async def streams(http: aiohttp.ClientSession, daemon: Daemon, sid: str) -> bool:
    ws = await open_desktop(http, daemon, sid)
    try:
        stream = WsStream(ws)
        init = await asyncio.wait_for(handshake(stream), 15)
        covered, _ = await asyncio.wait_for(full_framebuffer(stream, init), 15)
        return covered >= init.width * init.height
    finally:
        await ws.close()


def squeue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"],
                         capture_output=True, text=True).stdout  # fmt: skip
    return out.strip()


async def wait_node_clean(cluster: Cluster, node: str, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = cluster.processes_on(node, "alice")
        if not left:
            return []
        await asyncio.sleep(1)
    return cluster.processes_on(node, "alice")


def resume_node(cluster: Cluster, node: str, timeout: float = 90) -> str:
    """Wait until ``node`` is usable again (ReturnToService=2; resume it if it stays down)."""
    deadline = time.monotonic() + timeout
    resumed = False
    state = ""
    while time.monotonic() < deadline:
        state = cluster.node_state(node)
        if state in ("idle", "mixed", "allocated"):
            return state
        if not resumed and state.rstrip("*") in ("down", "drained", "idle") and "*" not in state:
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"],
                           capture_output=True)  # fmt: skip
            resumed = True
        time.sleep(1)
    return state


@pytest.fixture
def redis_block(cluster: Cluster) -> Iterator[Any]:
    """Drop a node's packets to the head's Redis (nft in the head's namespace only)."""
    table = "vizdesk_test_cut"

    def block(node: str) -> None:
        rules = (
            f"table inet {table} {{\n chain input {{\n"
            "  type filter hook input priority -10; policy accept;\n"
            f"  ip saddr {cluster.ip(node)} tcp dport 6379 drop\n }}\n}}\n"
        )
        subprocess.run(
            ["nsenter", "-t", str(cluster.holder("head")), "-n", "--", "nft", "-f", "-"],
            input=rules, text=True, check=True, capture_output=True,
        )  # fmt: skip

    def unblock() -> None:
        cluster.on("head", ["nft", "delete", "table", "inet", table], check=False)

    block.unblock = unblock  # type: ignore[attr-defined]
    yield block
    unblock()


async def test_redis_lost_shorter_than_the_ttl_keeps_the_desktop(
    http: aiohttp.ClientSession, daemon: Daemon, cluster: Cluster, redis_block: Any
) -> None:
    ttl = daemon.cfg.sessions.registration_ttl_seconds
    sid = (await create(http, daemon, geometry=GEOMETRY))["id"]
    try:
        ready = await wait_for_state(http, daemon, sid, {"READY"}, timeout=40)
        node, port = ready["node"], ready.get("port")
        redis_block(node)
        states = set()
        cut = ttl * 0.5
        t0 = time.monotonic()
        while time.monotonic() - t0 < cut:
            states.add((await get(http, daemon, sid))["state"])
            await asyncio.sleep(0.5)
        redis_block.unblock()
        # Through two more TTLs (the wrapper's next heartbeats) it never leaves READY.
        t1 = time.monotonic()
        while time.monotonic() - t1 < 2 * ttl:
            states.add((await get(http, daemon, sid))["state"])
            await asyncio.sleep(0.5)
        assert states == {"READY"}, states
        after = await get(http, daemon, sid)
        assert after["node"] == node and after.get("port") == port
        assert await streams(http, daemon, sid)
    finally:
        redis_block.unblock()
        async with http.delete(f"{daemon.url}/api/v1/sessions/{sid}",
                               headers=daemon.headers("alice")):  # fmt: skip
            pass
    ended = await wait_for_state(http, daemon, sid, {"ENDED", "FAILED"}, timeout=20)
    assert ended["state"] == "ENDED"


async def test_redis_lost_longer_than_the_ttl_ends_the_desktop_cleanly(
    http: aiohttp.ClientSession, daemon: Daemon, cluster: Cluster, redis_block: Any
) -> None:
    ttl = daemon.cfg.sessions.registration_ttl_seconds
    sid = (await create(http, daemon, geometry=GEOMETRY))["id"]
    try:
        ready = await wait_for_state(http, daemon, sid, {"READY"}, timeout=40)
        node = ready["node"]
        redis_block(node)
        # registration expires (<= TTL), then one TTL of grace, then the job is cancelled
        done = await wait_for_state(http, daemon, sid, {"FAILED", "ENDED"}, timeout=4 * ttl + 20)
        assert done["state"] == "FAILED", done
        assert "heartbeat lost" in done["reason"] and node in done["reason"], done
    finally:
        redis_block.unblock()
    assert await wait_node_clean(cluster, node, 30) == []


async def test_link_cut_mid_session_fails_naming_the_node(
    http: aiohttp.ClientSession, daemon: Daemon, cluster: Cluster
) -> None:
    sid = (await create(http, daemon, geometry=GEOMETRY))["id"]
    ready = await wait_for_state(http, daemon, sid, {"READY"}, timeout=40)
    node, job_id = ready["node"], ready["job_id"]
    cluster.link(node, up=False)
    t0 = time.monotonic()
    try:
        seen = set()
        body: dict[str, Any] = {}
        while time.monotonic() - t0 < 120:
            body = await get(http, daemon, sid)
            seen.add(body["state"])
            if body["state"] in ("FAILED", "ENDED"):
                break
            await asyncio.sleep(0.5)
        left_after = time.monotonic() - t0
        assert body["state"] == "FAILED", body
        assert node in body["reason"], body
        assert "PENDING" not in seen and "STARTING" not in seen, seen
        # Slurm did not requeue the desktop under the same job id
        assert squeue_state(job_id) not in ("PENDING", "RUNNING", "CONFIGURING"), job_id
        print(f"\nnode {node} cut: session left READY after {left_after:.1f}s: {body['reason']}")
    finally:
        cluster.link(node, up=True)
    state = resume_node(cluster, node)
    assert state in ("idle", "mixed", "allocated"), state
    # No orphan: what ran the desktop on the node is gone once the node is back.
    assert await wait_node_clean(cluster, node, 60) == []
    assert squeue_state(job_id) in ("", "COMPLETING", "NODE_FAIL", "CANCELLED", "FAILED")
