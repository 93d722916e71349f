"""Job templates: YAML files in ``jobs.templates_dir``, parsed strictly, and their parameters.

A template (``<name>.yaml``) names what runs and with which typed parameters::

    name: hello                      # optional; must equal the file name without .yaml
    description: Print a greeting
    partition: batch                 # optional (default: slurm.default_partition)
    image: compute                   # optional catalog ref; without it the command runs on the host
    app: solver                      # optional SCIF app of the image
    mode: exec                       # exec | run (run = the image's runscript, needs an image)
    command: [printf, "%s\\n", "{message}"]   # argv; an element "{name}" is a parameter's value
    # or: script: "..." with interpreter: [/bin/bash] (default) → argv [*interpreter, -c, script]
    resources:
      cpus: {default: 1, max: 4}     # or a plain number: fixed
      memory_gb: {default: 1, max: 8}
      gpus: {default: 0, max: 0}
      time_limit_minutes: {default: 10, max: 60}
      nodes: {default: 1, max: 4}    # nodes, ntasks, ntasks_per_node: 1 (fixed) unless given
      ntasks: {default: 2, max: 64}
    constraint: "a100|h100"          # optional Slurm feature expression (--constraint)
    gpu_type: a100                   # optional GRES type of the GPUs (gpu:<type>:<count>)
    launcher: direct                 # direct | srun (the command runs once per task: MPI)
    notify: email                    # optional: Slurm mails the user when the job ends
    requeue: false                   # let Slurm requeue the job (default false)
    groups: [physics]                # optional: only members may use it (admin templates)
    display_name: Hello world        # library metadata: display_name, category, tags, version
    category: examples
    tags: [demo, shell]
    version: "1.2"                   # admin templates; user templates get 1, 2, 3 ...
    files: {...}                     # input file slots, see .template_files
    outputs: ["*.out"]               # result file patterns, see .template_files
    parameters:
      message: {type: string, required: true, max_length: 200, pattern: "^[ -~]*$"}
      count: {type: int, default: 1, min: 1, max: 100}
      ratio: {type: float, default: 0.5, min: 0, max: 1}
      color: {type: enum, choices: [red, green], default: red}
      verbose: {type: bool, default: false}

Parameter values reach the job only as data: ``VIZDESK_PARAM_<NAME>`` environment
variables, ``VIZDESK_PARAMS_JSON`` (all of them as one JSON object) and whole argv
elements. They are never put into a shell command line or into the batch script, so a
template's own script must quote them (``"$VIZDESK_PARAM_MESSAGE"``) like any variable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import structlog
import yaml

from ..config import Config
from ..core.validate import NAME_RE, ValidationError
from .template_files import FileSlot, parse_files, parse_outputs, slots_public

log = structlog.get_logger("vizdesk.jobs.templates")

PARAM_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
PLACEHOLDER_RE = re.compile(r"\{([a-z][a-z0-9_]{0,31})\}")
PARAM_TYPES = ("int", "float", "string", "enum", "bool")
MODES = ("exec", "run")
RESOURCES = (
    "cpus",
    "memory_gb",
    "gpus",
    "time_limit_minutes",
    "nodes",
    "ntasks",
    "ntasks_per_node",
)
# Resources a template that does not mention them gets exactly one of (a job is one task
# on one node unless its template says otherwise).
SINGLE_RESOURCES = ("nodes", "ntasks", "ntasks_per_node")
LAUNCHERS = ("direct", "srun")
NOTIFY = ("email",)
SOURCES = ("admin", "user")
CONSTRAINT_RE = re.compile(r"^[A-Za-z0-9_.&|()\[\]*:,!-]{1,256}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}$")
MAX_TAGS = 32
MAX_TAG_CHARS = 32
MAX_DISPLAY_NAME = 120
MAX_CATEGORY = 64
MAX_TEMPLATE_BYTES = 256 * 1024
INT_LIMIT = 2**63 - 1

TEMPLATE_KEYS = frozenset(
    {
        "name",
        "description",
        "partition",
        "image",
        "app",
        "mode",
        "command",
        "script",
        "interpreter",
        "resources",
        "parameters",
        "groups",
        "display_name",
        "category",
        "tags",
        "version",
        "files",
        "outputs",
        "notify",
        "requeue",
        "launcher",
        "constraint",
        "gpu_type",
    }
)
PARAM_KEYS = frozenset(
    {"type", "description", "required", "default", "min", "max", "pattern", "choices", "max_length"}
)


class TemplateError(ValueError):
    """A template file that cannot be used; ``field`` is the offending key path."""

    def __init__(self, template: str, field: str, message: str) -> None:
        super().__init__(f"template {template!r}: {field}: {message}")
        self.template = template
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Resource:
    default: int
    max: int


class Defaults(NamedTuple):
    cpus: int
    memory_gb: int
    gpus: int
    time_limit_minutes: int
    nodes: int = 1
    ntasks: int = 1
    ntasks_per_node: int = 1


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    required: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    choices: tuple[str, ...] = ()
    max_length: int | None = None
    description: str = ""

    @property
    def env_name(self) -> str:
        return "VIZDESK_PARAM_" + self.name.upper()

    def to_public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if self.default is not None:
            out["default"] = self.default
        for key in ("min", "max", "pattern", "max_length", "description"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = value
        if self.choices:
            out["choices"] = list(self.choices)
        return out


@dataclass(frozen=True)
class Template:
    """One parsed job template: what runs, its typed parameters and resource limits."""

    name: str
    description: str = ""
    partition: str | None = None
    image: str | None = None
    app: str | None = None
    mode: str = "exec"
    command: tuple[str, ...] = ()
    script: str | None = None
    interpreter: tuple[str, ...] = ("/bin/bash",)
    resources: Mapping[str, Resource] = field(default_factory=dict)
    parameters: Mapping[str, ParamSpec] = field(default_factory=dict)
    groups: tuple[str, ...] = ()  # admin templates: only members of these may use it
    # library metadata
    display_name: str = ""
    category: str = ""
    tags: tuple[str, ...] = ()
    version: str = ""  # admin: the declared version or "sha-<hash>"; user: "1", "2", ...
    # files, results and how the job runs
    files: Mapping[str, FileSlot] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    notify: str | None = None  # "email": Slurm's --mail-type=END,FAIL
    requeue: bool = False
    launcher: str = "direct"  # srun: the command runs once per task
    constraint: str | None = None
    gpu_type: str | None = None
    # where it comes from (set by the library for user templates)
    source: str = "admin"
    owner: str | None = None
    visibility: str | None = None  # user templates: private | groups
    shared_with: tuple[str, ...] = ()  # user templates with visibility groups
    cloned_from: str | None = None
    definition: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ref(self) -> str:
        """How a request names it: ``name`` (admin) or ``~owner/name`` (user)."""
        return f"~{self.owner}/{self.name}" if self.source == "user" else self.name

    def argv(self, values: Mapping[str, Any]) -> list[str]:
        """The command line of the job: placeholders replaced by whole parameter values."""
        if self.script is not None:
            return [*self.interpreter, "-c", self.script, f"vizdesk-{self.name}"]
        out: list[str] = []
        for element in self.command:
            m = PLACEHOLDER_RE.fullmatch(element)
            if m and m.group(1) in self.parameters:
                out.append(value_text(values[m.group(1)]))
            else:
                out.append(element)
        return out

    def defaults(self) -> Defaults:
        """The resources a job of this template gets when it asks for none."""
        return Defaults(*(self.resources[key].default for key in RESOURCES))

    def usable_by(self, groups: tuple[str, ...]) -> bool:
        return not self.groups or any(g in self.groups for g in groups)

    def to_public(self, viewer: str | None = None) -> dict[str, Any]:
        """The API's view; ``editable`` is true for ``viewer``'s own user templates."""
        out: dict[str, Any] = {
            "ref": self.ref,
            "name": self.name,
            "display_name": self.display_name or self.name,
            "description": self.description,
            "category": self.category,
            "tags": list(self.tags),
            "version": self.version,
            "source": self.source,
            "owner": self.owner,
            "visibility": self.visibility,
            "editable": self.source == "user" and viewer is not None and viewer == self.owner,
            "partition": self.partition,
            "image": self.image,
            "app": self.app,
            "mode": self.mode,
            "launcher": self.launcher,
            "notify": self.notify,
            "requeue": self.requeue,
            "constraint": self.constraint,
            "gpu_type": self.gpu_type,
            "resources": {
                k: {"default": r.default, "max": r.max} for k, r in self.resources.items()
            },
            "parameters": [p.to_public() for p in self.parameters.values()],
            "files": slots_public(self.files),
            "outputs": list(self.outputs),
        }
        if self.source == "user":
            out["groups"] = list(self.shared_with)
            out["cloned_from"] = self.cloned_from
        return out


# ---------------------------------------------------------------- parsing a template


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _str_list(name: str, where: str, value: Any, *, allow_empty: bool) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TemplateError(name, where, "must be a list of strings")
    if not value and not allow_empty:
        raise TemplateError(name, where, "must not be empty")
    if any("\x00" in v for v in value):
        raise TemplateError(name, where, "must not contain NUL characters")
    return tuple(value)


def _opt_name(name: str, where: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise TemplateError(name, where, "must be 1-64 letters, digits, '_', '.', '-'")
    return value


def resource_bounds(cfg: Config) -> dict[str, tuple[int, int, int]]:
    """(default, lowest, highest) of every resource: the hard limits of the site."""
    s, j = cfg.sessions, cfg.jobs
    return {
        "cpus": (1, 1, s.max_cpus),
        "memory_gb": (s.default_memory_gb, 1, s.max_memory_gb),
        "gpus": (0, 0, s.max_gpus),
        "time_limit_minutes": (s.default_time_limit_minutes, 1, s.max_time_limit_minutes),
        "nodes": (1, 1, j.max_nodes),
        "ntasks": (1, 1, j.max_ntasks),
        "ntasks_per_node": (1, 1, j.max_ntasks),
    }


def _resources(name: str, data: Any, cfg: Config) -> dict[str, Resource]:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TemplateError(name, "resources", "must be a mapping")
    defaults = resource_bounds(cfg)
    out: dict[str, Resource] = {}
    for key in data:
        if key not in defaults:
            raise TemplateError(name, f"resources.{key}", f"unknown resource (one of {RESOURCES})")
    for key, (dflt, lo, hi) in defaults.items():
        where = f"resources.{key}"
        value = data.get(key)
        if value is None and key == "gpus":
            res = Resource(0, 0)  # a template that does not mention GPUs gets none
        elif value is None and key in SINGLE_RESOURCES:
            res = Resource(1, 1)  # nor more than one node or task
        elif value is None:
            res = Resource(min(max(dflt, lo), hi), hi)
        elif _is_int(value):
            res = Resource(value, value)  # a plain number: fixed
        elif isinstance(value, dict):
            extra = set(value) - {"default", "max"}
            if extra:
                raise TemplateError(name, where, f"unknown key(s) {sorted(map(str, extra))}")
            d, m = value.get("default", min(max(dflt, lo), hi)), value.get("max", hi)
            if not _is_int(d):
                raise TemplateError(name, f"{where}.default", "must be an integer")
            if not _is_int(m):
                raise TemplateError(name, f"{where}.max", "must be an integer")
            res = Resource(d, m)
        else:
            raise TemplateError(name, where, "must be an integer or {default, max}")
        if not lo <= res.default <= res.max:
            raise TemplateError(name, where, f"need {lo} <= default <= max")
        if res.max > hi:
            raise TemplateError(name, f"{where}.max", f"must be at most {hi}")
        out[key] = res
    return out


def _param(tname: str, pname: Any, data: Any) -> ParamSpec:
    where = f"parameters.{str(pname)[:64]}"
    if not isinstance(pname, str) or not PARAM_NAME_RE.fullmatch(pname):
        raise TemplateError(tname, where, "parameter names are [a-z][a-z0-9_]{0,31}")
    if not isinstance(data, dict):
        raise TemplateError(tname, where, "must be a mapping with at least 'type'")
    extra = set(data) - PARAM_KEYS
    if extra:
        raise TemplateError(tname, where, f"unknown key(s) {sorted(map(str, extra))}")
    ptype = data.get("type")
    if ptype not in PARAM_TYPES:
        raise TemplateError(tname, f"{where}.type", f"must be one of {list(PARAM_TYPES)}")
    required = data.get("required", False)
    if not isinstance(required, bool):
        raise TemplateError(tname, f"{where}.required", "must be true or false")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise TemplateError(tname, f"{where}.description", "must be a string")
    lo, hi = data.get("min"), data.get("max")
    if (lo is not None or hi is not None) and ptype not in ("int", "float"):
        raise TemplateError(tname, where, "min/max apply to int and float parameters only")
    for key, bound in (("min", lo), ("max", hi)):
        if bound is None:
            continue
        ok = _is_int(bound) if ptype == "int" else _is_number(bound)
        if not ok:
            raise TemplateError(tname, f"{where}.{key}", f"must be a {ptype}")
    if lo is not None and hi is not None and lo > hi:
        raise TemplateError(tname, where, "min must not exceed max")
    pattern = data.get("pattern")
    max_length = data.get("max_length")
    if (pattern is not None or max_length is not None) and ptype != "string":
        raise TemplateError(tname, where, "pattern/max_length apply to string parameters only")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise TemplateError(tname, f"{where}.pattern", "must be a string")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise TemplateError(tname, f"{where}.pattern", f"invalid regex: {exc}") from exc
    if max_length is not None and (not _is_int(max_length) or max_length < 0):
        raise TemplateError(tname, f"{where}.max_length", "must be a non-negative integer")
    choices: tuple[str, ...] = ()
    if ptype == "enum":
        raw = data.get("choices")
        if not isinstance(raw, list) or not raw or not all(isinstance(c, str) for c in raw):
            raise TemplateError(tname, f"{where}.choices", "enum needs a non-empty list of strings")
        choices = tuple(raw)
    elif "choices" in data:
        raise TemplateError(tname, f"{where}.choices", "choices apply to enum parameters only")
    spec = ParamSpec(
        name=pname,
        type=ptype,
        required=required,
        min=lo,
        max=hi,
        pattern=pattern,
        choices=choices,
        max_length=max_length,
        description=description,
    )
    default = data.get("default")
    if default is not None:
        if required:
            raise TemplateError(tname, f"{where}.default", "a required parameter has no default")
        try:
            default = check_value(spec, default, max_string_length=None)
        except ValidationError as exc:
            raise TemplateError(tname, f"{where}.default", exc.message) from None
        spec = dataclasses.replace(spec, default=default)
    return spec


def _short_text(name: str, where: str, value: Any, most: int, *, empty: bool = True) -> str:
    """A one-line printable string of at most ``most`` characters."""
    if not isinstance(value, str):
        raise TemplateError(name, where, "must be a string")
    if len(value) > most:
        raise TemplateError(name, where, f"must be at most {most} characters")
    if not value.strip() and not empty:
        raise TemplateError(name, where, "must not be empty")
    if any(not ch.isprintable() for ch in value):
        raise TemplateError(name, where, "must be printable text on one line")
    return value


def _version(name: str, data: dict[str, Any]) -> str:
    """The declared version, or a hash of the definition (a job still records what ran)."""
    value = data.get("version")
    if value is None:
        canonical = json.dumps(data, sort_keys=True, default=str, ensure_ascii=False)
        return "sha-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]
    if isinstance(value, bool) or isinstance(value, float):
        raise TemplateError(name, "version", 'must be a string: quote it, e.g. version: "1.2"')
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or not VERSION_RE.fullmatch(value):
        raise TemplateError(name, "version", "must be 1-32 letters, digits, '.', '_', '+', '-'")
    return value


def _metadata(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """display_name, category, tags and version of the library."""
    tags_raw = data.get("tags", [])
    if not isinstance(tags_raw, list):
        raise TemplateError(name, "tags", "must be a list of strings")
    if len(tags_raw) > MAX_TAGS:
        raise TemplateError(name, "tags", f"at most {MAX_TAGS} tags")
    tags = tuple(
        _short_text(name, f"tags.{i}", t, MAX_TAG_CHARS, empty=False)
        for i, t in enumerate(tags_raw)
    )
    return {
        "display_name": _short_text(
            name, "display_name", data.get("display_name", ""), MAX_DISPLAY_NAME
        ),
        "category": _short_text(name, "category", data.get("category", ""), MAX_CATEGORY),
        "tags": tuple(dict.fromkeys(tags)),
        "version": _version(name, data),
    }


def _run_options(
    name: str, data: dict[str, Any], resources: Mapping[str, Resource]
) -> dict[str, Any]:
    """launcher, notify, requeue, constraint and gpu_type."""
    launcher = data.get("launcher", "direct")
    if launcher not in LAUNCHERS:
        raise TemplateError(name, "launcher", f"must be one of {list(LAUNCHERS)}")
    notify = data.get("notify")
    if notify is not None and notify not in NOTIFY:
        raise TemplateError(name, "notify", f"must be one of {list(NOTIFY)}")
    requeue = data.get("requeue", False)
    if not isinstance(requeue, bool):
        raise TemplateError(name, "requeue", "must be true or false")
    constraint = data.get("constraint")
    if constraint is not None and (
        not isinstance(constraint, str) or not CONSTRAINT_RE.fullmatch(constraint)
    ):
        raise TemplateError(
            name, "constraint", "must be a Slurm feature expression (letters, digits, &|()[]*:,!-)"
        )
    gpu_type = _opt_name(name, "gpu_type", data.get("gpu_type"))
    if gpu_type is not None and resources["gpus"].max == 0:
        raise TemplateError(name, "gpu_type", "a GPU type needs resources.gpus")
    return {
        "launcher": launcher,
        "notify": notify,
        "requeue": requeue,
        "constraint": constraint,
        "gpu_type": gpu_type,
    }


def parse_template(name: str, data: Any, cfg: Config) -> Template:
    """Validate a template's YAML data; raise :class:`TemplateError` naming the bad key."""
    if not isinstance(data, dict):
        raise TemplateError(name, "(top level)", "must be a mapping")
    extra = set(data) - TEMPLATE_KEYS
    if extra:
        raise TemplateError(name, str(sorted(map(str, extra))[0]), "unknown key")
    declared = data.get("name", name)
    if declared != name:
        raise TemplateError(name, "name", f"must equal the file name ({name!r})")
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > 4000:
        raise TemplateError(name, "description", "must be a string of at most 4000 characters")
    partition = _opt_name(name, "partition", data.get("partition"))
    if partition is not None and cfg.slurm.partitions and partition not in cfg.slurm.partitions:
        raise TemplateError(name, "partition", f"not an offered partition {cfg.slurm.partitions}")
    image = data.get("image")
    if image is not None and (not isinstance(image, str) or not image or len(image) > 256):
        raise TemplateError(name, "image", "must be an image catalog id or name")
    app = _opt_name(name, "app", data.get("app"))
    if app is not None and image is None:
        raise TemplateError(name, "app", "an app needs an image")
    mode = data.get("mode", "exec")
    if mode not in MODES:
        raise TemplateError(name, "mode", "must be exec or run")
    if mode == "run" and image is None:
        raise TemplateError(name, "mode", "mode run needs an image")
    groups = _str_list(name, "groups", data.get("groups", []), allow_empty=True)

    raw_params = data.get("parameters") or {}
    if not isinstance(raw_params, dict):
        raise TemplateError(name, "parameters", "must be a mapping of name → spec")
    params = {spec.name: spec for spec in (_param(name, k, v) for k, v in raw_params.items())}

    has_cmd, has_script = "command" in data, "script" in data
    if has_cmd and has_script:
        raise TemplateError(name, "command", "give either command or script, not both")
    command: tuple[str, ...] = ()
    script: str | None = None
    interpreter: tuple[str, ...] = ("/bin/bash",)
    if has_script:
        script = data["script"]
        if not isinstance(script, str) or not script.strip() or "\x00" in script:
            raise TemplateError(name, "script", "must be a non-empty string")
        if mode == "run":
            raise TemplateError(name, "script", "a script runs with mode exec")
        if "interpreter" in data:
            interpreter = _str_list(name, "interpreter", data["interpreter"], allow_empty=False)
    else:
        if "interpreter" in data:
            raise TemplateError(name, "interpreter", "only with script")
        if has_cmd:
            command = _str_list(name, "command", data["command"], allow_empty=mode == "run")
        elif mode == "exec":
            raise TemplateError(name, "command", "a command (or a script) is required")
        for element in command:
            whole = PLACEHOLDER_RE.fullmatch(element)
            if whole and whole.group(1) in params:
                spec = params[whole.group(1)]
                if not spec.required and spec.default is None:
                    raise TemplateError(
                        name,
                        "command",
                        f"placeholder {element} needs a required parameter or a default",
                    )
                continue
            for m in PLACEHOLDER_RE.finditer(element):
                if m.group(1) in params:
                    raise TemplateError(
                        name,
                        "command",
                        f"{{{m.group(1)}}} must be a whole argv element (values are never "
                        "spliced into strings); use $" + params[m.group(1)].env_name,
                    )

    def fail(where: str, message: str) -> NoReturn:
        raise TemplateError(name, where, message)

    resources = _resources(name, data.get("resources"), cfg)
    return Template(
        name=name,
        description=description,
        partition=partition,
        image=image,
        app=app,
        mode=mode,
        command=command,
        script=script,
        interpreter=interpreter,
        resources=resources,
        parameters=params,
        groups=groups,
        files=parse_files(fail, data.get("files"), cfg.uploads.max_file_bytes),
        outputs=parse_outputs(fail, data.get("outputs")),
        definition=data,
        **_metadata(name, data),
        **_run_options(name, data, resources),
    )


