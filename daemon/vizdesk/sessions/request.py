"""A desktop request (``POST /api/v1/sessions`` body): every field typed, ranged, named."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..contract.jobenv import GEOMETRY_RE
from ..core.validate import (
    ValidationError,
    check_partition,
    int_field,
    name_field,
    reject_unknown,
    require_object,
)


@dataclass(frozen=True)
class SessionRequest:
    """A validated desktop request, defaults applied."""

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


def validate_session_request(body: Any, cfg: Config) -> SessionRequest:
    body = require_object(body)
    reject_unknown(body, SESSION_FIELDS)
    s = cfg.sessions
    partition = check_partition(
        name_field(body, "partition", cfg.slurm.default_partition or None), cfg.slurm.partitions
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
