"""The Slurm CLI backend against the REAL test bed (slurmctld/slurmd 22.05, users alice/bob).

Needs ``testbed/testbed.sh up`` (``make test`` does it first); skipped only when
``/var/lib/vizdesk-testbed/env`` is absent. Jobs are tiny (1 CPU, 50 MB, seconds).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vizdesk.config import SlurmConfig, load_config
from vizdesk.slurm.base import (
    JobState,
    JobStatus,
    SlurmRejected,
    SlurmUnavailable,
    SubmitRequest,
)
from vizdesk.slurm.cli import SlurmCliBackend
from vizdesk.slurm.validate import InvalidSubmission

pytestmark = pytest.mark.e2e

TESTBED_DIR = Path(os.environ.get("VIZDESK_TESTBED_DIR", "/var/lib/vizdesk-testbed"))
ENV_FILE = TESTBED_DIR / "env"


def _testbed_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in ENV_FILE.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            env[k.strip()] = v.strip().strip("'\"")
    return env


@pytest.fixture(scope="module")
def slurm_cfg() -> SlurmConfig:
    if not ENV_FILE.is_file():
        pytest.skip(f"test bed not up ({ENV_FILE} missing): run `make test` or testbed.sh up")
    env = _testbed_env()
    cfg = load_config(env["VIZDESK_CONFIG"])
    return cfg.slurm


@pytest.fixture(scope="module")
def partition(slurm_cfg: SlurmConfig) -> str:
    return "batch" if "batch" in slurm_cfg.partitions else slurm_cfg.default_partition


@pytest.fixture(scope="module")
def node() -> str:
    return _testbed_env().get("SLURM_NODE", "")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory alice can write to (the job's cwd and output)."""
    d = Path("/tmp") / f"vizdesk-slurm-test-{secrets.token_hex(4)}"
    d.mkdir()
    d.chmod(0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    """Scripts live where alice cannot read them: sbatch gets them on stdin."""
    tmp_path.chmod(0o700)
    return tmp_path


@pytest.fixture
def submitted() -> Iterator[list[str]]:
    ids: list[str] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, check=False)


def write_script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o600)
    return path


def request(script: Path, workdir: Path, partition: str, **over: Any) -> SubmitRequest:
    fields: dict[str, Any] = {
        "user": "alice",
        "script": str(script),
        "job_name": f"vzslurmtest-{secrets.token_hex(3)}",
        "cpus": 1,
        "memory_mb": 50,
        "time_limit_minutes": 2,
        "partition": partition,
        "workdir": str(workdir),
        "output": str(workdir / "job-%j.out"),
    }
    fields.update(over)
    return SubmitRequest(**fields)


async def wait_for(
    backend: SlurmCliBackend,
    job_id: str,
    done: set[JobState] | None = None,
    timeout: float = 60.0,
) -> list[JobStatus | None]:
    """Poll until the job reaches one of ``done`` (default: finished) or vanishes."""
    seen: list[JobStatus | None] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = (await backend.info_many([job_id])).get(job_id)
        seen.append(st)
        if st is None or (st.state in done if done else st.state.is_finished):
            return seen
        await asyncio.sleep(0.25)
    raise AssertionError(f"job {job_id} did not get there in {timeout}s: {seen[-1:]}")


