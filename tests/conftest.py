"""Shared fixtures: ONE running test bed and ONE real daemon per pytest session.

The test bed (munge, slurmctld, slurmd, Redis, TigerVNC, users alice/bob) is started by
``testbed/testbed.sh up`` (``make test`` does that first). Tests that need it are skipped
with a clear message when it is not up; ``make test`` never leaves it down.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import yaml

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "test-output"
TESTBED_DIR = Path(os.environ.get("VIZDESK_TESTBED_DIR", "/var/lib/vizdesk-testbed"))


@dataclass
class Testbed:
    dir: Path
    env: dict[str, str]

    @property
    def config_path(self) -> Path:
        return Path(self.env["VIZDESK_CONFIG"])

    @property
    def redis_password(self) -> str:
        return Path(self.env["REDIS_PASSWORD_FILE"]).read_text().strip()

    @property
    def node(self) -> str:
        return self.env["SLURM_NODE"]


def read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            env[k.strip()] = " ".join(shlex.split(v)) if v.strip() else ""
    return env


def export_testbed_slurm_conf() -> None:
    """Point every Slurm command of the suite (and the daemons it starts) at the test bed's
    cluster: it never relies on /etc/slurm, which may belong to another Slurm on the host."""
    env_file = TESTBED_DIR / "env"
    if env_file.is_file():
        conf = read_env(env_file).get("SLURM_CONF")
        if conf:
            os.environ["SLURM_CONF"] = conf


export_testbed_slurm_conf()


@pytest.fixture(scope="session")
def testbed() -> Testbed:
    env_file = TESTBED_DIR / "env"
    if not env_file.is_file():
        pytest.skip(
            f"test bed not up ({env_file} missing): run `make test` or testbed/testbed.sh up"
        )
    return Testbed(TESTBED_DIR, read_env(env_file))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_test_config(testbed: Testbed, overrides: dict[str, Any], name: str) -> Path:
    """A config derived from the test bed's, world-readable (jobs running as alice read it)."""
    base = yaml.safe_load(testbed.config_path.read_text()) or {}
    merged = deep_merge(base, overrides)
    path = testbed.dir / "tests" / f"{name}.yaml"
    path.parent.mkdir(mode=0o755, exist_ok=True)
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    path.chmod(0o644)
    return path


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = (
            deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


TEST_POLICY = {
    "groups": {
        "*": {
            "partitions": ["viz", "batch"],
            "images": ["*"],
            "max_gpus": 0,
            "max_cpus": 4,
            "max_memory_gb": 8,
            "max_time_limit_minutes": 240,
            "max_sessions": 3,
            "max_jobs": 10,
        },
        "gpu-users": {
            "partitions": ["viz"],
            "images": ["*"],
            "max_gpus": 2,
            "max_cpus": 8,
            "max_memory_gb": 32,
            "max_time_limit_minutes": 480,
            "max_sessions": 3,
        },
        "vizdesk-admins": {
            "partitions": ["*"],
            "images": ["*"],
            "max_gpus": 8,
            "max_cpus": 64,
            "max_memory_gb": 256,
            "max_time_limit_minutes": 10080,
            "max_sessions": 10,
        },
    }
}


@dataclass
class Daemon:
    url: str
    config_path: Path
    cfg: Any
    log_path: Path
    proc: subprocess.Popen[bytes]
    prefix: str

    def token(self, user: str, groups: list[str] | None = None, ttl: int = 3600) -> str:
        from vizdesk.auth.tokens import mint_token

        return mint_token(self.cfg.auth, user, groups or [], ttl)

    def headers(self, user: str, groups: list[str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user, groups)}"}

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_daemon(testbed: Testbed, name: str, overrides: dict[str, Any]) -> Daemon:
    from vizdesk.config import load_config

    port = free_port()
    tag = secrets.token_hex(3)
    prefix = f"vzt-{name}-{tag}:"
    config_path = write_test_config(
        testbed,
        deep_merge(
            {
                "server": {"host": "127.0.0.1", "port": port},
                "redis": {"key_prefix": prefix},
                "log": {"format": "json", "level": "debug"},
                "slurm": {"poll_interval_seconds": 0.5},
                "limits": {"create_per_window": 1000},
                "policy": TEST_POLICY,
            },
            overrides,
        ),
        f"{name}-{tag}",
    )
    OUTPUT.mkdir(exist_ok=True)
    log_path = OUTPUT / f"daemon-{name}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vizdesk", "--config", str(config_path), "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited: {log_path.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("daemon did not listen within 30 s")
    return Daemon(url, config_path, load_config(str(config_path)), log_path, proc, prefix)


def stop_daemon(d: Daemon) -> None:
    d.proc.send_signal(signal.SIGINT)
    try:
        d.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        d.proc.kill()
    d.config_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def daemon(testbed: Testbed) -> Iterator[Daemon]:
    """The real `vizdesk serve` on the test bed (real Slurm, Redis, Xvnc)."""
    d = start_daemon(testbed, "main", {})
    yield d
    stop_daemon(d)
    cleanup_jobs(d.prefix)


def cleanup_jobs(prefix: str) -> None:
    """Cancel any vizdesk Slurm job a test left behind (test hygiene only)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True)
    ids = [
        line.split()[0]
        for line in out.stdout.splitlines()
        if len(line.split()) == 2 and line.split()[1].startswith("vizdesk-")
    ]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, check=False)


@pytest_asyncio.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s


@pytest_asyncio.fixture(scope="session")
async def redis_admin(testbed: Testbed) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(
        testbed.env["REDIS_URL"], password=testbed.redis_password, decode_responses=True
    )
    yield r
    await r.aclose()


async def wait_for_state(
    http: aiohttp.ClientSession,
    daemon: Daemon,
    sid: str,
    states: set[str],
    user: str = "alice",
    timeout: float = 30.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        async with http.get(
            f"{daemon.url}/api/v1/sessions/{sid}", headers=daemon.headers(user)
        ) as r:
            body = await r.json()
        if body.get("state") in states:
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"session {sid} not in {states} after {timeout}s: {body}")
