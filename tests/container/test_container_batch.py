"""The batch workflow with real Apptainer on Slurm 26.05 in the sid root.

* The shipped ``solver`` template: a 1 GiB mesh uploaded with tuspy (a tus client nobody
  here wrote), stopped half way and resumed by a new uploader that only knows the URL,
  plus a JSON case file checked against the slot's JSON Schema; the job runs in the
  compute image in its own directory, checksums the mesh (= the source's SHA-256), and
  its results are listed, downloaded with Range and as a zip.
* The shipped ``mpi-hello`` template: 2 ranks, each its own ``apptainer exec`` under srun,
  both in the output.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from tusclient import client as tus_client

from tests.container.sid import Sid, record_timing
from tests.container.test_container_session import SidDaemon, start_sid_daemon

MiB = 1 << 20
GiB = 1 << 30
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}


@pytest.fixture(scope="module")
def batch_daemon(sid_venv: Sid) -> Iterator[SidDaemon]:
    yield from start_sid_daemon(sid_venv, {
        "slurm": {"partitions": []},
        "jobs": {"templates_dir": "/repo/templates"},
    })  # fmt: skip


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
        yield s


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """1 GiB of incompressible data (a random MiB with a block counter), its SHA-256."""
    path = tmp_path_factory.mktemp("mesh") / "wing.msh"
    block = bytearray(os.urandom(MiB))
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for i in range(GiB // MiB):
            block[:8] = i.to_bytes(8, "big")
            digest.update(block)
            f.write(block)
    return path, digest.hexdigest()


async def wait_job(http: aiohttp.ClientSession, d: SidDaemon, jid: str,
                   timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        async with http.get(f"{d.url}/api/v1/jobs/{jid}", headers=d.headers("alice")) as r:
            body = await r.json()
        if body.get("state") in FINAL:
            return body
        await asyncio.sleep(0.5)
    raise AssertionError(f"job {jid} not final after {timeout}s: {body}")


async def output(http: aiohttp.ClientSession, d: SidDaemon, jid: str) -> str:
    async with http.get(f"{d.url}/api/v1/jobs/{jid}/output", headers=d.headers("alice")) as r:
        return await r.text()


def partition(sid: Sid) -> str:
    return sid.env["SID_SLURM_PARTITION"]


async def test_solver_with_a_resumed_1gib_mesh_in_the_image(
    http: aiohttp.ClientSession, batch_daemon: SidDaemon, sid_venv: Sid, mesh: tuple[Path, str]
) -> None:
    d = batch_daemon
    path, want = mesh
    endpoint = f"{d.url}/api/v1/uploads"
    t0 = time.monotonic()
    first = tus_client.TusClient(endpoint, headers=d.headers("alice")).uploader(
        str(path), chunk_size=64 * MiB, upload_checksum=True, retries=0,
        metadata={"filename": "wing.msh", "slot": "mesh", "template": "solver"},
    )  # fmt: skip
    await asyncio.to_thread(first.upload, GiB // 2)  # the client goes away half way
    assert first.offset == GiB // 2 and first.url
    second = tus_client.TusClient(endpoint, headers=d.headers("alice")).uploader(
        str(path), chunk_size=64 * MiB, upload_checksum=True, retries=0, url=first.url
    )
    assert second.offset == GiB // 2  # asked the server, resumes from there
    await asyncio.to_thread(second.upload)
    record_timing("tus 1 GiB into the sid root (tuspy, resumed)", time.monotonic() - t0)
    mesh_id = str(first.url).rstrip("/").rsplit("/", 1)[-1]
    case = {"title": "wing", "solver": {"iterations": 10, "tolerance": 1e-6}}
    case_client = tus_client.TusClient(endpoint, headers=d.headers("alice"))
    up = case_client.uploader(file_stream=io.BytesIO(json.dumps(case).encode()),
                              metadata={"filename": "case.json", "slot": "case"})
    await asyncio.to_thread(up.upload)
    case_id = str(up.url).rstrip("/").rsplit("/", 1)[-1]

    # A bad case file is caught before anything is submitted, with its JSON path.
    bad = case_client.uploader(
        file_stream=io.BytesIO(b'{"solver": {"iterations": 0, "tolerance": 1e-6}}'),
        metadata={"filename": "bad.json", "slot": "case"})
    await asyncio.to_thread(bad.upload)
    bad_id = str(bad.url).rstrip("/").rsplit("/", 1)[-1]
    async with http.post(f"{d.url}/api/v1/jobs", headers=d.headers("alice"), json={
        "template": "solver", "partition": partition(sid_venv),
        "files": {"mesh": mesh_id, "case": bad_id},
    }) as r:
        body = await r.json()
        assert r.status == 400 and body["error"]["field"] == "files.case", body
        assert "$.solver.iterations" in body["error"]["message"], body

    async with http.post(f"{d.url}/api/v1/jobs", headers=d.headers("alice"), json={
        "template": "solver", "partition": partition(sid_venv),
        "parameters": {"label": "wing run"}, "files": {"mesh": mesh_id, "case": case_id},
    }) as r:
        job = await r.json()
        assert r.status == 201, job
    assert job["files"] == {"mesh": ["wing.msh"], "case": ["case.json"]}
    done = await wait_job(http, d, job["id"])
    assert done["state"] == "COMPLETED", (done, await output(http, d, job["id"]))
    record_timing("solver job with a 1 GiB mesh, submit to COMPLETED", time.monotonic() - t0)

    base = f"{d.url}/api/v1/jobs/{job['id']}/files"
    async with http.get(base, headers=d.headers("alice")) as r:
        listing = await r.json()
    entries = {e["path"]: e for e in listing["files"]}
    assert entries["wing.msh"]["size"] == GiB and entries["wing.msh"]["outputs"] == []
    assert entries["results/summary.txt"]["outputs"] == ["results/*"], entries
    async with http.get(f"{base}/results/summary.txt", headers=d.headers("alice")) as r:
        summary = (await r.read()).decode()
    assert f"mesh sha256: {want}" in summary, summary  # computed inside the image
    assert "mesh bytes: 1073741824" in summary and "label: wing run" in summary
    # Range: the mesh's second MiB, and a suffix of the summary
    async with http.get(f"{base}/wing.msh", headers={**d.headers("alice"),
                                                      "Range": f"bytes={MiB}-{2 * MiB - 1}"}) as r:
        assert r.status == 206, await r.text()
        assert r.headers["Content-Range"] == f"bytes {MiB}-{2 * MiB - 1}/{GiB}"
        chunk = await r.read()
    with path.open("rb") as f:
        f.seek(MiB)
        assert chunk == f.read(MiB)
    async with http.get(f"{base}/results/summary.txt",
                        headers={**d.headers("alice"), "Range": "bytes=-12"}) as r:
        assert r.status == 206 and (await r.read()) == summary.encode()[-12:]
    async with http.get(f"{d.url}/api/v1/jobs/{job['id']}/files.zip?outputs=true",
                        headers=d.headers("alice")) as r:
        assert r.status == 200
        z = zipfile.ZipFile(io.BytesIO(await r.read()))
    names = set(z.namelist())
    assert {"results/summary.txt", "results/case.json"} <= names and "wing.msh" not in names
    assert json.loads(z.read("results/case.json")) == case
    async with http.get(base, headers=d.headers("bob")) as r:
        assert r.status == 404


async def test_mpi_hello_runs_two_ranks_each_in_the_image(
    http: aiohttp.ClientSession, batch_daemon: SidDaemon, sid_venv: Sid
) -> None:
    d = batch_daemon
    async with http.post(f"{d.url}/api/v1/jobs", headers=d.headers("alice"), json={
        "template": "mpi-hello", "partition": partition(sid_venv), "ntasks": 2,
    }) as r:
        job = await r.json()
        assert r.status == 201, job
    done = await wait_job(http, d, job["id"])
    text = await output(http, d, job["id"])
    assert done["state"] == "COMPLETED", (done, text)
    node = sid_venv.env["SID_SLURM_NODE"]
    lines = sorted(line for line in text.splitlines() if line.startswith("hello from rank"))
    assert [line.split(" (")[0] for line in lines] == [
        f"hello from rank {r} of 2 on {node}" for r in (0, 1)
    ], text
    # each rank ran inside the compute image (Debian 12), not in the sid root around it
    assert all(line.endswith(")") and "(Debian 12." in line for line in lines), text
