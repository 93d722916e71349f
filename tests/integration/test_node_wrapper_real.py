"""The real compute-node wrapper: real TigerVNC Xvnc, real redis-server with ACL users.

Each test runs ``python -m vizdesk.node.wrapper`` as a subprocess with the job
environment the daemon would give it, against a private redis-server (``requirepass``
plus a per-session ACL user created the way the daemon does), and checks what the
daemon and the user rely on: the registration, the VNC password, the ACL scope, and
that every process and file is gone after a signal, a crash of Xvnc, a logout, or a
SIGKILL of the wrapper itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
import yaml

from tests.helpers.rfb_client import RfbAuthFailed, TcpStream, full_framebuffer, handshake
from vizdesk.contract.jobenv import ENV_SESSION_TAG
from vizdesk.contract.keys import Keys
from vizdesk.node.probe import is_rfb3, rfb_banner

pytestmark = pytest.mark.skipif(
    not (shutil.which("Xvnc") and shutil.which("redis-server") and shutil.which("xterm")),
    reason="needs Xvnc (TigerVNC), redis-server and xterm",
)

REPO = Path(__file__).resolve().parents[2]
PREFIX = "vztest-node:"
VNC_PORT_MIN, VNC_PORT_MAX = 15900, 15999
REDIS_PORTS = range(16400, 16500)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class RedisServer:
    port: int
    password: str
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def admin(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, decode_responses=True
        )

    def start(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--requirepass", self.password, "--save", "", "--appendonly", "no",
                "--dir", str(workdir), "--daemonize", "no", "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                if self.admin().ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def create_session_user(
        self, sid: str, key: str, password: str | None = None
    ) -> tuple[str, str]:
        """The per-session ACL user, as the daemon creates it."""
        user = Keys.acl_user(sid)
        pw = password or secrets.token_urlsafe(24)
        rules = ["reset", "on", f">{pw}", f"~{key}", "resetchannels", "-@all",
                 "+get", "+set", "+del", "+expire", "+ping"]  # fmt: skip
        admin = self.admin()
        try:  # CLIENT SETINFO exists from Redis 7.2 on; 7.0 rejects the rule
            admin.execute_command("ACL", "SETUSER", user, *rules, "+client|setinfo")
        except redis.ResponseError:
            admin.execute_command("ACL", "SETUSER", user, *rules)
        return user, pw


def _unused_redis_port() -> int:
    ports = list(REDIS_PORTS)
    secrets.SystemRandom().shuffle(ports)
    for port in ports:
        if _free(port):
            return port
    raise RuntimeError("no free port in 16400-16499")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(_unused_redis_port(), secrets.token_hex(16))
    server.start(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@dataclass
class Wrapper:
    proc: subprocess.Popen[bytes]
    sid: str
    key: str
    user: str
    password: str
    tmpdir: Path
    log_path: Path
    t_exec: float
    redis: RedisServer
    extra: dict[str, Any] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
        return out

    def registration(self) -> dict[str, Any] | None:
        raw = self.redis.admin().get(self.key)
        return json.loads(raw) if raw else None

    def wait_registration(self, timeout: float = 30.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            reg = self.registration()
            if reg is not None:
                return reg
            if self.proc.poll() is not None:
                raise AssertionError(f"wrapper exited {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"no registration after {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"wrapper still running after {timeout}s:\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for p in tagged(self.sid):
            p.kill()


def tagged(sid: str) -> list[psutil.Process]:
    """Live processes (any user) carrying the session's tag."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get(ENV_SESSION_TAG) == sid:
                out.append(p)
        except psutil.Error:
            continue
    return out


