"""Upload throughput over loopback: 1 GiB through tus into alice's staging directory.

Starts its own `vizdesk serve` on the test bed (``VIZDESK_TESTBED_DIR``) and measures,
each against a fresh upload of the same 1 GiB file:

* ``cp`` of the file into alice's home (+ fsync, as the helper does): the ceiling;
* one PATCH of the whole file streamed by aiohttp (no checksum: splice path);
* one PATCH with ``Upload-Checksum: sha1`` (read + hash + write path);
* tuspy, single stream, 64 MiB chunks, with and without ``upload_checksum``;
* the streamed zip of a job directory holding the uploaded file.

For each: MB/s, the daemon's CPU seconds per GiB (daemon + its helper children, psutil)
and the daemon's peak RSS (sampled every 20 ms). Run as root:

    VIZDESK_TESTBED_DIR=/var/lib/vizdesk-testbed .venv/bin/python -m bench.upload_tus
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import cpu_snapshot, cpu_used, fmt, machine, table, write_json
from tests.conftest import TESTBED_DIR, Testbed, read_env, start_daemon, stop_daemon

MiB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}


class Peak:
    """Peak RSS of one process, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self.start_rss = self.peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_file(path: Path, size: int) -> str:
    block = bytearray(os.urandom(MiB))
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for i in range(size // MiB):
            block[:8] = i.to_bytes(8, "big")
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def measure(pid: int, size: int, work: Callable[[], None]) -> dict[str, float]:
    before = cpu_snapshot(pid)
    with Peak(pid) as peak:
        t0 = time.perf_counter()
        work()
        elapsed = time.perf_counter() - t0
    cpu = cpu_used(before, cpu_snapshot(pid))
    return {
        "seconds": elapsed,
        "mb_s": size / 1e6 / elapsed,
        "cpu_s_per_gib": cpu / (size / (1 << 30)),
        "rss_start_mib": peak.start_rss / MiB,
        "rss_peak_mib": peak.peak / MiB,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--json")
    args = ap.parse_args()
    size = args.size_mib * MiB
    testbed = Testbed(TESTBED_DIR, read_env(TESTBED_DIR / "env"))
    daemon = start_daemon(testbed, "bench-upload", {"log": {"level": "info"}})
    alice = pwd.getpwnam("alice")
    tmp = Path(tempfile.mkdtemp(prefix="vizdesk-bench-"))
    results: dict[str, dict[str, float]] = {}
    try:
        src = tmp / "src.bin"
        make_file(src, size)
        subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)  # cached
        headers = daemon.headers("alice")
        whole_sha1 = base64.b64encode(hashlib.sha1(src.read_bytes()).digest()).decode()

        def cp() -> None:
            dst = os.path.join(alice.pw_dir, "vizdesk-bench-cp.bin")
            subprocess.run(["cp", str(src), dst], check=True)
            fd = os.open(dst, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            os.unlink(dst)

        t0 = time.perf_counter()
        cp()
        cp_s = time.perf_counter() - t0
        results["cp (+fsync)"] = {"seconds": cp_s, "mb_s": size / 1e6 / cp_s}

        async def create() -> str:
            async with aiohttp.ClientSession() as s:
                async with s.post(
                    f"{daemon.url}/api/v1/uploads",
                    headers={
                        **headers,
                        **TUS,
                        "Upload-Length": str(size),
                        "Upload-Metadata": "filename " + base64.b64encode(b"b.bin").decode(),
                    },
                ) as r:
                    assert r.status == 201, await r.text()
                    return f"{daemon.url}{r.headers['Location']}"

        async def delete(url: str) -> None:
            async with aiohttp.ClientSession() as s:
                async with s.delete(url, headers={**headers, **TUS}) as r:
                    assert r.status == 204

        async def raw_patch(url: str, checksum: bool) -> None:
            async def chunks() -> AsyncIterator[bytes]:
                with src.open("rb") as f:
                    while chunk := f.read(MiB):
                        yield chunk

            extra = {"Upload-Checksum": "sha1 " + whole_sha1} if checksum else {}
            timeout = aiohttp.ClientTimeout(total=600)
            async with aiohttp.ClientSession(timeout=timeout) as s:
                t0 = time.perf_counter()
                async with s.patch(
                    url,
                    data=chunks(),
                    headers={
                        **headers,
                        **TUS,
                        **extra,
                        "Upload-Offset": "0",
                        "Content-Length": str(size),
                        "Content-Type": "application/offset+octet-stream",
                    },
                ) as r:
                    assert r.status == 204, await r.text()
                raw_patch.elapsed = time.perf_counter() - t0  # type: ignore[attr-defined]

        for name, checksum in (("one PATCH, aiohttp", False), ("one PATCH + sha1", True)):
            url = asyncio.run(create())
            results[name] = measure(
                daemon.proc.pid, size, lambda u=url, c=checksum: asyncio.run(raw_patch(u, c))
            )
            if checksum:
                asyncio.run(delete(url))
            else:
                zip_url = url

        from tusclient import client as tus_client

        for name, checksum in (("tuspy 64 MiB chunks", False), ("tuspy 64 MiB + sha1", True)):

            def run_tuspy(c: bool = checksum) -> None:
                up = tus_client.TusClient(f"{daemon.url}/api/v1/uploads", headers=headers).uploader(
                    str(src), chunk_size=64 * MiB, upload_checksum=c, metadata={"filename": "t.bin"}
                )
                up.upload()
                run_tuspy.url = up.url  # type: ignore[attr-defined]

            results[name] = measure(daemon.proc.pid, size, run_tuspy)
            asyncio.run(delete(run_tuspy.url))  # type: ignore[attr-defined]

        # zip: a job whose directory holds the first upload's file
        uid = zip_url.rsplit("/", 1)[1]
        staging = os.path.join(alice.pw_dir, "vizdesk-jobs", ".uploads")
        workdir = os.path.join(alice.pw_dir, f"vizdesk-bench-job-{uid[:8]}")
        os.mkdir(workdir, 0o700)
        os.chown(workdir, alice.pw_uid, alice.pw_gid)
        os.rename(os.path.join(staging, uid), os.path.join(workdir, "result.bin"))
        job_id = asyncio.run(store_job(testbed, daemon.prefix, workdir))

        def get_zip() -> None:
            async def go() -> None:
                n = 0
                timeout = aiohttp.ClientTimeout(total=600)
                async with aiohttp.ClientSession(timeout=timeout) as s:
                    async with s.get(
                        f"{daemon.url}/api/v1/jobs/{job_id}/files.zip", headers=headers
                    ) as r:
                        assert r.status == 200
                        async for chunk in r.content.iter_chunked(MiB):
                            n += len(chunk)
                assert n > size

            asyncio.run(go())

        results["zip download"] = measure(daemon.proc.pid, size, get_zip)
        shutil.rmtree(workdir, ignore_errors=True)
        asyncio.run(delete(zip_url))  # the record (its file moved into the job directory)
    finally:
        stop_daemon(daemon)
        shutil.rmtree(tmp, ignore_errors=True)
    ceiling = results["cp (+fsync)"]["mb_s"]
    rows: list[list[Any]] = []
    for name, r in results.items():
        rows.append(
            [
                name,
                fmt(r["mb_s"], 0),
                fmt(r["mb_s"] / ceiling, 2),
                fmt(r.get("cpu_s_per_gib"), 2),
                fmt(r.get("rss_start_mib"), 0),
                fmt(r.get("rss_peak_mib"), 0),
            ]
        )
    print(machine())
    print(
        table(
            ["what", "MB/s", "ratio to cp", "daemon CPU s/GiB", "RSS start MiB", "RSS peak MiB"],
            rows,
        )
    )
    write_json(args.json, {"machine": machine(), "size": size, "results": results})


async def store_job(testbed: Testbed, prefix: str, workdir: str) -> str:
    from vizdesk.contract.keys import Keys
    from vizdesk.jobs.model import BatchJob, BatchJobState, new_job_id
    from vizdesk.jobs.store import JobStore

    r = aioredis.Redis.from_url(testbed.env["REDIS_URL"], password=testbed.redis_password)
    store = JobStore(r, Keys(prefix), 3600)
    job = BatchJob(
        id=new_job_id(),
        user="alice",
        partition="batch",
        cpus=1,
        memory_gb=1,
        gpus=0,
        time_limit_minutes=5,
        state=BatchJobState.QUEUED,
        workdir=workdir,
    )
    await store.create(job)
    await store.forget_active(job.id)
    await r.aclose()
    return job.id


if __name__ == "__main__":
    main()
