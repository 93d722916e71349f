"""Config loading: defaults, unknown keys and bad types are errors that name the key."""

from pathlib import Path

import pytest

from vizdesk.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_defaults_are_valid() -> None:
    cfg = load_config(None)
    assert cfg.node.port_min <= cfg.node.port_max
    assert cfg.auth.algorithms == ["HS256"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("server: {prot: 1}", "server: unknown key"),
        ("server: {port: '80'}", "server.port"),
        ("auth: {algorithms: [none]}", "auth.algorithms"),
        ("node: {port_min: 6000, port_max: 5000}", "node.port_min"),
        ("slurm: {submit_prefix: [sudo, -n]}", "{user}"),
        ("policy: {groups: {'*': {max_gpus: x}}}", "policy.groups.*.max_gpus"),
        ("[1, 2", "not valid YAML"),
        ("images: {cache_ttl_seconds: 0}", "images.cache_ttl_seconds"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert needle in str(err.value)


def test_policy_groups_parse(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "policy: {groups: {cae: {max_gpus: 2}}}"))
    assert cfg.policy.groups["cae"].max_gpus == 2


def test_lenient_loading_for_nodes_ignores_unknown_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "redis: {some_future_key: 1}\nnode: {port_min: 6000, port_max: 6100}")
    with pytest.raises(ConfigError):
        load_config(path)
    cfg = load_config(path, strict=False)
    assert cfg.node.port_min == 6000
