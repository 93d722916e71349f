"""Time from POST /sessions to READY on the test bed, split into its parts.

    python bench/session_start.py [--runs 10] [--quick]

Starts the real daemon on the running test bed (as tests/conftest.py does), then for each
run: POST a session, watch (every 20 ms) the registration key in Redis and the session
state, and split the total into
  slurm     POST → the wrapper process started on the node (queue + start + job script)
  wrapper   wrapper start → registration written (free port, password, Xvnc up, RFB banner)
  tracker   registration written → READY visible in the API (one tracker tick)
then stops the session. Prints median and max of each part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import TESTBED_DIR, Testbed, read_env, start_daemon, stop_daemon


async def one_run(http: aiohttp.ClientSession, d, redis: aioredis.Redis) -> dict[str, float]:
    hdr = d.headers("alice")
    t_post_wall = time.time()
    t0 = time.monotonic()
    async with http.post(f"{d.url}/api/v1/sessions", json={"geometry": "1280x800"},
                         headers=hdr) as r:
        sid = (await r.json())["id"]
    key = f"{d.prefix}reg:{sid}"
    t_reg = t_ready = None
    reg = None
    while time.monotonic() - t0 < 60:
        if t_reg is None:
            raw = await redis.get(key)
            if raw:
                t_reg = time.monotonic()
                reg = json.loads(raw)
        async with http.get(f"{d.url}/api/v1/sessions/{sid}", headers=hdr) as r:
            state = (await r.json())["state"]
        if state == "READY":
            t_ready = time.monotonic()
            break
        if state in ("FAILED", "ENDED"):
            raise RuntimeError(f"session {sid} {state}")
        await asyncio.sleep(0.02)
    assert t_reg and t_ready and reg
    wrapper_start = datetime.fromisoformat(reg["started_at"].replace("Z", "+00:00")).timestamp()
    slurm = wrapper_start - t_post_wall
    async with http.delete(f"{d.url}/api/v1/sessions/{sid}", headers=hdr):
        pass
    while True:
        async with http.get(f"{d.url}/api/v1/sessions/{sid}", headers=hdr) as r:
            if (await r.json())["state"] in ("ENDED", "FAILED"):
                break
        await asyncio.sleep(0.1)
    total = t_ready - t0
    return {
        "total": total,
        "slurm": slurm,
        "wrapper": (t_reg - t0) - slurm,
        "tracker": t_ready - t_reg,
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    runs = 3 if args.quick else args.runs
    tb = Testbed(TESTBED_DIR, read_env(TESTBED_DIR / "env"))
    d = start_daemon(tb, "bench-start", {"slurm": {"poll_interval_seconds": 1.0}})
    redis = aioredis.Redis.from_url(tb.env["REDIS_URL"], password=tb.redis_password,
                                    decode_responses=True)
    try:
        async with aiohttp.ClientSession() as http:
            results = [await one_run(http, d, redis) for _ in range(runs)]
    finally:
        await redis.aclose()
        stop_daemon(d)
    print(f"POST → READY on the test bed, {runs} runs (tracker poll interval 1.0 s)")
    print(f"{'part':10} {'median s':>9} {'max s':>7}")
    for part in ("slurm", "wrapper", "tracker", "total"):
        vals = [r[part] for r in results]
        print(f"{part:10} {statistics.median(vals):9.3f} {max(vals):7.3f}")


if __name__ == "__main__":
    asyncio.run(main())
