"""Finding and ending a session's processes (tag in the environment, process tree)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import psutil

from vizdesk.contract.jobenv import ENV_SESSION_TAG
from vizdesk.node import procs


def spawn_tagged(sid: str, script: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, ENV_SESSION_TAG: sid}
    return subprocess.Popen(["sh", "-c", script], env=env, start_new_session=True)


def wait_until(cond, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_tagged_processes_found_even_when_double_forked() -> None:
    sid = secrets.token_hex(8)
    # The sleep is orphaned by its subshell: not our descendant, but tagged.
    p = spawn_tagged(sid, "(setsid sleep 300 &) ; exit 0")
    p.wait()
    assert wait_until(lambda: len(procs.tagged_processes(sid)) == 1)
    found = procs.tagged_processes(sid)
    assert found[0].name() == "sleep"
    assert procs.tagged_processes(secrets.token_hex(8)) == []
    # with_descendants=False: pytest's own children (e.g. the session's test daemon) are
    # not this test's to end.
    assert procs.terminate_session(sid, grace=1.0, with_descendants=False) == []
    assert procs.tagged_processes(sid) == []


def test_sigterm_ignoring_process_is_killed_after_grace() -> None:
    sid = secrets.token_hex(8)
    p = spawn_tagged(sid, "trap '' TERM; while :; do sleep 0.1; done")
    assert wait_until(lambda: bool(procs.tagged_processes(sid)))
    t0 = time.monotonic()
    left = procs.terminate_session(
        sid, grace=0.5, pgids=[p.pid], managed=[p.pid], with_descendants=False
    )
    p.wait(timeout=5)
    assert left == []
    assert p.returncode == -9  # SIGKILL, after the grace period
    assert time.monotonic() - t0 >= 0.5


REAP_SCRIPT = """
import subprocess, time, psutil
from vizdesk.node import procs
assert procs.set_child_subreaper()
subprocess.Popen(["sh", "-c", "sleep 0.2 & exit 0"]).wait()
time.sleep(0.6)  # the orphaned sleep was adopted by us and has exited: a zombie
before = [c for c in psutil.Process().children() if c.status() == psutil.STATUS_ZOMBIE]
procs.reap_zombie_children()
after = [c for c in psutil.Process().children() if c.status() == psutil.STATUS_ZOMBIE]
print(len(before), len(after))
"""


def test_adopted_orphans_are_reaped() -> None:
    # In a separate interpreter: a subreaper pytest would collect every test's orphans.
    out = subprocess.run(
        [sys.executable, "-c", REAP_SCRIPT], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["1", "0"]


def test_process_record_round_trip_and_pid_reuse(tmp_path: Path) -> None:
    p = subprocess.Popen(["sleep", "300"], start_new_session=True)  # untagged
    try:
        me = psutil.Process(p.pid)
        path = tmp_path / "pids"
        ids = procs.write_record(path, [me])
        assert ids == [(p.pid, me.create_time())]
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        assert procs.read_record(path) == ids
        assert [x.pid for x in procs.from_ids(ids)] == [p.pid]
        # Same pid, other start time (a reused pid): not ours.
        assert procs.from_ids([(p.pid, me.create_time() - 100)]) == []
        # Another user's process is never picked up.
        assert procs.from_ids(ids, uid=os.getuid() + 4242) == []
        # A recorded process is ended even without any tag or parentage.
        assert (
            procs.terminate_session(
                secrets.token_hex(8), grace=1.0, known=ids, with_descendants=False
            )
            == []
        )
        p.wait(timeout=5)
    finally:
        p.kill()
        p.wait()
    assert procs.read_record(tmp_path / "missing") == []
    (tmp_path / "bad").write_text("{nope")
    assert procs.read_record(tmp_path / "bad") == []
