"""The batch job record: public view, JSON round trip, state machine, Slurm outcome mapping."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vizdesk.jobs.model import (
    PUBLIC_FIELDS,
    BatchJob,
    BatchJobState,
    can_move,
    final_outcome,
)
from vizdesk.slurm.base import JobState, JobStatus


def job(**kw: object) -> BatchJob:
    base: dict[str, object] = {
        "id": "0123456789abcdef",
        "user": "alice",
        "partition": "batch",
        "cpus": 1,
        "memory_gb": 1,
        "gpus": 0,
        "time_limit_minutes": 5,
    }
    base.update(kw)
    return BatchJob(**base)  # type: ignore[arg-type]


def test_public_fields_and_round_trip() -> None:
    j = job(
        template="hello",
        command=["echo", "secret-ish"],
        parameters={"m": "x"},
        image_path="/srv/images/a.sif",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    pub = j.to_public()
    assert tuple(pub) == (*PUBLIC_FIELDS, "runtime_seconds")
    assert set(PUBLIC_FIELDS) == {
        "id",
        "user",
        "state",
        "reason",
        "job_id",
        "node",
        "template",
        "image",
        "app",
        "partition",
        "cpus",
        "memory_gb",
        "gpus",
        "time_limit_minutes",
        "exit_code",
        "output_path",
        "created_at",
        "started_at",
        "ended_at",
        "template_version",
        "signal",
        "workdir",
        "files",
        "outputs",
        "nodes",
        "ntasks",
    }
    assert pub["runtime_seconds"] is not None and pub["runtime_seconds"] > 0  # still running
    assert pub["state"] == "QUEUED" and pub["started_at"] == "2026-01-01T00:00:00Z"
    assert "image_path" not in pub and "command" not in pub
    back = BatchJob.from_json(j.to_json())
    assert back == j
    ended = job(
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        ended_at=datetime(2026, 1, 1, 0, 1, 30, tzinfo=UTC),
    )
    assert ended.to_public()["runtime_seconds"] == 90.0
    assert job().to_public()["runtime_seconds"] is None


def test_state_machine() -> None:
    assert can_move(BatchJobState.QUEUED, BatchJobState.RUNNING)
    assert can_move(BatchJobState.RUNNING, BatchJobState.QUEUED)  # requeue
    assert can_move(BatchJobState.RUNNING, BatchJobState.CANCELLING)
    assert not can_move(BatchJobState.CANCELLING, BatchJobState.RUNNING)
    for final in (
        BatchJobState.COMPLETED,
        BatchJobState.FAILED,
        BatchJobState.CANCELLED,
        BatchJobState.TIMEOUT,
    ):
        assert final.is_final
        assert not can_move(final, BatchJobState.RUNNING)
        assert not can_move(
            final,
            BatchJobState.CANCELLED if final != BatchJobState.CANCELLED else BatchJobState.FAILED,
        )
    j = job()
    assert j.move(BatchJobState.COMPLETED, "done") and j.ended_at is not None
    assert not j.move(BatchJobState.FAILED, "late")
    assert j.state == BatchJobState.COMPLETED


def st(state: JobState, code: int | None = 0, sig: int | None = None) -> JobStatus:
    return JobStatus("7", state, exit_code=code, signal=sig)


@pytest.mark.parametrize(
    ("status", "stop", "state", "reason_part"),
    [
        (st(JobState.COMPLETED), False, BatchJobState.COMPLETED, "exit code 0"),
        (st(JobState.COMPLETED), True, BatchJobState.COMPLETED, "exit code 0"),
        (st(JobState.FAILED, 3), False, BatchJobState.FAILED, "exit code 3"),
        (st(JobState.FAILED, 0, 9), False, BatchJobState.FAILED, "signal 9"),
        (st(JobState.FAILED, 1), True, BatchJobState.CANCELLED, "cancelled"),
        (st(JobState.CANCELLED, 0, 15), True, BatchJobState.CANCELLED, "by request"),
        (st(JobState.CANCELLED), False, BatchJobState.CANCELLED, "outside vizdesk"),
        (st(JobState.TIMEOUT), False, BatchJobState.TIMEOUT, "time limit"),
        (st(JobState.DEADLINE), False, BatchJobState.TIMEOUT, "deadline"),
        (st(JobState.OUT_OF_MEMORY), False, BatchJobState.FAILED, "out of memory"),
        (st(JobState.NODE_FAIL), False, BatchJobState.FAILED, "node failure"),
        (st(JobState.BOOT_FAIL), False, BatchJobState.FAILED, "boot"),
        (st(JobState.PREEMPTED), False, BatchJobState.FAILED, "preempted"),
    ],
)
def test_final_outcome(
    status: JobStatus, stop: bool, state: BatchJobState, reason_part: str
) -> None:
    got_state, reason = final_outcome(status, stop)
    assert got_state == state and reason_part in reason
