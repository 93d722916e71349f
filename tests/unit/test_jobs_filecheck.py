"""The per-slot file check: every failure kind, JSON Schema errors with their JSON path
(sorted, capped), YAML configs, unparsable files, and the 400 naming the slot."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vizdesk.config import Config
from vizdesk.core.validate import ValidationError
from vizdesk.jobs.filecheck import (
    MAX_SCHEMA_ERRORS,
    FileRef,
    FileReport,
    FilesInvalid,
    check_files,
)
from vizdesk.jobs.templates import Template, TemplateError, parse_template

SCHEMA = {
    "type": "object",
    "required": ["solver"],
    "properties": {
        "solver": {
            "type": "object",
            "required": ["iterations"],
            "properties": {"iterations": {"type": "integer", "minimum": 1}},
        },
        "values": {"type": "array", "items": {"type": "number"}},
    },
}


@pytest.fixture
def cfg() -> Config:
    c = Config()
    c.jobs.max_config_file_bytes = 4096
    return c


@pytest.fixture
def tmpl(cfg: Config) -> Template:
    return parse_template(
        "solver",
        {
            "image": "compute",
            "command": ["solve"],
            "files": {
                "mesh": {"pattern": "*.msh", "max_size": "1MB"},
                "config": {"pattern": "*.json", "format": "json", "schema": SCHEMA},
                "settings": {
                    "pattern": "*.y*ml",
                    "format": "yaml",
                    "schema": SCHEMA,
                    "required": False,
                },
                "extra": {"pattern": "*", "required": False, "multiple": True},
            },
        },
        cfg,
    )


class Files:
    """Uploads in memory: FileRef → content, and the reader check_files is given."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.reads: list[tuple[str, int]] = []

    def add(self, name: str, content: bytes | str | Any, *, complete: bool = True,
            size: int | None = None) -> FileRef:
        if not isinstance(content, (bytes, str)):
            content = json.dumps(content)
        raw = content.encode() if isinstance(content, str) else content
        ref = FileRef(f"u{len(self.data)}", name, len(raw) if size is None else size, complete)
        self.data[ref.id] = raw
        return ref

    async def read(self, ref: FileRef, limit: int) -> bytes:
        self.reads.append((ref.id, limit))
        return self.data[ref.id][:limit]


GOOD_CONFIG = {"solver": {"iterations": 10}}


async def run(tmpl: Template, cfg: Config, files: Files, slots: dict[str, list[FileRef]]
              ) -> dict[str, Any]:
    report = await check_files(tmpl, slots, files.read, cfg)
    out: dict[str, Any] = report.to_json()
    return out


def codes(out: dict[str, Any], slot: str) -> list[str]:
    return [e["code"] for e in out["slots"][slot]["errors"]]


async def test_valid_set(tmpl: Template, cfg: Config) -> None:
    f = Files()
    out = await run(tmpl, cfg, f, {
        "mesh": [f.add("wing.msh", b"\x00binary")],
        "config": [f.add("run.json", GOOD_CONFIG)],
        "extra": [f.add("a.dat", b"1"), f.add("b.dat", b"2")],
    })
    assert out["valid"] is True, out
    assert out["slots"]["mesh"] == {"ok": True, "files": ["wing.msh"], "errors": []}
    assert out["slots"]["settings"] == {"ok": True, "files": [], "errors": []}
    assert [r[0] for r in f.reads] == ["u1"]  # only the config file is read


async def test_missing_required_slot(tmpl: Template, cfg: Config) -> None:
    f = Files()
    out = await run(tmpl, cfg, f, {"config": [f.add("run.json", GOOD_CONFIG)]})
    assert out["valid"] is False and codes(out, "mesh") == ["missing"]
    assert out["slots"]["config"]["ok"] is True


async def test_too_many_files(tmpl: Template, cfg: Config) -> None:
    f = Files()
    out = await run(tmpl, cfg, f, {
        "mesh": [f.add("a.msh", b"1"), f.add("b.msh", b"2")],
        "config": [f.add("run.json", GOOD_CONFIG)],
    })
    assert codes(out, "mesh") == ["too_many"]


