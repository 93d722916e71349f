"""The cluster tier: the e2e flows on a head node and 3 compute nodes (testbed/cluster.sh).

This tier runs in its own pytest process INSIDE the head host's namespaces, as a portal
on the head node would (testbed/cluster-tier.sh does it):

    testbed/cluster.sh up
    nsenter -t "$(cat /var/lib/vizdesk-cluster/run/hold-head.pid)" -n -m -u -- \\
        env VIZDESK_CLUSTER_TIER=1 .venv/bin/pytest tests/cluster

Outside the tier (the ordinary suite) its modules are left out, not skipped one by one.
The ``testbed`` fixture is the cluster's: the root conftest's ``daemon`` fixture then
starts a real ``vizdesk serve`` on the head (127.0.0.1 of the head's network namespace)
whose proxy reaches the nodes over the cluster's bridge, and whose jobs' wrappers register
with the head's Redis on 10.199.0.1.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Testbed, read_env

CLUSTER_DIR = Path(os.environ.get("VIZDESK_CLUSTER_DIR", "/var/lib/vizdesk-cluster"))

if not os.environ.get("VIZDESK_CLUSTER_TIER"):
    collect_ignore_glob = ["test_*.py"]
else:
    # Every Slurm command of this process talks to the cluster (the root conftest pointed
    # SLURM_CONF at the single-node bed).
    os.environ["SLURM_CONF"] = str(CLUSTER_DIR / "etc" / "slurm.conf")


@dataclass
class Cluster:
    """The running cluster, as its env file describes it."""

    dir: Path
    env: dict[str, str]

    @property
    def nodes(self) -> list[str]:
        return self.env["CLUSTER_NODES"].split()

    @property
    def head_ip(self) -> str:
        return self.env["CLUSTER_HEAD_IP"]

    def ip(self, host: str) -> str:
        if host == "head":
            return self.head_ip
        return dict(zip(self.nodes, self.env["CLUSTER_NODE_IPS"].split(), strict=True))[host]

    def holder(self, host: str) -> int:
        return int((Path(self.env["CLUSTER_HOLD_DIR"]) / f"hold-{host}.pid").read_text())

    def on(self, host: str, argv: Sequence[str], timeout: float = 30.0,
           check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run argv on ``host`` (its network, mount and UTS namespace)."""
        return subprocess.run(
            ["nsenter", "-t", str(self.holder(host)), "-n", "-m", "-u", "--", *argv],
            capture_output=True, text=True, timeout=timeout, check=check,
        )  # fmt: skip

    def switch(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run argv in the bridge's namespace (where every host's link ends)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.env["CLUSTER_SWITCH_NS"], *argv],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip

    def link(self, host: str, up: bool) -> None:
        """Plug or pull ``host``'s cable (its port on the bridge)."""
        self.switch(["ip", "link", "set", f"v-{host}", "up" if up else "down"])

    def node_state(self, node: str) -> str:
        out = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"],
                             capture_output=True, text=True, check=True)  # fmt: skip
        return out.stdout.split("\n")[0].strip()

    def processes_on(self, node: str, user: str) -> list[str]:
        """``pid comm`` of ``user``'s processes in ``node``'s namespaces."""
        ours = os.stat(f"/proc/{self.holder(node)}/ns/net").st_ino
        found = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if os.stat(d / "ns" / "net").st_ino != ours or d.stat().st_uid != _uid(user):
                    continue
                status = (d / "status").read_text()
                if "\nState:\tZ" in status:
                    continue
                found.append(f"{d.name} {(d / 'comm').read_text().strip()}")
            except OSError:
                continue
        return found


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def wait_until(predicate, timeout: float, step: float = 0.5) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


async def await_until(predicate, timeout: float, step: float = 0.5) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return bool(predicate())


def tcp_refused(host: str, port: int) -> str:
    """How a direct connection to host:port ends: 'refused', 'timeout' or 'open'."""
    try:
        with socket.create_connection((host, port), timeout=3):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    env_file = CLUSTER_DIR / "env"
    if not env_file.is_file():
        pytest.fail(f"cluster not up ({env_file} missing): run testbed/cluster-tier.sh")
    env = read_env(env_file)
    if socket.gethostname() != env["CLUSTER_HEAD"]:
        pytest.fail("the cluster tier runs on the head host: use testbed/cluster-tier.sh")
    return Cluster(CLUSTER_DIR, env)


@pytest.fixture(scope="session")
def testbed(cluster: Cluster) -> Testbed:
    """The root conftest's fixtures (daemon, redis_admin) on the cluster's head."""
    return Testbed(cluster.dir, cluster.env)
