"""The batch workflow's job side on the real test bed (Slurm 22.05): a dry run shows the
exact script, sbatch options, environment names and Slurm's own start estimate without
submitting anything; CAE resources (nodes, tasks, constraint-free shapes, requeue, mail)
reach Slurm as asked; policy refuses accounts, QOS and shapes outside the caller's groups
(403 naming the field); the job runs in its own 0700 directory, made by the user.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Daemon
from tests.e2e.test_batch_jobs import FINAL, submit, wait_job

pytestmark = pytest.mark.e2e


def scontrol_job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True,
                         text=True, check=True).stdout
    fields: dict[str, str] = {}
    for item in out.split():
        key, sep, value = item.partition("=")
        if sep:
            fields[key] = value
    return fields


def vizdesk_job_names() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True)
    return set(out.stdout.split())


async def dry_run(http: aiohttp.ClientSession, daemon: Daemon, body: dict[str, Any],
                  user: str = "alice") -> tuple[int, dict[str, Any]]:
    async with http.post(f"{daemon.url}/api/v1/jobs?dry_run=true", json=body,
                         headers=daemon.headers(user)) as r:
        return r.status, await r.json()


async def test_dry_run_shows_script_options_env_and_estimate(http, daemon) -> None:
    async with http.get(f"{daemon.url}/api/v1/jobs", headers=daemon.headers("alice")) as r:
        before = {j["id"] for j in (await r.json())["jobs"]}
    names_before = vizdesk_job_names()
    status, body = await dry_run(http, daemon, {
        "template": "hello", "parameters": {"message": "secret-value-123", "count": 2},
        "cpus": 2, "job_name": "preview-me",
    })
    assert status == 200, body
    assert body["dry_run"] is True
    assert body["script"].startswith("#!/bin/bash") and "secret-value-123" not in body["script"]
    assert Path(body["script_path"]).read_text() == body["script"]
    opts = body["sbatch_options"]
    assert "--cpus-per-task=2" in opts and "--partition=batch" in opts
    assert "--job-name=vizdesk-preview-me" in opts and "--export=ALL" in opts
    assert "VIZDESK_PARAM_MESSAGE" in body["environment"]
    assert "secret-value-123" not in json.dumps(body)  # names, never values
    est = body["estimate"]
    assert est is not None, body
    assert est["partition"] == "batch" and est["processors"] >= 2
    assert est["start_time"].endswith("Z") and "to start at" in est["message"]
    assert body["workdir"].startswith("/home/alice/vizdesk-jobs/")
    # Nothing stored, nothing queued.
    async with http.get(f"{daemon.url}/api/v1/jobs", headers=daemon.headers("alice")) as r:
        assert {j["id"] for j in (await r.json())["jobs"]} == before
    assert "vizdesk-preview-me" not in vizdesk_job_names() | names_before


async def test_dry_run_refusals(http, daemon) -> None:
    status, body = await dry_run(http, daemon, {"template": "hello",
                                                "parameters": {"message": "x"},
                                                "partition": "viz", "cpus": 99})
    assert status == 400 and body["error"]["field"] == "cpus"
    async with http.post(f"{daemon.url}/api/v1/jobs?dry_run=perhaps",
                         json={"template": "hello", "parameters": {"message": "x"}},
                         headers=daemon.headers("alice")) as r:
        assert r.status == 400 and (await r.json())["error"]["field"] == "dry_run"


async def test_batch_options_reach_slurm(http, daemon, testbed) -> None:
    job = await submit(http, daemon, {
        "template": "hello", "parameters": {"message": "shape", "count": 1},
        "job_name": "cae-shape", "cpus": 1,
    })
    try:
        fields = scontrol_job(job["job_id"])
        assert fields["JobName"] == "vizdesk-cae-shape"
        assert fields["WorkDir"] == job["workdir"] == f"/home/alice/vizdesk-jobs/{job['id']}"
        done = await wait_job(http, daemon, job["id"], FINAL)
        assert done["state"] == "COMPLETED", done
        workdir = Path(job["workdir"])
        assert workdir.owner() == "alice" and workdir.stat().st_mode & 0o777 == 0o700
        assert (workdir / f"vizdesk-job-{job['id']}.out").read_text() == "shape\n"
    finally:
        shutil.rmtree(job["workdir"], ignore_errors=True)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"account": "physics"}, "account"),
        ({"qos": "long"}, "qos"),
        ({"gpu_type": "a100", "gpus": 1}, "gpus"),
        ({"constraint": "a;b"}, "constraint"),
        ({"job_name": "../x"}, "job_name"),
        ({"files": {"Mesh": "abcdefgh12"}}, "files.Mesh"),
        ({"files": {"mesh": ["../../etc"]}}, "files.mesh"),
    ],
)
async def test_batch_fields_outside_policy_or_shape_are_refused(http, daemon, extra,
                                                                field) -> None:
    body = {"template": "hello", "parameters": {"message": "x"}, **extra}
    async with http.post(f"{daemon.url}/api/v1/jobs", json=body,
                         headers=daemon.headers("alice")) as r:
        data = await r.json()
        assert r.status in (400, 403), data
        assert data["error"]["field"] == field, data


SRUN_TEMPLATE = """\
name: srun-hello
description: every task prints its rank (launcher srun, on the node, no image)
partition: batch
launcher: srun
resources:
  ntasks: {default: 2, max: 4}
  cpus: 1
  memory_gb: 1
  time_limit_minutes: 5
command:
  - /bin/bash
  - -c
  - printf 'rank %s of %s on %s\\n' "$SLURM_PROCID" "$SLURM_NTASKS" "$(hostname)"
"""


@pytest.fixture(scope="module")
def srun_daemon(testbed):
    from tests.conftest import start_daemon, stop_daemon

    tdir = testbed.dir / "tests" / "templates-srun"
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / "srun-hello.yaml").write_text(SRUN_TEMPLATE)
    d = start_daemon(testbed, "jobs-srun", {"jobs": {"templates_dir": str(tdir)}})
    yield d
    stop_daemon(d)
    shutil.rmtree(tdir, ignore_errors=True)


async def test_srun_launcher_runs_every_task(http, srun_daemon, testbed) -> None:
    d = srun_daemon
    job = await submit(http, d, {"template": "srun-hello", "ntasks": 3})
    try:
        fields = scontrol_job(job["job_id"])
        assert fields["NumTasks"] == "3", fields
        assert fields["Requeue"] == "0"  # templates never requeue unless they say so
        done = await wait_job(http, d, job["id"], FINAL)
        assert done["state"] == "COMPLETED" and done["ntasks"] == 3, done
        lines = sorted(Path(done["output_path"]).read_text().splitlines())
        assert lines == [f"rank {r} of 3 on {testbed.node}" for r in range(3)], lines
    finally:
        shutil.rmtree(job["workdir"], ignore_errors=True)
    async with http.post(f"{d.url}/api/v1/jobs", json={"template": "srun-hello", "ntasks": 5},
                         headers=d.headers("alice")) as r:
        assert r.status == 400 and (await r.json())["error"]["field"] == "ntasks"
