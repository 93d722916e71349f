"""docs/configuration.md documents every key of daemon/vizdesk/config.py, with its default.

Fails when a key is added to config.py without documentation, when the docs list a key
that does not exist any more, or when a documented default differs from the code.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path
from typing import Any

from vizdesk import config as config_mod

from .conftest import REPO

DOC = REPO / "docs" / "configuration.md"
ROW_RE = re.compile(r"^\|\s*`([a-z_][a-z0-9_.<>]*)`\s*\|\s*`(.*?)`\s*\|(.*)\|\s*$", re.M)
# Defaults that depend on where the code lives: documented with a placeholder.
COMPUTED = {
    "sessions.jobscript": ("<repo>/", config_mod.REPO_ROOT),
    "jobs.templates_dir": ("<repo>/", config_mod.REPO_ROOT),
}


def config_keys() -> dict[str, Any]:
    """Every YAML key of the config, dotted, with its default value.

    A mapping of group name -> dataclass (policy.groups) is written ``policy.groups.<group>.``.
    """
    keys: dict[str, Any] = {}

    def walk(cls: type[Any], prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        inst = cls()
        for f in dataclasses.fields(cls):
            if f.name == "path" and cls is config_mod.Config:
                continue  # set by the loader, not a YAML key
            hint = hints[f.name]
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(hint):
                walk(typing.cast(type[Any], hint), key + ".")
                continue
            args = typing.get_args(hint)
            if typing.get_origin(hint) is dict and args and dataclasses.is_dataclass(args[1]):
                walk(typing.cast(type[Any], args[1]), key + ".<group>.")
                continue
            keys[key] = getattr(inst, f.name)

    walk(config_mod.Config, "")
    return keys


def documented() -> dict[str, str]:
    rows = ROW_RE.findall(DOC.read_text())
    out: dict[str, str] = {}
    for key, default, _meaning in rows:
        assert key not in out, f"{key} documented twice"
        out[key] = default
    return out


def test_the_walker_sees_all_sections() -> None:
    keys = config_keys()
    sections = {k.split(".")[0] for k in keys}
    expected = {f.name for f in dataclasses.fields(config_mod.Config)} - {"path"}
    assert sections == expected
    assert "policy.groups.<group>.max_gpus" in keys
    assert "server.port" in keys


def test_every_config_key_is_documented() -> None:
    missing = sorted(set(config_keys()) - set(documented()))
    assert not missing, f"keys of config.py missing in docs/configuration.md: {missing}"


def test_no_documented_key_is_stale() -> None:
    stale = sorted(set(documented()) - set(config_keys()))
    assert not stale, f"docs/configuration.md documents keys config.py does not have: {stale}"


def test_documented_defaults_match_the_code() -> None:
    docs = documented()
    wrong = []
    for key, value in config_keys().items():
        cell = docs.get(key)
        if cell is None:
            continue  # reported by test_every_config_key_is_documented
        if key in COMPUTED:
            placeholder, root = COMPUTED[key]
            cell_value = json.loads(cell).replace(placeholder, f"{root}/")
            if Path(cell_value) != Path(value):
                wrong.append((key, cell, value))
            continue
        try:
            parsed = json.loads(cell)
        except json.JSONDecodeError:
            wrong.append((key, cell, value))
            continue
        if parsed != value or (
            type(parsed) is not type(value)
            and not (isinstance(value, float) and isinstance(parsed, int | float))
        ):
            wrong.append((key, cell, value))
    assert not wrong, "documented default differs from config.py: " + "; ".join(
        f"{k}: docs {c} vs code {json.dumps(v)}" for k, c, v in wrong
    )


def test_every_row_has_a_meaning() -> None:
    for key, _default, meaning in ROW_RE.findall(DOC.read_text()):
        assert len(meaning.strip()) > 10, key


def test_the_documented_example_policy_loads(tmp_path: Path) -> None:
    """The YAML examples in the reference are valid configs."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert blocks
    for i, block in enumerate(blocks):
        path = tmp_path / f"example{i}.yaml"
        path.write_text(block)
        config_mod.load_config(str(path))
