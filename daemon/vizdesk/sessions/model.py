"""The desktop session record and its state machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from ..core.records import (
    PUBLIC_HEAD,
    PUBLIC_RESOURCES,
    RecordState,
    SlurmRecord,
    StateMachine,
    new_id,
)


class SessionState(RecordState):
    """The states of a desktop session (the API shows them as they are)."""

    PENDING = "PENDING"  # submitted, queued in Slurm (reason = Slurm's reason)
    STARTING = "STARTING"  # job running, no valid registration yet
    READY = "READY"  # registration seen and valid: connectable
    STOPPING = "STOPPING"  # cancel requested, job not gone yet
    ENDED = "ENDED"  # job gone (reason says why)
    FAILED = "FAILED"  # could not start or broke (reason says why)

    @property
    def is_final(self) -> bool:
        return self in (SessionState.ENDED, SessionState.FAILED)


# Allowed transitions (anything may go to FAILED/ENDED/STOPPING; final states are final).
MACHINE = StateMachine(
    stopping=SessionState.STOPPING,
    next={
        SessionState.PENDING: frozenset({SessionState.STARTING, SessionState.READY}),
        SessionState.STARTING: frozenset({SessionState.PENDING, SessionState.READY}),
        SessionState.READY: frozenset({SessionState.STARTING}),
    },
)


can_move = MACHINE.can_move  # True when the state machine allows src → dst
new_session_id = new_id


PUBLIC_FIELDS = (
    *PUBLIC_HEAD,
    "image",
    *PUBLIC_RESOURCES,
    "geometry",
    "created_at",
    "started_at",
    "ready_at",
    "ended_at",
    "ends_at",
    "expected_start_at",
    "queue_reason",
    "extended_minutes",
)


@dataclass(kw_only=True)
class Session(SlurmRecord[SessionState]):
    """One desktop session. Never holds the VNC password or the registration secret."""

    PUBLIC_FIELDS: ClassVar[tuple[str, ...]] = PUBLIC_FIELDS
    MACHINE: ClassVar[StateMachine[SessionState]] = MACHINE

    geometry: str
    state: SessionState = SessionState.PENDING
    ready_at: datetime | None = None
    port: int | None = None  # registered VNC port (internal)
    acl_hash: str | None = None  # SHA-256 of the registration password (to restore the ACL user)
    reg_missing_since: datetime | None = None  # READY but registration not seen since
    cancel_reason: str | None = None  # why vizdesk itself cancelled the job
    # Queue and walltime awareness (from the tracker's one squeue per tick):
    expected_start_at: datetime | None = None  # Slurm's start estimate while PENDING
    queue_reason: str | None = None  # Slurm's pending reason in words
    ends_at: datetime | None = None  # when Slurm's time limit ends the running desktop
    extended_minutes: int = 0  # minutes added by POST .../extend
    walltime_warned: list[float] = field(default_factory=list)  # warning points sent
    # Idle reclaim:
    idle_warned_at: datetime | None = None  # when the idle warning went out (None: not yet)
    reclaim_reason: str | None = None  # "idle for N min" once vizdesk reclaims the desktop

    def stamp(self, dst: SessionState, now: datetime) -> None:
        if dst == SessionState.READY and self.ready_at is None:
            self.ready_at = now
        super().stamp(dst, now)