def wait_gone(sid: str, pids: list[int], timeout: float = 10.0) -> list[int]:
    """Wait until no tagged process and none of ``pids`` is alive; return survivors."""
    end = time.monotonic() + timeout
    while True:
        alive = {p.pid for p in tagged(sid)}
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.add(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > end:
            return sorted(alive)
        time.sleep(0.05)


def start_wrapper(
    redis_server: RedisServer,
    tmp_path: Path,
    *,
    desktop: list[str] | None = None,
    node: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    driver: str | None = None,
    argv: list[str] | None = None,
    redis_url: str | None = None,
    create_user: bool = True,
    ttl: int = 10,
    jobtmp: Path | None = None,
    python: str = sys.executable,
) -> Wrapper:
    sid = secrets.token_hex(8)
    key = Keys(PREFIX).registration(sid)
    if create_user:
        user, pw = redis_server.create_session_user(sid, key)
    else:
        user, pw = Keys.acl_user(sid), secrets.token_urlsafe(24)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=tmp_path))
    run_dir.chmod(0o755)
    tmpdir = jobtmp or run_dir / "jobtmp"
    tmpdir.mkdir(exist_ok=True)
    tmpdir.chmod(0o1777)  # like /tmp: the test user may run the wrapper
    cfg = {
        "redis": {"key_prefix": PREFIX},
        "node": {
            "port_min": VNC_PORT_MIN,
            "port_max": VNC_PORT_MAX,
            "desktop_command": desktop or ["xterm"],
            "heartbeat_interval_seconds": 0.5,
            "startup_timeout_seconds": 15,
            **(node or {}),
        },
    }
    cfg_path = run_dir / "vizdesk.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    job_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VIZDESK_")},
        "VIZDESK_SESSION_ID": sid,
        "VIZDESK_CONFIG": str(cfg_path),
        "VIZDESK_REDIS_URL": redis_url or redis_server.url,
        "VIZDESK_REDIS_USERNAME": user,
        "VIZDESK_REDIS_PASSWORD": pw,
        "VIZDESK_REG_KEY": key,
        "VIZDESK_GEOMETRY": "640x480",
        "VIZDESK_REG_TTL": str(ttl),
        "TMPDIR": str(tmpdir),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    cfg_path.chmod(0o644)
    log_path = run_dir / "wrapper.log"
    if argv is None:
        entry = ["-c", driver] if driver else ["-m", "vizdesk.node.wrapper"]
        argv = [python, *entry]
    t_exec = time.monotonic()
    proc = subprocess.Popen(
        argv, env=job_env, stdout=subprocess.DEVNULL, stderr=log_path.open("wb"), cwd=run_dir
    )
    return Wrapper(proc, sid, key, user, pw, tmpdir, log_path, t_exec, redis_server)


@pytest.fixture
def wrappers() -> Iterator[list[Wrapper]]:
    started: list[Wrapper] = []
    yield started
    for w in started:
        w.kill()


