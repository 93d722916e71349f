"""What the stored records (desktop sessions, batch jobs) share: the fields of a record
over one Slurm job, JSON with ISO-8601 UTC times and enum values, a public view, ids,
and one state machine shape.

A kind of record (``sessions.model``, ``jobs.model``) subclasses :class:`SlurmRecord`
with its own :class:`RecordState` enum and :class:`StateMachine`; everything generic
(the store, the tracking in :mod:`.tracked`) works on that base.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import secrets
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Self, TypeVar

from ..contract.jsonsafe import loads_bounded


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A record id: 16 lowercase hex digits (``contract.keys.SESSION_ID_RE``)."""
    return secrets.token_hex(8)


def iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if ts else None


def parse_iso(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


class JsonRecord:
    """Mixin for dataclass records. ``PUBLIC_FIELDS`` lists what the API may show."""

    PUBLIC_FIELDS: ClassVar[tuple[str, ...]] = ()

    def to_public(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name in self.PUBLIC_FIELDS}

    def to_json(self) -> str:
        data = {k: _plain(v) for k, v in dataclasses.asdict(self).items()}  # type: ignore[call-overload]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Self:
        data = loads_bounded(raw)
        convert = _converters(cls)  # type: ignore[arg-type]
        out: dict[str, Any] = {}
        for name, value in data.items():
            if name not in convert:
                continue  # a field of an older or newer version: ignored
            fn = convert[name]
            out[name] = value if fn is None else fn(value)
        return cls(**out)


def _enum_or_none(kind: type[enum.Enum], value: Any) -> Any:
    return None if value is None else kind(value)


@functools.cache
def _converters(cls: type) -> dict[str, Callable[[Any], Any] | None]:
    """Field name → how a JSON value becomes the field's (None: as it is)."""
    out: dict[str, Callable[[Any], Any] | None] = {}
    for name, kind in _field_kinds(cls).items():
        if kind is datetime:
            out[name] = parse_iso
        elif isinstance(kind, type) and issubclass(kind, enum.Enum):
            out[name] = functools.partial(_enum_or_none, kind)
        else:
            out[name] = None
    return out


@functools.cache
def _field_kinds(cls: type) -> dict[str, Any]:
    """Field name → datetime / an Enum class / None (anything else), from type hints."""
    hints = typing.get_type_hints(cls)
    kinds: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint) or (hint,)
        kind: Any = object
        for a in args:
            if a is datetime or (isinstance(a, type) and issubclass(a, enum.Enum)):
                kind = a
        kinds[f.name] = kind
    return kinds


class RecordState(enum.StrEnum):
    """Base of a record kind's state enum (no members of its own).

    Override ``is_final``: True for the states a record never leaves.
    """

    @property
    def is_final(self) -> bool:
        raise NotImplementedError


S = TypeVar("S", bound=RecordState)


@dataclass(frozen=True)
class StateMachine(Generic[S]):
    """Allowed transitions of one record kind.

    Anything may go to a final state or to ``stopping`` (a stop was requested); final
    states are final; any other move must be listed in ``next``.
    """

    stopping: S
    next: Mapping[S, frozenset[S]]

    def can_move(self, src: S, dst: S) -> bool:
        if src == dst:
            return True
        if src.is_final:
            return False
        if dst.is_final or dst == self.stopping:
            return True
        return dst in self.next.get(src, frozenset())


#: The public fields every record kind shows first, and its resources (in this order).
PUBLIC_HEAD = ("id", "user", "state", "reason", "job_id", "node")
PUBLIC_RESOURCES = ("partition", "cpus", "memory_gb", "gpus", "time_limit_minutes")


@dataclass(kw_only=True)
class SlurmRecord(JsonRecord, Generic[S]):
    """A record that follows one Slurm job (a desktop session, a batch job).

    Override: ``state`` (with the kind's enum and initial state), ``MACHINE`` (its
    transitions), ``PUBLIC_FIELDS``; optionally :meth:`stamp` for times set on entering
    a state. ``id`` is vizdesk's (16 hex digits), ``job_id`` Slurm's.
    """

    MACHINE: ClassVar[StateMachine[Any]]

    id: str
    user: str
    partition: str
    cpus: int
    memory_gb: int
    gpus: int
    time_limit_minutes: int
    state: S
    image: str | None = None  # catalog id / name shown to the user
    image_path: str | None = None  # resolved .sif path (internal)
    reason: str = ""
    job_id: str | None = None
    node: str | None = None
    created_at: datetime = dataclasses.field(default_factory=utcnow)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    stop_requested_at: datetime | None = None
    last_cancel_at: datetime | None = None

    def move(self, dst: S, reason: str | None = None) -> bool:
        """Apply a transition if the state machine allows it; returns whether it changed."""
        if not self.MACHINE.can_move(self.state, dst):
            return False
        changed = self.state != dst or (reason is not None and reason != self.reason)
        if self.state != dst:
            self.stamp(dst, utcnow())
        self.state = dst
        if reason is not None:
            self.reason = reason
        return changed

    def stamp(self, dst: S, now: datetime) -> None:
        """Times set when entering ``dst`` (default: ``ended_at`` on a final state)."""
        if dst.is_final and self.ended_at is None:
            self.ended_at = now
