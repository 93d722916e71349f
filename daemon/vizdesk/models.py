"""The desktop session record and its state machine."""

from __future__ import annotations

import dataclasses
import enum
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from .records import JsonRecord


class SessionState(enum.StrEnum):
    PENDING = "PENDING"  # submitted, queued in Slurm (reason = Slurm's reason)
    STARTING = "STARTING"  # job running, no valid registration yet
    READY = "READY"  # registration seen and valid: connectable
    STOPPING = "STOPPING"  # cancel requested, job not gone yet
    ENDED = "ENDED"  # job gone (reason says why)
    FAILED = "FAILED"  # could not start or broke (reason says why)

    @property
    def is_final(self) -> bool:
        return self in (SessionState.ENDED, SessionState.FAILED)


# Allowed transitions (anything may go to FAILED/ENDED; final states are final).
_NEXT: dict[SessionState, frozenset[SessionState]] = {
    SessionState.PENDING: frozenset({SessionState.STARTING, SessionState.READY}),
    SessionState.STARTING: frozenset({SessionState.PENDING, SessionState.READY}),
    SessionState.READY: frozenset({SessionState.STARTING}),
    SessionState.STOPPING: frozenset(),
    SessionState.ENDED: frozenset(),
    SessionState.FAILED: frozenset(),
}


def can_move(src: SessionState, dst: SessionState) -> bool:
    """True when the state machine allows ``src`` → ``dst``."""
    if src == dst:
        return True
    if src.is_final:
        return False
    if dst.is_final or dst == SessionState.STOPPING:
        return True
    return dst in _NEXT[src]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_session_id() -> str:
    return secrets.token_hex(8)


PUBLIC_FIELDS = (
    "id",
    "user",
    "state",
    "reason",
    "job_id",
    "node",
    "image",
    "partition",
    "cpus",
    "memory_gb",
    "gpus",
    "time_limit_minutes",
    "geometry",
    "created_at",
    "started_at",
    "ready_at",
    "ended_at",
)


@dataclass
class Session(JsonRecord):
    """One desktop session. Never holds the VNC password or the registration secret."""

    PUBLIC_FIELDS: ClassVar[tuple[str, ...]] = PUBLIC_FIELDS

    id: str
    user: str
    partition: str
    cpus: int
    memory_gb: int
    gpus: int
    time_limit_minutes: int
    geometry: str
    image: str | None = None  # catalog id / name shown to the user
    image_path: str | None = None  # resolved .sif path (internal)
    state: SessionState = SessionState.PENDING
    reason: str = ""
    job_id: str | None = None
    node: str | None = None
    created_at: datetime = dataclasses.field(default_factory=utcnow)
    started_at: datetime | None = None
    ready_at: datetime | None = None
    ended_at: datetime | None = None
    stop_requested_at: datetime | None = None
    last_cancel_at: datetime | None = None
    port: int | None = None  # registered VNC port (internal)
    acl_hash: str | None = None  # SHA-256 of the registration password (to restore the ACL user)
    reg_missing_since: datetime | None = None  # READY but registration not seen since
    cancel_reason: str | None = None  # why vizdesk itself cancelled the job

    def move(self, dst: SessionState, reason: str | None = None) -> bool:
        """Apply a transition if the state machine allows it; returns whether it changed."""
        if not can_move(self.state, dst):
            return False
        changed = self.state != dst or (reason is not None and reason != self.reason)
        if self.state != dst:
            now = utcnow()
            if dst == SessionState.READY and self.ready_at is None:
                self.ready_at = now
            if dst.is_final and self.ended_at is None:
                self.ended_at = now
        self.state = dst
        if reason is not None:
            self.reason = reason
        return changed
