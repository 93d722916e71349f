"""Template → upload files (tus, with tuspy) → validate → submit → results, on the real
test bed with the shipped ``python-config`` template (a JSON config slot checked with a
JSON Schema; runs on the node's Python).

Covers: a valid config validates, the job consumes the upload (moved into its 0700
directory as alice), reads it, and leaves results the API lists (matched to the
template's outputs) and serves; every validation failure (missing slot, wrong pattern,
oversized file, JSON Schema error with its JSON path, unparsable JSON, unknown slot) is a
400 naming the slot, with nothing submitted; an upload feeds one job only; bob can use
neither alice's upload nor see her results.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tusclient import client as tus_client

from tests.conftest import Daemon
from tests.e2e.test_batch_jobs import FINAL, wait_job

pytestmark = pytest.mark.e2e


def tus_upload(daemon: Daemon, data: bytes, filename: str, user: str = "alice",
               slot: str = "config") -> str:
    """Upload ``data`` with tuspy (a tus client nobody here wrote); the upload id."""
    client = tus_client.TusClient(f"{daemon.url}/api/v1/uploads",
                                  headers=daemon.headers(user))
    uploader = client.uploader(file_stream=io.BytesIO(data), chunk_size=1 << 20,
                               metadata={"filename": filename, "slot": slot,
                                         "template": "python-config"},
                               upload_checksum=True)
    uploader.upload()
    assert uploader.url
    return str(uploader.url).rstrip("/").rsplit("/", 1)[-1]


async def upload(daemon: Daemon, data: bytes, filename: str, **kw: str) -> str:
    return await asyncio.to_thread(tus_upload, daemon, data, filename, **kw)


async def post(http: aiohttp.ClientSession, daemon: Daemon, path: str, body: dict[str, Any],
               user: str = "alice") -> tuple[int, dict[str, Any]]:
    async with http.post(f"{daemon.url}{path}", json=body, headers=daemon.headers(user)) as r:
        return r.status, await r.json()


async def job_ids(http: aiohttp.ClientSession, daemon: Daemon) -> set[str]:
    async with http.get(f"{daemon.url}/api/v1/jobs", headers=daemon.headers("alice")) as r:
        return {j["id"] for j in (await r.json())["jobs"]}


VALIDATE = "/api/v1/job-templates/python-config/validate"


async def test_config_upload_validates_runs_and_gives_results(http, daemon) -> None:
    uid = await upload(daemon, json.dumps({"n": 100, "method": "squares"}).encode(),
                       "case.json")
    status, report = await post(http, daemon, VALIDATE, {"files": {"config": [uid]}})
    assert status == 200 and report["valid"] is True, report
    assert report["slots"]["config"] == {"ok": True, "files": ["case.json"], "errors": []}
    # bob can neither validate with it nor submit it
    status, body = await post(http, daemon, VALIDATE, {"files": {"config": uid}}, user="bob")
    assert status == 404 and body["error"]["field"] == "files.config", body
    status, body = await post(http, daemon, "/api/v1/jobs",
                              {"template": "python-config", "files": {"config": uid}},
                              user="bob")
    assert status == 404 and body["error"]["field"] == "files.config", body

    status, job = await post(http, daemon, "/api/v1/jobs",
                             {"template": "python-config", "files": {"config": uid}})
    assert status == 201, job
    try:
        assert job["files"] == {"config": ["case.json"]}
        assert job["template_version"] == "1.0" and job["outputs"] == ["results/*"]
        workdir = Path(job["workdir"])
        moved = workdir / "case.json"
        assert moved.owner() == "alice" and moved.stat().st_mode & 0o077 == 0
        done = await wait_job(http, daemon, job["id"], FINAL)
        assert done["state"] == "COMPLETED", (done, (workdir / Path(done["output_path"]).name)
                                              .read_text(errors="replace"))
        expected = {"n": 100, "method": "squares", "total": sum(x * x for x in range(101))}
        # results through the API (read as alice by the user-file helper)
        async with http.get(f"{daemon.url}/api/v1/jobs/{job['id']}/files",
                            headers=daemon.headers("alice")) as r:
            listing = await r.json()
            assert r.status == 200, listing
        entries = {e["path"]: e for e in listing["files"]}
        assert "results/report.json" in entries and "case.json" in entries, entries
        assert entries["results/report.json"]["outputs"] == ["results/*"], entries
        assert entries["case.json"]["outputs"] == []
        async with http.get(f"{daemon.url}/api/v1/jobs/{job['id']}/files/results/report.json",
                            headers=daemon.headers("alice")) as r:
            assert r.status == 200 and json.loads(await r.read()) == expected
        async with http.get(f"{daemon.url}/api/v1/jobs/{job['id']}/files.zip?outputs=true",
                            headers=daemon.headers("alice")) as r:
            assert r.status == 200
            z = zipfile.ZipFile(io.BytesIO(await r.read()))
        assert z.namelist() == ["results/report.json"]
        assert json.loads(z.read("results/report.json")) == expected
        async with http.get(f"{daemon.url}/api/v1/jobs/{job['id']}/files",
                            headers=daemon.headers("bob")) as r:
            assert r.status == 404
        # the upload fed this job: it is gone, and a second job cannot use it
        async with http.get(f"{daemon.url}/api/v1/uploads/{uid}",
                            headers=daemon.headers("alice")) as r:
            assert r.status == 404
        status, body = await post(http, daemon, "/api/v1/jobs",
                                  {"template": "python-config", "files": {"config": uid}})
        assert status == 404 and body["error"]["field"] == "files.config", body
        # what was asked for, for "submit again"
        async with http.get(f"{daemon.url}/api/v1/jobs/{job['id']}/request",
                            headers=daemon.headers("alice")) as r:
            asked = await r.json()
        assert asked["template"] == "python-config" and asked["files"] == {
            "config": ["case.json"]}
    finally:
        shutil.rmtree(job["workdir"], ignore_errors=True)


@pytest.mark.parametrize(
    ("name", "data", "code", "path"),
    [
        ("case.json", b'{"n": 0}', "schema", "$.n"),
        ("case.json", b'{"n": 5, "method": "cubes"}', "schema", "$.method"),
        ("case.json", b'{"n": 5, "extra": 1}', "schema", "$"),
        ("case.json", b'{"n": 5', "unparsable", None),
        ("case.txt", b'{"n": 5}', "wrong_pattern", None),
        ("big.json", b'{"n": 5, "pad": "' + b"x" * (70 * 1024) + b'"}', "too_big", None),
    ],
)
async def test_a_refused_file_is_a_400_naming_the_slot_and_nothing_is_submitted(
    http, daemon, name, data, code, path
) -> None:
    uid = await upload(daemon, data, name)
    status, report = await post(http, daemon, VALIDATE, {"files": {"config": [uid]}})
    assert status == 200 and report["valid"] is False, report
    errors = report["slots"]["config"]["errors"]
    assert errors and errors[0]["code"] == code, errors
    if path is not None:
        assert errors[0]["path"] == path, errors
    before = await job_ids(http, daemon)
    status, body = await post(http, daemon, "/api/v1/jobs",
                              {"template": "python-config", "files": {"config": uid}})
    assert status == 400, body
    err = body["error"]
    assert err["field"] == "files.config" and err["code"] == "invalid_files", err
    assert code in err["message"] and (path is None or path in err["message"]), err
    assert err["details"]["slots"]["config"]["errors"][0]["code"] == code
    assert await job_ids(http, daemon) == before
    async with http.delete(f"{daemon.url}/api/v1/uploads/{uid}",
                           headers={**daemon.headers("alice"), "Tus-Resumable": "1.0.0"}) as r:
        assert r.status == 204


async def test_missing_and_unknown_slots(http, daemon) -> None:
    before = await job_ids(http, daemon)
    status, body = await post(http, daemon, "/api/v1/jobs", {"template": "python-config"})
    assert status == 400 and body["error"]["field"] == "files.config", body
    assert "missing" in body["error"]["message"]
    uid = await upload(daemon, b'{"n": 3}', "case.json", slot="mesh")
    status, report = await post(http, daemon, VALIDATE,
                                {"files": {"config": [uid], "mesh": [uid]}})
    assert status == 400 or report["valid"] is False, report  # one upload twice / unknown slot
    status, body = await post(http, daemon, "/api/v1/jobs",
                              {"template": "hello", "parameters": {"message": "x"},
                               "files": {"config": uid}})
    assert status == 400 and body["error"]["field"].startswith("files"), body
    assert await job_ids(http, daemon) == before
    status, body = await post(http, daemon, "/api/v1/job-templates/nope/validate", {})
    assert status == 404


def test_no_job_directory_holds_a_foreign_file() -> None:
    """Every file under alice's job directories is alice's (moved as her, never as root)."""
    root = Path("/home/alice/vizdesk-jobs")
    assert root.is_dir(), "the tests above ran jobs: their directories must be here"
    out = subprocess.run(["find", str(root), "!", "-user", "alice"], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [], out


PLANT_TEMPLATE = """\
name: plant
description: a job that plants symlinks to things that are not its own in its directory
partition: batch
outputs: ["*"]
resources: {cpus: 1, memory_gb: 1, time_limit_minutes: 5}
command:
  - /bin/bash
  - -c
  - |
    ln -s /etc/shadow shadow
    ln -s "$1" secrets
    ln -s /home/bob/vizdesk-jobs bobs
    ln -s .. up
    ln -s /etc/passwd passwd
    mkdir -p sub && ln -s ../../ sub/escape
    echo mine > mine.txt
  - plant
  - "{secrets}"
