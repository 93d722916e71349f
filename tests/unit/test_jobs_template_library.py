"""Template format extensions (library metadata, file slots, outputs, run options,
multi-node resources), template references, the visibility rule of user templates and
the user-definition rules — each refused key named by its path."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from vizdesk.auth.types import Identity
from vizdesk.config import Config
from vizdesk.core.validate import ValidationError
from vizdesk.jobs.request import validate_job_request
from vizdesk.jobs.template_files import glob_problem, parse_size
from vizdesk.jobs.template_library import (
    check_sharing,
    matches,
    parse_user_definition,
)
from vizdesk.jobs.template_refs import TemplateRef, may_see, parse_ref
from vizdesk.jobs.templates import TemplateError, parse_template


@pytest.fixture
def cfg() -> Config:
    c = Config()
    c.slurm.partitions = ["viz", "batch"]
    c.slurm.default_partition = "viz"
    return c


BASE: dict[str, Any] = {
    "description": "A solver",
    "image": "compute",
    "command": ["solver", "--config", "config.json"],
    "display_name": "The solver",
    "category": "CFD",
    "tags": ["openfoam", "mesh"],
    "version": "1.2",
    "resources": {
        "cpus": {"default": 2, "max": 8},
        "gpus": {"default": 0, "max": 1},
        "nodes": {"default": 1, "max": 4},
        "ntasks": {"default": 2, "max": 64},
    },
    "launcher": "srun",
    "notify": "email",
    "requeue": True,
    "constraint": "a100|h100",
    "gpu_type": "a100",
    "files": {
        "mesh": {"pattern": "*.msh", "max_size": "2GiB", "description": "the mesh"},
        "config": {
            "pattern": "*.json",
            "format": "json",
            "schema": {
                "type": "object",
                "required": ["solver"],
                "properties": {
                    "solver": {
                        "type": "object",
                        "properties": {"iterations": {"type": "integer", "minimum": 1}},
                    }
                },
            },
        },
        "extra": {"pattern": "*.dat", "required": False, "multiple": True, "env": "EXTRA_FILES"},
    },
    "outputs": ["results/**", "*.vtk"],
}


def with_(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return data


def test_full_template_parses_and_shows_everything(cfg: Config) -> None:
    t = parse_template("solver", BASE, cfg)
    assert (t.display_name, t.category, t.tags, t.version) == (
        "The solver",
        "CFD",
        ("openfoam", "mesh"),
        "1.2",
    )
    assert (t.launcher, t.notify, t.requeue, t.constraint, t.gpu_type) == (
        "srun",
        "email",
        True,
        "a100|h100",
        "a100",
    )
    assert t.defaults().nodes == 1 and t.defaults().ntasks == 2
    assert t.resources["nodes"].max == 4 and t.resources["ntasks_per_node"].max == 1
    mesh = t.files["mesh"]
    assert (mesh.required, mesh.multiple, mesh.max_size) == (True, False, 2 * 1024**3)
    assert mesh.env_name == "VIZDESK_FILE_MESH" and t.files["extra"].env_name == "EXTRA_FILES"
    assert mesh.matches("a.msh") and not mesh.matches("a.msh.txt")
    assert t.outputs == ("results/**", "*.vtk")
    pub = t.to_public("alice")
    assert pub["ref"] == "solver" and pub["source"] == "admin" and pub["editable"] is False
    assert pub["files"][1]["schema"]["required"] == ["solver"]
    assert pub["files"][1]["format"] == "json"
    assert pub["outputs"] == ["results/**", "*.vtk"] and pub["launcher"] == "srun"
    assert {"nodes", "ntasks", "ntasks_per_node"} <= set(pub["resources"])


def test_version_hash_when_absent(cfg: Config) -> None:
    a = parse_template("s", with_("version", ...), cfg)
    b = parse_template("s", with_("version", ...) | {"description": "other"}, cfg)
    assert a.version.startswith("sha-") and a.version != b.version
    assert parse_template("s", with_("version", 3), cfg).version == "3"


def test_nodes_and_tasks_default_to_one_fixed(cfg: Config) -> None:
    data = with_("resources", {})
    del data["gpu_type"]
    t = parse_template("s", data, cfg)
    for key in ("nodes", "ntasks", "ntasks_per_node"):
        assert (t.resources[key].default, t.resources[key].max) == (1, 1)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("display_name", "x" * 121, "display_name"),
        ("display_name", 5, "display_name"),
        ("category", "c" * 65, "category"),
        ("category", "two\nlines", "category"),
        ("tags", "solo", "tags"),
        ("tags", ["ok", 3], "tags.1"),
        ("tags", ["t" * 33], "tags.0"),
        ("tags", [f"t{i}" for i in range(33)], "tags"),
        ("version", 1.2, "version"),
        ("version", "has space", "version"),
        ("version", "v" * 33, "version"),
        ("launcher", "mpirun", "launcher"),
        ("notify", "sms", "notify"),
        ("requeue", "yes", "requeue"),
        ("constraint", "a100; rm -rf /", "constraint"),
        ("constraint", "", "constraint"),
        ("gpu_type", "a 100", "gpu_type"),
        ("resources.nodes", {"default": 1, "max": 65}, "resources.nodes.max"),
        ("resources.ntasks", {"default": 0, "max": 2}, "resources.ntasks"),
        ("resources.ntasks_per_node", "2", "resources.ntasks_per_node"),
        ("files", ["mesh"], "files"),
        ("files.mesh.pattern", "", "files.mesh.pattern"),
        ("files.mesh.pattern", "mesh/*.msh", "files.mesh.pattern"),
        ("files.mesh.pattern", "[abc.msh", "files.mesh.pattern"),
        ("files.mesh.pattern", "*" * 129, "files.mesh.pattern"),
        ("files.mesh.required", "no", "files.mesh.required"),
        ("files.mesh.multiple", 1, "files.mesh.multiple"),
        ("files.mesh.max_size", "2 parsecs", "files.mesh.max_size"),
        ("files.mesh.max_size", 0, "files.mesh.max_size"),
        ("files.mesh.max_size", "11GiB", "files.mesh.max_size"),  # > uploads.max_file_bytes
        ("files.mesh.colour", "red", "files.mesh.colour"),
        ("files.mesh.format", "xml", "files.mesh.format"),
        ("files.mesh.schema", {"type": "object"}, "files.mesh.schema"),  # schema needs format
        ("files.config.schema", {"type": "objekt"}, "files.config.schema"),
        ("files.config.schema", {"properties": {"a": {"minimum": "1"}}}, "files.config.schema"),
        ("files.config.schema", ["not", "a", "schema"], "files.config.schema"),
        ("files.mesh.env", "LD_PRELOAD", "files.mesh.env"),
        ("files.mesh.env", "PATH", "files.mesh.env"),
        ("files.mesh.env", "lower", "files.mesh.env"),
        ("files.mesh.env", "EXTRA_FILES", "files.extra.env"),  # two slots, one variable
        ("files.Mesh", {"pattern": "*"}, "files.Mesh"),
        ("outputs", "*.vtk", "outputs"),
        ("outputs", ["/etc/*"], "outputs.0"),
        ("outputs", ["ok", "../up/*"], "outputs.1"),
        ("outputs", ["a//b"], "outputs.0"),
        ("outputs", ["[x"], "outputs.0"),
    ],
)
def test_bad_new_keys_are_named(cfg: Config, path: str, value: Any, field: str) -> None:
    with pytest.raises(TemplateError) as err:
        parse_template("s", with_(path, value), cfg)
    assert err.value.field == field, err.value


def test_gpu_type_needs_gpus(cfg: Config) -> None:
    data = with_("resources.gpus", ...)
    with pytest.raises(TemplateError) as err:
        parse_template("s", data, cfg)
    assert err.value.field == "gpu_type"


def test_sizes_and_globs() -> None:
    assert parse_size(1234) == 1234
    assert parse_size("500MB") == 500_000_000
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size("1.5 KiB") == 1536
    assert parse_size("10kb") == 10_000
    assert parse_size("12") == 12
    assert parse_size(True) is None and parse_size("5 MBs") is None and parse_size(1.5) is None
    assert glob_problem("*.[ch]", allow_slash=False, max_chars=128) is None
    assert glob_problem("[]]x", allow_slash=False, max_chars=128) is None
    assert glob_problem("[!]x", allow_slash=False, max_chars=128) is not None
    assert glob_problem("a\\*", allow_slash=False, max_chars=128) is not None
    assert glob_problem("a\x00", allow_slash=False, max_chars=128) is not None


# ---------------------------------------------------------------- references


def test_template_refs() -> None:
    assert parse_ref("hello") == TemplateRef("hello")
    assert parse_ref("~alice/my-solver.v2") == TemplateRef("my-solver.v2", "alice")
    assert str(parse_ref("~alice/x")) == "~alice/x" and parse_ref("~alice/x").is_user
    for bad in ("~alice", "~/x", "~alice/", "alice/x", "~al ice/x", "~a/b/c", "", 5, "../x"):
        with pytest.raises(ValidationError) as err:
            parse_ref(bad)
        assert err.value.field == "template"


def test_job_request_takes_user_refs_versions_and_tasks() -> None:
    cfg = Config()
    req = validate_job_request(
        {"template": "~alice/foo", "template_version": 3, "nodes": 2, "ntasks": 8}, cfg
    )
    assert (req.template, req.template_version, req.nodes, req.ntasks) == ("~alice/foo", 3, 2, 8)
    for body, field in (
        ({"template": "~alice"}, "template"),
        ({"template": "x", "template_version": 0}, "template_version"),
        ({"template": "x", "template_version": "2"}, "template_version"),
        ({"image": "i", "command": ["x"], "template_version": 2}, "template_version"),
        ({"template": "x", "nodes": 65}, "nodes"),
        ({"template": "x", "ntasks_per_node": 0}, "ntasks_per_node"),
    ):
        with pytest.raises(ValidationError) as err:
            validate_job_request(body, cfg)
        assert err.value.field == field, body


# ---------------------------------------------------------------- visibility


def test_visibility_rule() -> None:
    assert may_see("alice", "private", [], "alice", [])
    assert not may_see("alice", "private", ["physics"], "bob", ["physics"])
    assert may_see("alice", "groups", ["physics"], "bob", ["chem", "physics"])
    assert not may_see("alice", "groups", ["physics"], "bob", ["chem"])
    assert not may_see("alice", "groups", [], "bob", [])


def test_sharing_only_with_own_groups() -> None:
    alice = Identity("alice", ("physics", "chem"))
    assert check_sharing(alice, "private", None) == ("private", [])
    assert check_sharing(alice, "groups", ["physics", "physics"]) == ("groups", ["physics"])
    for vis, groups, field in (
        ("public", None, "visibility"),
        ("groups", [], "groups"),
        ("groups", ["astro"], "groups"),
        ("private", ["physics"], "groups"),
        ("groups", "physics", "groups"),
    ):
        with pytest.raises(ValidationError) as err:
            check_sharing(alice, vis, groups)
        assert err.value.field == field


def test_user_definition_rules(cfg: Config) -> None:
    ok = {"image": "compute", "command": ["x"]}
    assert parse_user_definition(cfg, "t", ok).image == "compute"
    for data, field in (
        ({"command": ["x"]}, "definition.image"),  # host command
        ({**ok, "groups": ["physics"]}, "definition.groups"),
        ({**ok, "version": "2"}, "definition.version"),
        ({**ok, "colour": 1}, "definition.colour"),
        ({**ok, "parameters": {"n": {"type": "int", "max": "x"}}}, "definition.parameters.n.max"),
        ({**ok, "files": {"m": {"pattern": "[x"}}}, "definition.files.m.pattern"),
        ([], "definition"),
    ):
        with pytest.raises(ValidationError) as err:
            parse_user_definition(cfg, "t", data)
        assert err.value.field == field, data
    cfg.jobs.allow_host_commands = True
    assert parse_user_definition(cfg, "t", {"command": ["x"]}).image is None


def test_library_filters(cfg: Config) -> None:
    t = parse_template("solver", BASE, cfg)
    assert matches(t) and matches(t, category="cfd") and matches(t, tag="MESH")
    assert matches(t, q="SOLV") and matches(t, q="openf") and matches(t, q="The sol")
    assert not matches(t, category="fem") and not matches(t, tag="me")
    assert not matches(t, q="abaqus")
