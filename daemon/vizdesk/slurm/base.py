"""The scheduler adapter contract: submit / info / cancel behind one interface.

Modelled on Open OnDemand's ``ood_core`` job adapters: one class per backend (Slurm CLI,
pyslurm), all returning the same small :class:`JobStatus` value object.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime


class JobState(enum.StrEnum):
    """Slurm base job states (flags such as COMPLETING are folded in by the parsers)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETING = "COMPLETING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    UNKNOWN = "UNKNOWN"

    @property
    def is_finished(self) -> bool:
        return self in _FINISHED

    @property
    def is_running(self) -> bool:
        return self in (JobState.RUNNING, JobState.COMPLETING)


_FINISHED = frozenset(
    {
        JobState.COMPLETED,
        JobState.CANCELLED,
        JobState.FAILED,
        JobState.TIMEOUT,
        JobState.NODE_FAIL,
        JobState.PREEMPTED,
        JobState.BOOT_FAIL,
        JobState.DEADLINE,
        JobState.OUT_OF_MEMORY,
    }
)


def reported_exit(code: int | None, signal: int | None) -> tuple[int | None, int | None]:
    """The one rule every backend applies to a finished job's (exit code, signal).

    A signal wins: (None, signal). An exit status of 128 or more is reported minus 128,
    because that is all pyslurm gives (its ``_get_exit_code`` subtracts 128, so a shell's
    143 after SIGTERM and a plain ``exit 15`` both arrive as 15); the CLI parsers see the
    whole status but must answer the same for the same job.
    """
    if signal:
        return None, signal
    if code is not None and code >= 128:
        return code - 128, None
    return code, None


@dataclass(frozen=True)
class JobStatus:
    """What the daemon needs to know about one Slurm job."""

    job_id: str
    state: JobState
    reason: str = ""  # Slurm's state reason ("" for None)
    user: str = ""
    name: str = ""
    partition: str = ""
    batch_host: str = ""  # the node running the batch script ("" until it runs)
    nodes: str = ""  # node list expression
    exit_code: int | None = None
    signal: int | None = None
    submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    # Slurm's expectations: when a pending job should start (its backfill estimate), and
    # when a running one reaches its time limit. None when Slurm gives none.
    expected_start: datetime | None = None
    expected_end: datetime | None = None


@dataclass(frozen=True)
class SubmitRequest:
    """A validated batch submission. Every field comes from validated input or config.

    ``env`` is handed to the job through the submitting process's environment
    (``sbatch --export=ALL`` of a minimal environment), never on a command line.
    """

    user: str
    script: str  # absolute path of the batch script
    job_name: str
    cpus: int
    memory_mb: int
    time_limit_minutes: int
    gpus: int = 0
    partition: str = ""
    workdir: str = "/tmp"
    output: str = ""  # --output path pattern ("" = Slurm's default)
    env: Mapping[str, str] = field(default_factory=dict)
    script_args: tuple[str, ...] = ()
    # What batch jobs may ask for besides the size (sessions leave the defaults):
    nodes: int = 1
    ntasks: int = 1  # tasks (MPI ranks); cpus is then per task
    ntasks_per_node: int | None = None
    constraint: str = ""  # node features (--constraint)
    gpu_type: str = ""  # GPUs as gres gpu:<type>:<count> when set
    account: str = ""
    qos: str = ""
    mail_type: str = ""  # e.g. "END,FAIL" (--mail-type; mail goes to the user)
    requeue: bool | None = None  # None: the site's default; False: never requeue


@dataclass(frozen=True)
class StartEstimate:
    """What ``sbatch --test-only`` says about a submission: when and where it would start."""

    start_time: datetime | None
    processors: int | None = None
    nodes: str = ""
    partition: str = ""
    message: str = ""  # Slurm's own sentence


class SlurmError(Exception):
    """A Slurm call failed for a reason that is not the caller's fault."""


class SlurmUnavailable(SlurmError):
    """slurmctld could not be reached (timeout, connection refused, munge failure)."""


class SlurmRejected(SlurmError):
    """Slurm refused a submission (bad partition, over a limit...); message is for users."""


#: The metrics hook of a backend: (operation, seconds, ok) after every scheduler call.
OnCall = Callable[[str, float, bool], None]


class SlurmBackend(abc.ABC):
    """One scheduler adapter. Implementations must not block the event loop.

    Override ``submit``, ``info_many`` and ``cancel``; call ``on_call`` (when set) after
    every scheduler call.
    """

    name: str = "abstract"
    on_call: OnCall | None = None

    @abc.abstractmethod
    async def submit(self, req: SubmitRequest) -> str:
        """Submit as ``req.user``; return the job id. Raises SlurmRejected/SlurmUnavailable."""

    @abc.abstractmethod
    async def info_many(self, job_ids: Collection[str]) -> dict[str, JobStatus]:
        """Status of many jobs with ONE scheduler query. Ids Slurm does not know are absent.

        Raises SlurmUnavailable when the scheduler cannot be asked (callers must then keep
        their state as it is).
        """

    async def info_owned(self, owners: Mapping[str, str]) -> dict[str, JobStatus]:
        """:meth:`info_many` of ids whose owners are known (``{job id: user name}``), so
        a backend may ask Slurm per owner (a filter slurmctld applies itself); same
        answer as ``info_many(owners)``. Default: exactly that."""
        return await self.info_many(list(owners))

    async def info(self, job_id: str) -> JobStatus | None:
        return (await self.info_many([job_id])).get(job_id)

    async def test_only(self, req: SubmitRequest) -> StartEstimate:
        """Ask Slurm when ``req`` would start, without submitting it (as ``req.user``).

        Raises SlurmRejected (it would be refused), SlurmUnavailable, or
        NotImplementedError when the backend cannot ask.
        """
        raise NotImplementedError(f"{self.name} backend cannot estimate start times")

    async def extend(self, job_id: str, time_limit_minutes: int) -> None:
        """Set a running job's time limit (needs Slurm operator rights); raises
        SlurmRejected, SlurmUnavailable, or NotImplementedError."""
        raise NotImplementedError(f"{self.name} backend cannot change time limits")

    @abc.abstractmethod
    async def cancel(self, job_id: str, user: str) -> None:
        """Cancel the job (as ``user``); an already finished or unknown job is not an error."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release here
        """Release what the adapter holds (pyslurm's child processes); called at shutdown."""

    async def ping(self) -> bool:
        """True when the scheduler answers."""
        try:
            await self.info_many([])
        except SlurmError:
            return False
        return True
