"""Job results over the API against the real daemon: listing, Range downloads, zip, and
every way out of the job directory (``..``, encoded dots and slashes, absolute paths,
symlinks to /etc/shadow, to bob's directory, to ``../..``) answering 404, never content.

The job record is stored directly (the submission flow is another test's): a directory
of alice's with results, and a record whose ``workdir`` points at it.
"""

from __future__ import annotations

import io
import os
import pwd
import secrets
import shutil
import zipfile
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from yarl import URL

from tests.conftest import Daemon
from vizdesk.contract.keys import Keys
from vizdesk.jobs.model import BatchJob, BatchJobState, new_job_id
from vizdesk.jobs.store import JobStore

pytestmark = pytest.mark.e2e
SECRET = b"NEVER-SERVE-THIS"
CONTENT = {
    "run.log": b"solver log\n" * 100,
    "results/U.vtk": bytes(range(256)) * 400,
    "results/deep/p.vtk": b"p" * 5000,
    "input.json": b'{"steps": 3}',
}


def chown_tree(path: str, user: str) -> None:
    pw = pwd.getpwnam(user)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, name), pw.pw_uid, pw.pw_gid)
    os.lchown(path, pw.pw_uid, pw.pw_gid)


@pytest_asyncio.fixture(scope="module")
async def job(daemon: Daemon, redis_admin: aioredis.Redis) -> AsyncIterator[BatchJob]:
    alice, bob = pwd.getpwnam("alice"), pwd.getpwnam("bob")
    tag = secrets.token_hex(4)
    workdir = os.path.join(alice.pw_dir, f"vizdesk-it-job-{tag}")
    bob_dir = os.path.join(bob.pw_dir, f"vizdesk-it-job-{tag}")
    os.makedirs(bob_dir)
    with open(os.path.join(bob_dir, "bob.txt"), "wb") as f:
        f.write(SECRET)
    os.chmod(os.path.join(bob_dir, "bob.txt"), 0o644)  # readable: only confinement helps
    chown_tree(bob_dir, "bob")
    os.makedirs(os.path.join(workdir, "results", "deep"))
    for rel, data in CONTENT.items():
        with open(os.path.join(workdir, rel), "wb") as f:
            f.write(data)
    with open(os.path.join(alice.pw_dir, f"vizdesk-it-secret-{tag}"), "wb") as f:
        f.write(SECRET)  # alice's own file beside the job directory
    os.symlink("/etc/shadow", os.path.join(workdir, "shadow"))
    os.symlink(bob_dir, os.path.join(workdir, "bobs"))
    os.symlink("../..", os.path.join(workdir, "results", "up"))
    os.symlink(f"../vizdesk-it-secret-{tag}", os.path.join(workdir, "beside.vtk"))
    chown_tree(workdir, "alice")
    os.chmod(workdir, 0o700)
    record = BatchJob(
        id=new_job_id(),
        user="alice",
        partition="batch",
        cpus=1,
        memory_gb=1,
        gpus=0,
        time_limit_minutes=5,
        state=BatchJobState.QUEUED,
        workdir=workdir,
        outputs=["*.vtk", "run.log"],
    )
    store = JobStore(redis_admin, Keys(daemon.prefix), 3600)
    await store.create(record)
    await store.forget_active(record.id)  # never polled in Slurm: it has no job there
    bare = BatchJob(
        id=new_job_id(),
        user="alice",
        partition="batch",
        cpus=1,
        memory_gb=1,
        gpus=0,
        time_limit_minutes=5,
        state=BatchJobState.QUEUED,
    )
    await store.create(bare)
    await store.forget_active(bare.id)
    record.parameters = {"bare": bare.id, "tag": tag}
    yield record
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(bob_dir, ignore_errors=True)
    os.unlink(os.path.join(alice.pw_dir, f"vizdesk-it-secret-{tag}"))
    for jid in (record.id, bare.id):
        await redis_admin.delete(Keys(daemon.prefix).job(jid))


def files_url(daemon: Daemon, job: BatchJob, rest: str = "") -> str:
    return f"{daemon.url}/api/v1/jobs/{job.id}/files{rest}"


