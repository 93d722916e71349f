"""Start-up sweep of what a killed earlier session of the same user left behind."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import psutil

from vizdesk.node import procs
from vizdesk.node.sweep import OWNER, PIDS, read_owner, sweep_stale, write_owner


def dead_proc_id() -> procs.ProcId:
    p = subprocess.Popen(["true"])
    ctime = psutil.Process(p.pid).create_time()
    p.wait()
    return (p.pid, ctime)


def make_dir(base: Path, sid: str, owner: procs.ProcId) -> Path:
    d = base / f"vizdesk-{secrets.token_hex(4)}"
    d.mkdir(mode=0o700)
    (d / OWNER).write_text(
        json.dumps({"session_id": sid, "pid": owner[0], "create_time": owner[1]})
    )
    return d


def test_dead_session_is_swept(tmp_path: Path) -> None:
    sid = secrets.token_hex(8)
    d = make_dir(tmp_path, sid, dead_proc_id())
    orphan = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        procs.write_record(d / PIDS, [psutil.Process(orphan.pid)])
        assert sweep_stale(tmp_path, grace=1.0) == [sid]
        assert orphan.wait(timeout=5) is not None
        assert not d.exists()
    finally:
        orphan.kill()
        orphan.wait()


def test_live_unknown_and_foreign_dirs_are_left_alone(tmp_path: Path) -> None:
    me = psutil.Process()
    live = make_dir(tmp_path, secrets.token_hex(8), (me.pid, me.create_time()))
    no_owner = tmp_path / "vizdesk-being-created"
    no_owner.mkdir()
    bad_sid = make_dir(tmp_path, "../../etc", dead_proc_id())
    other = tmp_path / "not-vizdesk"
    other.mkdir()
    (other / OWNER).write_text("{}")
    assert sweep_stale(tmp_path) == []
    assert live.exists() and no_owner.exists() and bad_sid.exists() and other.exists()


def test_owner_record(tmp_path: Path) -> None:
    sid = secrets.token_hex(8)
    write_owner(tmp_path, sid)
    owned = read_owner(tmp_path)
    assert owned is not None and owned[0] == sid
    assert owned[1] == (psutil.Process().pid, psutil.Process().create_time())
    assert oct((tmp_path / OWNER).stat().st_mode & 0o777) == "0o600"