# ---------------------------------------------------------------- parameter values


def value_text(value: Any) -> str:
    """How a validated value appears in the environment and in argv."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def check_value(spec: ParamSpec, value: Any, *, max_string_length: int | None) -> Any:
    """One value checked against its spec; returns it normalised (float for float)."""
    field_name = f"parameters.{spec.name}"

    def bad(message: str) -> ValidationError:
        return ValidationError(
            field_name, f"parameter {spec.name!r} {message}", "invalid_parameter"
        )

    if spec.type == "bool":
        if not isinstance(value, bool):
            raise bad("must be true or false")
        return value
    if spec.type == "int":
        if not _is_int(value) or abs(value) > INT_LIMIT:
            raise bad("must be an integer")
    elif spec.type == "float":
        if not _is_number(value):
            raise bad("must be a finite number")
        value = float(value)
    if spec.type in ("int", "float"):
        if spec.min is not None and value < spec.min:
            raise bad(f"must be at least {spec.min}")
        if spec.max is not None and value > spec.max:
            raise bad(f"must be at most {spec.max}")
        return value
    if not isinstance(value, str):
        raise bad("must be a string")
    if "\x00" in value:
        raise bad("must not contain NUL characters")
    if spec.type == "enum":
        if value not in spec.choices:
            raise bad(f"must be one of {list(spec.choices)}")
        return value
    limit = spec.max_length if spec.max_length is not None else max_string_length
    if limit is not None and len(value) > limit:
        raise bad(f"must be at most {limit} characters")
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        raise bad(f"must match {spec.pattern}")
    return value


def validate_parameters(template: Template, raw: Any, cfg: Config) -> dict[str, Any]:
    """The request's parameters checked against the template (400 naming the parameter)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValidationError("parameters", "parameters must be a JSON object")
    for key in raw:
        if key not in template.parameters:
            shown = str(key)[:64]
            raise ValidationError(
                f"parameters.{shown}",
                f"unknown parameter {shown!r} for template {template.name!r}",
                "unknown_parameter",
            )
    values: dict[str, Any] = {}
    for name, spec in template.parameters.items():
        value = raw.get(name)
        if value is None:
            if spec.required:
                raise ValidationError(
                    f"parameters.{name}", f"parameter {name!r} is required", "missing_parameter"
                )
            if spec.default is None:
                continue
            value = spec.default
        values[name] = check_value(spec, value, max_string_length=cfg.jobs.max_string_length)
    size = sum(len(value_text(v).encode()) for v in values.values())
    if size > cfg.jobs.max_param_bytes:
        raise ValidationError(
            "parameters", f"parameters total {size} bytes; at most {cfg.jobs.max_param_bytes}"
        )
    return values