parameters:
  secrets: {type: string, required: true, max_length: 4096}
"""


@pytest.fixture(scope="module")
def plant_daemon(testbed):
    from tests.conftest import start_daemon, stop_daemon

    tdir = testbed.dir / "tests" / "templates-plant"
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / "plant.yaml").write_text(PLANT_TEMPLATE)
    d = start_daemon(testbed, "jobs-plant", {"jobs": {"templates_dir": str(tdir)}})
    yield d
    stop_daemon(d)
    shutil.rmtree(tdir, ignore_errors=True)


async def test_symlinks_planted_by_the_job_never_leak(http, plant_daemon, testbed) -> None:
    d = plant_daemon
    secrets_dir = str(testbed.dir / "secrets")
    status, job = await post(http, d, "/api/v1/jobs",
                             {"template": "plant", "parameters": {"secrets": secrets_dir}})
    assert status == 201, job
    try:
        done = await wait_job(http, d, job["id"], FINAL)
        assert done["state"] == "COMPLETED", done
        base = f"{d.url}/api/v1/jobs/{job['id']}/files"
        async with http.get(base, headers=d.headers("alice")) as r:
            kinds = {e["path"]: e["type"] for e in (await r.json())["files"]}
        assert kinds["shadow"] == kinds["secrets"] == kinds["up"] == "symlink", kinds
        assert Path(job["workdir"], "shadow").is_symlink()  # the job really planted them
        for path in ("shadow", "secrets", "secrets/jwt_secret", "bobs", "up", "passwd",
                     "up/up/etc/passwd", "sub/escape", "sub/escape/etc/passwd",
                     "%2e%2e/%2e%2e/etc/passwd", "..%2f..%2fetc%2fpasswd", "/etc/passwd"):
            async with http.get(f"{base}/{path}", headers=d.headers("alice")) as r:
                body = await r.read()
                assert r.status == 404, (path, r.status, body[:200])
                assert b"root:" not in body and b"BEGIN" not in body
        async with http.get(f"{base}/mine.txt", headers=d.headers("alice")) as r:
            assert r.status == 200 and await r.read() == b"mine\n"
        async with http.get(f"{base}/mine.txt", headers=d.headers("bob")) as r:
            assert r.status == 404
        async with http.get(f"{d.url}/api/v1/jobs/{job['id']}/files.zip",
                            headers=d.headers("alice")) as r:
            z = zipfile.ZipFile(io.BytesIO(await r.read()))
        names = set(z.namelist())
        assert "mine.txt" in names
        assert not names & {"shadow", "secrets", "bobs", "up", "passwd", "sub/escape"}, names
        for name in names:
            assert b"root:" not in z.read(name)
    finally:
        shutil.rmtree(job["workdir"], ignore_errors=True)
