"""The Slurm 25.11 tier: the pyslurm backend on a real Slurm 25.11 (testbed/slurm2511.sh).

This tier runs in its own pytest process, from the tier's venv (it holds pyslurm 25.11.2
built against the 25.11 prefix; the project's .venv does not):

    testbed/testbed.sh up                       # Redis, users alice/bob, TigerVNC
    testbed/slurm2511.sh up                     # build (cached) + the 25.11 instance
    /var/lib/vizdesk-slurm2511/venv/bin/pytest tests/slurm2511

``testbed/slurm2511-tier.sh`` does exactly that (``make test`` runs it after the main
suite). Collected from an interpreter without pyslurm (the ordinary suite), the tier is
left out: it is not skipped test by test.
The session fixture brings the instance up itself (idempotent, seconds when built) and
skips only when the build is impossible here (no archive and no download: exit code 3).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Daemon, Testbed, read_env, start_daemon, stop_daemon

SCRIPT = REPO / "testbed" / "slurm2511.sh"
DIR = Path(os.environ.get("VIZDESK_SLURM2511_DIR", "/var/lib/vizdesk-slurm2511"))
CONF = DIR / "etc" / "slurm.conf"

os.environ.setdefault("PYSLURM_DISABLE_AUTO_INIT", "1")
if importlib.util.find_spec("pyslurm") is None:
    if os.environ.get("VIZDESK_SLURM2511_TIER"):
        raise RuntimeError("VIZDESK_SLURM2511_TIER is set but pyslurm does not import here")
    collect_ignore_glob = ["test_*.py"]
else:
    # Everything this process runs (Slurm commands, pyslurm, daemons, jobs) talks to the
    # 25.11 cluster: the root conftest pointed SLURM_CONF at the 22.05 one.
    os.environ["SLURM_CONF"] = str(CONF)


@dataclass
class Slurm2511:
    dir: Path
    env: dict[str, str]

    @property
    def prefix(self) -> Path:
        return Path(self.env["SLURM2511_PREFIX"])

    @property
    def conf(self) -> str:
        return self.env["SLURM_CONF"]

    @property
    def node(self) -> str:
        return self.env["SLURM_NODE"]

    @property
    def partition(self) -> str:
        return self.env["SLURM_PARTITION"]

    def bin(self, name: str) -> str:
        return str(self.prefix / "bin" / name)

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> str:
        """A Slurm command of the prefix (as root), on the 25.11 cluster."""
        out = subprocess.run(
            [self.bin(argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "SLURM_CONF": self.conf},
            check=False,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"{argv}: exit {out.returncode}: {out.stderr}")
        return out.stdout

    def pid(self, what: str) -> int | None:
        try:
            pid = int(Path(self.env[f"{what.upper()}_PIDFILE"]).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def up(self) -> None:
        res = subprocess.run([str(SCRIPT), "up"], capture_output=True, text=True, timeout=3600)
        if res.returncode != 0:
            raise AssertionError(f"slurm2511.sh up failed: {res.stdout[-2000:]}{res.stderr}")

    def stop_slurmctld(self) -> None:
        pid = self.pid("slurmctld")
        assert pid is not None, "slurmctld is not running"
        os.kill(pid, 15)
        deadline = time.monotonic() + 20
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists(), "slurmctld did not stop"


@pytest.fixture(scope="session")
def slurm2511() -> Slurm2511:
    started = time.monotonic()
    res = subprocess.run([str(SCRIPT), "up"], capture_output=True, text=True, timeout=3600)
    if res.returncode == 3:
        pytest.skip(f"Slurm 25.11 cannot be built here: {res.stderr.strip()[-500:]}")
    if res.returncode != 0:
        pytest.fail(f"testbed/slurm2511.sh up failed ({res.returncode}):\n{res.stdout[-3000:]}\n"
                    f"{res.stderr[-3000:]}")
    print(f"slurm2511.sh up: {time.monotonic() - started:.1f} s")
    return Slurm2511(DIR, read_env(DIR / "env"))


def tier_overrides(s: Slurm2511, backend: str = "pyslurm") -> dict[str, Any]:
    """Daemon config for the 25.11 cluster (on top of the 22.05 test bed's: Redis, secrets)."""
    part = s.partition
    # "batch" too: the shipped templates name it (it does not exist on the 25.11 cluster:
    # the tier's requests always name the 25.11 partition).
    offered = [part, "batch"]
    groups: dict[str, Any] = {}
    from tests.conftest import TEST_POLICY

    for name, rules in TEST_POLICY["groups"].items():
        groups[name] = {**rules, "partitions": offered if rules["partitions"] != ["*"] else ["*"]}
    return {
        "slurm": {
            "backend": backend,
            "conf_path": s.conf,
            "partitions": offered,
            "default_partition": part,
            "sbatch": s.bin("sbatch"),
            "squeue": s.bin("squeue"),
            "scancel": s.bin("scancel"),
        },
        "sessions": {"output_dir": str(s.dir / "jobs" / "{user}")},
        "node": {"vizdesk_command": str(Path(s.env["SLURM2511_VENV"]) / "bin" / "vizdesk")},
        "policy": {"groups": groups},
    }


@pytest.fixture(scope="session")
def daemon2511(testbed: Testbed, slurm2511: Slurm2511) -> Iterator[Daemon]:
    """`vizdesk serve` on the 25.11 cluster with ``slurm.backend: auto`` (→ pyslurm)."""
    d = start_daemon(testbed, "s2511", tier_overrides(slurm2511, backend="auto"))
    yield d
    stop_daemon(d)
    cancel_leftovers(slurm2511)


def cancel_leftovers(s: Slurm2511) -> None:
    out = s.run("squeue", "-h", "-o", "%i %j", check=False)
    ids = [ln.split()[0] for ln in out.splitlines() if ln.split()[1:2] and
           ln.split()[1].startswith(("vizdesk-", "parity-", "shape-"))]
    if ids:
        s.run("scancel", *ids, check=False)
