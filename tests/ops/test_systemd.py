"""systemd units: `systemd-analyze verify`, the hardening they promise, and sudo under it.

`systemd-analyze verify` needs no running systemd. It does check that every Exec*
binary exists, and the units name /opt/vizdesk/...: so the units are verified inside a
scratch root (``--root``) holding a copy of the distribution's units (for the targets
they reference) and stand-ins for the executables. Its warnings ("Unknown key ...")
exit 0, so any output at all counts as a failure.

The sudo test runs the real sudo (setuid root) the way the unit does: as an unprivileged
account, under the unit's CapabilityBoundingSet, with the sudoers rule the Ansible role
writes; and shows that NoNewPrivileges=yes would break it (why the unit leaves it off).
"""

from __future__ import annotations

import configparser
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, ensure_tool

SYSTEMD_DIR = REPO / "systemd"
UNITS = sorted(p.name for p in SYSTEMD_DIR.iterdir() if p.suffix in (".service", ".timer"))
DIST_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
EXEC_RE = re.compile(
    r"^(?:ExecStart|ExecStartPre|ExecStartPost|ExecStop|ExecStopPost"
    r"|ExecReload)=[-@:+!]*(/\S+)",
    re.M,
)


def verify_units(
    scratch: Path, units: dict[str, str], dropins: dict[str, str] | None = None
) -> str:
    """Run systemd-analyze verify on ``units`` (name -> text) in a scratch root.

    Returns everything systemd-analyze printed (empty when the units are clean).
    """
    analyze = ensure_tool("systemd-analyze")
    root = scratch / "root"
    dist = next((d for d in DIST_UNIT_DIRS if (d / "sysinit.target").exists()), None)
    if dist is None:
        pytest.skip("no distribution systemd units to verify against")
    shutil.copytree(dist, root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True, exist_ok=True)
    texts = list(units.values()) + list((dropins or {}).values())
    for name, text in units.items():
        (etc / name).write_text(text)
    for rel, text in (dropins or {}).items():
        (etc / rel).parent.mkdir(parents=True, exist_ok=True)
        (etc / rel).write_text(text)
    for text in texts:  # stand-ins for the executables the units run
        for exe in EXEC_RE.findall(text):
            target = root / exe.lstrip("/")
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("#!/bin/sh\nexit 0\n")
                target.chmod(0o755)
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "notice", "SYSTEMD_COLORS": "0"}
    out = []
    for name in units:
        res = subprocess.run(
            [analyze, "verify", "--man=no", f"--root={root}", f"/etc/systemd/system/{name}"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        text = (res.stdout + res.stderr).strip()
        if res.returncode != 0 or text:
            out.append(f"{name} (exit {res.returncode}):\n{text}")
    return "\n".join(out)


def _unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string((SYSTEMD_DIR / name).read_text())
    return cp


def test_units_verify_clean(tmp_path: Path) -> None:
    out = verify_units(tmp_path, {n: (SYSTEMD_DIR / n).read_text() for n in UNITS})
    assert out == ""


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above is not vacuous: a typo'd key and a missing binary are reported."""
    text = (
        (SYSTEMD_DIR / "vizdesk.service")
        .read_text()
        .replace("ProtectSystem=strict", "ProtectSystem=strict\nProtectSytem=strict")
    )
    out = verify_units(tmp_path, {"vizdesk.service": text})
    assert "Unknown key" in out and "ProtectSytem" in out
    scratch = tmp_path / "b"
    scratch.mkdir()
    text = (
        (SYSTEMD_DIR / "vizdesk-healthcheck-failed.service")
        .read_text()
        .replace("ExecStart=/usr/bin/systemctl", "ExecStart=relative/systemctl")
    )
    assert verify_units(scratch, {"vizdesk-healthcheck-failed.service": text}) != ""


def test_expected_units_exist() -> None:
    assert set(UNITS) == {
        "vizdesk.service",
        "vizdesk-healthcheck.service",
        "vizdesk-healthcheck.timer",
        "vizdesk-healthcheck-failed.service",
    }


def test_daemon_unit_hardening() -> None:
    svc = _unit("vizdesk.service")["Service"]
    assert svc["User"] == "vizdesk"
    assert (
        svc["ExecStart"] == "/opt/vizdesk/venv/bin/vizdesk --config /etc/vizdesk/vizdesk.yaml serve"
    )
    assert svc["Restart"] == "on-failure"
    assert svc["Type"] == "exec"
    assert "vizdesk-healthcheck --config /etc/vizdesk/vizdesk.yaml --wait" in svc["ExecStartPost"]
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "read-only",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
        "ProtectKernelModules": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "RestrictSUIDSGID": "yes",
        "RestrictNamespaces": "yes",
        "StateDirectory": "vizdesk",
        # sudo (setuid root) must work: see the comment in the unit and the test below.
        "NoNewPrivileges": "no",
    }
    assert {k: svc.get(k) for k in expected} == expected
    assert set(svc["RestrictAddressFamilies"].split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
    }
    assert set(svc["CapabilityBoundingSet"].split()) == {
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_AUDIT_WRITE",
        "CAP_KILL",
    }
    assert svc["AmbientCapabilities"] == ""


def test_probe_units_are_fully_locked_down() -> None:
    probe = _unit("vizdesk-healthcheck.service")
    assert probe["Unit"]["OnFailure"] == "vizdesk-healthcheck-failed.service"
    assert probe["Unit"]["Requisite"] == "vizdesk.service"
    assert probe["Service"]["NoNewPrivileges"] == "yes"
    assert probe["Service"]["CapabilityBoundingSet"] == ""
    assert "/healthz" not in probe["Service"]["ExecStart"]  # URL comes from the config
    assert "readyz" not in (SYSTEMD_DIR / "vizdesk-healthcheck").read_text().split('"""')[2]
    restart = _unit("vizdesk-healthcheck-failed.service")["Service"]
    assert restart["ExecStart"] == "/usr/bin/systemctl --no-block try-restart vizdesk.service"
    timer = _unit("vizdesk-healthcheck.timer")
    assert timer["Unit"]["PartOf"] == "vizdesk.service"
    assert "vizdesk-healthcheck.timer" in _unit("vizdesk.service")["Unit"]["Wants"]


# ------------------------------------------------------------------ sudo under the unit
def _caps_for_setpriv() -> str:
    caps = _unit("vizdesk.service")["Service"]["CapabilityBoundingSet"].split()
    return "-all," + ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)


