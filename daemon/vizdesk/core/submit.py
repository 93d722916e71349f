"""What submitting a record's job shares between sessions and batch jobs: how a Slurm
failure is reported, and how the Slurm id is taken onto the record."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ..slurm.base import SlurmError, SlurmRejected, SlurmUnavailable, SubmitRequest
from .errors import VizdeskError
from .records import SlurmRecord

R = TypeVar("R", bound=SlurmRecord[Any])

SUBMITTING = "submitting to Slurm"  # the reason of a record until Slurm gave it an id


def submit_failure(exc: SlurmError) -> tuple[int, str, str | None]:
    """(HTTP status, code, reason) of a failed submission; reason None: neither refused
    nor unreachable (a misconfiguration the caller logs)."""
    reason: str | None = None
    if isinstance(exc, SlurmRejected):
        reason = f"Slurm refused the job: {exc}"
        return 400, "slurm_rejected", reason
    if isinstance(exc, SlurmUnavailable):
        reason = "scheduler unreachable"
    return 503, "scheduler_unreachable", reason


def take_job_id(job_id: str) -> Callable[[SlurmRecord[Any]], bool]:
    """A store mutation: the record's job is ``job_id`` in Slurm, and it is queued."""

    def set_job(r: SlurmRecord[Any]) -> bool:
        r.job_id = job_id
        if r.reason == SUBMITTING:
            r.reason = "queued in Slurm"
        return True

    return set_job


class SubmitError(VizdeskError, Generic[R]):
    """Slurm refused the job or could not be reached; ``record`` was marked FAILED."""

    def __init__(self, status: int, code: str, message: str, record: R) -> None:
        super().__init__(status, code, message)
        self.record = record


def submit_request(
    record: SlurmRecord[Any], *, script: str, job_name: str, workdir: str, output: str,
    env: dict[str, str],
) -> SubmitRequest:  # fmt: skip
    """The submission of ``record``'s job: as its user, with its resources."""
    return SubmitRequest(
        user=record.user,
        script=script,
        job_name=job_name,
        cpus=record.cpus,
        memory_mb=record.memory_gb * 1024,
        time_limit_minutes=record.time_limit_minutes,
        gpus=record.gpus,
        partition=record.partition,
        workdir=workdir,
        output=output,
        env=env,
    )