async def vnc_connect(port: int, password: str | None) -> tuple[int, int, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        stream = TcpStream(reader, writer)
        init = await handshake(stream, password=password)
        covered, _ = await full_framebuffer(stream, init)
        return init.width, init.height, covered
    finally:
        writer.close()


# ------------------------------------------------------------------------------ tests


def test_session_lifecycle_and_sigterm_cleanup(
    redis_server: RedisServer, tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    # The desktop double-forks a daemon (like dbus-launch does): it must not survive.
    desktop = ["sh", "-c", "(setsid sleep 3600 &) ; exec xterm"]
    w = start_wrapper(redis_server, tmp_path, desktop=desktop)
    wrappers.append(w)
    reg = w.wait_registration()
    startup = time.monotonic() - w.t_exec

    # The registration: the contract's fields, our port range, no credentials.
    assert set(reg) == {
        "session_id", "port", "display", "password", "pid", "vnc_pid", "host", "vnc",
        "gpus", "cpu_percent", "memory_bytes", "started_at", "heartbeat_at", "image",
    }  # fmt: skip
    assert reg["session_id"] == w.sid and reg["pid"] == w.proc.pid
    assert VNC_PORT_MIN <= reg["port"] <= VNC_PORT_MAX
    assert isinstance(reg["display"], int)
    assert reg["vnc"] == "tigervnc" and reg["gpus"] == [] and reg["image"] is None
    assert len(reg["password"]) == 8 and w.password not in json.dumps(reg)
    assert reg["host"] == socket.gethostname()
    assert reg["memory_bytes"] > 0
    assert psutil.Process(reg["vnc_pid"]).name() in ("Xvnc", "Xtigervnc")
    assert 0 < redis_server.admin().ttl(w.key) <= 10

    # The desktop works with the one-time password and only with it.
    width, height, covered = asyncio.run(vnc_connect(reg["port"], reg["password"]))
    assert (width, height) == (640, 480) and covered >= 640 * 480
    for _ in range(6):  # more than TigerVNC's blacklist threshold (5): not locked out
        with pytest.raises(RfbAuthFailed):
            asyncio.run(vnc_connect(reg["port"], "wrongpw1"))
    assert asyncio.run(vnc_connect(reg["port"], reg["password"]))[:2] == (640, 480)

    # The X display refuses clients without the session's cookie.
    x = subprocess.run(
        ["xdpyinfo", "-display", f":{reg['display']}"],
        env={"PATH": os.environ["PATH"], "XAUTHORITY": "/nonexistent", "HOME": str(tmp_path)},
        capture_output=True,
    )
    assert x.returncode != 0

    # The session's ACL user can write its key and nothing else.
    scoped = redis.Redis(
        host="127.0.0.1", port=redis_server.port, username=w.user, password=w.password
    )
    assert scoped.get(w.key) is not None
    with pytest.raises(redis.exceptions.NoPermissionError):
        scoped.set(f"{PREFIX}session:{w.sid}", "x")
    with pytest.raises(redis.exceptions.NoPermissionError):
        scoped.keys("*")

    # Heartbeats refresh the registration.
    first = reg["heartbeat_at"]
    end = time.monotonic() + 5
    while time.monotonic() < end and (w.registration() or {}).get("heartbeat_at") == first:
        time.sleep(0.1)
    assert (w.registration() or {})["heartbeat_at"] != first

    procs_before = tagged(w.sid)
    names = {p.name() for p in procs_before}
    assert {"Xvnc", "xterm", "sleep"} <= names or {"Xtigervnc", "xterm", "sleep"} <= names
    private_dirs = list(w.tmpdir.glob("vizdesk-*"))
    assert len(private_dirs) == 1

    # SIGTERM (Slurm cancel): registration, processes and files gone within 10 s, exit 0.
    t_stop = time.monotonic()
    w.proc.send_signal(signal.SIGTERM)
    assert w.wait_exit(10) == 0
    assert w.registration() is None
    assert wait_gone(w.sid, [reg["vnc_pid"]], timeout=10 - (time.monotonic() - t_stop)) == []
    assert time.monotonic() - t_stop < 10
    assert not private_dirs[0].exists()
    # Everything, the guardian included, ended on SIGTERM: nothing needed SIGKILL.
    assert not [e for e in w.events() if e.get("event") == "killing"]
    assert reg["password"] not in w.log()
    assert w.password not in w.log()
    print(f"\nexec→registration {startup:.2f}s; SIGTERM→clean {time.monotonic() - t_stop:.2f}s")


def test_job_script_runs_the_cli_in_place(
    redis_server: RedisServer, tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    # jobscripts/vnc.sbatch → $VIZDESK_COMMAND node vnc → vizdesk.cli → the wrapper, all
    # exec'd in place, so Slurm's signals reach the wrapper itself.
    shim = tmp_path / "vizdesk-shim"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m vizdesk "$@"\n')
    shim.chmod(0o755)
    w = start_wrapper(
        redis_server,
        tmp_path,
        argv=["bash", str(REPO / "jobscripts" / "vnc.sbatch")],
        env={"VIZDESK_COMMAND": str(shim)},
    )
    wrappers.append(w)
    reg = w.wait_registration()
    assert reg["pid"] == w.proc.pid
    w.proc.send_signal(signal.SIGTERM)
    assert w.wait_exit() == 0
    assert w.registration() is None
    assert wait_gone(w.sid, [reg["vnc_pid"]]) == []


def test_cancel_signalling_every_process_at_once(
    redis_server: RedisServer, tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    # What `scancel` does: SIGTERM to every process of the job at the same moment.
    w = start_wrapper(redis_server, tmp_path)
    wrappers.append(w)
    w.wait_registration()
    job = [psutil.Process(w.proc.pid), *psutil.Process(w.proc.pid).children(recursive=True)]
    assert len(job) >= 4  # wrapper, guardian, Xvnc, xterm (+ its shell)
    for p in job:
        with contextlib.suppress(psutil.NoSuchProcess):  # a short-lived child may be gone
            p.send_signal(signal.SIGTERM)
    assert w.wait_exit() == 0
    assert w.registration() is None
    assert wait_gone(w.sid, [p.pid for p in job if p.pid != w.proc.pid]) == []


def test_killing_xvnc_ends_the_wrapper(
    redis_server: RedisServer, tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    w = start_wrapper(redis_server, tmp_path)
    wrappers.append(w)
    reg = w.wait_registration()
    os.kill(reg["vnc_pid"], signal.SIGKILL)
    assert w.wait_exit(10) == 4  # the VNC server died
    assert w.registration() is None
    assert wait_gone(w.sid, [reg["vnc_pid"]]) == []
    assert any(e.get("event") == "vnc_server_exited" for e in w.events())


def test_logout_ends_the_session_cleanly(
    redis_server: RedisServer, tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    w = start_wrapper(redis_server, tmp_path, desktop=["sh", "-c", "sleep 2"])
    wrappers.append(w)
    reg = w.wait_registration()
    assert w.wait_exit(15) == 0
    assert w.registration() is None
    assert wait_gone(w.sid, [reg["vnc_pid"]]) == []
    assert any(e.get("event") == "desktop_exited" for e in w.events())


def test_sigkilled_wrapper_is_cleaned_up_by_its_guardian(
    redis_server: RedisServer, tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    w = start_wrapper(redis_server, tmp_path)
    wrappers.append(w)
    reg = w.wait_registration()
    private_dirs = list(w.tmpdir.glob("vizdesk-*"))
    w.proc.send_signal(signal.SIGKILL)
    w.proc.wait()
    end = time.monotonic() + 10
    while time.monotonic() < end and w.registration() is not None:
        time.sleep(0.05)
    assert w.registration() is None
    assert wait_gone(w.sid, [reg["vnc_pid"]]) == []
    end = time.monotonic() + 5
    while time.monotonic() < end and private_dirs[0].exists():
        time.sleep(0.05)
    assert not private_dirs[0].exists()
    assert any(e.get("event") == "wrapper_vanished" for e in w.events())


CLASH_DRIVER = """
import socket, sys
import vizdesk.node.wrapper as w
from vizdesk.config import load_config

# A port that is taken between the wrapper's bind test and Xvnc's bind.
busy = socket.socket(socket.AF_INET6)
busy.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
busy.bind(("::", 0))
busy.listen()
taken = busy.getsockname()[1]
real = w.pick_free_port
calls = []

def pick(lo, hi, exclude=(), start=None):
    calls.append(1)
    return taken if len(calls) == 1 else real(lo, hi, exclude=exclude, start=start)

w.pick_free_port = pick
print(taken, file=sys.stderr, flush=True)
sys.exit(w.main(load_config()))
"""


def test_port_clash_is_retried_on_another_port(
    redis_server: RedisServer, tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    w = start_wrapper(redis_server, tmp_path, driver=CLASH_DRIVER)
    wrappers.append(w)
    reg = w.wait_registration()
    taken = int(w.log().splitlines()[0])
    assert reg["port"] != taken and VNC_PORT_MIN <= reg["port"] <= VNC_PORT_MAX
    clashes = [e for e in w.events() if e.get("event") == "vnc_start_clash"]
    assert len(clashes) == 1 and clashes[0]["port"] == taken
    w.proc.send_signal(signal.SIGTERM)
    assert w.wait_exit() == 0


def test_redis_outage_keeps_the_desktop_and_registers_later(
    redis_server: RedisServer, tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    late = RedisServer(_unused_redis_port(), secrets.token_hex(16))
    w = start_wrapper(redis_server, tmp_path, redis_url=late.url, create_user=False)
    wrappers.append(w)
    try:
        # Redis unreachable: the desktop comes up anyway and the failures are logged.
        end = time.monotonic() + 20
        while time.monotonic() < end and not any(
            e.get("event") == "registration_write_failed" for e in w.events()
        ):
            assert w.proc.poll() is None, w.log()
            time.sleep(0.1)
        ready = [e for e in w.events() if e.get("event") == "vnc_ready"]
        assert ready, w.log()
        port = ready[0]["port"]
        assert is_rfb3(asyncio.run(rfb_banner("127.0.0.1", port)))
        # Redis comes back with the session's ACL user: the registration appears.
        late.start(tmp_path)
        late.create_session_user(w.sid, w.key, password=w.password)
        end = time.monotonic() + 15
        raw = None
        while time.monotonic() < end and raw is None:
            raw = late.admin().get(w.key)
            time.sleep(0.1)
        assert raw is not None, w.log()
        assert json.loads(raw)["port"] == port
        assert w.proc.poll() is None
        w.proc.send_signal(signal.SIGTERM)
        assert w.wait_exit() == 0
        assert late.admin().get(w.key) is None
    finally:
        late.stop()


def test_start_failure_exits_3_with_a_clear_message(
    redis_server: RedisServer, tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    w = start_wrapper(redis_server, tmp_path, node={"xvnc": "/nonexistent/Xvnc"})
    wrappers.append(w)
    assert w.wait_exit(20) == 3
    assert "cannot start tigervnc (/nonexistent/Xvnc)" in w.log()
    # No usable registration: a failure record with the reason, for the daemon to show.
    failure = w.registration()
    assert failure is not None and set(failure) == {"session_id", "error", "at"}, failure
    assert failure["session_id"] == w.sid
    want = "cannot start tigervnc (/nonexistent/Xvnc): No such file or directory"
    assert failure["error"] == want
    assert list(w.tmpdir.glob("vizdesk-*")) == []
    assert wait_gone(w.sid, []) == []


def test_bad_job_environment_exits_2(
    redis_server: RedisServer, tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    w = start_wrapper(redis_server, tmp_path, env={"VIZDESK_GEOMETRY": "1920x1080;id"})
    wrappers.append(w)
    assert w.wait_exit(20) == 2
    assert "VIZDESK_GEOMETRY" in w.log()


def _private_dir(w: Wrapper) -> Path:
    dirs = list(w.tmpdir.glob("vizdesk-*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def _wait_recorded(w: Wrapper, name: str, timeout: float = 10.0) -> None:
    """Until the wrapper's process record lists a process called ``name``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            ids = json.loads((_private_dir(w) / "pids").read_text())
            if name in {psutil.Process(pid).name() for pid, _ in ids if psutil.pid_exists(pid)}:
                return
        except (OSError, ValueError, psutil.Error):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{name} never recorded:\n{w.log()}")


def test_next_wrapper_sweeps_a_session_killed_with_its_guardian(
    redis_server: RedisServer, tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    # Slurm (proctrack/linuxproc) SIGKILLs the wrapper and the guardian together once the
    # batch step's main process is gone: orphans and the private directory stay behind.
    first = start_wrapper(redis_server, tmp_path)
    wrappers.append(first)
    reg = first.wait_registration()
    _wait_recorded(first, "xterm")
    stale_dir = _private_dir(first)
    guardian = [
        p
        for p in psutil.Process(first.proc.pid).children()
        if "vizdesk.node.guardian" in " ".join(p.cmdline())
    ]
    assert len(guardian) == 1
    first.proc.send_signal(signal.SIGKILL)
    guardian[0].send_signal(signal.SIGKILL)
    first.proc.wait()
    time.sleep(0.5)
    assert {p.name() for p in tagged(first.sid)} >= {"xterm"}  # left behind
    assert stale_dir.exists()

    # The next session of the same user on the node cleans it up at start-up.
    second = start_wrapper(redis_server, tmp_path, jobtmp=first.tmpdir)
    wrappers.append(second)
    second.wait_registration()
    assert wait_gone(first.sid, [reg["vnc_pid"]]) == []
    assert not stale_dir.exists()
    swept = [e for e in second.events() if e.get("event") == "stale_session_swept"]
    assert [e["stale_session"] for e in swept] == [first.sid]
    second.proc.send_signal(signal.SIGTERM)
    assert second.wait_exit() == 0


@pytest.fixture
def user_workdir() -> Iterator[Path]:
    """A directory the test user can read (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="vztest-node-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_as_a_user_non_dumpable_orphans_are_ended_after_sigkill(
    redis_server: RedisServer, user_workdir: Path, wrappers: list[Wrapper], testbed: Any
) -> None:
    # As an ordinary user, processes that make themselves non-dumpable (ssh-agent,
    # gpg-agent) hide their environment, hence the session tag: only the wrapper's
    # process record lets the guardian find them once the wrapper is gone.
    python = Path(testbed.env.get("VIZDESK_VENV", "/nonexistent")) / "bin" / "python"
    if os.getuid() != 0 or not python.exists() or not shutil.which("ssh-agent"):
        pytest.skip("needs root, the test bed's venv and ssh-agent")
    try:
        import pwd

        pwd.getpwnam("alice")
    except KeyError:
        pytest.skip("no user alice")
    desktop = ["sh", "-c", 'eval "$(ssh-agent -s)" >/dev/null; exec xterm']
    w = start_wrapper(
        redis_server,
        user_workdir,
        desktop=desktop,
        argv=["runuser", "-u", "alice", "--", str(python), "-m", "vizdesk.node.wrapper"],
        env={"PYTHONPATH": str(REPO / "daemon")},
    )
    wrappers.append(w)
    reg = w.wait_registration()
    assert psutil.Process(reg["pid"]).username() == "alice"
    _wait_recorded(w, "ssh-agent")
    agents = [p for p in tagged(w.sid) if p.name() == "ssh-agent"]
    assert agents and agents[0].username() == "alice"
    os.kill(reg["pid"], signal.SIGKILL)
    end = time.monotonic() + 10
    while time.monotonic() < end and w.registration() is not None:
        time.sleep(0.05)
    assert w.registration() is None
    assert wait_gone(w.sid, [reg["vnc_pid"], agents[0].pid]) == []
