"""The batch job record, its states, and how Slurm's job states map onto them."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from ..models import utcnow
from ..records import JsonRecord
from ..slurm.base import JobState, JobStatus


class BatchJobState(enum.StrEnum):
    QUEUED = "QUEUED"  # submitted (or being submitted), waiting in Slurm (reason = Slurm's)
    RUNNING = "RUNNING"  # Slurm runs it
    CANCELLING = "CANCELLING"  # cancel requested, Slurm has not ended it yet
    COMPLETED = "COMPLETED"  # ended with exit code 0
    FAILED = "FAILED"  # non-zero exit, node failure, out of memory... (reason says)
    CANCELLED = "CANCELLED"  # cancelled (by the user, an admin or outside vizdesk)
    TIMEOUT = "TIMEOUT"  # time limit (or deadline) reached

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {
        BatchJobState.COMPLETED,
        BatchJobState.FAILED,
        BatchJobState.CANCELLED,
        BatchJobState.TIMEOUT,
    }
)

_NEXT: dict[BatchJobState, frozenset[BatchJobState]] = {
    BatchJobState.QUEUED: frozenset({BatchJobState.RUNNING}),
    BatchJobState.RUNNING: frozenset({BatchJobState.QUEUED}),  # requeued
    BatchJobState.CANCELLING: frozenset(),
}


def can_move(src: BatchJobState, dst: BatchJobState) -> bool:
    """True when ``src`` → ``dst`` is allowed (final states are final)."""
    if src == dst:
        return True
    if src.is_final:
        return False
    if dst.is_final or dst == BatchJobState.CANCELLING:
        return True
    return dst in _NEXT[src]


def new_job_id() -> str:
    return secrets.token_hex(8)


PUBLIC_FIELDS = (
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
)


@dataclass
class BatchJob(JsonRecord):
    """One batch job. ``job_id`` is Slurm's id; ``id`` is vizdesk's (16 hex digits)."""

    PUBLIC_FIELDS: ClassVar[tuple[str, ...]] = PUBLIC_FIELDS

    id: str
    user: str
    partition: str
    cpus: int
    memory_gb: int
    gpus: int
    time_limit_minutes: int
    template: str | None = None  # template name, or None for an image + command job
    image: str | None = None  # catalog id / name shown to the user
    image_path: str | None = None  # resolved .sif path (internal)
    app: str | None = None
    mode: str = "exec"  # exec | run (with an image)
    command: list[str] = field(default_factory=list)  # final argv (internal)
    parameters: dict[str, Any] = field(default_factory=dict)  # validated values (internal)
    state: BatchJobState = BatchJobState.QUEUED
    reason: str = ""
    job_id: str | None = None
    node: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    output_path: str = ""
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    stop_requested_at: datetime | None = None
    last_cancel_at: datetime | None = None

    def move(self, dst: BatchJobState, reason: str | None = None) -> bool:
        """Apply a transition if allowed; returns whether anything changed."""
        if not can_move(self.state, dst):
            return False
        changed = self.state != dst or (reason is not None and reason != self.reason)
        if self.state != dst and dst.is_final and self.ended_at is None:
            self.ended_at = utcnow()
        self.state = dst
        if reason is not None:
            self.reason = reason
        return changed


def final_outcome(status: JobStatus, stop_requested: bool) -> tuple[BatchJobState, str]:
    """The final job state and reason for a job Slurm reports as finished."""
    st = status.state
    code = status.exit_code
    if st == JobState.COMPLETED and (code is None or code == 0):
        # Finished before a cancel could reach it: that is still a success.
        return BatchJobState.COMPLETED, "completed (exit code 0)"
    if stop_requested:
        return BatchJobState.CANCELLED, "cancelled by request"
    if st == JobState.CANCELLED:
        return BatchJobState.CANCELLED, "cancelled outside vizdesk (scancel or admin)"
    if st == JobState.TIMEOUT:
        return BatchJobState.TIMEOUT, "time limit reached"
    if st == JobState.DEADLINE:
        return BatchJobState.TIMEOUT, "deadline reached"
    if st == JobState.PREEMPTED:
        return BatchJobState.FAILED, "preempted by Slurm"
    if st == JobState.NODE_FAIL:
        return BatchJobState.FAILED, "node failure"
    if st == JobState.BOOT_FAIL:
        return BatchJobState.FAILED, "node boot failure"
    if st == JobState.OUT_OF_MEMORY:
        return BatchJobState.FAILED, "out of memory"
    if status.signal:
        return BatchJobState.FAILED, f"killed by signal {status.signal}"
    if code is not None:
        return BatchJobState.FAILED, f"exit code {code}"
    return BatchJobState.FAILED, "job failed"
