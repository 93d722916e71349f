"""Desktops on a real multi-node cluster: they land on different compute nodes, each
node's wrapper registers with the head's Redis over the cluster network, and every
desktop streams through the head's proxy to the node Slurm names.

Also: the VNC server listens on its node's cluster address only and the node role's
firewall refuses every other node; alice and bob stay apart; the events stream follows a
session across the network; a desktop is submitted so that Slurm never requeues it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from typing import Any

import aiohttp
import pytest

from tests.cluster.conftest import Cluster
from tests.conftest import Daemon, wait_for_state
from tests.e2e.test_events import read_events
from tests.e2e.test_session_lifecycle import create, open_desktop
from tests.helpers.rfb_client import RfbAuthFailed, TcpStream, WsStream, full_framebuffer, handshake

pytestmark = pytest.mark.e2e

GEOMETRY = "800x600"


async def stop(http: aiohttp.ClientSession, daemon: Daemon, sid: str, user: str = "alice") -> None:
    async with http.delete(f"{daemon.url}/api/v1/sessions/{sid}", headers=daemon.headers(user)):
        pass


def listeners(cluster: Cluster, host: str, port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on ``port`` in ``host``'s namespace."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        text = cluster.on(host, ["cat", table]).stdout
        for line in text.splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr, _, hexport = local.partition(":")
            if state != "0A" or int(hexport, 16) != port:  # 0A = LISTEN
                continue
            if len(addr) == 8:
                found.add(".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)))
            else:
                found.add("v6:" + addr)
    return found


CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()\n"
    "    print('open')\n"
    "except ConnectionRefusedError:\n"
    "    print('refused')\n"
    "except OSError as e:\n"
    "    print(type(e).__name__)\n"
)


def connect_from(cluster: Cluster, host: str, address: str, port: int) -> str:
    """'open', 'refused' or the error of a TCP connection from ``host`` to address:port."""
    return cluster.on(host, [sys.executable, "-c", CONNECT, address, str(port)]).stdout.strip()


def scontrol_job(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", "-o", job_id],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


def test_cluster_is_up_with_three_idle_nodes(cluster: Cluster) -> None:
    out = subprocess.run(["sinfo", "-h", "-N", "-p", "viz", "-o", "%N %T"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    states = dict(line.split() for line in out.splitlines())
    assert set(states) == set(cluster.nodes) and len(states) == 3
    assert set(states.values()) <= {"idle", "mixed"}, states
    # Each node is its own host: own name, reached over the bridge, not over loopback.
    for node in cluster.nodes:
        assert cluster.on(node, ["hostname"]).stdout.strip() == node
    # cluster.sh's own daemon answers on the head's cluster address.
    with urllib.request.urlopen(cluster.env["CLUSTER_DAEMON_URL"] + "/healthz", timeout=5) as r:
        assert r.status == 200


async def test_desktops_on_two_nodes_stream_through_the_head(
    http: aiohttp.ClientSession, daemon: Daemon, redis_admin: Any, cluster: Cluster
) -> None:
    sids = [(await create(http, daemon, geometry=GEOMETRY))["id"] for _ in range(2)]
    try:
        ready = [await wait_for_state(http, daemon, s, {"READY", "FAILED", "ENDED"}, timeout=40)
                 for s in sids]  # fmt: skip
        assert [r["state"] for r in ready] == ["READY", "READY"], ready
        nodes = [r["node"] for r in ready]
        assert len(set(nodes)) == 2 and set(nodes) <= set(cluster.nodes), nodes
        for r in ready:
            sid, node = r["id"], r["node"]
            # Submitted so that Slurm never requeues it (a requeued desktop is not this one).
            assert "Requeue=0" in scontrol_job(r["job_id"])
            # The wrapper on the node wrote its registration into the head's Redis.
            reg = json.loads(await redis_admin.get(f"{daemon.prefix}reg:{sid}"))
            assert reg["host"] == node and 5901 <= reg["port"] <= 5999
            # Through the head's proxy (it connects to the node Slurm names, over the bridge).
            ws = await open_desktop(http, daemon, sid)
            stream = WsStream(ws)
            init = await handshake(stream)
            assert (init.width, init.height) == (800, 600)
            covered, _ = await full_framebuffer(stream, init)
            assert covered >= 800 * 600
            await ws.close()
            # The VNC server listens on the node's cluster address only ...
            assert listeners(cluster, node, reg["port"]) == {cluster.ip(node)}
            assert connect_from(cluster, node, "127.0.0.1", reg["port"]) == "refused"
            # ... the head (the proxy) reaches it directly, with the password ...
            reader, writer = await asyncio.open_connection(node, reg["port"])
            direct = await handshake(TcpStream(reader, writer), password=reg["password"])
            assert direct.width == 800
            writer.close()
            # ... and any other node is refused by the node role's firewall.
            other = next(n for n in cluster.nodes if n != node)
            if cluster.env.get("CLUSTER_FIREWALL") == "on":
                assert connect_from(cluster, other, cluster.ip(node), reg["port"]) == "refused"
            else:
                pytest.fail("the node role's firewall is not loaded (see cluster.sh up)")
    finally:
        for s in sids:
            await stop(http, daemon, s)
    for s in sids:
        ended = await wait_for_state(http, daemon, s, {"ENDED", "FAILED"}, timeout=20)
        assert ended["state"] == "ENDED", ended
    # Nothing of alice's is left on the nodes the desktops ran on.
    for node in set(nodes):
        deadline = time.monotonic() + 15
        while cluster.processes_on(node, "alice") and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert not cluster.processes_on(node, "alice"), cluster.processes_on(node, "alice")


async def test_alice_and_bob_on_different_nodes_stay_apart(
    http: aiohttp.ClientSession, daemon: Daemon
) -> None:
    a = (await create(http, daemon, "alice", geometry=GEOMETRY))["id"]
    b = (await create(http, daemon, "bob", geometry=GEOMETRY))["id"]
    try:
        ra = await wait_for_state(http, daemon, a, {"READY"}, "alice", timeout=40)
        rb = await wait_for_state(http, daemon, b, {"READY"}, "bob", timeout=40)
        assert ra["node"] != rb["node"], (ra["node"], rb["node"])
        bob = daemon.headers("bob")
        base = f"{daemon.url}/api/v1/sessions/{a}"
        for method, url in (("GET", base), ("DELETE", base), ("POST", base + "/connect")):
            async with http.request(method, url, headers=bob) as r:
                assert r.status == 404, (method, url, await r.text())
        async with http.post(f"{daemon.url}/api/v1/sessions/{b}/connect", headers=bob) as r:
            ticket = (await r.json())["ticket"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(f"{base}/vnc?ticket={ticket}")
        assert err.value.status in (403, 404)
        # bob's own desktop streams from its node
        ws = await open_desktop(http, daemon, b, "bob")
        init = await handshake(WsStream(ws))
        assert init.width == 800
        await ws.close()
    finally:
        await stop(http, daemon, a, "alice")
        await stop(http, daemon, b, "bob")


async def test_events_follow_a_session_on_a_node(http: aiohttp.ClientSession,
                                                 daemon: Daemon) -> None:  # fmt: skip
    seen: list[tuple[str, dict[str, Any]]] = []
    async with http.get(f"{daemon.url}/api/v1/events", headers=daemon.headers("alice")) as r:
        assert r.status == 200
        reader = asyncio.create_task(read_events(r, seen))
        sid = (await create(http, daemon, geometry=GEOMETRY))["id"]

        def states() -> list[str]:
            return [d["state"] for e, d in seen if e == "session" and d["id"] == sid]

        for _ in range(400):
            if "READY" in states():
                break
            await asyncio.sleep(0.1)
        ready = [d for e, d in seen if e == "session" and d["id"] == sid and d["state"] == "READY"]
        await stop(http, daemon, sid)
        for _ in range(200):
            if "ENDED" in states():
                break
            await asyncio.sleep(0.1)
        reader.cancel()
    assert ready and ready[0]["node"].startswith("node"), seen
    order = ["PENDING", "STARTING", "READY", "STOPPING", "ENDED"]
    assert states()[0] == "PENDING" and states()[-1] == "ENDED", states()
    ranks = [order.index(s) for s in states()]
    assert ranks == sorted(ranks), states()


async def test_a_wrong_password_from_the_head_is_refused(
    http: aiohttp.ClientSession, daemon: Daemon, redis_admin: Any
) -> None:
    sid = (await create(http, daemon, geometry=GEOMETRY))["id"]
    try:
        ready = await wait_for_state(http, daemon, sid, {"READY"}, timeout=40)
        reg = json.loads(await redis_admin.get(f"{daemon.prefix}reg:{sid}"))
        reader, writer = await asyncio.open_connection(ready["node"], reg["port"])
        with pytest.raises(RfbAuthFailed):
            await handshake(TcpStream(reader, writer), password="wrong-pw")
        writer.close()
    finally:
        await stop(http, daemon, sid)
