"""Every role variable is documented in the role's README (defaults/main.yml is the source)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .conftest import REPO

ROLES = sorted(p for p in (REPO / "ansible" / "roles").iterdir() if p.is_dir())


def test_there_are_the_four_roles() -> None:
    assert [r.name for r in ROLES] == ["slurm_partition", "vizdesk", "vizdesk_head", "vizdesk_node"]


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_variables_are_documented(role: Path) -> None:
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    readme = (role / "README.md").read_text()
    missing = sorted(v for v in defaults if f"`{v}`" not in readme)
    assert not missing, f"{role.name}/README.md does not document {missing}"
    # and the README documents nothing that does not exist
    for line in readme.splitlines():
        if line.startswith("| `"):
            for name in line.split("|")[1].replace("`", "").split(","):
                assert name.strip() in defaults, f"{role.name}: stale {name.strip()}"
