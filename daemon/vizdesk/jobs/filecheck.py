"""Checks a set of files (uploads) against a template's file slots, slot by slot.

Pure logic plus an injected reader: :func:`check_files` never touches a file itself; it
calls ``read(ref, limit)`` (the uploads side reads AS THE USER) only for config files
(slots with a ``format``) that passed the cheap checks, and at most ``limit`` bytes.

Error codes, per slot: ``missing`` (a required slot without files), ``too_many`` (more
than one file in a slot without ``multiple``), ``unknown_slot`` (a slot the template does
not have), ``duplicate`` (one upload in two places), ``bad_name`` (a name that is not a
plain file name), ``incomplete`` (the upload is not finished), ``too_big`` (over the
slot's ``max_size``), ``wrong_pattern`` (the name does not match the glob),
``too_big_to_check`` (a config file over ``jobs.max_config_file_bytes``), ``unreadable``,
``unparsable`` (not UTF-8, not JSON/YAML; with line and column when known) and
``schema`` (a JSON Schema violation, with its JSON path, e.g. ``$.solver.iterations``;
at most :data:`MAX_SCHEMA_ERRORS` per file, sorted by path then message).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from ..contract.jsonsafe import MAX_JSON_DEPTH, JsonTooDeep, loads_bounded
from ..core.validate import ValidationError
from .template_files import FileSlot

if TYPE_CHECKING:
    from ..config import Config
    from .templates import Template

MAX_SCHEMA_ERRORS = 20
MAX_ERRORS_SCANNED = 1000  # schema errors collected before sorting (bounded work)


@dataclass(frozen=True)
class FileRef:
    """One file offered for a slot: the upload's id, its file name, size, whether the
    upload is complete."""

    id: str
    name: str
    size: int
    complete: bool


@dataclass(frozen=True)
class FileError:
    code: str
    message: str
    file: str | None = None
    path: str | None = None  # JSON path of a schema error
    line: int | None = None
    column: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        for key in ("path", "file", "line", "column"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass
class SlotResult:
    files: list[str] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class FileReport:
    """The answer per slot; ``valid`` when no slot has an error."""

    slots: dict[str, SlotResult] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return all(s.ok for s in self.slots.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "slots": {
                name: {
                    "ok": s.ok,
                    "files": list(s.files),
                    "errors": [e.to_json() for e in s.errors],
                }
                for name, s in self.slots.items()
            },
        }

    def first_error(self) -> tuple[str, FileError] | None:
        for name, s in self.slots.items():
            if s.errors:
                return name, s.errors[0]
        return None

    def raise_if_invalid(self) -> None:
        """A 400 (:class:`FilesInvalid`) naming ``files.<slot>`` of the first error."""
        first = self.first_error()
        if first is not None:
            raise FilesInvalid(self, *first)


class FilesInvalid(ValidationError):
    """Submission refused: ``field`` is ``files.<slot>``; the message carries the first
    error (and its JSON path); ``report`` the whole :class:`FileReport`."""

    def __init__(self, report: FileReport, slot: str, error: FileError) -> None:
        where = f" at {error.path}" if error.path else ""
        what = f" {error.file!r}" if error.file else ""
        super().__init__(
            f"files.{slot}",
            f"slot {slot!r}{what}: {error.code}{where}: {error.message}",
            "invalid_files",
        )
        self.report = report
        self.details = report.to_json()


Reader = Callable[[FileRef, int], Awaitable[bytes]]


def _bad_name(name: str) -> bool:
    return (
        not name
        or len(name.encode()) > 255
        or name in (".", "..")
        or "/" in name
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in name)
    )


def _cheap_checks(slot: FileSlot, ref: FileRef) -> list[FileError]:
    errors: list[FileError] = []
    if _bad_name(ref.name):
        return [FileError("bad_name", "not a plain file name", file=ref.name[:255])]
    if not ref.complete:
        errors.append(FileError("incomplete", "the upload is not finished", file=ref.name))
    if ref.size > slot.max_size:
        errors.append(
            FileError("too_big", f"{ref.size} bytes; at most {slot.max_size}", file=ref.name)
        )
    if not slot.matches(ref.name):
        errors.append(
            FileError("wrong_pattern", f"the name must match {slot.pattern!r}", file=ref.name)
        )
    return errors


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: ``*a`` repeated in nested lists makes a small file a huge
    tree for the schema check (the 'billion laughs')."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event: Any = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a config file", event.start_mark
            )
        return super().compose_node(parent, index)


def _depth_ok(doc: Any, most: int) -> bool:
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > most:
                return False
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children)
    return True


def parse_config(data: bytes, fmt: str, name: str) -> tuple[Any, FileError | None]:
    """The document in ``data`` (JSON or YAML), or an ``unparsable`` error."""

    def bad(message: str, line: int | None = None, column: int | None = None) -> FileError:
        where = f" (line {line}, column {column})" if line is not None else ""
        return FileError("unparsable", message + where, file=name, line=line, column=column)

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, bad(f"not UTF-8 text (byte {exc.start})")
    if fmt == "json":
        try:
            return loads_bounded(text, MAX_JSON_DEPTH), None
        except JsonTooDeep:
            return None, bad(f"nested deeper than {MAX_JSON_DEPTH} levels")
        except json.JSONDecodeError as exc:
            return None, bad(f"not valid JSON: {exc.msg}", exc.lineno, exc.colno)
    try:
        doc = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "error"
        if mark is None:
            return None, bad(f"not valid YAML: {problem}")
        return None, bad(f"not valid YAML: {problem}", mark.line + 1, mark.column + 1)
    except (yaml.YAMLError, RecursionError) as exc:
        return None, bad(f"not valid YAML: {type(exc).__name__}")
    if not _depth_ok(doc, MAX_JSON_DEPTH):
        return None, bad(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return doc, None


def schema_errors(slot: FileSlot, doc: Any, name: str) -> list[FileError]:
    """The document's JSON Schema violations, sorted (path, message), at most
    :data:`MAX_SCHEMA_ERRORS` (one more entry says how many were left out)."""
    validator = slot.validator()
    if validator is None:
        return []
    found: list[tuple[str, str]] = []
    try:
        for err in validator.iter_errors(doc):
            found.append((err.json_path, err.message[:500]))
            if len(found) >= MAX_ERRORS_SCANNED:
                break
    except Exception as exc:  # an unresolvable $ref, a recursion: the schema's fault
        return [
            FileError("schema", f"the slot's schema cannot be applied: {exc!s:.200}", file=name)
        ]
    found.sort()
    out = [FileError("schema", msg, file=name, path=path) for path, msg in found]
    if len(out) > MAX_SCHEMA_ERRORS:
        more = len(out) - MAX_SCHEMA_ERRORS
        out = out[:MAX_SCHEMA_ERRORS]
        out.append(FileError("schema", f"... and {more} more", file=name))
    return out


def _config_check(slot: FileSlot, data: bytes, name: str) -> list[FileError]:
    assert slot.format is not None
    doc, error = parse_config(data, slot.format, name)
    if error is not None:
        return [error]
    return schema_errors(slot, doc, name)


async def check_files(
    template: Template,
    files: Mapping[str, Sequence[FileRef]],
    read: Reader,
    cfg: Config,
) -> FileReport:
    """Every slot of ``template`` (and every slot of ``files`` it does not have) checked."""
    report = FileReport()
    seen: set[str] = set()
    for slot_name, refs in files.items():
        if slot_name not in template.files:
            shown = str(slot_name)[:64]
            report.slots[shown] = SlotResult(
                files=[r.name for r in refs],
                errors=[
                    FileError("unknown_slot", f"template {template.ref!r} has no slot {shown!r}")
                ],
            )
    for slot in template.files.values():
        refs = list(files.get(slot.name, ()))
        result = SlotResult(files=[r.name for r in refs])
        report.slots[slot.name] = result
        if not refs:
            if slot.required:
                result.errors.append(FileError("missing", "a file is required"))
            continue
        if len(refs) > 1 and not slot.multiple:
            result.errors.append(FileError("too_many", f"one file only; got {len(refs)}"))
        for ref in refs:
            if ref.id in seen:
                result.errors.append(FileError("duplicate", "the same upload twice", file=ref.name))
                continue
            seen.add(ref.id)
            errors = _cheap_checks(slot, ref)
            result.errors += errors
            if errors or slot.format is None:
                continue
            limit = min(slot.max_size, cfg.jobs.max_config_file_bytes)
            if ref.size > limit:
                result.errors.append(
                    FileError(
                        "too_big_to_check",
                        f"a config file is checked up to {limit} bytes; this one has {ref.size}",
                        file=ref.name,
                    )
                )
                continue
            try:
                data = await read(ref, limit + 1)
            except OSError as exc:
                result.errors.append(
                    FileError("unreadable", f"cannot read: {exc.strerror or exc}", file=ref.name)
                )
                continue
            if len(data) > limit:
                result.errors.append(
                    FileError("too_big_to_check", f"more than {limit} bytes", file=ref.name)
                )
                continue
            result.errors += await asyncio.to_thread(_config_check, slot, data, ref.name)
    return report
