"""Batch jobs on real Redis with a scripted Slurm: the tracker's ONE query per tick covers
sessions and jobs together; jobs move QUEUED → RUNNING → COMPLETED/FAILED/CANCELLED with
Slurm's exit code; a failed Slurm query changes nothing (the real-Slurm path is in e2e)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vizdesk.auth.types import Identity
from vizdesk.config import Config
from vizdesk.contract.keys import Keys
from vizdesk.jobs.manager import JobManager, JobSpec
from vizdesk.jobs.model import BatchJob, BatchJobState
from vizdesk.jobs.store import JobStore
from vizdesk.metrics import Metrics
from vizdesk.sessions.model import Session, SessionState
from vizdesk.sessions.registrations import RegistrationManager
from vizdesk.sessions.store import SessionStore
from vizdesk.slurm.base import JobState, JobStatus, SlurmBackend, SlurmUnavailable, SubmitRequest
from vizdesk.tracker import Tracker

ALICE = Identity(user="alice", groups=(), uid=1001, home="/home/alice")


class ScriptedBackend(SlurmBackend):
    name = "scripted"

    def __init__(self) -> None:
        self.jobs: dict[str, JobStatus] = {}
        self.down = False
        self.queries: list[list[str]] = []
        self.cancelled: list[str] = []
        self.submits: list[SubmitRequest] = []
        self.during_query: Callable[[], Awaitable[object]] | None = None

    async def submit(self, req: SubmitRequest) -> str:
        self.submits.append(req)
        job_id = str(7000 + len(self.submits))
        self.jobs[job_id] = JobStatus(job_id, JobState.PENDING, reason="Priority", user=req.user)
        return job_id

    async def info_many(self, job_ids: Collection[str]) -> dict[str, JobStatus]:
        self.queries.append(list(job_ids))
        if self.during_query is not None:
            hook, self.during_query = self.during_query, None
            await hook()
        if self.down:
            raise SlurmUnavailable("slurmctld down")
        return {j: self.jobs[j] for j in job_ids if j in self.jobs}

    async def cancel(self, job_id: str, user: str) -> None:
        self.cancelled.append(job_id)


@pytest.fixture
async def world(redis_admin, tmp_path: Path):
    cfg = Config()
    cfg.jobs.script_dir = str(tmp_path / "scripts")
    keys = Keys(f"vzt-jobs-{secrets.token_hex(3)}:")
    backend = ScriptedBackend()
    sessions = SessionStore(redis_admin, keys, 600)
    regs = RegistrationManager(redis_admin, keys, 5901, 5999)
    tracker = Tracker(cfg, backend, sessions, regs, Metrics())
    jobs = JobManager(cfg, backend, JobStore(redis_admin, keys, 600))
    tracker.sources.append(jobs)
    yield cfg, keys, backend, sessions, tracker, jobs, redis_admin
    for key in await redis_admin.keys(keys.prefix + "*"):
        await redis_admin.delete(key)


def spec(**kw: object) -> JobSpec:
    base: dict[str, object] = {
        "template": "hello",
        "image": None,
        "image_path": None,
        "app": None,
        "mode": "exec",
        "argv": ("printf", "%s\n", "hi"),
        "values": {"message": "hi"},
        "env": {"VIZDESK_PARAM_MESSAGE": "hi"},
        "partition": "batch",
        "cpus": 1,
        "memory_gb": 1,
        "gpus": 0,
        "time_limit_minutes": 5,
    }
    base.update(kw)
    return JobSpec(**base)  # type: ignore[arg-type]


def status(job_id: str, state: JobState, **kw: object) -> JobStatus:
    now = datetime.now(UTC)
    base: dict[str, object] = {"user": "alice", "batch_host": "node1", "start_time": now}
    if state.is_finished:
        base["end_time"] = now + timedelta(seconds=2)
    base.update(kw)
    return JobStatus(job_id, state, **base)  # type: ignore[arg-type]


async def get(jobs: JobManager, jid: str) -> BatchJob:
    job = await jobs.get(jid)
    assert job is not None
    return job


async def test_one_query_per_tick_for_sessions_and_jobs(world) -> None:
    _, _, backend, sessions, tracker, jobs, _ = world
    for i in range(5):
        s = Session(
            id=secrets.token_hex(8),
            user="alice",
            partition="viz",
            cpus=1,
            memory_gb=1,
            gpus=0,
            time_limit_minutes=10,
            geometry="800x600",
            job_id=str(100 + i),
        )
        await sessions.create(s)
        backend.jobs[str(100 + i)] = JobStatus(
            str(100 + i), JobState.PENDING, user="alice", reason="Resources"
        )
    created = [await jobs.create(ALICE, spec()) for _ in range(4)]
    await tracker.tick()
    assert len(backend.queries) == 1  # ONE query, both kinds of jobs in it
    assert sorted(backend.queries[0]) == sorted(
        [str(100 + i) for i in range(5)] + [j.job_id for j in created]
    )
    for j in created:
        got = await get(jobs, j.id)
        assert got.state == BatchJobState.QUEUED and got.reason == "queued: Priority"
    active = await sessions.get_many(await sessions.active_ids())
    assert {s.state for s in active} == {SessionState.PENDING}
    await tracker.tick()
    assert len(backend.queries) == 2


async def test_completed_and_failed_with_exit_codes(world) -> None:
    _, keys, backend, _, tracker, jobs, redis = world
    ok, bad = await jobs.create(ALICE, spec()), await jobs.create(ALICE, spec())
    backend.jobs[ok.job_id] = status(ok.job_id, JobState.RUNNING)
    backend.jobs[bad.job_id] = status(bad.job_id, JobState.RUNNING)
    await tracker.tick()
    running = await get(jobs, ok.id)
    assert running.state == BatchJobState.RUNNING and running.node == "node1"
    assert running.started_at is not None and running.exit_code is None
    backend.jobs[ok.job_id] = status(ok.job_id, JobState.COMPLETED, exit_code=0)
    backend.jobs[bad.job_id] = status(bad.job_id, JobState.FAILED, exit_code=3)
    await tracker.tick()
    done, failed = await get(jobs, ok.id), await get(jobs, bad.id)
    assert (done.state, done.exit_code) == (BatchJobState.COMPLETED, 0)
    assert done.ended_at is not None and done.ended_at >= done.started_at  # type: ignore[operator]
    assert (failed.state, failed.exit_code) == (BatchJobState.FAILED, 3)
    assert "exit code 3" in failed.reason
    assert await jobs.store.active_ids() == []
    assert 0 < await redis.ttl(keys.job(ok.id)) <= 600  # finished records expire
    # Final states stay final whatever Slurm says later.
    backend.jobs[ok.job_id] = status(ok.job_id, JobState.RUNNING)
    await tracker.tick()
    assert (await get(jobs, ok.id)).state == BatchJobState.COMPLETED


async def test_cancel_moves_cancelling_then_cancelled(world) -> None:
    _, _, backend, _, tracker, jobs, _ = world
    job = await jobs.create(ALICE, spec())
    backend.jobs[job.job_id] = status(job.job_id, JobState.RUNNING)
    await tracker.tick()
    cancelling = await jobs.cancel(await get(jobs, job.id), by="user")
    assert cancelling.state == BatchJobState.CANCELLING
    assert backend.cancelled == [job.job_id]
    await tracker.tick()  # still running in Slurm: stays CANCELLING
    assert (await get(jobs, job.id)).state == BatchJobState.CANCELLING
    backend.jobs[job.job_id] = status(job.job_id, JobState.CANCELLED, exit_code=0, signal=15)
    await tracker.tick()
    got = await get(jobs, job.id)
    assert got.state == BatchJobState.CANCELLED and "by request" in got.reason
    assert (await jobs.cancel(got, by="user")).state == BatchJobState.CANCELLED  # idempotent


async def test_slurm_down_changes_nothing_then_vanished_job_fails(world) -> None:
    _, _, backend, _, tracker, jobs, _ = world
    job = await jobs.create(ALICE, spec())
    backend.jobs[job.job_id] = status(job.job_id, JobState.RUNNING)
    await tracker.tick()
    before = await get(jobs, job.id)
    backend.down = True
    backend.jobs.clear()
    for _ in range(3):
        await tracker.tick()
    assert await get(jobs, job.id) == before
    backend.down = False
    await tracker.tick()
    gone = await get(jobs, job.id)
    assert gone.state == BatchJobState.FAILED and "outcome is unknown" in gone.reason


async def test_job_of_another_user_is_refused(world) -> None:
    _, _, backend, _, tracker, jobs, _ = world
    job = await jobs.create(ALICE, spec())
    backend.jobs[job.job_id] = status(job.job_id, JobState.RUNNING, user="bob")
    await tracker.tick()
    got = await get(jobs, job.id)
    assert got.state == BatchJobState.FAILED and "another user" in got.reason
    assert job.job_id in backend.cancelled


async def test_stuck_submission_fails_and_lists(world) -> None:
    _, _, _, _, tracker, jobs, _ = world
    stuck = BatchJob(
        id=secrets.token_hex(8),
        user="alice",
        partition="batch",
        cpus=1,
        memory_gb=1,
        gpus=0,
        time_limit_minutes=5,
        created_at=datetime.now(UTC) - timedelta(minutes=10),
    )
    await jobs.store.create(stuck)
    other = BatchJob(
        id=secrets.token_hex(8),
        user="bob",
        partition="batch",
        cpus=1,
        memory_gb=1,
        gpus=0,
        time_limit_minutes=5,
    )
    await jobs.store.create(other)
    assert await jobs.count_active("alice") == 1
    await tracker.tick()
    got = await get(jobs, stuck.id)
    assert got.state == BatchJobState.FAILED and "never completed" in got.reason
    assert [j.id for j in await jobs.list_user("alice")] == [stuck.id]
    assert {j.id for j in await jobs.list_all()} >= {stuck.id, other.id}
    assert await jobs.count_active("alice") == 0


async def test_job_submitted_during_a_query_is_not_taken_for_gone(world) -> None:
    _, _, backend, _, tracker, jobs, _ = world
    first = await jobs.create(ALICE, spec())
    late: list[BatchJob] = []

    async def submit_meanwhile() -> None:
        late.append(await jobs.create(ALICE, spec()))

    backend.during_query = submit_meanwhile
    await tracker.tick()
    assert backend.queries[-1] == [first.job_id]  # the late job was not in this query
    got = await get(jobs, late[0].id)
    assert got.state == BatchJobState.QUEUED, got  # not "vanished from Slurm"
    await tracker.tick()
    assert sorted(backend.queries[-1]) == sorted([first.job_id, late[0].job_id])
