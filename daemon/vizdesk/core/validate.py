"""Strict field checks for request bodies: every field typed, ranged and named in errors.

Shared by the session and the job requests (and the admin endpoints); the one place the
name rule (:data:`NAME_RE`: partitions, templates, apps, images by name) is written.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..contract.jsonsafe import MAX_JSON_DEPTH, JsonTooDeep, loads_bounded
from .errors import VizdeskError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NAME_RULE = "1-64 characters of letters, digits, '_', '.', '-'"


class ValidationError(VizdeskError, ValueError):
    """A 400 naming the offending field (``None``: the body as a whole)."""

    def __init__(self, field: str | None, message: str, code: str = "invalid_field") -> None:
        super().__init__(400, code, message, field=field)


def parse_json_body(raw: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A request body as JSON: 400 ``json_too_deep`` (field ``body``) when it nests deeper
    than ``max_depth``, 400 ``invalid_json`` when it is not JSON. Never a RecursionError."""
    try:
        return loads_bounded(raw, max_depth)
    except JsonTooDeep as exc:
        raise ValidationError(
            "body", f"body nests arrays/objects deeper than {max_depth} levels", "json_too_deep"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ValidationError(None, f"body is not valid JSON: {exc}", "invalid_json") from exc
    except ValueError as exc:  # UnicodeDecodeError: not text
        raise ValidationError(None, "body is not valid JSON (not text)", "invalid_json") from exc


def require_object(body: Any) -> dict[str, Any]:
    """The body as a JSON object, or a 400 without a field."""
    if not isinstance(body, dict):
        raise ValidationError(None, "request body must be a JSON object", "invalid_body")
    return body


def reject_unknown(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """A 400 naming the first key that is not in ``allowed``."""
    for key in body:
        if key not in allowed:
            raise ValidationError(str(key), f"unknown field {str(key)[:64]!r}", "unknown_field")


def check_int(name: str, value: Any, lo: int, hi: int) -> int:
    """``value`` as an integer within ``lo``..``hi`` (booleans are not integers)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(name, f"{name} must be an integer")
    if not lo <= value <= hi:
        raise ValidationError(name, f"{name} must be between {lo} and {hi}")
    return value


def int_field(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    """``body[name]`` (``default`` when absent or null), checked like :func:`check_int`."""
    value = body.get(name)
    return check_int(name, default if value is None else value, lo, hi)


def opt_int_field(body: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    """``body[name]`` checked like :func:`check_int`, or None when absent or null."""
    value = body.get(name)
    return None if value is None else check_int(name, value, lo, hi)


def name_field(body: dict[str, Any], name: str, default: str | None) -> str | None:
    """``body[name]`` (or ``default``) matching :data:`NAME_RE`; None when both are unset."""
    value = body.get(name, default)
    if value is None:
        return None
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValidationError(name, f"{name} must be {NAME_RULE}")
    return value


def check_partition(partition: str | None, offered: list[str]) -> str:
    """A partition that is set and, when ``offered`` is not empty, one of those."""
    if partition is None:
        raise ValidationError("partition", "partition is required (no default configured)")
    if offered and partition not in offered:
        raise ValidationError("partition", f"unknown partition {partition!r}; offered: {offered}")
    return partition
