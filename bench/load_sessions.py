"""Load test: N desktops launched at once on the test bed, each opened through the proxy.

    python bench/load_sessions.py [--sessions 20] [--desktop xterm|xfce] [--quick]

Starts the real daemon on the running test bed, POSTs N sessions concurrently (alice and
bob alternate), waits for READY, opens every desktop through the websocket proxy and reads
a full framebuffer, then stops them all and checks that every job, registration and ACL
user is gone. Reports the success rate, start-time percentiles, proxy handshake times and
the Slurm queries the tracker made (one per tick, whatever N is).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import TESTBED_DIR, Testbed, read_env, start_daemon, stop_daemon
from tests.helpers.rfb_client import WsStream, connect_ws, full_framebuffer, handshake


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def one(http: aiohttp.ClientSession, d, i: int) -> dict[str, float | str]:
    user = ("alice", "bob")[i % 2]
    hdr = d.headers(user)
    t0 = time.monotonic()
    async with http.post(
        f"{d.url}/api/v1/sessions", json={"geometry": "1024x768"}, headers=hdr
    ) as r:
        body = await r.json()
        if r.status != 201:
            return {"error": f"create {r.status}: {body}"}
    sid = body["id"]
    state = "PENDING"
    while time.monotonic() - t0 < 120:
        async with http.get(f"{d.url}/api/v1/sessions/{sid}", headers=hdr) as r:
            got = await r.json()
        if "state" not in got:
            out_err = f"GET {r.status}: {got}"
            print("  transient:", out_err)
            await asyncio.sleep(0.5)
            continue
        state = got["state"]
        if state in ("READY", "FAILED", "ENDED"):
            break
        await asyncio.sleep(0.1)
    ready = time.monotonic() - t0
    out: dict[str, float | str] = {"sid": sid, "user": user, "ready": ready, "state": state}
    if state != "READY":
        out["error"] = f"state {state}"
        return out
    t1 = time.monotonic()
    async with http.post(f"{d.url}/api/v1/sessions/{sid}/connect", headers=hdr) as r:
        ticket = await r.json()
    ws = await connect_ws(http, d.url + ticket["ws_path"])
    stream = WsStream(ws)
    init = await handshake(stream)
    out["handshake"] = time.monotonic() - t1
    covered, _ = await full_framebuffer(stream, init)
    out["frame"] = time.monotonic() - t1
    out["covered"] = covered / (init.width * init.height)
    await ws.close()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--desktop", choices=("xterm", "xfce"), default="xterm")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 4 if args.quick else args.sessions
    tb = Testbed(TESTBED_DIR, read_env(TESTBED_DIR / "env"))
    desktop = ["xterm"] if args.desktop == "xterm" else ["startxfce4"]
    per_user = n // 2 + 1
    d = start_daemon(
        tb,
        "bench-load",
        {
            "node": {"desktop_command": desktop},
            "policy": {
                "groups": {
                    "*": {
                        "partitions": ["*"],
                        "max_sessions": per_user,
                        "max_cpus": 1,
                        "max_memory_gb": 1,
                    }
                }
            },
            "sessions": {"default_memory_gb": 1},
        },
    )
    redis = aioredis.Redis.from_url(
        tb.env["REDIS_URL"], password=tb.redis_password, decode_responses=True
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180)) as http:
            async with http.get(f"{d.url}/metrics") as r:
                before = await r.text()
            t0 = time.monotonic()
            results = await asyncio.gather(*(one(http, d, i) for i in range(n)))
            wall = time.monotonic() - t0
            async with http.get(f"{d.url}/metrics") as r:
                after = await r.text()
            ok = [r for r in results if "error" not in r]
            t_stop = time.monotonic()
            for r in results:
                if "sid" in r:
                    async with http.delete(
                        f"{d.url}/api/v1/sessions/{r['sid']}", headers=d.headers(str(r["user"]))
                    ):
                        pass
            pending = {str(r["sid"]): str(r["user"]) for r in results if "sid" in r}
            while pending and time.monotonic() - t_stop < 120:
                for sid, user in list(pending.items()):
                    async with http.get(
                        f"{d.url}/api/v1/sessions/{sid}", headers=d.headers(user)
                    ) as r:
                        if (await r.json())["state"] in ("ENDED", "FAILED"):
                            del pending[sid]
                await asyncio.sleep(0.5)
            stop_all = time.monotonic() - t_stop
        regs = await redis.keys(f"{d.prefix}reg:*")
        acl = [
            u
            for u in await redis.execute_command("ACL", "USERS")
            if any(u == f"vizdesk-s-{r.get('sid')}" for r in results)
        ]
    finally:
        await redis.aclose()
        stop_daemon(d)

    def queries(text: str) -> float:
        m = re.search(
            r'^vizdesk_slurm_call_seconds_count\{op="info_many"\} ([0-9.e+]+)$', text, re.M
        )
        return float(m.group(1)) if m else 0.0

    ready = [float(r["ready"]) for r in ok]
    hs = [float(r["handshake"]) for r in ok]
    fr = [float(r["frame"]) for r in ok]
    print(f"{n} desktops ({args.desktop}) launched at once on the test bed (2 cores)")
    print(
        f"READY and full frame through the proxy: {len(ok)}/{n} "
        f"({100 * len(ok) / n:.0f} %), all within {wall:.1f} s"
    )
    if ok:
        print(
            f"POST → READY  s: median {statistics.median(ready):.2f}  p95 {pct(ready, 0.95):.2f}"
            f"  max {max(ready):.2f}"
        )
        print(f"ticket+handshake s: median {statistics.median(hs):.3f}  p95 {pct(hs, 0.95):.3f}")
        print(f"ticket → full frame s: median {statistics.median(fr):.3f}  p95 {pct(fr, 0.95):.3f}")
    print(
        f"tracker Slurm queries during the launch: {queries(after) - queries(before):.0f} "
        f"(one per tick for all {n} sessions)"
    )
    print(
        f"stop all → all ENDED: {stop_all:.1f} s; registrations left: {len(regs)}; "
        f"ACL users left: {len(acl)}"
    )
    for r in results:
        if "error" in r:
            print("  error:", json.dumps(r))


if __name__ == "__main__":
    asyncio.run(main())
