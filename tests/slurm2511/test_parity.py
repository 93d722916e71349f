"""Parity: the CLI backend and the pyslurm backend on the SAME Slurm 25.11 controller.

The same jobs (running, pending-held, completed, failed with exit 3, cancelled, timeout)
are submitted through each backend; every tick both backends are asked about all of them,
back to back, and for every state a job passes through the two ``JobStatus`` values must be
equal. Nothing is normalised except the race between the two queries: a pair whose states
differ (the job moved between the two calls) is asked again, and only pairs observed in
the same state are compared.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from tests.slurm2511.conftest import Slurm2511
from vizdesk.config import SlurmConfig
from vizdesk.slurm.base import JobState, JobStatus, SubmitRequest
from vizdesk.slurm.cli import SlurmCliBackend
from vizdesk.slurm.pyslurm_backend import PyslurmBackend

pytestmark = pytest.mark.e2e

KINDS = {
    # name: (script body, time limit in minutes)
    "completed": ("sleep 2\nexit 0\n", 5),
    "failed3": ("sleep 2\nexit 3\n", 5),
    "running": ("sleep 600\n", 10),  # cancelled at the end
    "held": ("sleep 600\n", 10),  # held right after submission, then cancelled
    "cancelled": ("sleep 600\n", 10),  # cancelled through the backend once RUNNING
    "timeout": ("sleep 600\n", 1),  # TIMEOUT after about 60-90 s
}


def backends(s: Slurm2511) -> tuple[SlurmCliBackend, PyslurmBackend]:
    cfg = SlurmConfig(
        conf_path=s.conf,
        sbatch=s.bin("sbatch"),
        squeue=s.bin("squeue"),
        scancel=s.bin("scancel"),
        command_timeout_seconds=30,
    )
    return SlurmCliBackend(cfg), PyslurmBackend(cfg)


def request(script: Path, kind: str, via: str, partition: str) -> SubmitRequest:
    return SubmitRequest(
        user="alice",
        script=str(script),
        job_name=f"parity-{kind}-{via}",
        cpus=1,
        memory_mb=100,
        time_limit_minutes=KINDS[kind][1],
        partition=partition,
        workdir="/tmp",
        output="/dev/null",
        env={"VIZDESK_PARITY": kind},
    )


async def submit(
    s: Slurm2511, backend: SlurmCliBackend | PyslurmBackend, script: Path, kind: str, via: str
) -> str:
    """Submits one job of ``kind``; a ``held`` one is held right after submission. The
    scheduler may start it before the hold lands (``scontrol hold`` then fails): that job
    is cancelled and submitted again, so every held job is seen PENDING."""
    for _ in range(5):
        jid = await backend.submit(request(script, kind, via, s.partition))
        if kind != "held":
            return jid
        s.run("scontrol", "hold", jid, check=False)
        state = s.run("squeue", "-h", "-j", jid, "-o", "%T", check=False).strip()
        if state == "PENDING":
            return jid
        s.run("scancel", jid, check=False)
    raise AssertionError(f"a {via} job kept starting before it could be held")


async def test_cli_and_pyslurm_agree_on_every_state(
    slurm2511: Slurm2511, tmp_path: Path
) -> None:
    cli, py = backends(slurm2511)
    tmp_path.chmod(0o755)
    ids: dict[str, tuple[str, str]] = {}  # job id -> (kind, submitted via)
    for kind, (body, _) in KINDS.items():
        script = tmp_path / f"{kind}.sh"
        script.write_text("#!/bin/bash\n" + body)
        for via, backend in (("cli", cli), ("pyslurm", py)):
            ids[await submit(slurm2511, backend, script, kind, via)] = (kind, via)

    seen: dict[tuple[str, JobState], JobStatus] = {}  # (job, state) -> the agreed status
    mismatches: list[tuple[JobStatus, JobStatus]] = []
    cancelled_at: dict[str, float] = {}
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            a = await cli.info_many(ids)
            b = await py.info_many(ids)
            for jid in ids:
                sa, sb = a.get(jid), b.get(jid)
                assert sa is not None and sb is not None, (jid, ids[jid], sa, sb)
                if sa.state != sb.state:
                    continue  # moved between the two queries: asked again next tick
                if sa != sb:
                    mismatches.append((sa, sb))
                seen.setdefault((jid, sa.state), sa)
            for jid, (kind, via) in ids.items():
                # Cancelled once both backends have been seen agreeing on RUNNING (a tick
                # of the CLI backend can take seconds when slurmctld remembers many jobs).
                running_seen = (jid, JobState.RUNNING) in seen
                if kind == "cancelled" and running_seen and jid not in cancelled_at:
                    await (cli if via == "cli" else py).cancel(jid, "alice")
                    cancelled_at[jid] = time.monotonic()
            final = {jid for jid in ids if b[jid].state.is_finished}
            waiting = {jid for jid, (k, _) in ids.items() if k in ("running", "held")}
            if final | waiting == set(ids) and all(
                (j, JobState.RUNNING if ids[j][0] == "running" else JobState.PENDING) in seen
                for j in waiting
            ):
                break
            await asyncio.sleep(0.5)
        for jid, (kind, via) in ids.items():
            if kind in ("running", "held"):
                await (cli if via == "cli" else py).cancel(jid, "alice")
        # The cancelled ones end CANCELLED: compare those states too.
        end = time.monotonic() + 30
        while time.monotonic() < end:
            a, b = await cli.info_many(ids), await py.info_many(ids)
            for jid in ids:
                if a[jid].state == b[jid].state:
                    if a[jid] != b[jid]:
                        mismatches.append((a[jid], b[jid]))
                    seen.setdefault((jid, a[jid].state), a[jid])
            if all(b[j].state.is_finished for j in ids):
                break
            await asyncio.sleep(0.5)
    finally:
        slurm2511.run("scancel", *ids, check=False)

    diff = [
        {f.name: (getattr(x, f.name), getattr(y, f.name))
         for f in dataclasses.fields(JobStatus) if getattr(x, f.name) != getattr(y, f.name)}
        for x, y in mismatches
    ]
    assert not mismatches, f"{len(mismatches)} unequal JobStatus pairs, e.g. {diff[:5]}"
    by_kind: dict[str, set[str]] = {}
    for (jid, state), _ in seen.items():
        by_kind.setdefault(f"{ids[jid][0]}/{ids[jid][1]}", set()).add(state.value)
    print("states compared:", dict(sorted(by_kind.items())))
    for via in ("cli", "pyslurm"):
        # Short jobs may run between two ticks: only their final state is certain.
        assert "COMPLETED" in by_kind[f"completed/{via}"]
        assert "FAILED" in by_kind[f"failed3/{via}"]
        assert "PENDING" in by_kind[f"held/{via}"]
        assert "CANCELLED" in by_kind[f"held/{via}"]
        assert {"RUNNING", "CANCELLED"} <= by_kind[f"cancelled/{via}"]
        assert {"RUNNING", "TIMEOUT"} <= by_kind[f"timeout/{via}"]
    # The exit code and the signal as both report them.
    for (_jid, state), st in seen.items():
        if state is JobState.FAILED:
            assert (st.exit_code, st.signal) == (3, None), st
        if state is JobState.COMPLETED:
            assert (st.exit_code, st.signal) == (0, None), st
