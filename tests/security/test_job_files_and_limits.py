"""Issue 17, items 1, 2, 3 and 10, against the running daemon on the real test bed.

1. desktop job output never lands in a directory other users can write (bob cannot plant
   a symlink at alice's output path); a shared, world-writable output_dir is refused;
2. concurrent-session and concurrent-job limits hold under parallel requests;
3. job output is the user's alone (0600: submissions run with umask 077);
10. the batch script directory is not a predictable name in /tmp that another user can
    take first.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import (
    Daemon,
    Testbed,
    start_daemon,
    stop_daemon,
    wait_for_state,
    write_test_config,
)

pytestmark = pytest.mark.e2e

SLEEPER = """\
name: sleeper
description: Sleep for a while (the concurrency tests need jobs that stay live)
partition: batch
resources:
  cpus: {default: 1, max: 1}
  memory_gb: {default: 1, max: 1}
  time_limit_minutes: {default: 5, max: 5}
command: [/bin/sleep, "120"]
"""


def as_user(user: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", user, "--", *cmd], capture_output=True, text=True, timeout=30
    )


async def delete_all(http: aiohttp.ClientSession, d: Daemon, kind: str, ids: list[str]) -> None:
    for rid in ids:
        async with http.delete(f"{d.url}/api/v1/{kind}/{rid}", headers=d.headers("alice")):
            pass


# ---------------------------------------------------------------- 1 and 3: output files


async def test_desktop_output_is_in_alices_own_directory_and_hers_alone(
    http: aiohttp.ClientSession, daemon: Daemon, testbed: Testbed
) -> None:
    async with http.post(
        f"{daemon.url}/api/v1/sessions", json={}, headers=daemon.headers("alice")
    ) as r:
        assert r.status == 201, await r.text()
        sid = (await r.json())["id"]
    try:
        ready = await wait_for_state(http, daemon, sid, {"READY"}, timeout=30)
        jobs_dir = testbed.dir / "jobs"
        mine = jobs_dir / "alice"
        out = mine / f"vizdesk-{sid}-{ready['job_id']}.out"
        alice = pwd.getpwnam("alice")
        # the shared directory: nobody but root may write into it
        assert stat.S_IMODE(jobs_dir.stat().st_mode) & 0o022 == 0, oct(jobs_dir.stat().st_mode)
        st = mine.lstat()
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == alice.pw_uid
        assert stat.S_IMODE(st.st_mode) == 0o700
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        st = out.lstat()
        assert stat.S_ISREG(st.st_mode) and st.st_uid == alice.pw_uid
        assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)  # umask 077 (item 3)
        # bob can neither plant anything next to it nor read it
        planted = mine / f"vizdesk-{sid}-9999.out"
        assert as_user("bob", "ln", "-s", "/home/alice/.bashrc", str(planted)).returncode != 0
        assert not planted.exists()
        assert as_user("bob", "cat", str(out)).returncode != 0
        assert as_user("bob", "touch", str(jobs_dir / "x")).returncode != 0
    finally:
        await delete_all(http, daemon, "sessions", [sid])
    await wait_for_state(http, daemon, sid, {"ENDED"}, timeout=20)


async def test_batch_job_output_is_private(
    http: aiohttp.ClientSession, daemon: Daemon
) -> None:
    body = {"template": "hello", "parameters": {"message": "private", "count": 1}}
    async with http.post(f"{daemon.url}/api/v1/jobs", json=body,
                         headers=daemon.headers("alice")) as r:  # fmt: skip
        job = await r.json()
        assert r.status == 201, job
    out = Path(job["output_path"])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with http.get(f"{daemon.url}/api/v1/jobs/{job['id']}",
                                headers=daemon.headers("alice")) as r:  # fmt: skip
                if (await r.json())["state"] in ("COMPLETED", "FAILED"):
                    break
            await asyncio.sleep(0.3)
        assert out.read_text() == "private\n"
        assert stat.S_IMODE(out.stat().st_mode) == 0o600, oct(out.stat().st_mode)
        assert as_user("bob", "cat", str(out)).returncode != 0
    finally:
        out.unlink(missing_ok=True)


def test_a_world_writable_output_dir_is_refused_at_start(testbed: Testbed) -> None:
    shared = Path(tempfile.mkdtemp(prefix="vizdesk-shared-out-", dir="/var/tmp"))
    shared.chmod(0o1777)
    cfg = write_test_config(testbed, {"sessions": {"output_dir": str(shared)}}, "shared-out")
    try:
        res = subprocess.run(
            [sys.executable, "-m", "vizdesk", "--config", str(cfg), "serve"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert res.returncode == 2, res.stderr
        assert "sessions.output_dir" in res.stderr and "writable by other users" in res.stderr
    finally:
        cfg.unlink(missing_ok=True)
        shutil.rmtree(shared, ignore_errors=True)


# ---------------------------------------------------------------- 2: limits under races


@pytest_asyncio.fixture(scope="module")
async def tight(testbed: Testbed) -> AsyncIterator[Daemon]:
    """A daemon allowing 2 sessions and 2 jobs per user, with a long-running template."""
    tdir = testbed.dir / "tests" / f"templates-{secrets.token_hex(3)}"
    tdir.mkdir(parents=True)
    (tdir / "sleeper.yaml").write_text(SLEEPER)
    policy = {"groups": {"*": {"partitions": ["*"], "images": ["*"], "max_sessions": 2,
                               "max_jobs": 2, "max_cpus": 4, "max_memory_gb": 8}}}  # fmt: skip
    d = start_daemon(testbed, "tight", {"policy": policy, "jobs": {"templates_dir": str(tdir)}})
    yield d
    stop_daemon(d)
    shutil.rmtree(tdir, ignore_errors=True)


async def parallel_posts(
    http: aiohttp.ClientSession, d: Daemon, path: str, body: dict[str, Any], n: int
) -> list[tuple[int, dict[str, Any]]]:
    async def one() -> tuple[int, dict[str, Any]]:
        async with http.post(f"{d.url}{path}", json=body, headers=d.headers("alice")) as r:
            return r.status, await r.json()

    return await asyncio.gather(*(one() for _ in range(n)))


def exactly_the_limit(results: list[tuple[int, dict[str, Any]]], key: str) -> list[str]:
    """The ids created; every other answer must be the policy refusal naming ``key``."""
    created = [b["id"] for s, b in results if s == 201]
    refused = [b for s, b in results if s != 201]
    assert all(b["error"]["code"] == "policy_violation" for b in refused), refused
    assert all(f"{key} is 2" in b["error"]["message"] for b in refused), refused
    return created


async def test_parallel_sessions_never_exceed_max_sessions(
    http: aiohttp.ClientSession, tight: Daemon
) -> None:
    results = await parallel_posts(http, tight, "/api/v1/sessions", {}, 6)
    created = [b["id"] for s, b in results if s == 201]
    try:
        assert len(exactly_the_limit(results, "max_sessions")) == 2, results
    finally:
        await delete_all(http, tight, "sessions", created)
    for sid in created:
        await wait_for_state(http, tight, sid, {"ENDED", "FAILED"}, timeout=20)
    # the slots are free again
    results = await parallel_posts(http, tight, "/api/v1/sessions", {}, 3)
    again = [b["id"] for s, b in results if s == 201]
    await delete_all(http, tight, "sessions", again)
    assert len(again) == 2, results


async def test_parallel_jobs_never_exceed_max_jobs(
    http: aiohttp.ClientSession, tight: Daemon
) -> None:
    results = await parallel_posts(http, tight, "/api/v1/jobs", {"template": "sleeper"}, 6)
    created = [b["id"] for s, b in results if s == 201]
    try:
        assert len(exactly_the_limit(results, "max_jobs")) == 2, results
    finally:
        await delete_all(http, tight, "jobs", created)
        for rid in created:
            async with http.get(f"{tight.url}/api/v1/jobs/{rid}",
                                headers=tight.headers("alice")) as r:  # fmt: skip
                path = (await r.json()).get("output_path")
            if path:
                Path(path).unlink(missing_ok=True)


# ---------------------------------------------------------------- 10: script directory


@pytest.fixture
def squatted_tmp() -> Iterator[Path]:
    """bob creates the old default script directory (/tmp/vizdesk-<daemon uid>-jobs) first."""
    path = Path(f"/tmp/vizdesk-{os.geteuid()}-jobs")
    if path.is_dir() and not path.is_symlink() and path.stat().st_uid == os.geteuid():
        shutil.rmtree(path)  # what daemons before the fix left there
    assert as_user("bob", "mkdir", "-m", "0777", str(path)).returncode == 0
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_jobs_work_when_another_user_took_the_old_tmp_path(
    http: aiohttp.ClientSession, testbed: Testbed, squatted_tmp: Path
) -> None:
    d = start_daemon(testbed, "script-dir", {})
    try:
        body = {"template": "hello", "parameters": {"message": "x"}}
        async with http.post(f"{d.url}/api/v1/jobs", json=body, headers=d.headers("alice")) as r:
            job = await r.json()
            assert r.status == 201, job
        Path(job["output_path"]).unlink(missing_ok=True)
        assert not any(squatted_tmp.iterdir())  # nothing of the daemon's went there
    finally:
        stop_daemon(d)