@pytest.fixture
def sudo_setup(ops_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The role's sudoers template rendered for a stand-in command, active briefly.

    sbatch/scancel are replaced by /usr/bin/env and /usr/bin/id so that what sudo lets
    through (environment, target user) can be seen.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root (installs a sudoers rule and test accounts)")
    ensure_tool("visudo")
    daemon_user, job_user = "vizdesk-ops-test", "vzdopsuser"
    for name, args in (
        (daemon_user, ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]),
        (job_user, ["--create-home", "--uid", "4242"]),
    ):
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", *args, name], check=True, capture_output=True)
    rendered = tmp_path / "sudoers"
    res = subprocess.run(
        [
            "ansible",
            "localhost",
            "-c",
            "local",
            "-i",
            "localhost,",
            "-m",
            "ansible.builtin.template",
            "-a",
            f"src={REPO}/ansible/roles/vizdesk_head/templates/sudoers.j2 dest={rendered}",
            "-e",
            f"vizdesk_user={daemon_user}",
            "-e",
            "vizdesk_sbatch=/usr/bin/env",
            "-e",
            "vizdesk_scancel=/usr/bin/id",
            "-e",
            "ansible_python_interpreter=/usr/bin/python3",
            "-e",
            f"@{REPO}/ansible/roles/vizdesk_head/defaults/main.yml",
        ],
        env=ops_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    check = subprocess.run(["visudo", "-cf", str(rendered)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    dest = Path("/etc/sudoers.d/zz-vizdesk-ops-sudo-test")
    shutil.copy2(rendered, dest)
    dest.chmod(0o440)
    try:
        yield daemon_user, job_user
    finally:
        dest.unlink(missing_ok=True)


def _as_daemon(
    daemon_user: str,
    cmd: list[str],
    *,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    setpriv = [
        "setpriv",
        f"--reuid={daemon_user}",
        f"--regid={daemon_user}",
        "--init-groups",
        *(extra or []),
    ]
    return subprocess.run(
        [*setpriv, *cmd],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        cwd="/",
    )


def test_sudo_submit_works_under_the_units_capability_set(sudo_setup: tuple[str, str]) -> None:
    daemon_user, job_user = sudo_setup
    bounding = ["--bounding-set", _caps_for_setpriv()]
    res = _as_daemon(
        daemon_user,
        ["sudo", "-n", "-u", job_user, "--", "/usr/bin/env"],
        extra=bounding,
        env={
            "VIZDESK_SESSION_ID": "0123456789abcdef",
            "VIZDESK_REDIS_PASSWORD": "pw",
            "SBATCH_PARTITION": "evil",
            "SLURM_CONF": "/tmp/evil.conf",
            "LD_PRELOAD": "x",
        },
    )
    assert res.returncode == 0, res.stderr
    seen = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    # The job's VIZDESK_* settings pass; whatever could steer sbatch does not.
    assert seen["VIZDESK_SESSION_ID"] == "0123456789abcdef"
    assert seen["VIZDESK_REDIS_PASSWORD"] == "pw"
    assert seen["USER"] == job_user
    for var in ("SBATCH_PARTITION", "SLURM_CONF", "LD_PRELOAD"):
        assert var not in seen
    # Only the two commands, and never as root.
    assert (
        _as_daemon(
            daemon_user, ["sudo", "-n", "-u", "root", "--", "/usr/bin/env"], extra=bounding
        ).returncode
        != 0
    )
    assert (
        _as_daemon(
            daemon_user, ["sudo", "-n", "-u", job_user, "--", "/bin/sh", "-c", "id"], extra=bounding
        ).returncode
        != 0
    )
    res = _as_daemon(
        daemon_user, ["sudo", "-n", "-u", job_user, "--", "/usr/bin/id", "-un"], extra=bounding
    )
    assert res.returncode == 0 and res.stdout.strip() == job_user


def test_no_new_privileges_would_break_sudo(sudo_setup: tuple[str, str]) -> None:
    daemon_user, job_user = sudo_setup
    res = _as_daemon(
        daemon_user, ["sudo", "-n", "-u", job_user, "--", "/usr/bin/id"], extra=["--no-new-privs"]
    )
    assert res.returncode != 0
    assert "no new privileges" in res.stderr