async def test_listing_marks_outputs_and_shows_links_as_links(
    daemon: Daemon, job: BatchJob, http: aiohttp.ClientSession
) -> None:
    async with http.get(files_url(daemon, job), headers=daemon.headers("alice")) as r:
        assert r.status == 200
        body = await r.json()
    entries = {e["path"]: e for e in body["files"]}
    assert entries["results/U.vtk"]["size"] == len(CONTENT["results/U.vtk"])
    assert entries["results/U.vtk"]["outputs"] == ["*.vtk"]
    assert entries["results/deep/p.vtk"]["outputs"] == ["*.vtk"]
    assert entries["run.log"]["outputs"] == ["run.log"]
    assert entries["input.json"]["outputs"] == []
    assert entries["results"]["type"] == "dir"
    for link in ("shadow", "bobs", "results/up", "beside.vtk"):
        assert entries[link]["type"] == "symlink" and entries[link]["outputs"] == []
    assert not any(p.startswith(("bobs/", "results/up/")) for p in entries)


async def test_download_whole_and_ranges(
    daemon: Daemon, job: BatchJob, http: aiohttp.ClientSession
) -> None:
    data = CONTENT["results/U.vtk"]
    url = files_url(daemon, job, "/results/U.vtk")
    alice = daemon.headers("alice")
    async with http.get(url, headers=alice) as r:
        assert r.status == 200 and await r.read() == data
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Content-Disposition"].startswith('attachment; filename="U.vtk"')
        assert r.headers["Accept-Ranges"] == "bytes"
    async with http.get(url, headers={**alice, "Range": "bytes=100-199"}) as r:
        assert r.status == 206 and await r.read() == data[100:200]
        assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    async with http.get(url, headers={**alice, "Range": "bytes=-10"}) as r:
        assert r.status == 206 and await r.read() == data[-10:]
    async with http.get(url, headers={**alice, "Range": f"bytes={len(data) - 5}-"}) as r:
        assert r.status == 206 and await r.read() == data[-5:]
    async with http.get(url, headers={**alice, "Range": f"bytes=0-{len(data) * 2}"}) as r:
        assert r.status == 206 and await r.read() == data  # the end is clamped
    async with http.get(url, headers={**alice, "Range": f"bytes={len(data)}-"}) as r:
        assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
    async with http.get(url, headers={**alice, "Range": "bytes=0-1,5-6"}) as r:
        assert r.status == 200 and await r.read() == data  # several ranges: the whole file


async def test_zip_of_all_files_and_of_outputs(
    daemon: Daemon, job: BatchJob, http: aiohttp.ClientSession
) -> None:
    async with http.get(files_url(daemon, job, ".zip"), headers=daemon.headers("alice")) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/zip"
        archive = await r.read()
    zf = zipfile.ZipFile(io.BytesIO(archive))
    assert sorted(zf.namelist()) == sorted(CONTENT)
    for name, data in CONTENT.items():
        assert zf.read(name) == data
    assert SECRET not in archive
    async with http.get(
        files_url(daemon, job, ".zip?outputs=true"), headers=daemon.headers("alice")
    ) as r:
        only = zipfile.ZipFile(io.BytesIO(await r.read()))
    assert sorted(only.namelist()) == ["results/U.vtk", "results/deep/p.vtk", "run.log"]


@pytest.mark.parametrize(
    "raw",
    [
        "/shadow",
        "/bobs/bob.txt",
        "/results/up/vizdesk-it-secret-{tag}",
        "/results/up/vizdesk-it-job-{tag}/run.log",
        "/beside.vtk",
        "/../../../../etc/shadow",
        "/%2e%2e/%2e%2e/%2e%2e/etc/shadow",
        "/..%2F..%2F..%2Fetc%2Fshadow",
        "/%2Fetc%2Fshadow",
        "//etc/shadow",
        "/results/./U.vtk",
        "/results",
        "/nonexistent",
    ],
)
async def test_every_way_out_is_404(
    daemon: Daemon, job: BatchJob, http: aiohttp.ClientSession, raw: str
) -> None:
    raw = raw.replace("{tag}", job.parameters["tag"])
    url = URL(f"{daemon.url}/api/v1/jobs/{job.id}/files{raw}", encoded=True)
    async with http.get(url, headers=daemon.headers("alice")) as r:
        body = await r.read()
        assert r.status == 404, (raw, r.status)
    assert SECRET not in body and b"root:" not in body


async def test_only_the_owner(daemon: Daemon, job: BatchJob, http: aiohttp.ClientSession) -> None:
    for rest in ("", "/run.log", ".zip"):
        async with http.get(files_url(daemon, job, rest), headers=daemon.headers("bob")) as r:
            assert r.status == 404
        admin = daemon.headers("bob", ["vizdesk-admins"])
        async with http.get(files_url(daemon, job, rest), headers=admin) as r:
            assert r.status == 403  # admins may cancel others' jobs, not read their results
    bare = job.parameters["bare"]
    async with http.get(
        f"{daemon.url}/api/v1/jobs/{bare}/files", headers=daemon.headers("alice")
    ) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "no_workdir"
