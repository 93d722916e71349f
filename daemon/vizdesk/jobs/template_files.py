"""The file side of a job template: input file slots (``files:``) and result patterns
(``outputs:``), parsed as strictly as the rest of the template.

::

    files:
      mesh:                          # slot name: [a-z][a-z0-9_]{0,31}
        pattern: "*.msh"             # fnmatch glob on the file NAME (no '/')
        required: true               # default true
        multiple: false              # default false: at most one file
        max_size: 2GiB               # bytes, or "500MB" / "2GiB" (<= uploads.max_file_bytes)
        description: The mesh
        env: MESH_FILE               # optional; default VIZDESK_FILE_MESH
      config:
        pattern: "*.json"
        format: json                 # json | yaml: a config file, read and checked
        schema: {type: object, required: [solver]}   # JSON Schema (only with format)
    outputs: ["results/**", "*.vtk"] # relative globs naming the job's result files

Contract: :func:`parse_files` and :func:`parse_outputs` raise
:class:`~.templates.TemplateError`-compatible errors through the ``fail`` callback they
are given (so the error names the template and the key path, e.g.
``files.config.schema``); a :class:`FileSlot` is immutable and knows how to match a name
and build its JSON Schema validator. Checking actual files is :mod:`.filecheck`'s job.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import jsonschema
import jsonschema.protocols
import jsonschema.validators

SLOT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
FILE_FORMATS = ("json", "yaml")
SLOT_KEYS = frozenset(
    {"pattern", "required", "multiple", "max_size", "description", "format", "schema", "env"}
)
MAX_SLOTS = 32
MAX_GLOB_CHARS = 128
MAX_OUTPUTS = 64
MAX_OUTPUT_CHARS = 256
# Names a template may not give a file slot's variable: they steer the loader, the shell,
# Slurm, Apptainer or vizdesk's own launcher (a shared template runs as whoever launches
# it, so its author must not be able to redirect the launcher through them).
RESERVED_ENV_PREFIXES = ("LD_", "SLURM_", "VIZDESK_", "APPTAINER", "SINGULARITY", "BASH_")
RESERVED_ENV_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "ENV", "IFS", "PWD", "TMPDIR", "PYTHONPATH"}
)
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}

Fail = Callable[[str, str], NoReturn]  # (key path, message) → raises a TemplateError


@dataclass(frozen=True)
class FileSlot:
    """One input file slot: which names fit, how many files, how big, and for a config
    file (``format``) its JSON Schema."""

    name: str
    pattern: str
    max_size: int
    required: bool = True
    multiple: bool = False
    description: str = ""
    format: str | None = None
    schema: Mapping[str, Any] | None = None  # a JSON Schema, only with format
    env: str = ""  # the variable that names the file(s) in the job; "" = the default

    @property
    def env_name(self) -> str:
        return self.env or "VIZDESK_FILE_" + self.name.upper()

    def matches(self, filename: str) -> bool:
        """Whether ``filename`` (a plain name) fits the slot's glob (case-sensitive)."""
        return fnmatch.fnmatchcase(filename, self.pattern)

    def validator(self) -> jsonschema.protocols.Validator | None:
        """A validator of the slot's schema (None without one); the class follows the
        schema's ``$schema`` (Draft 2020-12 when it names none)."""
        if self.schema is None:
            return None
        cls = jsonschema.validators.validator_for(
            self.schema, default=jsonschema.Draft202012Validator
        )
        return cls(self.schema)

    def to_public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "pattern": self.pattern,
            "required": self.required,
            "multiple": self.multiple,
            "max_size": self.max_size,
            "description": self.description,
            "format": self.format,
            "env": self.env_name,
        }
        if self.schema is not None:
            out["schema"] = self.schema
        return out


