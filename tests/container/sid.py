"""Driver of the Debian sid root (testbed/sid/sidroot.sh) for the container test tier."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "testbed" / "sid" / "sidroot.sh"
STATE = Path(os.environ.get("VIZDESK_SID_STATE", "/var/lib/vizdesk-sid"))
OUTPUT = REPO / "test-output"
TIMINGS = OUTPUT / "container-timings.txt"

IMAGES = "/srv/vizdesk/images"
VNC_SIF = f"{IMAGES}/vnc.sif"
COMPUTE_SIF = f"{IMAGES}/compute.sif"
VENV_PY = "/opt/vizdesk-venv/bin/python"


def record_timing(what: str, seconds: float) -> None:
    """Append a measured duration to test-output/container-timings.txt (and print it)."""
    OUTPUT.mkdir(exist_ok=True)
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {what}: {seconds:.2f}s"
    with TIMINGS.open("a") as fh:
        fh.write(line + "\n")
    print(line)


def script(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Sid:
    env: dict[str, str]

    @property
    def root(self) -> Path:
        return Path(self.env["SID_ROOT"])

    def argv(self, cmd: tuple[str, ...], user: str, env: dict[str, str] | None) -> list[str]:
        out = [str(SCRIPT), "run"]
        if user != "root":
            out += ["-u", user]
        for k, v in (env or {}).items():
            out += ["-e", f"{k}={v}"]
        return [*out, "--", *cmd]

    def run(
        self,
        *cmd: str,
        user: str = "root",
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the root (as ``user``) and wait for it."""
        res = subprocess.run(
            self.argv(cmd, user, env),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"inside sid as {user}: {shlex.join(cmd)} exited {res.returncode}\n"
                f"stdout: {res.stdout[-2000:]}\nstderr: {res.stderr[-2000:]}"
            )
        return res

    def popen(
        self, *cmd: str, user: str = "root", env: dict[str, str] | None = None, log: Path
    ) -> subprocess.Popen[bytes]:
        """Start ``cmd`` inside the root in the background (output to ``log``)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        fh = log.open("wb")
        return subprocess.Popen(
            self.argv(cmd, user, env), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def processes(self, user: str | None = None) -> list[tuple[int, str, str]]:
        """(pid, user, command line) of the processes in the root's pid namespace."""
        args = ["ps", "-o", "pid=,user:20=,args=", "-ww"]
        args += ["-u", user] if user else ["-e"]
        res = self.run(*args, check=False)
        out = []
        for line in res.stdout.splitlines():
            parts = line.split(None, 2)
            if len(parts) == 3 and not parts[2].startswith("ps -o"):
                out.append((int(parts[0]), parts[1], parts[2]))
        return out

    def kill_matching(self, pattern: str, user: str = "alice") -> None:
        """SIGKILL ``user``'s processes of the root whose command line matches ``pattern``
        (a regular expression), by the pids the root's own ``ps`` lists."""
        pids = [str(pid) for pid, _, cmd in self.processes(user) if re.search(pattern, cmd)]
        if pids:
            self.run("kill", "-KILL", *pids, check=False)

    def fuse(self, mode: str | None = None) -> str:
        """Set the root's own /dev/fuse (usable, root-only, missing, host); its state."""
        res = script("fuse", *([mode] if mode else []), timeout=60)
        if res.returncode != 0:
            raise AssertionError(f"sidroot.sh fuse {mode}: {res.stderr[-2000:]}")
        return res.stdout.strip()

    def fuse_usable(self, user: str = "alice") -> bool:
        """Whether ``user`` can open /dev/fuse (else Apptainer must extract the SIF)."""
        return self.run("test", "-r", "/dev/fuse", "-a", "-w", "/dev/fuse", user=user,
                        check=False).returncode == 0  # fmt: skip

    def unsquash(self, user: str = "alice") -> list[str]:
        """Apptainer's action flags for images here: ``--unsquash`` without usable FUSE,
        as vizdesk's node wrapper and job launcher decide on a compute node."""
        return [] if self.fuse_usable(user) else ["--unsquash"]

    def write_file(self, inner: str, text: str, mode: int = 0o644) -> None:
        """Write a file inside the root (a path on the root's disk, not /tmp or /run)."""
        path = self.root / inner.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)


def free_port(lo: int, hi: int) -> int:
    """A TCP port in [lo, hi] nobody listens on (the root shares the host's network)."""
    for port in range(lo, hi + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {lo}-{hi}")


def wait_for_banner(port: int, timeout: float = 30.0) -> bytes:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(5)
                data = s.recv(12)
                if data:
                    return data
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"no RFB banner on port {port} within {timeout}s ({last})")


def read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            env[k.strip()] = v.strip()
    return env
