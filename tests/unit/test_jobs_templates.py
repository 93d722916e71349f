"""Job templates: the shipped examples parse; every invalid template key and every invalid
parameter value is refused with an error naming it; values are never spliced into strings."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from vizdesk.config import REPO_ROOT, Config
from vizdesk.core.validate import ValidationError
from vizdesk.jobs.templates import (
    TemplateError,
    TemplateRegistry,
    param_env,
    parse_template,
    validate_parameters,
)


@pytest.fixture
def cfg() -> Config:
    c = Config()
    c.slurm.partitions = ["viz", "batch"]
    c.slurm.default_partition = "viz"
    return c


BASE: dict[str, Any] = {
    "description": "test",
    "partition": "batch",
    "command": ["printf", "%s\n", "{message}"],
    "resources": {"cpus": {"default": 1, "max": 2}, "time_limit_minutes": 5},
    "parameters": {
        "message": {"type": "string", "required": True, "max_length": 20},
        "count": {"type": "int", "default": 2, "min": 1, "max": 10},
        "ratio": {"type": "float", "default": 0.5, "min": 0, "max": 1},
        "color": {"type": "enum", "choices": ["red", "green"], "default": "red"},
        "verbose": {"type": "bool", "default": False},
        "tag": {"type": "string", "pattern": "^[a-z]{1,8}$"},
    },
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """BASE with the dotted key ``path`` set to ``value`` (``...`` deletes it)."""
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


def test_shipped_templates_parse(cfg: Config) -> None:
    reg = TemplateRegistry(cfg)
    assert reg.directory == REPO_ROOT / "templates"
    names = [p.stem for p in sorted(reg.directory.glob("*.yaml"))]
    assert {"hello", "python-script"} <= set(names)
    for name in names:
        tmpl = parse_template(
            name, yaml.safe_load((reg.directory / f"{name}.yaml").read_text()), cfg
        )
        assert tmpl.name == name and tmpl.description
    hello = parse_template("hello", yaml.safe_load((reg.directory / "hello.yaml").read_text()), cfg)
    types = {p.type for p in hello.parameters.values()}
    assert {"int", "string"} <= types


def test_base_template_and_defaults(cfg: Config) -> None:
    t = parse_template("t", BASE, cfg)
    assert t.resources["cpus"].default == 1 and t.resources["cpus"].max == 2
    assert t.resources["time_limit_minutes"].default == t.resources["time_limit_minutes"].max == 5
    assert t.resources["gpus"].max == 0  # not mentioned: no GPUs
    values = validate_parameters(t, {"message": "hi"}, cfg)
    assert values == {"message": "hi", "count": 2, "ratio": 0.5, "color": "red", "verbose": False}
    assert t.argv(values) == ["printf", "%s\n", "hi"]
    env = param_env(t, values)
    assert env == {
        "VIZDESK_PARAM_MESSAGE": "hi",
        "VIZDESK_PARAM_COUNT": "2",
        "VIZDESK_PARAM_RATIO": "0.5",
        "VIZDESK_PARAM_COLOR": "red",
        "VIZDESK_PARAM_VERBOSE": "false",
    }


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (with_("unknown_key", 1), "unknown_key"),
        (with_("name", "other"), "name"),
        (with_("description", 3), "description"),
        (with_("partition", "gpu;rm"), "partition"),
        (with_("partition", "nothere"), "partition"),
        (with_("image", ""), "image"),
        (with_("app", "solver"), "app"),  # app without image
        (with_("mode", "shell"), "mode"),
        (with_("mode", "run"), "mode"),  # run without image
        (with_("command", "echo hi"), "command"),
        (with_("command", []), "command"),
        (with_("command", ["echo", 3]), "command"),
        (with_("command", ["echo", "a\x00b"]), "command"),
        (with_("command", ["echo", "hello {message}"]), "command"),  # spliced placeholder
        (with_("command", ["echo", "{tag}"]), "command"),  # optional, no default
        (with_("command", ...), "command"),  # neither command nor script
        ({**with_("script", "echo"), "command": ["x"]}, "command"),  # both
        ({**with_("command", ...), "script": ""}, "script"),
        ({**with_("command", ...), "script": "echo", "interpreter": []}, "interpreter"),
        (with_("interpreter", ["/bin/sh"]), "interpreter"),  # without script
        (with_("groups", "physics"), "groups"),
        (with_("resources", [1]), "resources"),
        (with_("resources.disk", 3), "resources.disk"),
        (with_("resources.cpus", {"default": 3, "max": 2}), "resources.cpus"),
        (with_("resources.cpus", {"default": 1, "max": "2"}), "resources.cpus.max"),
        (with_("resources.cpus", {"default": 1.5}), "resources.cpus.default"),
        (with_("resources.cpus", {"default": 1, "mx": 2}), "resources.cpus"),
        (with_("resources.cpus", {"default": 1, "max": 100000}), "resources.cpus.max"),
        (with_("resources.cpus", 0), "resources.cpus"),
        (with_("resources.cpus", "two"), "resources.cpus"),
        (with_("parameters", ["a"]), "parameters"),
        (with_("parameters.Bad-Name", {"type": "int"}), "parameters.Bad-Name"),
        (with_("parameters.x", "int"), "parameters.x"),
        (with_("parameters.x", {"type": "list"}), "parameters.x.type"),
        (with_("parameters.x", {"type": "int", "bogus": 1}), "parameters.x"),
        (with_("parameters.x", {"type": "int", "required": "yes"}), "parameters.x.required"),
        (with_("parameters.x", {"type": "int", "description": 1}), "parameters.x.description"),
        (with_("parameters.x", {"type": "int", "min": 1.5}), "parameters.x.min"),
        (with_("parameters.x", {"type": "float", "max": "9"}), "parameters.x.max"),
        (with_("parameters.x", {"type": "int", "min": 5, "max": 1}), "parameters.x"),
        (with_("parameters.x", {"type": "string", "min": 1}), "parameters.x"),
        (with_("parameters.x", {"type": "int", "pattern": "a"}), "parameters.x"),
        (with_("parameters.x", {"type": "string", "pattern": "("}), "parameters.x.pattern"),
        (with_("parameters.x", {"type": "string", "pattern": 5}), "parameters.x.pattern"),
        (with_("parameters.x", {"type": "string", "max_length": -1}), "parameters.x.max_length"),
        (with_("parameters.x", {"type": "enum"}), "parameters.x.choices"),
        (with_("parameters.x", {"type": "enum", "choices": []}), "parameters.x.choices"),
        (with_("parameters.x", {"type": "enum", "choices": [1]}), "parameters.x.choices"),
        (with_("parameters.x", {"type": "int", "choices": ["a"]}), "parameters.x.choices"),
        (with_("parameters.x", {"type": "int", "default": "1"}), "parameters.x.default"),
        (with_("parameters.x", {"type": "int", "default": 0, "min": 1}), "parameters.x.default"),
        (
            with_("parameters.x", {"type": "enum", "choices": ["a"], "default": "b"}),
            "parameters.x.default",
        ),
        (
            with_("parameters.x", {"type": "string", "pattern": "^a$", "default": "b"}),
            "parameters.x.default",
        ),
        (with_("parameters.x", {"type": "bool", "default": 1}), "parameters.x.default"),
        (
            with_("parameters.x", {"type": "int", "required": True, "default": 1}),
            "parameters.x.default",
        ),
    ],
)
def test_invalid_template_names_the_key(cfg: Config, data: dict[str, Any], field: str) -> None:
    with pytest.raises(TemplateError) as err:
        parse_template("t", data, cfg)
    assert err.value.field == field, str(err.value)
    assert err.value.template == "t"
    assert "'t'" in str(err.value) and field in str(err.value)


def test_not_a_mapping(cfg: Config) -> None:
    with pytest.raises(TemplateError):
        parse_template("t", ["a"], cfg)


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({}, "parameters.message", "missing_parameter"),
        ({"message": None}, "parameters.message", "missing_parameter"),
        ({"message": "x", "nope": 1}, "parameters.nope", "unknown_parameter"),
        ({"message": 5}, "parameters.message", "invalid_parameter"),
        ({"message": "x" * 21}, "parameters.message", "invalid_parameter"),
        ({"message": "a\x00b"}, "parameters.message", "invalid_parameter"),
        ({"message": "x", "count": "3"}, "parameters.count", "invalid_parameter"),
        ({"message": "x", "count": True}, "parameters.count", "invalid_parameter"),
        ({"message": "x", "count": 2.0}, "parameters.count", "invalid_parameter"),
        ({"message": "x", "count": 0}, "parameters.count", "invalid_parameter"),
        ({"message": "x", "count": 11}, "parameters.count", "invalid_parameter"),
        ({"message": "x", "count": 2**70}, "parameters.count", "invalid_parameter"),
        ({"message": "x", "ratio": "0.1"}, "parameters.ratio", "invalid_parameter"),
        ({"message": "x", "ratio": math.nan}, "parameters.ratio", "invalid_parameter"),
        ({"message": "x", "ratio": math.inf}, "parameters.ratio", "invalid_parameter"),
        ({"message": "x", "ratio": 1.5}, "parameters.ratio", "invalid_parameter"),
        ({"message": "x", "ratio": False}, "parameters.ratio", "invalid_parameter"),
        ({"message": "x", "color": "blue"}, "parameters.color", "invalid_parameter"),
        ({"message": "x", "color": 1}, "parameters.color", "invalid_parameter"),
        ({"message": "x", "verbose": "true"}, "parameters.verbose", "invalid_parameter"),
        ({"message": "x", "verbose": 1}, "parameters.verbose", "invalid_parameter"),
        ({"message": "x", "tag": "ABC"}, "parameters.tag", "invalid_parameter"),
        ({"message": "x", "tag": "abc\n"}, "parameters.tag", "invalid_parameter"),
    ],
)
def test_invalid_parameter_is_named(
    cfg: Config, params: dict[str, Any], field: str, code: str
) -> None:
    t = parse_template("t", BASE, cfg)
    with pytest.raises(ValidationError) as err:
        validate_parameters(t, params, cfg)
    assert (err.value.field, err.value.code) == (field, code)


def test_parameters_must_be_an_object(cfg: Config) -> None:
    t = parse_template("t", BASE, cfg)
    with pytest.raises(ValidationError) as err:
        validate_parameters(t, ["message"], cfg)
    assert err.value.field == "parameters"


def test_size_limits(cfg: Config) -> None:
    data = with_("parameters.message", {"type": "string", "required": True})
    t = parse_template("t", data, cfg)
    cfg.jobs.max_string_length = 100
    with pytest.raises(ValidationError) as err:
        validate_parameters(t, {"message": "x" * 101}, cfg)
    assert err.value.field == "parameters.message"
    cfg.jobs.max_string_length = 10_000
    cfg.jobs.max_param_bytes = 50
    with pytest.raises(ValidationError) as err:
        validate_parameters(t, {"message": "x" * 60}, cfg)
    assert err.value.field == "parameters"


HOSTILE = ["$(id)", "`id`", ";rm -rf /", "a\nb\n", "'\"\\", "${HOME}", "*", "-n", "", "é ∑"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_stay_whole(cfg: Config, value: str) -> None:
    t = parse_template("t", BASE, cfg)
    values = validate_parameters(t, {"message": value}, cfg)
    argv = t.argv(values)
    assert argv == ["printf", "%s\n", value]  # one element, verbatim
    assert param_env(t, values)["VIZDESK_PARAM_MESSAGE"] == value


def test_float_int_and_bool_normalised(cfg: Config) -> None:
    t = parse_template("t", BASE, cfg)
    values = validate_parameters(t, {"message": "m", "ratio": 1, "verbose": True}, cfg)
    assert values["ratio"] == 1.0 and isinstance(values["ratio"], float)
    env = param_env(t, values)
    assert env["VIZDESK_PARAM_RATIO"] == "1.0" and env["VIZDESK_PARAM_VERBOSE"] == "true"


def test_script_template_argv(cfg: Config) -> None:
    data = with_("command", ...)
    data["script"] = 'echo "$VIZDESK_PARAM_MESSAGE"\n'
    data["interpreter"] = ["/bin/sh"]
    t = parse_template("t", data, cfg)
    assert t.argv({"message": "$(id)"}) == ["/bin/sh", "-c", data["script"], "vizdesk-t"]


async def test_registry_get_unknown_invalid_and_reload(cfg: Config, tmp_path: Path) -> None:
    cfg.jobs.templates_dir = str(tmp_path)
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(with_("mode", "shell")))
    (tmp_path / "broken.yml").write_text("a: [")
    reg = TemplateRegistry(cfg)
    assert [t.name for t in await reg.all()] == ["good"]
    assert (await reg.get("good")).description == "test"
    for name in ("nope", "../etc/passwd", "good/..", ".hidden", "a" * 200):
        with pytest.raises(ValidationError) as err:
            await reg.get(name)
        assert (err.value.field, err.value.code) == ("template", "unknown_template")
    with pytest.raises(ValidationError) as err:
        await reg.get("bad")
    assert (err.value.field, err.value.code) == ("template", "invalid_template")
    assert "'bad'" in err.value.message and "mode" in err.value.message
    with pytest.raises(ValidationError) as err:
        await reg.get("broken")
    assert err.value.code == "invalid_template" and "YAML" in err.value.message
    # An edited file is re-read.
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(with_("description", "changed!")))
    os.utime(tmp_path / "good.yaml", ns=(1, 1))
    assert (await reg.get("good")).description == "changed!"