async def test_oversized_incomplete_and_wrong_pattern(tmpl: Template, cfg: Config) -> None:
    f = Files()
    out = await run(tmpl, cfg, f, {
        "mesh": [f.add("wing.stl", b"x", size=1_000_001, complete=False)],
        "config": [f.add("run.json", GOOD_CONFIG)],
    })
    assert codes(out, "mesh") == ["incomplete", "too_big", "wrong_pattern"]
    errors = out["slots"]["mesh"]["errors"]
    assert all(e["file"] == "wing.stl" for e in errors)
    assert "1000000" in errors[1]["message"] and "*.msh" in errors[2]["message"]


async def test_pattern_is_on_the_name_and_case_sensitive(tmpl: Template, cfg: Config) -> None:
    f = Files()
    for name, code in (("WING.MSH", "wrong_pattern"), ("../x.msh", "bad_name"),
                       ("a/b.msh", "bad_name"), ("..", "bad_name"), ("x\n.msh", "bad_name")):
        out = await run(tmpl, cfg, f, {"mesh": [f.add(name, b"1")],
                                       "config": [f.add("c.json", GOOD_CONFIG)]})
        assert codes(out, "mesh") == [code], name


async def test_unknown_slot(tmpl: Template, cfg: Config) -> None:
    f = Files()
    out = await run(tmpl, cfg, f, {
        "mesh": [f.add("a.msh", b"1")],
        "config": [f.add("run.json", GOOD_CONFIG)],
        "deck": [f.add("x.inp", b"1")],
    })
    assert codes(out, "deck") == ["unknown_slot"] and out["slots"]["deck"]["files"] == ["x.inp"]


async def test_same_upload_twice(tmpl: Template, cfg: Config) -> None:
    f = Files()
    ref = f.add("a.msh", b"1")
    out = await run(tmpl, cfg, f, {"mesh": [ref], "extra": [ref],
                                   "config": [f.add("c.json", GOOD_CONFIG)]})
    assert codes(out, "extra") == ["duplicate"]


async def test_schema_error_with_nested_json_path(tmpl: Template, cfg: Config) -> None:
    f = Files()
    out = await run(tmpl, cfg, f, {
        "mesh": [f.add("a.msh", b"1")],
        "config": [f.add("run.json", {"solver": {"iterations": 0}, "values": [1, "two", 3]})],
    })
    errors = out["slots"]["config"]["errors"]
    assert [(e["code"], e["path"]) for e in errors] == [
        ("schema", "$.solver.iterations"),
        ("schema", "$.values[1]"),
    ]
    assert "minimum" in errors[0]["message"] or "less than" in errors[0]["message"]
    assert errors[0]["file"] == "run.json"


async def test_schema_errors_are_capped_and_sorted(tmpl: Template, cfg: Config) -> None:
    f = Files()
    doc = {"solver": {"iterations": 1}, "values": ["x"] * 50}
    out = await run(tmpl, cfg, f, {"mesh": [f.add("a.msh", b"1")],
                                   "config": [f.add("run.json", doc)]})
    errors = out["slots"]["config"]["errors"]
    assert len(errors) == MAX_SCHEMA_ERRORS + 1 and "30 more" in errors[-1]["message"]
    paths = [e["path"] for e in errors[:-1]]
    assert paths == sorted(paths)
    again = await run(tmpl, cfg, f, {"mesh": [f.add("a.msh", b"1")],
                                     "config": [f.add("run.json", doc)]})
    assert again == out  # deterministic


async def test_yaml_config(tmpl: Template, cfg: Config) -> None:
    f = Files()
    base = {"mesh": [f.add("a.msh", b"1")], "config": [f.add("c.json", GOOD_CONFIG)]}
    good = f.add("s.yaml", "solver:\n  iterations: 5\n")
    assert (await run(tmpl, cfg, f, {**base, "settings": [good]}))["valid"] is True
    bad = f.add("s.yml", "solver:\n  iterations: many\n")
    out = await run(tmpl, cfg, f, {**base, "settings": [bad]})
    assert [(e["code"], e["path"]) for e in out["slots"]["settings"]["errors"]] == [
        ("schema", "$.solver.iterations")
    ]