async def test_submit_runs_as_alice_and_completes(
    slurm_cfg: SlurmConfig,
    partition: str,
    workdir: Path,
    private_dir: Path,
    submitted: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VIZDESK_TEST_DAEMON_SECRET", "must-not-leak")
    token = secrets.token_hex(8)
    script = write_script(
        private_dir,
        "who.sh",
        f'id -un > "{workdir}/who"\n'
        f'echo "$VIZDESK_TEST_TOKEN" > "{workdir}/token"\n'
        f'echo "${{VIZDESK_TEST_DAEMON_SECRET:-unset}}" > "{workdir}/secret"\n',
    )
    calls: list[tuple[str, bool]] = []
    backend = SlurmCliBackend(slurm_cfg, 1000, on_call=lambda op, s, ok: calls.append((op, ok)))
    job_id = await backend.submit(
        request(script, workdir, partition, env={"VIZDESK_TEST_TOKEN": token})
    )
    submitted.append(job_id)
    assert job_id.isdigit()

    seen = await wait_for(backend, job_id)
    final = seen[-1]
    assert final is not None, "a just-finished job stays in squeue for MinJobAge"
    assert final.state is JobState.COMPLETED and final.exit_code == 0
    assert final.user == "alice" and final.partition == partition
    assert final.start_time is not None and final.end_time is not None
    states = {s.state for s in seen if s is not None}
    assert states & {JobState.PENDING, JobState.RUNNING, JobState.COMPLETING, JobState.COMPLETED}

    assert (workdir / "who").read_text().strip() == "alice"
    assert (workdir / "token").read_text().strip() == token
    assert (workdir / "secret").read_text().strip() == "unset"
    assert calls[0] == ("submit", True) and ("info_many", True) in calls


async def test_failed_job_reports_its_exit_code(
    slurm_cfg: SlurmConfig, partition: str, workdir: Path, private_dir: Path, submitted: list[str]
) -> None:
    backend = SlurmCliBackend(slurm_cfg, 1000)
    job_id = await backend.submit(
        request(write_script(private_dir, "fail.sh", "exit 3\n"), workdir, partition)
    )
    submitted.append(job_id)
    final = (await wait_for(backend, job_id))[-1]
    assert final is not None and final.state is JobState.FAILED
    assert (final.exit_code, final.signal) == (3, None)


async def test_cancel_a_running_job(
    slurm_cfg: SlurmConfig,
    partition: str,
    node: str,
    workdir: Path,
    private_dir: Path,
    submitted: list[str],
) -> None:
    backend = SlurmCliBackend(slurm_cfg, 1000)
    script = write_script(private_dir, "sleep.sh", "sleep 300\n")
    job_id = await backend.submit(request(script, workdir, partition))
    submitted.append(job_id)
    running = (await wait_for(backend, job_id, {JobState.RUNNING}))[-1]
    assert running is not None and running.state is JobState.RUNNING
    if node:
        assert running.batch_host == node
    await backend.cancel(job_id, "alice")
    final = (await wait_for(backend, job_id, timeout=30))[-1]
    assert final is None or final.state is JobState.CANCELLED
    await backend.cancel(job_id, "alice")  # cancelling it again is fine


async def test_cancel_unknown_job_is_fine(slurm_cfg: SlurmConfig) -> None:
    backend = SlurmCliBackend(slurm_cfg, 1000)
    await backend.cancel("99999999", "alice")


async def test_bob_cannot_cancel_alices_job(
    slurm_cfg: SlurmConfig, partition: str, workdir: Path, private_dir: Path, submitted: list[str]
) -> None:
    backend = SlurmCliBackend(slurm_cfg, 1000)
    script = write_script(private_dir, "sleep.sh", "sleep 300\n")
    job_id = await backend.submit(request(script, workdir, partition))
    submitted.append(job_id)
    with pytest.raises(SlurmRejected):
        await backend.cancel(job_id, "bob")
    st = await backend.info(job_id)
    assert st is not None and not st.state.is_finished


async def test_nonexistent_partition_is_rejected_with_slurms_message(
    slurm_cfg: SlurmConfig, workdir: Path, private_dir: Path
) -> None:
    backend = SlurmCliBackend(slurm_cfg, 1000)
    script = write_script(private_dir, "true.sh", "true\n")
    with pytest.raises(SlurmRejected) as info:
        await backend.submit(request(script, workdir, "nosuchpartition"))
    assert "Invalid partition name specified" in str(info.value)
    assert not isinstance(info.value, SlurmUnavailable)


async def test_root_is_refused_before_slurm(
    slurm_cfg: SlurmConfig, partition: str, workdir: Path, private_dir: Path
) -> None:
    backend = SlurmCliBackend(slurm_cfg, 1000)
    script = write_script(private_dir, "true.sh", "true\n")
    for user in ("root", "daemon"):
        with pytest.raises(InvalidSubmission):
            await backend.submit(request(script, workdir, partition, user=user))


async def test_wrong_command_paths_are_unavailable(
    slurm_cfg: SlurmConfig, partition: str, workdir: Path, private_dir: Path
) -> None:
    script = write_script(private_dir, "true.sh", "true\n")
    no_squeue = SlurmCliBackend(replace(slurm_cfg, squeue="/nonexistent/squeue"), 1000)
    with pytest.raises(SlurmUnavailable):
        await no_squeue.info_many(["1"])
    assert await no_squeue.ping() is False
    no_sbatch = SlurmCliBackend(replace(slurm_cfg, sbatch="/nonexistent/sbatch"), 1000)
    with pytest.raises(SlurmUnavailable):  # runuser cannot execute it
        await no_sbatch.submit(request(script, workdir, partition))
    assert await SlurmCliBackend(slurm_cfg, 1000).ping() is True


async def test_unreachable_controller_is_unavailable_not_empty(
    slurm_cfg: SlurmConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real 22.05 squeue exits 0 with an "errors" list here; it must not read as "no jobs".
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
    lines = [ln for ln in conf.splitlines() if not ln.lower().startswith("slurmctldport")]
    bad = tmp_path / "slurm.conf"
    bad.write_text("\n".join([*lines, "SlurmctldPort=1"]) + "\n")
    monkeypatch.setenv("SLURM_CONF", str(bad))
    backend = SlurmCliBackend(replace(slurm_cfg, command_timeout_seconds=60), 1000)
    with pytest.raises(SlurmUnavailable):
        await backend.info_many(["1"])


async def test_tracked_ids_only_and_same_answer_as_the_json_query(
    slurm_cfg: SlurmConfig,
    partition: str,
    private_dir: Path,
    workdir: Path,
    submitted: list[str],
) -> None:
    """The text query (squeue --jobs=<ids> --Format) answers exactly the tracked ids Slurm
    knows, field for field what the former JSON query of every job said about them."""
    text = SlurmCliBackend(replace(slurm_cfg, squeue_query="text"))
    old = SlurmCliBackend(replace(slurm_cfg, squeue_query="json"))
    failing = write_script(private_dir, "fail.sh", "exit 3\n")
    sleeping = write_script(private_dir, "sleep.sh", "sleep 60\n")
    ids = []
    for script in (failing, sleeping, sleeping):
        ids.append(await text.submit(request(script, workdir, partition)))
        submitted.append(ids[-1])
    done, running, other = ids
    assert (await wait_for(text, done))[-1].state is JobState.FAILED  # type: ignore[union-attr]
    await wait_for(text, running, {JobState.RUNNING})
    forgotten = "999999999"
    asked = [done, running, forgotten]
    a, b = await text.info_many(asked), await old.info_many(asked)
    assert set(a) == {done, running} and other not in a
    assert a == b  # the same JobStatus values, field for field
    assert a[done].exit_code == 3 and a[done].end_time is not None
    assert a[running].state is JobState.RUNNING and a[running].batch_host
    assert a[running].expected_end is not None
    assert await text.info_many([forgotten]) == {}  # squeue refuses a lone unknown id
    assert await text.ping() is True
