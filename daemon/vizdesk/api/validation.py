"""Strict validation of request bodies: every field typed, ranged and named in errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..config import Config

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
GEOMETRY_RE = re.compile(r"^([1-9][0-9]{2,4})x([1-9][0-9]{2,4})$")


class ValidationError(ValueError):
    """A 400 naming the offending field."""

    def __init__(self, field: str | None, message: str, code: str = "invalid_field") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code


@dataclass(frozen=True)
class SessionRequest:
    partition: str
    cpus: int
    memory_gb: int
    gpus: int
    time_limit_minutes: int
    geometry: str
    image: str | None


SESSION_FIELDS = frozenset(
    {"image", "partition", "cpus", "memory_gb", "gpus", "time_limit_minutes", "geometry"}
)


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError(None, "request body must be a JSON object", "invalid_body")
    return body


def reject_unknown(body: dict[str, Any], allowed: frozenset[str]) -> None:
    for key in body:
        if key not in allowed:
            raise ValidationError(str(key), f"unknown field {str(key)[:64]!r}", "unknown_field")


def int_field(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(name, f"{name} must be an integer")
    if not lo <= value <= hi:
        raise ValidationError(name, f"{name} must be between {lo} and {hi}")
    return value


def name_field(body: dict[str, Any], name: str, default: str | None) -> str | None:
    value = body.get(name, default)
    if value is None:
        return None
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValidationError(
            name, f"{name} must be 1-64 characters of letters, digits, '_', '.', '-'"
        )
    return value


def validate_session_request(body: Any, cfg: Config) -> SessionRequest:
    body = require_object(body)
    reject_unknown(body, SESSION_FIELDS)
    s = cfg.sessions
    partition = name_field(body, "partition", cfg.slurm.default_partition or None)
    if partition is None:
        raise ValidationError("partition", "partition is required (no default configured)")
    if cfg.slurm.partitions and partition not in cfg.slurm.partitions:
        raise ValidationError(
            "partition", f"unknown partition {partition!r}; offered: {cfg.slurm.partitions}"
        )
    geometry = body.get("geometry", s.default_geometry)
    if geometry is None:
        geometry = s.default_geometry
    if not isinstance(geometry, str):
        raise ValidationError("geometry", "geometry must be a string WIDTHxHEIGHT")
    m = GEOMETRY_RE.fullmatch(geometry)
    if not m:
        raise ValidationError("geometry", "geometry must look like 1920x1080")
    width, height = int(m.group(1)), int(m.group(2))
    if not (320 <= width <= s.max_width and 200 <= height <= s.max_height):
        raise ValidationError(
            "geometry", f"geometry must be within 320x200 and {s.max_width}x{s.max_height}"
        )
    return SessionRequest(
        partition=partition,
        cpus=int_field(body, "cpus", s.default_cpus, 1, s.max_cpus),
        memory_gb=int_field(body, "memory_gb", s.default_memory_gb, 1, s.max_memory_gb),
        gpus=int_field(body, "gpus", s.default_gpus, 0, s.max_gpus),
        time_limit_minutes=int_field(
            body, "time_limit_minutes", s.default_time_limit_minutes, 1, s.max_time_limit_minutes
        ),
        geometry=f"{width}x{height}",
        image=name_field(body, "image", None),
    )