@pytest.mark.parametrize(
    ("slot", "name", "content", "where"),
    [
        ("config", "c.json", '{"solver": {"iterations": 1,}}', (1, 29)),
        ("config", "c.json", '{\n  "solver": \n}', (3, 1)),
        ("config", "c.json", b"\xff\xfe\x00garbage", None),
        ("config", "c.json", "[" * 100 + "]" * 100, None),
        ("settings", "s.yaml", "solver: [1, 2\nother: x\n", (2, 6)),
        ("settings", "s.yaml", "a: &x [1, 2]\nb: [*x, *x]\n", (2, 5)),  # aliases refused
        ("settings", "s.yaml", "[" * 100 + "]" * 100, None),
    ],
)
async def test_unparsable(tmpl: Template, cfg: Config, slot: str, name: str,
                          content: str | bytes, where: tuple[int, int] | None) -> None:
    f = Files()
    slots = {"mesh": [f.add("a.msh", b"1")], "config": [f.add("c.json", GOOD_CONFIG)]}
    slots[slot] = [f.add(name, content)]
    out = await run(tmpl, cfg, f, slots)
    errors = out["slots"][slot]["errors"]
    assert [e["code"] for e in errors] == ["unparsable"], errors
    if where is not None:
        assert (errors[0]["line"], errors[0]["column"]) == where, errors[0]


async def test_config_too_big_to_check_is_not_read(tmpl: Template, cfg: Config) -> None:
    f = Files()
    big = f.add("c.json", b"{}", size=cfg.jobs.max_config_file_bytes + 1)
    out = await run(tmpl, cfg, f, {"mesh": [f.add("a.msh", b"1")], "config": [big]})
    assert codes(out, "config") == ["too_big_to_check"] and f.reads == []


async def test_reader_returning_more_than_it_may(tmpl: Template, cfg: Config) -> None:
    f = Files()
    liar = f.add("c.json", b" " * 5000, size=10)  # the size said 10
    out = await run(tmpl, cfg, f, {"mesh": [f.add("a.msh", b"1")], "config": [liar]})
    assert codes(out, "config") == ["too_big_to_check"]
    assert f.reads == [(liar.id, cfg.jobs.max_config_file_bytes + 1)]


async def test_unreadable(tmpl: Template, cfg: Config) -> None:
    async def fails(ref: FileRef, limit: int) -> bytes:
        raise PermissionError(13, "Permission denied")

    slots = {"mesh": [FileRef("1", "a.msh", 1, True)], "config": [FileRef("2", "c.json", 2, True)]}
    out = (await check_files(tmpl, slots, fails, cfg)).to_json()
    assert codes(out, "config") == ["unreadable"]


async def test_submission_error_names_the_slot_and_path(tmpl: Template, cfg: Config) -> None:
    f = Files()
    report = await check_files(tmpl, {
        "mesh": [f.add("a.msh", b"1")],
        "config": [f.add("run.json", {"solver": {"iterations": -1}})],
    }, f.read, cfg)
    with pytest.raises(FilesInvalid) as err:
        report.raise_if_invalid()
    assert isinstance(err.value, ValidationError) and err.value.status == 400
    assert err.value.field == "files.config"
    assert "$.solver.iterations" in err.value.message and err.value.report is report
    FileReport().raise_if_invalid()  # nothing to complain about


def test_bad_glob_refused_at_parse_time(cfg: Config) -> None:
    with pytest.raises(TemplateError) as err:
        parse_template("t", {"image": "i", "command": ["x"],
                             "files": {"mesh": {"pattern": "*.[ms"}}}, cfg)
    assert err.value.field == "files.mesh.pattern" and "unbalanced" in err.value.message


def test_bad_schema_refused_at_parse_time(cfg: Config) -> None:
    with pytest.raises(TemplateError) as err:
        parse_template("t", {"image": "i", "command": ["x"], "files": {
            "c": {"pattern": "*.json", "format": "json",
                  "schema": {"type": "object", "properties": {"n": {"type": 7}}}}}}, cfg)
    assert err.value.field == "files.c.schema" and "properties" in err.value.message


async def test_schema_dialect_from_dollar_schema(cfg: Config) -> None:
    """The validator class follows $schema (draft 4: exclusiveMaximum is a boolean)."""
    tmpl = parse_template("t", {"image": "i", "command": ["x"], "files": {"c": {
        "pattern": "*.json", "format": "json",
        "schema": {"$schema": "http://json-schema.org/draft-04/schema#",
                   "properties": {"n": {"maximum": 5, "exclusiveMaximum": True}}}}}}, cfg)
    f = Files()
    out = await run(tmpl, cfg, f, {"c": [f.add("c.json", {"n": 5})]})
    assert [e["path"] for e in out["slots"]["c"]["errors"]] == ["$.n"]
