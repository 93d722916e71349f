"""REST API latency of the real daemon on the test bed: p50/p95/p99 under a bounded load.

Run: ``python bench/api_latency.py [--quick] [--json out.json]`` (test bed up:
``testbed/testbed.sh up``).

It starts ``vizdesk serve`` the way ``tests/conftest.py`` does (the test bed's config with
its own port and its own Redis key prefix, JSON logs at level info into a file), then
stores 50 READY desktop sessions of user ``alice`` directly in the test bed's Redis with
:class:`vizdesk.sessions.store.SessionStore` under that prefix — no Slurm job is submitted — and
takes them out of the tracker's active set so the tracker (which keeps polling Slurm
every second, as in production) leaves them alone. Then, for each endpoint, a fixed number
of requests (2000; 300 with ``--quick``) at a fixed concurrency (10) over keep-alive
connections, every request with the same JWT:

* ``GET /healthz`` (no auth, no Redis: the floor of the stack),
* ``GET /api/v1/sessions`` (the caller's 50 sessions),
* ``GET /api/v1/sessions/{id}``,
* ``POST /api/v1/sessions/{id}/connect`` (issues a one-time ticket in Redis).

There is no peer API to run side by side (Open OnDemand's is Rails behind Apache and
Passenger), so the figures are compared with the site's written target (p95 < 500 ms)
and the project's aim (p95 < 50 ms), as ratios. The client runs in this process on the
same 2 cores as the daemon and Redis, so its own time is inside every latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import yaml
from _common import (
    REPO,
    cpu_snapshot,
    cpu_used,
    fmt,
    free_port,
    machine,
    pct,
    ratio,
    table,
    write_json,
)

TESTBED_DIR = Path(os.environ.get("VIZDESK_TESTBED_DIR", "/var/lib/vizdesk-testbed"))
USER = "alice"
N_SESSIONS = 50
SITE_TARGET_MS = 500.0
AIM_MS = 50.0


def read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            env[k.strip()] = " ".join(shlex.split(v)) if v.strip() else ""
    return env


def write_config(env: dict[str, str], tmp: Path, port: int, prefix: str) -> Path:
    base = yaml.safe_load(Path(env["VIZDESK_CONFIG"]).read_text()) or {}
    base.setdefault("server", {}).update(host="127.0.0.1", port=port)
    base.setdefault("redis", {})["key_prefix"] = prefix
    base["log"] = {"format": "json", "level": "info"}
    path = tmp / "vizdesk-bench.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    path.chmod(0o644)
    return path


def start_daemon(config: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vizdesk", "--config", str(config), "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited: {log_path.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("daemon did not listen within 30 s")


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def seed_sessions(r: aioredis.Redis, prefix: str) -> list[str]:
    """50 READY sessions of ``alice`` stored directly (no Slurm job), out of the active set."""
    from vizdesk.contract.keys import Keys
    from vizdesk.core.records import utcnow
    from vizdesk.sessions.model import Session, SessionState, new_session_id
    from vizdesk.sessions.store import SessionStore

    keys = Keys(prefix)
    store = SessionStore(r, keys, 3600)
    now = utcnow()
    ids = []
    for i in range(N_SESSIONS):
        s = Session(
            id=new_session_id(),
            user=USER,
            partition="viz",
            cpus=2,
            memory_gb=4,
            gpus=0,
            time_limit_minutes=120,
            geometry="1920x1080",
            image="xfce",
            state=SessionState.READY,
            reason="",
            job_id=str(990000 + i),
            node="vm",
            created_at=now - timedelta(minutes=N_SESSIONS - i),
            started_at=now,
            ready_at=now,
            port=5901 + i,
        )
        await store.create(s)
        await r.srem(keys.active_sessions, s.id)  # the tracker must not end them
        ids.append(s.id)
    return ids


async def cleanup(r: aioredis.Redis, prefix: str) -> int:
    n = 0
    async for key in r.scan_iter(match=f"{prefix}*", count=500):
        await r.delete(key)
        n += 1
    return n


async def load(
    http: aiohttp.ClientSession,
    method: str,
    urls: list[str],
    headers: dict[str, str],
    total: int,
    concurrency: int,
    expect: int,
) -> tuple[list[float], float, int]:
    """``total`` requests by ``concurrency`` workers; returns latencies, wall time, errors."""
    lat: list[float] = []
    errors = 0
    left = total

    async def worker() -> None:
        nonlocal left, errors
        while left > 0:
            left -= 1
            url = random.choice(urls)
            t0 = time.perf_counter()
            async with http.request(method, url, headers=headers) as resp:
                await resp.read()
                status = resp.status
            lat.append(time.perf_counter() - t0)
            if status != expect:
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat, time.perf_counter() - t0, errors


async def run(
    args: argparse.Namespace, env: dict[str, str], url: str, pid: int, cfg: Any
) -> dict[str, Any]:
    from vizdesk.auth.tokens import mint_token

    password = Path(env["REDIS_PASSWORD_FILE"]).read_text().strip()
    r = aioredis.Redis.from_url(env["REDIS_URL"], password=password, decode_responses=True)
    results: dict[str, Any] = {}
    try:
        ids = await seed_sessions(r, args.prefix)
        headers = {"Authorization": f"Bearer {mint_token(cfg.auth, USER, [], 3600)}"}
        endpoints = [
            ("GET /healthz", "GET", [f"{url}/healthz"], {}, 200),
            ("GET /api/v1/sessions (50)", "GET", [f"{url}/api/v1/sessions"], headers, 200),
            (
                "GET /api/v1/sessions/{id}",
                "GET",
                [f"{url}/api/v1/sessions/{i}" for i in ids],
                headers,
                200,
            ),
            (
                "POST /api/v1/sessions/{id}/connect",
                "POST",
                [f"{url}/api/v1/sessions/{i}/connect" for i in ids],
                headers,
                200,
            ),
        ]
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.get(f"{url}/api/v1/sessions", headers=headers) as resp:
                body = await resp.json()
                if resp.status != 200 or len(body["sessions"]) != N_SESSIONS:
                    raise RuntimeError(f"list returned {resp.status}: {str(body)[:300]}")
                list_bytes = len(await resp.read())
            for name, method, urls, hdrs, expect in endpoints:
                await load(http, method, urls, hdrs, 100, args.concurrency, expect)  # warm-up
                before = cpu_snapshot(pid)
                lat, wall, errors = await load(
                    http, method, urls, hdrs, args.requests, args.concurrency, expect
                )
                cpu = cpu_used(before, cpu_snapshot(pid))
                results[name] = {
                    "p50_ms": pct(lat, 50) * 1000,
                    "p95_ms": pct(lat, 95) * 1000,
                    "p99_ms": pct(lat, 99) * 1000,
                    "max_ms": max(lat) * 1000,
                    "req_per_s": len(lat) / wall,
                    "daemon_cpu_ms_per_req": cpu * 1000 / len(lat),
                    "errors": errors,
                    "n": len(lat),
                }
        results["_list_response_bytes"] = list_bytes
    finally:
        results["_keys_removed"] = await cleanup(r, args.prefix)
        await r.aclose()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="300 requests per endpoint")
    ap.add_argument("--requests", type=int, help="requests per endpoint (default 2000)")
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args()
    args.requests = args.requests or (300 if args.quick else 2000)
    env_file = TESTBED_DIR / "env"
    if not env_file.is_file():
        print(f"test bed not up ({env_file} missing): testbed/testbed.sh up", file=sys.stderr)
        return 2
    env = read_env(env_file)
    args.prefix = f"vzbench-{os.urandom(3).hex()}:"
    from vizdesk.config import load_config

    meta = machine()
    with tempfile.TemporaryDirectory(prefix="vizdesk-bench-") as tmp:
        port = free_port()
        config = write_config(env, Path(tmp), port, args.prefix)
        cfg = load_config(str(config))
        log_path = Path(tmp) / "daemon.log"
        proc = start_daemon(config, port, log_path)
        started = time.monotonic()
        try:
            res = asyncio.run(run(args, env, f"http://127.0.0.1:{port}", proc.pid, cfg))
        finally:
            stop_daemon(proc)
        meta["elapsed_s"] = round(time.monotonic() - started, 1)
    meta["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    rows = []
    for name, v in res.items():
        if name.startswith("_"):
            continue
        rows.append(
            [
                name,
                v["p50_ms"],
                v["p95_ms"],
                v["p99_ms"],
                v["req_per_s"],
                v["daemon_cpu_ms_per_req"],
                ratio(v["p95_ms"], AIM_MS),
                ratio(v["p95_ms"], SITE_TARGET_MS),
                v["errors"],
            ]
        )
    print(
        f"api_latency — {meta['date']}, {meta['cores']} cores ({meta['cpu']}), load avg at start "
        f"{meta['loadavg_1m']}; {args.requests} requests per endpoint, concurrency "
        f"{args.concurrency}, keep-alive, one JWT; {N_SESSIONS} READY sessions written directly "
        f"to Redis with SessionStore under prefix {args.prefix!r} (no Slurm jobs), removed "
        f"afterwards ({res['_keys_removed']} keys); list response {res['_list_response_bytes']} "
        "bytes\n"
    )
    print(
        table(
            [
                "endpoint",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "req/s",
                "daemon CPU ms/req",
                "p95 / aim 50 ms",
                "p95 / site 500 ms",
                "errors",
            ],
            rows,
        )
    )
    print(f"\n(run took {fmt(meta['elapsed_s'])} s; load avg at end {meta['loadavg_1m_end']})")
    write_json(args.json, {"meta": meta, "results": res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