def parse_size(value: Any) -> int | None:
    """Bytes from an integer or a text such as "500MB" (10^6) or "2GiB" (2^30); None when
    it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    m = _SIZE_RE.fullmatch(value)
    if m is None:
        return None
    unit = _UNITS[(m.group(2) or "b").lower()]
    number = m.group(1)
    if "." in number:
        whole, frac = number.split(".")
        scale: int = 10 ** len(frac)
        return int(whole) * unit + (int(frac) * unit) // scale
    return int(number) * unit


def glob_problem(pattern: Any, *, allow_slash: bool, max_chars: int) -> str | None:
    """Why ``pattern`` is not a sane fnmatch glob (None when it is): non-empty, bounded,
    printable, every ``[`` closed."""
    if not isinstance(pattern, str) or not pattern:
        return "must be a non-empty string"
    if len(pattern) > max_chars:
        return f"must be at most {max_chars} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in pattern):
        return "must not contain control characters"
    if not allow_slash and "/" in pattern:
        return "matches a file name: no '/'"
    if "\\" in pattern:
        return "must not contain '\\'"
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] == "!":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1  # a ']' first in a set is a member
            close = pattern.find("]", j)
            if close < 0:
                return f"unbalanced '[' at position {i + 1}"
            i = close
        i += 1
    return None


def _check_schema(fail: Fail, where: str, schema: Any) -> None:
    if not isinstance(schema, dict):
        fail(where, "must be a JSON Schema (a mapping)")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        at = exc.json_path if exc.json_path != "$" else ""
        fail(where, f"not a valid JSON Schema{' at ' + at if at else ''}: {exc.message}")


def _slot(fail: Fail, slot: Any, data: Any, max_file_bytes: int) -> FileSlot:
    where = f"files.{str(slot)[:64]}"
    if not isinstance(slot, str) or not SLOT_NAME_RE.fullmatch(slot):
        fail(where, "slot names are [a-z][a-z0-9_]{0,31}")
    if not isinstance(data, dict):
        fail(where, "must be a mapping with at least 'pattern'")
    extra = set(data) - SLOT_KEYS
    if extra:
        fail(f"{where}.{sorted(map(str, extra))[0]}", "unknown key")
    problem = glob_problem(data.get("pattern"), allow_slash=False, max_chars=MAX_GLOB_CHARS)
    if problem:
        fail(f"{where}.pattern", problem)
    flags: dict[str, bool] = {}
    for key, default in (("required", True), ("multiple", False)):
        value = data.get(key, default)
        if not isinstance(value, bool):
            fail(f"{where}.{key}", "must be true or false")
        flags[key] = value
    max_size = max_file_bytes
    if "max_size" in data:
        size = parse_size(data["max_size"])
        if size is None:
            fail(f"{where}.max_size", 'must be bytes or a size such as "500MB" or "2GiB"')
        if not 1 <= size <= max_file_bytes:
            fail(f"{where}.max_size", f"must be between 1 and {max_file_bytes} bytes")
        max_size = size
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > 1000:
        fail(f"{where}.description", "must be a string of at most 1000 characters")
    fmt = data.get("format")
    if fmt is not None and fmt not in FILE_FORMATS:
        fail(f"{where}.format", f"must be one of {list(FILE_FORMATS)}")
    schema = data.get("schema")
    if "schema" in data:
        if fmt is None:
            fail(f"{where}.schema", "a schema needs a format (json or yaml)")
        _check_schema(fail, f"{where}.schema", schema)
    env = data.get("env", "")
    if env != "":
        if not isinstance(env, str) or not ENV_NAME_RE.fullmatch(env):
            fail(f"{where}.env", "must be an environment variable name [A-Z_][A-Z0-9_]*")
        if env in RESERVED_ENV_NAMES or env.startswith(RESERVED_ENV_PREFIXES):
            fail(f"{where}.env", f"{env} is reserved")
    return FileSlot(
        name=slot,
        pattern=data["pattern"],
        max_size=max_size,
        required=flags["required"],
        multiple=flags["multiple"],
        description=description,
        format=fmt,
        schema=schema,
        env=env,
    )


def parse_files(fail: Fail, data: Any, max_file_bytes: int) -> dict[str, FileSlot]:
    """The ``files:`` mapping of a template (``{}`` when absent)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        fail("files", "must be a mapping of slot name → {pattern, ...}")
    if len(data) > MAX_SLOTS:
        fail("files", f"at most {MAX_SLOTS} slots")
    slots = {s.name: s for s in (_slot(fail, k, v, max_file_bytes) for k, v in data.items())}
    envs: dict[str, str] = {}
    for s in slots.values():
        if s.env_name in envs:
            fail(f"files.{s.name}.env", f"{s.env_name} is used by slot {envs[s.env_name]!r} too")
        envs[s.env_name] = s.name
    return slots


def parse_outputs(fail: Fail, data: Any) -> tuple[str, ...]:
    """The ``outputs:`` list: relative globs (``**`` allowed), never absolute, no ``..``."""
    if data is None:
        return ()
    if not isinstance(data, list):
        fail("outputs", "must be a list of glob patterns")
    if len(data) > MAX_OUTPUTS:
        fail("outputs", f"at most {MAX_OUTPUTS} patterns")
    for i, pattern in enumerate(data):
        where = f"outputs.{i}"
        problem = glob_problem(pattern, allow_slash=True, max_chars=MAX_OUTPUT_CHARS)
        if problem:
            fail(where, problem)
        if pattern.startswith("/"):
            fail(where, "must be relative to the job directory")
        parts = pattern.split("/")
        if any(p in ("", ".", "..") for p in parts):
            fail(where, "no '..', '.' or empty path components")
    return tuple(dict.fromkeys(data))


def slots_public(slots: Mapping[str, FileSlot]) -> list[dict[str, Any]]:
    return [s.to_public() for s in slots.values()]
