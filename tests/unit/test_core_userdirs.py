"""core/userdirs.py: output directories other users cannot write or plant into."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vizdesk.core.userdirs import OutputDirError, ensure_user_dir, shared_dir_problem


def test_shared_dir_problem(tmp_path: Path) -> None:
    assert shared_dir_problem("") is None
    assert shared_dir_problem(str(tmp_path / "missing")) is None
    assert shared_dir_problem(str(tmp_path / "{user}")) is None  # per user: checked later
    tmp_path.chmod(0o755)
    assert shared_dir_problem(str(tmp_path)) is None
    tmp_path.chmod(0o1777)
    problem = shared_dir_problem(str(tmp_path))
    assert problem and "writable by other users (mode 1777)" in problem
    tmp_path.chmod(0o775)
    assert shared_dir_problem(str(tmp_path))
    f = tmp_path / "file"
    f.write_text("")
    assert shared_dir_problem(str(f)) == f"{f} is not a directory"


@pytest.mark.skipif(os.geteuid() != 0, reason="creates directories for another uid")
def test_ensure_user_dir_creates_and_checks(tmp_path: Path) -> None:
    template = f"{tmp_path}/out/{{user}}"
    path = ensure_user_dir(template, "alice", 4242, 4243)
    st = os.lstat(path)
    assert path == f"{tmp_path}/out/alice"
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (4242, 4243, 0o700)
    assert ensure_user_dir(template, "alice", 4242, 4243) == path  # idempotent
    with pytest.raises(OutputDirError, match="not owned by bob"):
        ensure_user_dir(f"{tmp_path}/out/alice", "bob", 4244, 4244)
    os.chmod(path, 0o770)
    with pytest.raises(OutputDirError, match="writable by other users"):
        ensure_user_dir(template, "alice", 4242, 4243)
    # a planted symlink is never followed
    os.symlink("/etc", f"{tmp_path}/out/carol")
    with pytest.raises(OutputDirError, match="symlink"):
        ensure_user_dir(template, "carol", 4245, 4245)
