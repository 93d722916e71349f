"""The import rules of daemon/vizdesk/, read from the source with ``ast``.

Layers, top to bottom (a module may import only its own package or a lower layer):
entry points (__main__ → cli → server) → api → tracker → sessions | jobs →
auth | images | proxy | files → core → slurm | contract → config | logsetup | metrics.
Besides: only api/ imports aiohttp.web; node/ imports only config, contract/ and
itself; sessions/ and jobs/ never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "daemon" / "vizdesk"

LAYERS: list[set[str]] = [
    {"__main__", "__init__"},
    {"cli"},
    {"server"},
    {"api"},
    {"tracker"},
    {"sessions", "jobs"},
    {"auth", "images", "proxy", "files"},
    {"core"},
    {"slurm", "contract"},
    {"config", "logsetup", "metrics"},
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}
NODE_MAY_IMPORT = {"node", "config", "contract"}


def unit_of(module: str) -> str:
    """vizdesk.sessions.model → sessions; vizdesk.tracker → tracker."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1] if len(parts) > 2 else [*parts[:-1], "__init__"]
    return ".".join(parts)


def imports_of(path: Path) -> list[str]:
    """Every module ``path`` imports (absolute names; TYPE_CHECKING imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    elif package[-1] == "__init__":
        package = package[:-1]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append(target)
            # `from . import rfb`, `from aiohttp import web`: the names may be modules
            found += [f"{target}.{a.name}" for a in node.names]
    return found


def sources() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def violations(path: Path, imported: list[str]) -> list[str]:
    me = unit_of(module_name(path))
    out = []
    for target in imported:
        if target == "aiohttp.web" and me != "api":
            out.append(f"{target}: only api/ may import aiohttp.web")
        if not target.startswith("vizdesk.") and target != "vizdesk":
            continue
        other = unit_of(target)
        if other not in LAYER_OF:  # a name imported from a module, not a module
            continue
        if other == me:
            continue
        if me == "node":
            if other not in NODE_MAY_IMPORT:
                out.append(f"{target}: node/ imports only config, contract/ and node/")
            continue
        if other == "node":
            if me != "cli":
                out.append(f"{target}: only the CLI starts the node wrapper")
            continue
        if {me, other} == {"sessions", "jobs"}:
            out.append(f"{target}: sessions/ and jobs/ never import each other")
        elif LAYER_OF[other] <= LAYER_OF[me]:
            out.append(f"{target}: {me} may import only lower layers, not {other}")
    return out


def test_the_scan_sees_the_package() -> None:
    names = {module_name(p) for p in sources()}
    assert {"vizdesk.api.app", "vizdesk.core.store", "vizdesk.node.wrapper"} <= names
    assert "vizdesk.core.errors" in imports_of(PKG / "core" / "validate.py")
    assert "vizdesk.proxy.rfb" in imports_of(PKG / "proxy" / "bridge.py")


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(module_name(p)) for p in sources()} - {"node"}
    assert units <= set(LAYER_OF), units - set(LAYER_OF)


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_run_downward(path: Path) -> None:
    assert violations(path, imports_of(path)) == []


def test_the_rules_catch_a_break() -> None:
    """The checker itself: each rule flags what it forbids."""
    sessions = PKG / "sessions" / "model.py"
    assert violations(sessions, ["vizdesk.jobs.model"])  # twins
    assert violations(sessions, ["vizdesk.api.base"])  # upward
    assert violations(sessions, ["aiohttp.web"])  # web framework outside api/
    assert violations(PKG / "core" / "store.py", ["vizdesk.auth.types"])  # upward
    assert violations(PKG / "contract" / "keys.py", ["vizdesk.core.records"])  # sideways up
    assert violations(PKG / "node" / "gpu.py", ["vizdesk.slurm.base"])  # node's limits
    assert not violations(PKG / "node" / "gpu.py", ["vizdesk.contract.keys", "vizdesk.config"])
    assert not violations(PKG / "api" / "app.py", ["aiohttp.web", "vizdesk.tracker"])
