"""Figures of the cluster test bed (testbed/cluster.sh): start time and proxy throughput
when the desktop is on another host than the daemon.

    testbed/cluster.sh up
    flock /tmp/vizdesk-bed.lock testbed/cluster.sh exec head \\
        env VIZDESK_CLUSTER_TIER=1 $PWD/.venv/bin/python $PWD/bench/cluster.py [--runs 10]

Runs on the head host (as the tier does): starts a real daemon there, then
  start     POST → READY of --runs desktops, created in rounds of 3 kept alive together so
            that the viz partition's least-loaded placement spreads them over the nodes;
            p50 / max and the nodes they landed on;
  proxy     one desktop (1920x1080) on some node N; full-screen Raw updates through the
            proxy, MB/s, and the 1x1 round trip: (a) client → daemon on the head → bridge
            → N (the production path), (b) the same with a replica of the daemon (same
            Redis, same prefix) on N itself and the client there: the proxy reaches the
            VNC server over loopback routing. The ratio is the price of the bridge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import (
    Testbed,
    free_port,
    read_env,
    start_daemon,
    stop_daemon,
)
from tests.helpers.rfb_client import WsStream, handshake

CLUSTER_DIR = Path(os.environ.get("VIZDESK_CLUSTER_DIR", "/var/lib/vizdesk-cluster"))
WIDTH, HEIGHT = 1920, 1080


async def wait_state(http: aiohttp.ClientSession, url: str, hdr: dict[str, str], sid: str,
                     states: set[str], timeout: float = 60) -> dict[str, Any]:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(f"{url}/api/v1/sessions/{sid}", headers=hdr) as r:
            body: dict[str, Any] = await r.json()
        if body["state"] in states:
            return body
        await asyncio.sleep(0.02)
    raise RuntimeError(f"{sid} not in {states}")


async def stop_all(http: aiohttp.ClientSession, url: str, hdr: dict[str, str],
                   sids: list[str]) -> None:  # fmt: skip
    for sid in sids:
        async with http.delete(f"{url}/api/v1/sessions/{sid}", headers=hdr):
            pass
    for sid in sids:
        await wait_state(http, url, hdr, sid, {"ENDED", "FAILED"})


async def bench_start(http: aiohttp.ClientSession, url: str, hdr: dict[str, str],
                      runs: int) -> dict[str, Any]:  # fmt: skip
    times: list[float] = []
    nodes: list[str] = []
    alive: list[str] = []
    for _ in range(runs):
        t0 = time.monotonic()
        async with http.post(f"{url}/api/v1/sessions", json={"geometry": "1280x800"},
                             headers=hdr) as r:  # fmt: skip
            body = await r.json()
            assert r.status == 201, body
        ready = await wait_state(http, url, hdr, body["id"], {"READY", "FAILED", "ENDED"})
        assert ready["state"] == "READY", ready
        times.append(time.monotonic() - t0)
        nodes.append(ready["node"])
        alive.append(body["id"])
        if len(alive) == 3:
            await stop_all(http, url, hdr, alive)
            alive = []
    await stop_all(http, url, hdr, alive)
    return {
        "runs": runs,
        "p50_s": statistics.median(times),
        "max_s": max(times),
        "all_s": [round(t, 3) for t in times],
        "nodes": {n: nodes.count(n) for n in sorted(set(nodes))},
    }


async def read_update(stream: WsStream, bpp: int) -> int:
    """Read one FramebufferUpdate (skipping bells/cut text); return its pixel bytes."""
    while True:
        mtype = (await stream.read_exactly(1))[0]
        if mtype == 0:
            break
        if mtype == 2:
            continue
        if mtype == 3:
            await stream.read_exactly(3)
            (length,) = struct.unpack("!I", await stream.read_exactly(4))
            await stream.read_exactly(length)
            continue
        raise ConnectionError(f"unexpected server message {mtype}")
    _, nrects = struct.unpack("!BH", await stream.read_exactly(3))
    total = 0
    for _ in range(nrects):
        _x, _y, w, h, _enc = struct.unpack("!HHHHi", await stream.read_exactly(12))
        n = w * h * bpp // 8
        await stream.read_exactly(n)
        total += n
    return total


async def client(url: str, sid: str, token: str, frames: int, rtts: int) -> dict[str, Any]:
    """Throughput and 1x1 round trip of one desktop through the daemon at ``url``."""
    hdr = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/v1/sessions/{sid}/connect", headers=hdr) as r:
            ticket = await r.json()
            assert r.status == 200, ticket
        ws = await http.ws_connect(url + ticket["ws_path"], protocols=("binary",),
                                   max_msg_size=0)  # fmt: skip
        stream = WsStream(ws)
        init = await handshake(stream)
        await stream.write(struct.pack("!BBHi", 2, 0, 1, 0))  # Raw only
        full = struct.pack("!BBHHHH", 3, 0, 0, 0, init.width, init.height)
        await stream.write(full)
        await read_update(stream, init.bpp)  # warm-up
        t0 = time.monotonic()
        nbytes = 0
        for _ in range(frames):
            await stream.write(full)
            nbytes += await read_update(stream, init.bpp)
        elapsed = time.monotonic() - t0
        one: list[float] = []
        for _ in range(rtts):
            t1 = time.monotonic()
            await stream.write(struct.pack("!BBHHHH", 3, 0, 0, 0, 1, 1))
            await read_update(stream, init.bpp)
            one.append((time.monotonic() - t1) * 1000)
        await ws.close()
    return {"mb_per_s": nbytes / elapsed / 1e6, "frames": frames,
            "rtt_1x1_ms_p50": statistics.median(one)}  # fmt: skip


def holder(host: str) -> str:
    return (CLUSTER_DIR / "run" / f"hold-{host}.pid").read_text().strip()


async def bench_proxy(http: aiohttp.ClientSession, d: Any, testbed: Testbed,
                      frames: int, rounds: int) -> dict[str, Any]:  # fmt: skip
    hdr = d.headers("alice")
    async with http.post(f"{d.url}/api/v1/sessions", json={"geometry": f"{WIDTH}x{HEIGHT}"},
                         headers=hdr) as r:  # fmt: skip
        sid = (await r.json())["id"]
    ready = await wait_state(http, d.url, hdr, sid, {"READY"})
    node = ready["node"]
    port = free_port()
    # The head daemon's config (same Redis, same key prefix), listening on N's loopback.
    merged = yaml.safe_load(d.config_path.read_text())
    merged["server"] = {**merged.get("server", {}), "host": "127.0.0.1", "port": port}
    cfg = testbed.dir / "tests" / f"bench-replica-{os.getpid()}.yaml"
    cfg.write_text(yaml.safe_dump(merged))
    cfg.chmod(0o644)
    replica = subprocess.Popen(
        ["nsenter", "-t", holder(node), "-n", "-m", "-u", "--", sys.executable, "-m",
         "vizdesk", "--config", str(cfg), "serve"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    token = d.token("alice")
    me = [sys.executable, str(Path(__file__).resolve()), "--client"]
    try:
        for _ in range(100):  # the replica answers on the node's loopback
            probe = subprocess.run(
                ["nsenter", "-t", holder(node), "-n", "--", sys.executable, "-c",
                 "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)",
                 str(port)], capture_output=True)  # fmt: skip
            if probe.returncode == 0:
                break
            await asyncio.sleep(0.2)
        bridge: list[dict[str, Any]] = []
        loop: list[dict[str, Any]] = []
        for _ in range(rounds):  # interleaved, so that other load hits both alike
            bridge.append(await client(d.url, sid, token, frames, 30))
            out = subprocess.run(
                ["nsenter", "-t", holder(node), "-n", "-m", "-u", "--", *me,
                 f"http://127.0.0.1:{port}", sid, token, str(frames)],
                capture_output=True, text=True, check=True, timeout=300,
            )  # fmt: skip
            loop.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        replica.terminate()
        replica.wait(10)
        cfg.unlink(missing_ok=True)
        await stop_all(http, d.url, hdr, [sid])

    def summary(rs: list[dict[str, Any]]) -> dict[str, float]:
        return {"mb_per_s": statistics.median(r["mb_per_s"] for r in rs),
                "rtt_1x1_ms_p50": statistics.median(r["rtt_1x1_ms_p50"] for r in rs)}  # fmt: skip

    b, lo = summary(bridge), summary(loop)
    return {"node": node, "geometry": f"{WIDTH}x{HEIGHT}", "frames_per_round": frames,
            "rounds": rounds, "bridge": b, "loopback": lo,
            "ratio_bridge_over_loopback": b["mb_per_s"] / lo["mb_per_s"]}  # fmt: skip


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    env = read_env(CLUSTER_DIR / "env")
    os.environ["SLURM_CONF"] = env["SLURM_CONF"]
    testbed = Testbed(CLUSTER_DIR, env)
    d = start_daemon(testbed, "bench", {"policy": {"groups": {"*": {"max_sessions": 5}}}})
    try:
        async with aiohttp.ClientSession() as http:
            res: dict[str, Any] = {}
            if not args.skip_start:
                res["start"] = await bench_start(http, d.url, d.headers("alice"), args.runs)
                print(json.dumps(res["start"]), file=sys.stderr)
            res["proxy"] = await bench_proxy(http, d, testbed, args.frames, args.rounds)
            return res
    finally:
        stop_daemon(d)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        url, sid, token, frames = sys.argv[2:6]
        print(json.dumps(asyncio.run(client(url, sid, token, int(frames), 30))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-start", action="store_true")
    p.add_argument("--json", default="")
    args = p.parse_args()
    res = asyncio.run(main_async(args))
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
