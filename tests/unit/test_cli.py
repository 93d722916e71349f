"""The `vizdesk` command line: config placement, token minting, config errors."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from vizdesk.cli import main


@pytest.fixture
def config(tmp_path: Path) -> Path:
    secret = tmp_path / "jwt"
    secret.write_text("s" * 48)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"auth: {{hs256_secret_file: {secret}}}\n")
    return cfg


@pytest.mark.parametrize("before", [True, False])
def test_config_before_or_after_subcommand(config: Path, before: bool, capsys) -> None:
    argv = (
        ["--config", str(config), "check-config"]
        if before
        else ["check-config", "--config", str(config)]
    )
    assert main(argv) == 0
    assert f"config OK ({config})" in capsys.readouterr().out


def test_token_is_verifiable(config: Path, capsys) -> None:
    assert (
        main(
            ["token", "--user", "alice", "--groups", "a,b", "--ttl", "60", "--config", str(config)]
        )
        == 0
    )
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, "s" * 48, algorithms=["HS256"], options={"verify_iss": False})
    assert claims["sub"] == "alice" and claims["groups"] == ["a", "b"]
    assert claims["exp"] - claims["iat"] == 60 and claims["jti"]


def test_bad_config_exits_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {port: nope}\n")
    assert main(["--config", str(bad), "check-config"]) == 2
    assert "server.port" in capsys.readouterr().err
