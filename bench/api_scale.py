"""The API at scale (issue 16, item 3): 20,000 records in Redis, pages vs whole lists, and
one state change fanned out to 1,000 SSE clients.

Run (test bed up, inside the bed lock)::

    flock -o /tmp/vizdesk-bed.lock .venv/bin/python bench/api_scale.py [--quick] [--json F]

It starts ``vizdesk serve`` like ``api_latency.py`` (own port, own Redis key prefix,
deleted at the end) and stores, straight into the test bed's Redis with the stores'
own ``create``: 1,000 sessions and 1,000 batch jobs of ``alice``, and as many of 9 other
users, 20,000 records in all (ENDED/COMPLETED and out of the tracker's active sets: no
Slurm job behind them). Then, at a fixed arrival rate (open loop, 200 requests/s, each
request on its own schedule so a slow answer does not slow the load), for 5 s each:

* before = ``GET /api/v1/sessions`` / ``/jobs`` without ``limit`` (the whole list of
  alice's 1,000, the only form before pagination; admins' ``?all=true``: 1,000 newest);
* after = ``?limit=50`` pages (first page, and pages from random cursors of the walk).

Latency p50/p95/p99 per form, and the ratio after/before. Then the fan-out: 1,000
concurrent ``GET /api/v1/events`` SSE clients of ``bob`` (``limits.max_event_streams_per_user``
raised for the run), the number of Redis subscriptions the daemon holds for them
(``PUBSUB NUMSUB``), and for 20 state changes of bob's session (``SessionStore.update``,
the tracker's own write path) the delay from the write to each client's receipt:
p50/p95/max over all deliveries. The client runs in this process on the same 2 cores as
the daemon and Redis: its own parsing of 1,000 streams is inside every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import yaml
from _common import cpu_snapshot, cpu_used, fmt, machine, pct, ratio, table, write_json
from api_latency import cleanup, read_env, start_daemon, stop_daemon, write_config

TESTBED_DIR = Path(os.environ.get("VIZDESK_TESTBED_DIR", "/var/lib/vizdesk-testbed"))
USERS = ["alice"] + [f"benchuser{i}" for i in range(9)]
PER_USER = 1000
SSE_CLIENTS = 1000
RATE = 200.0


async def seed(r: aioredis.Redis, prefix: str) -> str:
    from vizdesk.contract.keys import Keys
    from vizdesk.jobs.model import BatchJob, BatchJobState
    from vizdesk.jobs.store import JobStore
    from vizdesk.sessions.model import Session, SessionState, new_session_id
    from vizdesk.sessions.store import SessionStore

    keys = Keys(prefix)
    sessions, jobs = SessionStore(r, keys, 3600), JobStore(r, keys, 3600)
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    common: dict[str, Any] = dict(partition="viz", cpus=1, memory_gb=1, gpus=0)

    async def one(user: str, i: int) -> None:
        at = t0 + dt.timedelta(seconds=i)
        s = Session(
            id=new_session_id(), user=user, time_limit_minutes=60, geometry="1280x800",
            state=SessionState.ENDED, job_id=str(800000 + i), created_at=at, **common,
        )  # fmt: skip
        j = BatchJob(
            id=new_session_id(), user=user, time_limit_minutes=60,
            state=BatchJobState.COMPLETED, job_id=str(900000 + i), created_at=at, **common,
        )  # fmt: skip
        await sessions.create(s)
        await jobs.create(j)

    started = time.monotonic()
    for user in USERS:
        for base in range(0, PER_USER, 50):
            await asyncio.gather(*(one(user, base + i) for i in range(50)))
    await r.delete(keys.active_sessions, keys.active_jobs)
    live = Session(
        id=new_session_id(), user="bob", time_limit_minutes=60, geometry="1280x800",
        state=SessionState.PENDING, job_id=None, **common,
    )  # fmt: skip
    await sessions.create(live)
    await r.srem(keys.active_sessions, live.id)
    print(f"seeded {2 * PER_USER * len(USERS) + 1} records in {time.monotonic() - started:.1f} s")
    return live.id


async def open_loop(
    http: aiohttp.ClientSession, urls: list[str], headers: dict[str, str], seconds: float
) -> dict[str, float]:
    lat: list[float] = []
    errors = 0
    statuses: dict[str, int] = {}

    async def one(url: str) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        async with http.get(url, headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                errors += 1
                key = f"{resp.status} {body[:120].decode(errors='replace')}"
                statuses[key] = statuses.get(key, 0) + 1
        lat.append(time.perf_counter() - t0)

    tasks = []
    start = time.perf_counter()
    n = int(seconds * RATE)
    for k in range(n):
        delay = start + k / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(random.choice(urls))))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    return {
        "p50_ms": pct(lat, 50) * 1000,
        "p95_ms": pct(lat, 95) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "achieved_req_per_s": len(lat) / wall,
        "errors": errors,
        "error_kinds": statuses,  # type: ignore[dict-item]
    }


async def closed_loop(
    http: aiohttp.ClientSession, urls: list[str], headers: dict[str, str], n: int, pid: int
) -> dict[str, float]:
    """``n`` requests by 10 workers back to back: latency and the daemon's CPU per request
    (what a request costs, whatever else the machine does)."""
    lat: list[float] = []
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            async with http.get(random.choice(urls), headers=headers) as resp:
                await resp.read()
            lat.append(time.perf_counter() - t0)

    before = cpu_snapshot(pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(10)))
    wall = time.perf_counter() - t0
    return {
        "p50_ms": pct(lat, 50) * 1000,
        "p95_ms": pct(lat, 95) * 1000,
        "req_per_s": len(lat) / wall,
        "daemon_cpu_ms_per_req": cpu_used(before, cpu_snapshot(pid)) * 1000 / len(lat),
    }


async def cursors(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> list[str]:
    out: list[str] = []
    nxt = ""
    while True:
        async with http.get(url + (f"&cursor={nxt}" if nxt else ""), headers=headers) as r:
            body = await r.json()
        nxt = body["next_cursor"]
        if not nxt:
            return out
        out.append(nxt)


async def fanout(url: str, headers: dict[str, str], r: aioredis.Redis, prefix: str, sid: str,
                 changes: int) -> dict[str, float]:  # fmt: skip
    from vizdesk.contract.keys import Keys
    from vizdesk.sessions.store import SessionStore

    store = SessionStore(r, Keys(prefix), 3600)
    got: dict[int, list[float]] = {}
    connected = 0
    ready = asyncio.Event()

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal connected
        async with http.get(f"{url}/api/v1/events", headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"events: {resp.status} {await resp.text()}")
            event = ""
            async for raw in resp.content:
                line = raw.decode()
                if line.startswith("event: "):
                    event = line[7:].strip()
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "status" and data.get("slurm"):
                        connected += 1
                        if connected == SSE_CLIENTS:
                            ready.set()
                    elif event == "session" and data.get("id") == sid:
                        mark = data.get("reason", "")
                        if mark.startswith("bench-"):
                            got.setdefault(int(mark[6:]), []).append(time.perf_counter())

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    ) as http:
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(client(http)) for _ in range(SSE_CLIENTS)]
        await asyncio.wait_for(ready.wait(), 120)
        setup = time.perf_counter() - t0
        subs = (await r.pubsub_numsub(f"{prefix}events"))[0][1]
        sent: dict[int, float] = {}
        for k in range(changes):

            def mark(s: Any, k: int = k) -> bool:
                s.reason = f"bench-{k}"
                return True

            sent[k] = time.perf_counter()
            await store.update(sid, mark)
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    delays = [(t - sent[k]) * 1000 for k, ts in got.items() for t in ts]
    return {
        "clients": SSE_CLIENTS,
        "connect_all_s": setup,
        "redis_subscriptions_for_channel": float(subs),
        "deliveries": len(delays),
        "expected": SSE_CLIENTS * changes,
        "p50_ms": pct(delays, 50),
        "p95_ms": pct(delays, 95),
        "max_ms": max(delays) if delays else float("nan"),
    }


async def run(
    args: argparse.Namespace, env: dict[str, str], url: str, cfg: Any, pid: int
) -> dict[str, Any]:
    from vizdesk.auth.tokens import mint_token

    password = Path(env["REDIS_PASSWORD_FILE"]).read_text().strip()
    r = aioredis.Redis.from_url(
        env["REDIS_URL"], password=password, decode_responses=True, max_connections=200
    )
    out: dict[str, Any] = {}
    left = 0
    async for key in r.scan_iter(match="vzbench-scale-*", count=1000):  # an aborted run's
        left += await r.delete(key)
    if left:
        print(f"removed {left} keys of an earlier aborted run")
    try:
        sid = await seed(r, args.prefix)
        alice = {"Authorization": f"Bearer {mint_token(cfg.auth, 'alice', [], 3600)}"}
        admin = {"Authorization": f"Bearer {mint_token(cfg.auth, 'bob', ['vizdesk-admins'], 3600)}"}
        secs = 2.0 if args.quick else 5.0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            for kind in ("sessions", "jobs"):
                page = f"{url}/api/v1/{kind}?limit=50"
                walk = await cursors(http, page, alice)
                pages = [page] + [f"{page}&cursor={c}" for c in walk]
                cases = [
                    (f"{kind}: whole list (before)", [f"{url}/api/v1/{kind}"], alice),
                    (f"{kind}: 50-item pages (after)", pages, alice),
                    (f"{kind} all=true: 1,000 newest (before)", [f"{url}/api/v1/{kind}?all=true"],
                     admin),
                    (f"{kind} all=true: 50-item pages (after)", [f"{page}&all=true"], admin),
                ]  # fmt: skip
                for name, urls, hdrs in cases:
                    cost = await closed_loop(http, urls, hdrs, 200 if args.quick else 400, pid)
                    out[name] = await open_loop(http, urls, hdrs, secs)
                    out[name]["closed_loop"] = cost  # type: ignore[assignment]
                    print(name, out[name], flush=True)
        bob = {"Authorization": f"Bearer {mint_token(cfg.auth, 'bob', [], 3600)}"}
        out["fanout"] = await fanout(url, bob, r, args.prefix, sid, 5 if args.quick else 20)
        print("fanout", out["fanout"], flush=True)
    finally:
        out["_keys_removed"] = await cleanup(r, args.prefix)
        await r.aclose()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))  # daemon inherits
    env = read_env(TESTBED_DIR / "env")
    os.environ.setdefault("SLURM_CONF", env["SLURM_CONF"])
    from vizdesk.config import load_config

    port = __import__("_common").free_port()
    args.prefix = f"vzbench-scale-{os.getpid()}:"
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(env, Path(tmp), port, args.prefix)
        doc = yaml.safe_load(config.read_text())
        doc.setdefault("limits", {})["max_event_streams_per_user"] = SSE_CLIENTS + 10
        doc["limits"]["max_connections_per_client"] = 0
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        cfg = load_config(str(config))
        proc = start_daemon(config, port, Path(tmp) / "daemon.log")
        try:
            res = asyncio.run(run(args, env, f"http://127.0.0.1:{port}", cfg, proc.pid))
        finally:
            stop_daemon(proc)
            log = Path(tmp) / "daemon.log"
            keep = Path(tempfile.gettempdir()) / f"vizdesk-api-scale-{os.getpid()}.log"
            keep.write_bytes(log.read_bytes()[-2_000_000:])
            print(f"daemon log (tail): {keep}")
    rows = []
    for kind in ("sessions", "jobs", "sessions all=true", "jobs all=true"):
        k0 = kind.split()[0] + (" all=true" if "all" in kind else "")
        before = next(v for n, v in res.items() if n.startswith(k0 + ":") and "before" in n)
        after = next(v for n, v in res.items() if n.startswith(k0 + ":") and "after" in n)
        for label, m in (("before", before), ("after", after)):
            cl, cpu0 = m["closed_loop"], before["closed_loop"]["daemon_cpu_ms_per_req"]
            rows.append([kind, label, fmt(m["p50_ms"]), fmt(m["p95_ms"]), fmt(m["p99_ms"]),
                         fmt(m["achieved_req_per_s"]), m["errors"],
                         fmt(ratio(m["p95_ms"], before["p95_ms"])),
                         fmt(cl["daemon_cpu_ms_per_req"]), fmt(cl["req_per_s"]),
                         fmt(ratio(cl["daemon_cpu_ms_per_req"], cpu0))])  # fmt: skip
    print(table(["list", "form", "p50 ms", "p95 ms", "p99 ms", "req/s", "errors",
                 "p95 after/before", "daemon CPU ms/req", "closed-loop req/s",
                 "CPU/req after/before"], rows))  # fmt: skip
    print(json.dumps(res["fanout"], indent=1))
    write_json(args.json, {"machine": info, "results": res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
