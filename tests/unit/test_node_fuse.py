"""node/fuse.py: is FUSE usable for this user, and when to ask Apptainer for --unsquash."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from vizdesk.node.fuse import FuseCheck, check_fuse, wants_unsquash


def test_missing_device_is_not_usable(tmp_path: Path) -> None:
    check = check_fuse(str(tmp_path / "fuse"))
    assert not check.usable
    assert "does not exist on this node" in check.reason


def test_openable_device_is_usable(tmp_path: Path) -> None:
    dev = tmp_path / "fuse"
    dev.write_bytes(b"")
    assert check_fuse(str(dev)) == FuseCheck(True, "")


def test_unopenable_device_names_the_error(tmp_path: Path) -> None:
    check = check_fuse(str(tmp_path))  # a directory cannot be opened read-write
    assert not check.usable
    assert "cannot be opened" in check.reason and str(tmp_path) in check.reason


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another uid")
def test_root_only_device_is_not_usable_for_a_user() -> None:
    """The mode a site's /dev/fuse has when only root may use FUSE (crw------- root)."""
    here = Path(tempfile.mkdtemp(prefix="vizdesk-fuse-", dir="/tmp"))  # others may enter
    here.chmod(0o755)
    dev = here / "fuse"
    dev.write_bytes(b"")
    dev.chmod(0o600)
    code = (
        "import json, sys; from vizdesk.node.fuse import check_fuse; "
        "c = check_fuse(sys.argv[1]); print(json.dumps([c.usable, c.reason]))"
    )
    out = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-c", code, str(dev)],
        capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    shutil.rmtree(here)
    usable, reason = json.loads(out.stdout)
    assert usable is False
    assert reason == f"{dev} (-rw------- root) is not accessible to this user"


@pytest.mark.parametrize(
    ("mode", "usable", "want"),
    [
        ("auto", True, False),
        ("auto", False, True),
        ("always", True, True),
        ("always", False, True),
        ("never", True, False),
        ("never", False, False),
    ],
)
def test_wants_unsquash(mode: str, usable: bool, want: bool) -> None:
    assert wants_unsquash(mode, FuseCheck(usable, "" if usable else "x")) is want
