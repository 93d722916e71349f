"""What the stored records (desktop sessions, batch jobs) share: JSON with ISO-8601 UTC
times and enum values, a public view, and atomic read-modify-write in Redis."""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar

from redis.exceptions import WatchError


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
        data = json.loads(raw)
        kinds = _field_kinds(cls)  # type: ignore[arg-type]
        out: dict[str, Any] = {}
        for name, value in data.items():
            kind = kinds.get(name)
            if kind is None:
                continue  # a field of an older or newer version: ignored
            if kind is datetime:
                value = parse_iso(value)
            elif isinstance(kind, type) and issubclass(kind, enum.Enum) and value is not None:
                value = kind(value)
            out[name] = value
        return cls(**out)


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


R = TypeVar("R")


async def atomic_update(
    redis: Any,
    key: str,
    parse: Callable[[Any], R],
    mutate: Callable[[R], bool],
    queue_save: Callable[[Any, R], None],
) -> R | None:
    """WATCH/MULTI read-modify-write of one record; ``mutate`` returns True if it changed.

    Returns the record as stored after the call (None if there is none).
    """
    for _ in range(20):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                raw = await pipe.get(key)
                if not raw:
                    await pipe.unwatch()
                    return None
                record = parse(raw)
                if not mutate(record):
                    await pipe.unwatch()
                    return record
                pipe.multi()
                queue_save(pipe, record)
                await pipe.execute()
                return record
            except WatchError:
                continue
    raise RuntimeError(f"{key}: too much contention")
