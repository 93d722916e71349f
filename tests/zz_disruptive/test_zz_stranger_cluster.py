"""The test bed beside an unrelated Slurm, munge and Redis on the same host.

Runs last (it takes the test bed down and up again). It starts a stranger's cluster the
way an admin's or a package's would run — munged on the default socket when that is free,
a slurmctld and slurmd on the very ports the test bed was using, a password-less Redis on
the test bed's Redis port — and then proves that ``testbed.sh up`` comes up beside it on
other ports with its own munge socket, that a real desktop works on it, and that neither
``up`` nor ``down`` stops or signals any of the stranger's processes.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests import conftest
from tests.conftest import REPO, TESTBED_DIR, read_env, start_daemon, stop_daemon

pytestmark = pytest.mark.e2e

TESTBED = REPO / "testbed" / "testbed.sh"
DEFAULT_MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


def run_testbed(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TESTBED), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_pid(path: Path, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip().isdigit():
            return int(path.read_text().strip())
        time.sleep(0.1)
    raise AssertionError(f"no pid file {path}")


def wait_until(pred, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Stranger:
    """Another cluster on this host: munged, slurmctld, slurmd and Redis of its own."""

    dir: Path
    ctld_port: int
    slurmd_port: int
    redis_port: int
    munge_socket: Path = field(init=False)
    run_dir_was: tuple[int, int, int] | None = None  # mode, uid, gid of the socket's dir
    pids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The default socket, as Debian's munge package uses it, unless a real one runs.
        default_free = not DEFAULT_MUNGE_SOCKET.exists()
        self.munge_socket = DEFAULT_MUNGE_SOCKET if default_free else self.dir / "munge.sock"

    @property
    def conf(self) -> Path:
        return self.dir / "slurm.conf"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        d = self.dir
        munge = pwd.getpwnam("munge")
        slurm = pwd.getpwnam("slurm")
        d.chmod(0o755)
        for sub, owner in (("munge", munge), ("state", slurm), ("spool", None), ("log", slurm)):
            p = d / sub
            p.mkdir(mode=0o700 if sub == "munge" else 0o755)
            if owner:
                os.chown(p, owner.pw_uid, owner.pw_gid)
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chown(key, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)
        run_dir = self.munge_socket.parent
        if run_dir.exists():  # a package made it; its mode differs between machines (0700)
            st = run_dir.stat()
            self.run_dir_was = (st.st_mode & 0o7777, st.st_uid, st.st_gid)
        run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chown(run_dir, munge.pw_uid, munge.pw_gid)
        run_dir.chmod(0o755)  # munged wants the socket's directory searchable by all
        subprocess.run(
            ["runuser", "-u", "munge", "--", "/usr/sbin/munged", f"--socket={self.munge_socket}",
             f"--key-file={key}", f"--pid-file={d}/munge/munged.pid",
             f"--seed-file={d}/munge/munged.seed", f"--log-file={d}/munge/munged.log"],
            check=True, timeout=30,
        )  # fmt: skip
        self.pids["munged"] = read_pid(d / "munge" / "munged.pid")
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(
            f"""ClusterName=stranger
SlurmctldHost={host}
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmdParameters=config_overrides
ReturnToService=2
NodeName=strangernode NodeHostname={host} NodeAddr=127.0.0.1 CPUs=1 RealMemory=512 State=UNKNOWN
PartitionName=other Nodes=strangernode Default=YES MaxTime=INFINITE State=UP
"""
        )
        self.conf.chmod(0o644)
        subprocess.run(["slurmctld", "-f", str(self.conf)], env=self.env(), check=True, timeout=30)
        self.pids["slurmctld"] = read_pid(d / "slurmctld.pid")
        subprocess.run(
            ["slurmd", "-f", str(self.conf), "-N", "strangernode"],
            env=self.env(), check=True, timeout=30,
        )  # fmt: skip
        self.pids["slurmd"] = read_pid(d / "slurmd.pid")
        redis = pwd.getpwnam("redis")
        (d / "redis").mkdir(mode=0o755)
        os.chown(d / "redis", redis.pw_uid, redis.pw_gid)  # its pid file, dir and log
        subprocess.run(
            ["runuser", "-u", "redis", "--", "redis-server", "--port", str(self.redis_port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "yes",
             "--pidfile", f"{d}/redis/redis.pid", "--dir", f"{d}/redis",
             "--logfile", f"{d}/redis/redis.log"],
            check=True, timeout=30,
        )  # fmt: skip
        self.pids["redis-server"] = read_pid(d / "redis" / "redis.pid")
        wait_until(self.ctld_up, "the stranger's slurmctld")
        wait_until(lambda: listening(self.redis_port), "the stranger's Redis")

    def ctld_up(self) -> bool:
        out = subprocess.run(
            ["scontrol", "ping"], env=self.env(), capture_output=True, text=True, timeout=20
        )
        return "is UP" in out.stdout

    def munge_ok(self) -> bool:
        enc = subprocess.run(
            ["munge", f"--socket={self.munge_socket}", "-n"], capture_output=True, timeout=10
        )
        dec = subprocess.run(
            ["unmunge", f"--socket={self.munge_socket}"],
            input=enc.stdout, capture_output=True, timeout=10,
        )  # fmt: skip
        return enc.returncode == 0 and dec.returncode == 0

    def redis_ok(self) -> bool:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.redis_port), "ping"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return out.stdout.strip() == "PONG"

    def assert_untouched(self) -> None:
        for name, pid in self.pids.items():
            assert alive(pid), f"the stranger's {name} (pid {pid}) was stopped"
        assert self.ctld_up(), "the stranger's slurmctld no longer answers"
        assert self.munge_ok(), "the stranger's munged no longer answers"
        assert self.redis_ok(), "the stranger's Redis no longer answers"

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "redis-server", "munged"):
            pid = self.pids.get(name)
            if pid and alive(pid):
                os.kill(pid, 15)
        for pid in self.pids.values():
            deadline = time.monotonic() + 15
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(pid):
                os.kill(pid, 9)
        if self.munge_socket == DEFAULT_MUNGE_SOCKET:
            for p in (DEFAULT_MUNGE_SOCKET, Path(f"{DEFAULT_MUNGE_SOCKET}.lock")):
                p.unlink(missing_ok=True)
        if self.run_dir_was is not None:  # as the machine had it
            mode, uid, gid = self.run_dir_was
            os.chown(self.munge_socket.parent, uid, gid)
            self.munge_socket.parent.chmod(mode)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def stranger(testbed: conftest.Testbed) -> Iterator[Stranger]:
    """Take the test bed down and start a stranger's cluster on the ports it was using."""
    if shutil.which("munged") is None and not Path("/usr/sbin/munged").exists():
        pytest.fail("munged missing: the test bed installs it")
    env = read_env(TESTBED_DIR / "env")
    down = run_testbed("down")
    assert down.returncode == 0, down.stderr
    s = Stranger(
        Path(tempfile.mkdtemp(prefix="vizdesk-stranger-", dir="/var/tmp")),
        ctld_port=int(env["SLURMCTLD_PORT"]),
        slurmd_port=int(env["SLURMD_PORT"]),
        redis_port=int(env["REDIS_PORT"]),
    )
    try:
        s.start()
        yield s
    finally:
        s.stop()
        # Back on the default ports for whatever runs after (ports are sticky otherwise).
        run_testbed("down")
        (TESTBED_DIR / "ports").unlink(missing_ok=True)
        up = run_testbed("up")
        assert up.returncode == 0, up.stderr