def param_env(template: Template | None, values: Mapping[str, Any]) -> dict[str, str]:
    """``VIZDESK_PARAM_<NAME>`` for every value (the JSON of all is added by the script)."""
    if template is None:
        return {}
    return {template.parameters[k].env_name: value_text(v) for k, v in values.items()}


# ---------------------------------------------------------------- the template directory


@dataclass
class _Cached:
    stamp: tuple[int, int]
    template: Template | None
    error: TemplateError | None


class TemplateRegistry:
    """Loads templates from a directory on demand, re-reading a file when it changes."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.directory = Path(cfg.jobs.templates_dir)
        self._cache: dict[str, _Cached] = {}

    def _load_sync(self, name: str) -> Template:
        path = self._path(name)
        if path is None:
            raise KeyError(name)
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._cache.get(name)
        if cached is None or cached.stamp != stamp:
            cached = _Cached(stamp, None, None)
            try:
                cached.template = self._parse_file(name, path, st.st_size)
            except TemplateError as exc:
                cached.error = exc
                log.warning("job_template.invalid", template=name, error=str(exc))
            self._cache[name] = cached
        if cached.error is not None:
            raise cached.error
        assert cached.template is not None
        return cached.template

    def _path(self, name: str) -> Path | None:
        if not NAME_RE.fullmatch(name):
            return None
        for ext in (".yaml", ".yml"):
            path = self.directory / f"{name}{ext}"
            if path.is_file():
                return path
        return None

    def _parse_file(self, name: str, path: Path, size: int) -> Template:
        if size > MAX_TEMPLATE_BYTES:
            raise TemplateError(name, "(file)", f"larger than {MAX_TEMPLATE_BYTES} bytes")
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(name, "(file)", f"cannot read: {exc}") from exc
        except yaml.YAMLError as exc:
            raise TemplateError(name, "(file)", f"not valid YAML: {exc}") from exc
        return parse_template(name, data, self.cfg)

    def _names_sync(self) -> list[str]:
        try:
            entries = os.listdir(self.directory)
        except OSError:
            return []
        names = []
        for entry in sorted(entries):
            stem, ext = os.path.splitext(entry)
            if ext in (".yaml", ".yml") and NAME_RE.fullmatch(stem):
                names.append(stem)
        return list(dict.fromkeys(names))

    def _all_sync(self) -> list[Template]:
        out = []
        for name in self._names_sync():
            try:
                out.append(self._load_sync(name))
            except (TemplateError, KeyError, OSError):
                continue
        return out

    async def get(self, name: str) -> Template:
        """The named template; 400 naming ``template`` when unknown or invalid."""
        try:
            return await asyncio.to_thread(self._load_sync, name)
        except (KeyError, OSError):
            raise ValidationError(
                "template", f"unknown template {name[:64]!r}", "unknown_template"
            ) from None
        except TemplateError as exc:
            raise ValidationError("template", f"invalid {exc}", "invalid_template") from exc

    async def all(self) -> list[Template]:
        """Every valid template (invalid ones are logged and left out)."""
        return await asyncio.to_thread(self._all_sync)
