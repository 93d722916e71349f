"""Slurm 26.05 + Apptainer: batch jobs in an image, cancellation, the CLI backend.

Set VIZDESK_UPDATE_FIXTURES=1 to also save the job's `squeue --json` to
tests/fixtures/slurm/squeue-26.05-apptainer-job.json.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from typing import Any

from tests.container.sid import COMPUTE_SIF, REPO, VENV_PY, Sid, record_timing
from vizdesk.slurm.base import JobState
from vizdesk.slurm.squeue_json import parse_squeue_json


def squeue_job(sid: Sid, job_id: str) -> tuple[dict[str, Any] | None, str]:
    raw = sid.run("squeue", "--json", "--states=all", user="alice").stdout
    for job in json.loads(raw).get("jobs", []):
        if str(job.get("job_id")) == job_id:
            return job, raw
    return None, raw


def wait_job(sid: Sid, job_id: str, states: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        job, _ = squeue_job(sid, job_id)
        if job is not None and set(job["job_state"]) & states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not in {states} after {timeout}s: {job}")


# As vizdesk's job launcher does on a node: extract the SIF when FUSE is not usable.
FLAGS = "$(test -r /dev/fuse -a -w /dev/fuse || echo --unsquash)"


def test_batch_job_in_image_gives_output_and_exit_code(sid: Sid) -> None:
    tag = secrets.token_hex(4)
    out = f"/tmp/vzc-{tag}-%j.out"
    inner = f"echo in-container {tag} $(cat /etc/debian_version); exit 7"
    t0 = time.monotonic()
    job_id = sid.run(
        "sbatch", "--parsable", f"--job-name=vzc-batch-{tag}", "--chdir=/tmp",
        f"--output={out}", "--time=5",
        "--wrap", f"exec apptainer exec --cleanenv {FLAGS} {COMPUTE_SIF} sh -c '{inner}'",
        user="alice",
    ).stdout.strip()  # fmt: skip
    job = wait_job(sid, job_id, {"COMPLETED", "FAILED"})
    record_timing("batch job in compute.sif, sbatch to finished", time.monotonic() - t0)
    # raw 26.05 shape: job_state a list, exit code {status, return_code{set,infinite,number}}
    assert job["job_state"] == ["FAILED"]
    assert job["exit_code"]["return_code"]["number"] == 7
    assert job["user_name"] == "alice"
    assert job["batch_host"] == sid.env["SID_SLURM_NODE"]
    # vizdesk's Slurm-CLI parser reads the same document
    _, raw = squeue_job(sid, job_id)
    status = parse_squeue_json(raw)[job_id]
    assert status.state == JobState.FAILED
    assert status.exit_code == 7
    assert status.batch_host == sid.env["SID_SLURM_NODE"]
    text = sid.run("cat", out.replace("%j", job_id)).stdout
    assert f"in-container {tag} 12." in text, text
    if os.environ.get("VIZDESK_UPDATE_FIXTURES") == "1":
        dest = REPO / "tests" / "fixtures" / "slurm" / "squeue-26.05-apptainer-job.json"
        dest.write_text(sid.run("squeue", "--json", "--states=all", f"--jobs={job_id}").stdout)


def test_scancel_leaves_no_container_process(sid: Sid) -> None:
    tag = secrets.token_hex(4)
    marker = str(4000 + secrets.randbelow(999))  # `sleep <marker>` identifies the process
    assert not sid.processes("alice"), sid.processes("alice")
    job_id = sid.run(
        "sbatch", "--parsable", f"--job-name=vzc-cancel-{tag}", "--chdir=/tmp",
        "--output=/dev/null", "--time=5",
        "--wrap", f"apptainer exec --cleanenv {FLAGS} {COMPUTE_SIF} sleep {marker}",
        user="alice",
    ).stdout.strip()  # fmt: skip
    wait_job(sid, job_id, {"RUNNING"})
    deadline = time.monotonic() + 30
    procs: list[tuple[int, str, str]] = []

    def sleeping(procs: list[tuple[int, str, str]]) -> bool:
        # the container's own `sleep`, not the starter whose argv ends the same way (while
        # it still extracts the image, with --unsquash)
        return any(
            cmd.split()[0].rsplit("/", 1)[-1] == "sleep" and cmd.endswith(f"sleep {marker}")
            for _, _, cmd in procs
        )

    while time.monotonic() < deadline:
        procs = sid.processes("alice")
        if sleeping(procs):
            break
        time.sleep(0.2)
    assert sleeping(procs), procs
    assert any("Apptainer runtime parent: compute.sif" in cmd for _, _, cmd in procs), procs
    # mounted with squashfuse where FUSE is usable, else extracted to a temporary sandbox
    fuse_mounted = any(
        cmd.split()[0].rsplit("/", 1)[-1].startswith("squashfuse") for _, _, cmd in procs
    )
    assert fuse_mounted == sid.fuse_usable(), procs
    t0 = time.monotonic()
    sid.run("scancel", job_id, user="alice")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and sid.processes("alice"):
        time.sleep(0.2)
    left = sid.processes("alice")
    assert not left, f"processes left after scancel: {left}"
    record_timing("scancel to no container process left", time.monotonic() - t0)
    job = wait_job(sid, job_id, {"CANCELLED"}, timeout=15)
    assert job["job_state"] == ["CANCELLED"]


def test_cli_backend_against_slurm_26_05(sid_venv: Sid) -> None:
    """vizdesk's Slurm-CLI backend (submit as the user, batched query, cancel) on 26.05."""
    res = sid_venv.run(
        VENV_PY, "/repo/tests/container/slurm_probe.py", sid_venv.env["SID_SLURM_PARTITION"],
        timeout=180,
    )  # fmt: skip
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["running"]["state"] == "RUNNING"
    assert out["running"]["user"] == "alice"
    assert out["running"]["batch_host"] == sid_venv.env["SID_SLURM_NODE"]
    assert out["done"]["state"] == "FAILED" and out["done"]["exit_code"] == 3
    assert out["after_cancel"]["state"] == "CANCELLED"
    assert out["unknown"] is None
    assert out["bob_cancel"] == "SlurmRejected"