async def one_desktop(tb: conftest.Testbed) -> None:
    d = start_daemon(tb, "stranger", {})
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            h = d.headers("alice")
            async with http.post(f"{d.url}/api/v1/sessions", json={}, headers=h) as r:
                assert r.status == 201, await r.text()
                sid = (await r.json())["id"]
            deadline = time.monotonic() + 40
            state: dict[str, object] = {}
            while time.monotonic() < deadline:
                async with http.get(f"{d.url}/api/v1/sessions/{sid}", headers=h) as r:
                    state = await r.json()
                if state["state"] in ("READY", "FAILED", "ENDED"):
                    break
                await asyncio.sleep(0.2)
            assert state["state"] == "READY", state
            async with http.delete(f"{d.url}/api/v1/sessions/{sid}", headers=h) as r:
                assert r.status == 202
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                async with http.get(f"{d.url}/api/v1/sessions/{sid}", headers=h) as r:
                    if (await r.json())["state"] == "ENDED":
                        break
                await asyncio.sleep(0.2)
            else:
                pytest.fail("the desktop did not end")
    finally:
        stop_daemon(d)


async def test_testbed_comes_up_beside_a_strangers_cluster(stranger: Stranger) -> None:
    up = run_testbed("up")
    assert up.returncode == 0, f"testbed.sh up failed beside a stranger's cluster:\n{up.stderr}"
    env = read_env(TESTBED_DIR / "env")
    # Our ports moved off the stranger's, our munge socket is our own.
    assert int(env["SLURMCTLD_PORT"]) != stranger.ctld_port
    assert int(env["SLURMD_PORT"]) != stranger.slurmd_port
    assert int(env["REDIS_PORT"]) != stranger.redis_port
    assert env["MUNGE_SOCKET"].startswith(str(TESTBED_DIR))
    assert f"port {stranger.ctld_port} is taken" in up.stdout
    status = run_testbed("status")
    assert status.returncode == 0, status.stdout
    stranger.assert_untouched()

    # A job on our cluster runs as alice (through our munge, our slurmctld).
    res = subprocess.run(
        ["runuser", "-u", "alice", "--", "sbatch", "--wait", "--parsable", "--chdir=/tmp",
         "--output=/dev/null", "--time=1", "--wrap", "true"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "SLURM_CONF": env["SLURM_CONF"]},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    # ... and the stranger's cluster never saw it.
    sq = subprocess.run(
        ["squeue", "-h", "-o", "%i"], env=stranger.env(), capture_output=True, text=True
    )
    assert sq.stdout.strip() == "", sq.stdout

    # A real desktop end to end on the moved test bed.
    await one_desktop(conftest.Testbed(TESTBED_DIR, env))
    stranger.assert_untouched()

    # down stops only what the test bed started.
    down = run_testbed("down")
    assert down.returncode == 0, down.stderr
    stranger.assert_untouched()
    for key in ("SLURMCTLD_PIDFILE", "SLURMD_PIDFILE", "REDIS_PIDFILE", "MUNGED_PIDFILE"):
        pidfile = Path(env[key])
        if pidfile.is_file() and pidfile.read_text().strip().isdigit():
            pid = int(pidfile.read_text().strip())
            assert pid in stranger.pids.values() or not alive(pid), f"{key}: {pid} still runs"
