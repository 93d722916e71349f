"""A batch job request (``POST /api/v1/jobs`` body), typed and ranged; nothing resolved.

Either a template with its parameters, or (when allowed) an image and a command; the
resources are optional overrides checked again against the template's limits later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..core.validate import (
    NAME_RE,
    ValidationError,
    check_int,
    name_field,
    opt_int_field,
    reject_unknown,
    require_object,
)
from ..slurm.validate import CONSTRAINT_RE
from .template_refs import parse_ref
from .templates import MODES, RESOURCES

#: What a CAE job may ask for besides the size (checked by policy: accounts, qos, ...).
BATCH_FIELDS = ("constraint", "gpu_type", "account", "qos", "job_name", "files")
JOB_FIELDS = frozenset(
    {
        "template",
        "template_version",
        "parameters",
        "image",
        "command",
        "app",
        "mode",
        "partition",
        *RESOURCES,
        *BATCH_FIELDS,
    }
)
JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
UPLOAD_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
SLOT_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_FILES = 256
ADHOC_ONLY = ("image", "command", "app", "mode")


@dataclass(frozen=True)
class JobRequest:
    """A POST body, typed and ranged (nothing resolved yet)."""

    template: str | None = None  # "name" (admin) or "~owner/name" (user)
    template_version: int | None = None  # a user template's version (default: current)
    parameters: dict[str, Any] | None = None
    image: str | None = None
    command: tuple[str, ...] | None = None
    app: str | None = None
    mode: str | None = None
    partition: str | None = None
    cpus: int | None = None
    memory_gb: int | None = None
    gpus: int | None = None
    time_limit_minutes: int | None = None
    constraint: str | None = None
    gpu_type: str | None = None
    account: str | None = None
    qos: str | None = None
    job_name: str | None = None  # shown in squeue after the vizdesk prefix
    files: dict[str, tuple[str, ...]] | None = None  # template slot -> upload ids
    nodes: int | None = None
    ntasks: int | None = None
    ntasks_per_node: int | None = None


def files_field(raw: Any) -> dict[str, tuple[str, ...]] | None:
    """``files``: ``{slot: upload id | [upload ids]}`` (shape only; the uploads and the
    template's slots are checked when the job is resolved)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValidationError("files", "files must be an object of slot -> upload id(s)")
    out: dict[str, tuple[str, ...]] = {}
    total = 0
    for slot, ids in raw.items():
        where = f"files.{str(slot)[:32]}"
        if not isinstance(slot, str) or not SLOT_RE.fullmatch(slot):
            raise ValidationError(where, "file slot names are [a-z][a-z0-9_]{0,31}")
        items = [ids] if isinstance(ids, str) else ids
        if not isinstance(items, list) or not all(
            isinstance(i, str) and UPLOAD_ID_RE.fullmatch(i) for i in items
        ):
            raise ValidationError(where, f"{where} must be an upload id or a list of them")
        if len(set(items)) != len(items):
            raise ValidationError(where, f"{where} names an upload twice")
        total += len(items)
        out[slot] = tuple(items)
    if total > MAX_FILES:
        raise ValidationError("files", f"at most {MAX_FILES} files per job")
    return out


def _pattern_field(
    body: dict[str, Any], name: str, pattern: re.Pattern[str], rule: str
) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValidationError(name, f"{name} must be {rule}")
    return value


def check_argv(argv: Any, cfg: Config, field: str, *, allow_empty: bool) -> tuple[str, ...]:
    """A command line: a list of strings within the configured size limits, no NUL."""
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ValidationError(field, f"{field} must be a list of strings (an argv)")
    if not argv and not allow_empty:
        raise ValidationError(field, f"{field} must not be empty")
    limits = cfg.jobs
    if len(argv) > limits.max_command_args:
        raise ValidationError(field, f"{field} has more than {limits.max_command_args} elements")
    size = sum(len(a.encode()) for a in argv)
    if size > limits.max_command_bytes:
        raise ValidationError(field, f"{field} is {size} bytes; at most {limits.max_command_bytes}")
    if any("\x00" in a for a in argv):
        raise ValidationError(field, f"{field} must not contain NUL characters")
    return tuple(argv)


def validate_job_request(body: Any, cfg: Config) -> JobRequest:
    """Type-check a POST /api/v1/jobs body; every error names its field."""
    body = require_object(body)
    reject_unknown(body, JOB_FIELDS)
    s = cfg.sessions
    template = body.get("template")
    if template is not None:
        template = str(parse_ref(template, "template"))
    version = body.get("template_version")
    if version is not None:
        if template is None:
            raise ValidationError("template_version", "template_version needs a template")
        version = check_int("template_version", version, 1, 2**31)
    if template is not None:
        for name in ADHOC_ONLY:
            if body.get(name) is not None:
                raise ValidationError(name, f"{name} is set by the template; leave it out")
    else:
        if body.get("parameters") is not None:
            raise ValidationError("parameters", "parameters need a template")
        if body.get("image") is None and not cfg.jobs.allow_host_commands:
            raise ValidationError("image", "give a template, or an image and a command")
    image = body.get("image")
    if image is not None and (not isinstance(image, str) or not 0 < len(image) <= 256):
        raise ValidationError("image", "image must be an image catalog id or name")
    mode = body.get("mode")
    if mode is not None and mode not in MODES:
        raise ValidationError("mode", "mode must be exec or run")
    app = body.get("app")
    if app is not None and (not isinstance(app, str) or not NAME_RE.fullmatch(app)):
        raise ValidationError("app", "app must be 1-64 letters, digits, '_', '.', '-'")
    if app is not None and image is None:
        raise ValidationError("app", "an app needs an image")
    command: tuple[str, ...] | None = None
    if template is None:
        if mode == "run" and image is None:
            raise ValidationError("mode", "mode run needs an image")
        raw = body.get("command")
        if raw is None and mode != "run":
            raise ValidationError("command", "command is required (an argv list)")
        command = check_argv(
            raw if raw is not None else [], cfg, "command", allow_empty=mode == "run"
        )
    parameters = body.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ValidationError("parameters", "parameters must be a JSON object")
    return JobRequest(
        template=template,
        template_version=version,
        parameters=parameters,
        image=image,
        command=command,
        app=app,
        mode=mode,
        partition=name_field(body, "partition", None),
        cpus=opt_int_field(body, "cpus", 1, s.max_cpus),
        memory_gb=opt_int_field(body, "memory_gb", 1, s.max_memory_gb),
        gpus=opt_int_field(body, "gpus", 0, s.max_gpus),
        time_limit_minutes=opt_int_field(body, "time_limit_minutes", 1, s.max_time_limit_minutes),
        constraint=_pattern_field(
            body, "constraint", CONSTRAINT_RE, "a node feature expression (names, & | , [] ())"
        ),
        gpu_type=name_field(body, "gpu_type", None),
        account=name_field(body, "account", None),
        qos=name_field(body, "qos", None),
        job_name=_pattern_field(body, "job_name", JOB_NAME_RE, "1-64 letters, digits, _ . + -"),
        files=files_field(body.get("files")),
        nodes=opt_int_field(body, "nodes", 1, cfg.jobs.max_nodes),
        ntasks=opt_int_field(body, "ntasks", 1, cfg.jobs.max_ntasks),
        ntasks_per_node=opt_int_field(body, "ntasks_per_node", 1, cfg.jobs.max_ntasks),
    )
