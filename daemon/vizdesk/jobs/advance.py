"""How a batch job follows its Slurm job: the job kind of :class:`RecordTracker`.

``QUEUED`` → ``RUNNING`` → ``COMPLETED`` / ``FAILED`` / ``TIMEOUT``, or ``CANCELLING``
→ ``CANCELLED``; the final state and reason come from :data:`.model.FINISHED` and
Slurm's exit code and signal, which are kept on the record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.tracked import Outcome, Outcomes, RecordTracker, TrackEvents
from ..slurm.base import JobStatus, SlurmBackend
from .model import BatchJob, BatchJobState, final_outcome

if TYPE_CHECKING:
    from ..metrics import Metrics
    from .store import JobStore

OUTCOMES = Outcomes(
    queued=(BatchJobState.QUEUED, "waiting"),  # or "suspended"
    gone=(BatchJobState.FAILED, "job vanished from Slurm; its outcome is unknown"),
    failed=BatchJobState.FAILED,
)


class JobTracking(RecordTracker[BatchJob, BatchJobState]):
    """The tracked source of batch jobs (exit codes, signals, Slurm's end time)."""

    KIND = "job"
    OUTCOMES = OUTCOMES
    # user mismatch, cancel failed, tracking error, finished
    EVENTS = TrackEvents(
        "job.user_mismatch", "job.cancel_deferred", "job.track_error", "job.finished"
    )
    FOLLOW_WHILE_STOPPING = True

    def __init__(self, backend: SlurmBackend, store: JobStore, metrics: Metrics | None) -> None:
        super().__init__(backend, store, BatchJobState, metrics.jobs if metrics else None)

    async def finished(self, record: BatchJob, status: JobStatus) -> Outcome[BatchJobState]:
        return final_outcome(status, record.stop_requested_at is not None)

    def stopped(self, record: BatchJob) -> Outcome[BatchJobState]:
        return BatchJobState.CANCELLED, "cancelled by request"

    async def running(self, record: BatchJob, status: JobStatus) -> BatchJob | None:
        node = status.batch_host or status.nodes
        return await self._observe(record, BatchJobState.RUNNING, f"running on {node}", status)

    def record_final(self, record: BatchJob, status: JobStatus) -> None:
        if status.batch_host and not record.node:
            record.node = status.batch_host
        if status.start_time and record.started_at is None and status.batch_host:
            record.started_at = status.start_time
        record.exit_code = status.exit_code
        record.signal = status.signal
        if status.end_time and record.ended_at is None and not record.state.is_final:
            record.ended_at = status.end_time

    def finish_fields(self, updated: BatchJob | None) -> dict[str, Any]:
        return {"exit_code": updated.exit_code if updated else None}
