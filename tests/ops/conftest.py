"""Fixtures of the operations tests: a cached tools venv (Ansible), OS tools, a wheel.

The tools venv lives outside the repository (``/var/lib/vizdesk-ops-venv`` or
``$VIZDESK_OPS_VENV``) and is rebuilt only when ``requirements-ops.txt`` changes (its hash
is stored in the venv). OS tools the tests need (systemd-analyze, promtool, nft, visudo)
are installed with apt when missing and the tests run as root on Debian; otherwise the
tests that need them are skipped with the reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OPS_DIR = Path(__file__).resolve().parent
OPS_VENV = Path(os.environ.get("VIZDESK_OPS_VENV", "/var/lib/vizdesk-ops-venv"))
REQUIREMENTS = OPS_DIR / "requirements-ops.txt"
# Tools installed with apt when missing: command -> Debian package.
APT_TOOLS = {
    "systemd-analyze": "systemd",
    "promtool": "prometheus",
    "nft": "nftables",
    "visudo": "sudo",
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
}
TOOL_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def _requirements_hash() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def _is_root() -> bool:
    return os.geteuid() == 0


def which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path=os.pathsep.join(TOOL_DIRS))


def ensure_tool(tool: str) -> str:
    """Path of an OS tool; apt-installs its package when missing (root on Debian)."""
    found = which(tool)
    if found:
        return found
    pkg = APT_TOOLS.get(tool)
    if pkg and _is_root() and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = [
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=900",
            "install",
            "-y",
            "--no-install-recommends",
            pkg,
        ]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
        if res.returncode != 0:  # the package lists may be missing on a fresh machine
            subprocess.run(
                ["apt-get", "-o", "DPkg::Lock::Timeout=900", "update"],
                env=env,
                capture_output=True,
                timeout=1200,
            )
            subprocess.run(cmd, env=env, capture_output=True, timeout=1200)
        found = which(tool)
        if found:
            return found
    pytest.skip(f"{tool} is not installed (Debian package {pkg}; run the tests as root)")


def ensure_ops_venv() -> Path:
    """The tools venv with ansible-core and ansible-lint, built once per requirements."""
    marker = OPS_VENV / ".requirements.sha256"
    want = _requirements_hash()
    if marker.is_file() and marker.read_text().strip() == want:
        return OPS_VENV
    try:
        if not (OPS_VENV / "bin" / "python").exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(OPS_VENV)],
                check=True,
                capture_output=True,
                timeout=300,
            )
        pip = [
            str(OPS_VENV / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
        ]
        res = subprocess.run(
            [*pip, "-r", str(REQUIREMENTS)], capture_output=True, text=True, timeout=1200
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot build the ops venv {OPS_VENV}: {exc}")
    if res.returncode != 0:
        pytest.fail(f"pip install -r {REQUIREMENTS} failed:\n{res.stdout}\n{res.stderr}")
    marker.write_text(want + "\n")
    return OPS_VENV


@pytest.fixture(scope="session")
def ops_venv() -> Path:
    return ensure_ops_venv()


@pytest.fixture(scope="session")
def ops_env(ops_venv: Path) -> dict[str, str]:
    """Environment for ansible commands: the tools venv first on PATH, no user config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join([str(ops_venv / "bin"), *TOOL_DIRS])
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible" / "ansible.cfg")
    env["ANSIBLE_ROLES_PATH"] = str(REPO / "ansible" / "roles")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_LOCAL_TEMP"] = str(ops_venv / "tmp")
    env["ANSIBLE_HOME"] = str(ops_venv / "ansible-home")
    env["NO_COLOR"] = "1"
    env["PY_COLORS"] = "0"
    return env


def _source_hash() -> str:
    h = hashlib.sha256()
    for path in sorted([REPO / "pyproject.toml", *(REPO / "daemon").rglob("*")]):
        if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path):
            h.update(str(path.relative_to(REPO)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def vizdesk_wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A wheel of the current tree, built from a clean copy (the work tree stays as is).

    Cached by a hash of the sources under /var/lib/vizdesk-ansible-test/wheels.
    """
    cache = Path(os.environ.get("VIZDESK_ANSIBLE_TEST_DIR", "/var/lib/vizdesk-ansible-test"))
    out = cache / "wheels" / _source_hash()
    wheels = sorted(out.glob("vizdesk-*.whl"))
    if not wheels:
        src = tmp_path_factory.mktemp("wheel-src")
        shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
        shutil.copy2(REPO / "README.md", src / "README.md")
        shutil.copytree(
            REPO / "daemon",
            src / "daemon",
            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
        )
        out.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert res.returncode == 0, f"wheel build failed:\n{res.stdout}\n{res.stderr}"
        wheels = sorted(out.glob("vizdesk-*.whl"))
    assert len(wheels) == 1, wheels
    yield wheels[0]
