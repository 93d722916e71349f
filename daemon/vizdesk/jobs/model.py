"""The batch job record, its states, and how Slurm's job states map onto them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..core import records
from ..slurm.base import JobState, JobStatus


class BatchJobState(records.RecordState):
    """The states of a batch job (the API shows them as they are)."""

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

MACHINE = records.StateMachine(
    stopping=BatchJobState.CANCELLING,
    next={
        BatchJobState.QUEUED: frozenset({BatchJobState.RUNNING}),
        BatchJobState.RUNNING: frozenset({BatchJobState.QUEUED}),  # requeued
    },
)


can_move = MACHINE.can_move  # True when src → dst is allowed (final states are final)
new_job_id = records.new_id


PUBLIC_FIELDS = (
    *records.PUBLIC_HEAD,
    "template",
    "image",
    "app",
    *records.PUBLIC_RESOURCES,
    "template_version",
    "nodes",
    "ntasks",
    "exit_code",
    "signal",
    "output_path",
    "workdir",
    "files",
    "outputs",
    "created_at",
    "started_at",
    "ended_at",
)


@dataclass(kw_only=True)
class BatchJob(records.SlurmRecord[BatchJobState]):
    """One batch job. ``job_id`` is Slurm's id; ``id`` is vizdesk's (16 hex digits)."""

    PUBLIC_FIELDS: ClassVar[tuple[str, ...]] = PUBLIC_FIELDS
    MACHINE: ClassVar[records.StateMachine[BatchJobState]] = MACHINE

    state: BatchJobState = BatchJobState.QUEUED
    template: str | None = None  # template name, or None for an image + command job
    app: str | None = None
    mode: str = "exec"  # exec | run (with an image)
    command: list[str] = field(default_factory=list)  # final argv (internal)
    parameters: dict[str, Any] = field(default_factory=dict)  # validated values (internal)
    exit_code: int | None = None
    signal: int | None = None
    output_path: str = ""
    template_version: str | None = None  # the version of the template the job used
    workdir: str = ""  # the job's own directory (--chdir; inputs and results), "" before
    files: dict[str, list[str]] = field(default_factory=dict)  # slot -> file names in workdir
    outputs: list[str] = field(default_factory=list)  # the template's result patterns
    nodes: int = 1
    ntasks: int = 1
    ntasks_per_node: int | None = None
    constraint: str = ""
    gpu_type: str = ""
    account: str = ""
    qos: str = ""
    job_name: str = ""  # the caller's name for it ("" = none)

    def request_view(self) -> dict[str, Any]:
        """What was asked for (the owner's "submit again" form; parameters included)."""
        return {
            "template": self.template,
            "template_version": self.template_version,
            "parameters": dict(self.parameters),
            "partition": self.partition,
            "cpus": self.cpus,
            "memory_gb": self.memory_gb,
            "gpus": self.gpus,
            "time_limit_minutes": self.time_limit_minutes,
            "nodes": self.nodes,
            "ntasks": self.ntasks,
            "ntasks_per_node": self.ntasks_per_node,
            "constraint": self.constraint or None,
            "gpu_type": self.gpu_type or None,
            "account": self.account or None,
            "qos": self.qos or None,
            "job_name": self.job_name or None,
            "files": {slot: list(names) for slot, names in self.files.items()},
        }

    def to_public(self) -> dict[str, Any]:
        out = super().to_public()
        out["runtime_seconds"] = self.runtime_seconds()
        return out

    def runtime_seconds(self) -> float | None:
        """How long it ran (until now while running); None before it started."""
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else records.utcnow()
        return round(max(0.0, (end - self.started_at).total_seconds()), 3)


# Slurm's final states → (job state, reason), as Open OnDemand's ood_core STATE_MAP does.
# COMPLETED with exit code 0 and a requested cancel come first (see final_outcome).
FINISHED: dict[JobState, tuple[BatchJobState, str]] = {
    JobState.CANCELLED: (
        BatchJobState.CANCELLED,
        "cancelled outside vizdesk (scancel or admin)",
    ),
    JobState.TIMEOUT: (BatchJobState.TIMEOUT, "time limit reached"),
    JobState.DEADLINE: (BatchJobState.TIMEOUT, "deadline reached"),
    JobState.PREEMPTED: (BatchJobState.FAILED, "preempted by Slurm"),
    JobState.NODE_FAIL: (BatchJobState.FAILED, "node failure"),
    JobState.BOOT_FAIL: (BatchJobState.FAILED, "node boot failure"),
    JobState.OUT_OF_MEMORY: (BatchJobState.FAILED, "out of memory"),
}


def final_outcome(status: JobStatus, stop_requested: bool) -> tuple[BatchJobState, str]:
    """The final job state and reason for a job Slurm reports as finished."""
    code = status.exit_code
    if status.state == JobState.COMPLETED and (code is None or code == 0):
        # Finished before a cancel could reach it: that is still a success.
        return BatchJobState.COMPLETED, "completed (exit code 0)"
    if stop_requested:
        return BatchJobState.CANCELLED, "cancelled by request"
    if status.state in FINISHED:
        return FINISHED[status.state]
    if status.signal:
        return BatchJobState.FAILED, f"killed by signal {status.signal}"
    if code is not None:
        return BatchJobState.FAILED, f"exit code {code}"
    return BatchJobState.FAILED, "job failed"
