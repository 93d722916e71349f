"""docs/troubleshooting.md covers every session state and every reason the daemon sets.

The reasons are collected from the source (tracker, spawner, registration checks) with
the ast module, so a new reason without an entry in the troubleshooting guide fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

from vizdesk.sessions.model import SessionState

from .conftest import REPO

DOC = REPO / "docs" / "troubleshooting.md"
PKG = REPO / "daemon" / "vizdesk"
SOURCES = [
    PKG / "sessions" / "advance.py",
    PKG / "sessions" / "spawner.py",
    PKG / "contract" / "registration.py",
    PKG / "core" / "submit.py",
    PKG / "core" / "tracked.py",
]
REASON_CALLS = {"_finish", "_apply", "move", "_fail"}


def _literal_prefix(node: ast.expr) -> str | None:
    """The constant text of a str or the leading constant part of an f-string."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def reasons_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def add(node: ast.expr | None) -> None:
        if node is None:
            return
        if isinstance(node, ast.IfExp):
            add(node.body)
            add(node.orelse)
            return
        text = _literal_prefix(node)
        if text and text.strip():
            found.add(text.strip().rstrip(":").strip())

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in REASON_CALLS:
                # the reason follows the state argument
                for i, arg in enumerate(node.args):
                    if isinstance(arg, ast.Attribute) and arg.attr in SessionState.__members__:
                        if i + 1 < len(node.args):
                            add(node.args[i + 1])
                if name == "_fail" and len(node.args) >= 2:
                    add(node.args[1])
            if name == "RegistrationRejected" and node.args:
                add(node.args[0])
            if name == "_fail_running" and len(node.args) >= 5:  # (..., what): "what: error"
                add(node.args[4])
        elif isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == "reason" for t in node.targets):
                add(node.value)
        elif isinstance(node, ast.Tuple):  # returned, or a row of an outcome table
            elts = node.elts
            if len(elts) == 2 and isinstance(elts[0], ast.Attribute):
                add(elts[1])
    # pieces that are glue, not reasons
    return {r for r in found if len(r) > 3 and not r.startswith(("(", "{"))}


def test_reason_collection_finds_the_known_ones() -> None:
    reasons = set().union(*(reasons_in(p) for p in SOURCES))
    for known in (
        "desktop did not start in time",
        "registration rejected",
        "time limit reached",
        "scheduler unreachable",
    ):
        assert known in reasons, sorted(reasons)
    assert len(reasons) >= 20, sorted(reasons)


def test_every_reason_has_an_entry() -> None:
    doc = DOC.read_text()
    missing = sorted(r for p in SOURCES for r in reasons_in(p) if r not in doc)
    assert not missing, f"reasons without an entry in docs/troubleshooting.md: {missing}"


def test_every_state_has_an_entry() -> None:
    doc = DOC.read_text()
    for state in SessionState:
        assert f"| `{state.value}` |" in doc, state


def test_slurm_pending_reasons_and_degraded_readiness() -> None:
    doc = DOC.read_text()
    for reason in ("Resources", "Priority", "ReqNodeNotAvail", "PartitionDown"):
        assert f"`queued: {reason}" in doc, reason
    assert "## Degraded readiness" in doc
