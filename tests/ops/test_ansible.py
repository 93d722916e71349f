"""The Ansible roles, for real: lint (production profile) and a run on this machine.

The playbook tests/ops/ansible/local.yml applies slurm_partition, vizdesk_head and
vizdesk_node with ``--connection=local`` and ``vizdesk_service_manager=direct`` (no
systemd here), everything under /var/lib/vizdesk-ansible-test and on ports of its own:
it installs the wheel of this tree into a venv, writes config, secrets, sudoers rule,
Redis config, units, firewall rules and the Slurm snippet, and starts Redis and the
daemon. It runs twice; the second run must change nothing. Then the result is checked:
the daemon answers, Redis enforces the ACLs, files have their modes, and, when the test
bed is up, a desktop session goes through the Ansible-installed daemon, submitted with
the sudoers rule the role wrote.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import yaml

from .conftest import REPO, ensure_tool

ROOT = Path(os.environ.get("VIZDESK_ANSIBLE_TEST_DIR", "/var/lib/vizdesk-ansible-test"))
PLAYBOOK = REPO / "tests" / "ops" / "ansible" / "local.yml"
VARS = REPO / "tests" / "ops" / "ansible" / "vars.yml"
RECAP_RE = re.compile(
    r"^localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)
TEST_VARS = yaml.safe_load(VARS.read_text())
USER = TEST_VARS["vizdesk_user"]
REDIS_PASSWORD = TEST_VARS["vizdesk_redis_password"]
TESTBED_DIR = Path(os.environ.get("VIZDESK_TESTBED_DIR", "/var/lib/vizdesk-testbed"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the roles need root")


def test_ansible_lint_production_profile(ops_env: dict[str, str]) -> None:
    res = subprocess.run(
        ["ansible-lint", "--offline", "--profile", "production", "--nocolor"],
        cwd=REPO / "ansible",
        env=ops_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "Profile 'production' was required, and it passed" in out, out


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _free_port(candidates: range) -> int:
    for port in candidates:
        if not _listening(port):
            return port
    pytest.skip(f"no free port in {candidates}")


def _stop_direct_services() -> None:
    helper = ROOT / "opt" / "libexec" / "vizdesk-direct"
    for name in ("vizdesk", "redis"):
        pidfile = ROOT / "run" / f"{name}.pid"
        if helper.exists() and pidfile.exists():
            subprocess.run([str(helper), "stop", str(pidfile)], capture_output=True, timeout=30)


@dataclass
class Deployment:
    runs: list[str]
    recaps: list[tuple[int, int, int, int]]
    daemon_port: int
    redis_port: int

    @property
    def config_path(self) -> Path:
        return ROOT / "etc" / "vizdesk.yaml"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.daemon_port}{path}"


def _run_playbook(env: dict[str, str], extra: list[str]) -> tuple[str, tuple[int, ...]]:
    cmd = [
        "ansible-playbook",
        "-i",
        "localhost,",
        "--connection=local",
        str(PLAYBOOK),
        "-e",
        f"@{VARS}",
        *extra,
    ]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    out = res.stdout + res.stderr
    (OUTPUT_DIR / f"ansible-run-{int(time.time() * 1000)}.log").write_text(out)
    assert res.returncode == 0, f"ansible-playbook failed:\n{out[-6000:]}"
    m = RECAP_RE.search(out)
    assert m, out[-3000:]
    return out, tuple(int(x) for x in m.groups())


OUTPUT_DIR = REPO / "test-output" / "ops"


@pytest.fixture(scope="module")
def deployed(ops_env: dict[str, str], vizdesk_wheel: Path) -> Iterator[Deployment]:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    for tool in ("visudo", "nft", "redis-server"):
        ensure_tool(tool)
    _stop_direct_services()
    daemon_port = _free_port(range(18089, 18100))
    redis_port = _free_port(range(16493, 16500))
    extra = [
        "-e",
        f"vizdesk_test_root={ROOT}",
        "-e",
        f"vizdesk_repo_dir={REPO}",
        "-e",
        f"vizdesk_wheel={vizdesk_wheel}",
        "-e",
        f"vizdesk_listen_port={daemon_port}",
        "-e",
        f"vizdesk_redis_port={redis_port}",
        "-e",
        "ansible_python_interpreter=/usr/bin/python3",
    ]
    # The test bed's slurm.conf is not in Slurm's default place (it may be another
    # cluster's): the role's switch for that case.
    slurm_conf = os.environ.get("SLURM_CONF")
    if slurm_conf:
        extra += ["-e", f"vizdesk_slurm_conf={slurm_conf}"]
    runs, recaps = [], []
    try:
        for _ in range(2):
            out, recap = _run_playbook(ops_env, extra)
            runs.append(out)
            recaps.append(recap)
        yield Deployment(runs, recaps, daemon_port, redis_port)
    finally:
        _stop_direct_services()


def _changed_tasks(output: str) -> list[str]:
    """Names of the tasks that reported a change, for a readable failure."""
    task, changed = "", []
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed:"):
            changed.append(task)
    return changed


def test_first_run_converges_and_second_run_changes_nothing(deployed: Deployment) -> None:
    for ok, _changed, unreachable, failed in deployed.recaps:
        assert (unreachable, failed) == (0, 0)
        assert ok > 40
    changed = deployed.recaps[1][1]
    assert changed == 0, f"second run changed: {_changed_tasks(deployed.runs[1])}"


def test_daemon_runs_from_the_installed_venv(deployed: Deployment) -> None:
    with urllib.request.urlopen(deployed.url("/healthz"), timeout=5) as resp:
        assert resp.status == 200
    pid = int((ROOT / "run" / "vizdesk.pid").read_text())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert str(ROOT / "opt" / "venv" / "bin" / "vizdesk").encode() in cmdline
    # It runs as the unprivileged account the role created, not as root.
    uid = Path(f"/proc/{pid}").stat().st_uid
    assert pwd.getpwuid(uid).pw_name == USER
    # The health check helper the units use agrees (and reads the port from the config).
    res = subprocess.run(
        [
            str(ROOT / "opt" / "venv" / "bin" / "python3"),
            str(ROOT / "opt" / "libexec" / "vizdesk-healthcheck"),
            "--config",
            str(deployed.config_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    assert f":{deployed.daemon_port}/healthz" in res.stdout


def test_generated_config_is_what_the_variables_say(deployed: Deployment) -> None:
    cfg = yaml.safe_load(deployed.config_path.read_text())
    assert cfg["server"]["port"] == deployed.daemon_port
    assert cfg["redis"]["url"] == f"redis://127.0.0.1:{deployed.redis_port}/0"
    assert cfg["slurm"]["submit_prefix"] == ["/usr/bin/sudo", "-n", "-u", "{user}", "--"]
    assert cfg["auth"]["public_key_files"] == {
        "ops-2026": str(ROOT / "etc" / "secrets" / "jwt-key-ops-2026.pem")
    }
    # vizdesk_config is deep-merged over the generated keys.
    assert cfg["limits"] == {"create_per_window": 7}
    assert cfg["policy"]["groups"]["ops-testers"]["partitions"] == ["viz"]
    assert cfg["sessions"]["jobscript"] == str(ROOT / "opt/share/jobscripts/vnc.sbatch")
    # The daemon's own loader accepts it (the role validated it with check-config too).
    res = subprocess.run(
        [str(ROOT / "opt/venv/bin/vizdesk"), "--config", str(deployed.config_path), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    for secret in ("ops-test-redis-password", "ops-test-jwt-secret"):
        assert secret not in deployed.config_path.read_text()


def _mode(path: Path) -> tuple[int, str, str]:
    st = path.stat()
    return (stat.S_IMODE(st.st_mode), pwd.getpwuid(st.st_uid).pw_name, _group_name(st.st_gid))


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


def test_secrets_are_readable_by_the_daemon_only(deployed: Deployment) -> None:
    secrets = ROOT / "etc" / "secrets"
    assert _mode(secrets) == (0o750, "root", USER)
    for name in ("redis-password", "jwt-hs256-secret", "jwt-key-ops-2026.pem"):
        assert _mode(secrets / name) == (0o640, "root", USER), name
    assert (secrets / "redis-password").read_text().strip() == REDIS_PASSWORD
    # The Redis config holds only the SHA-256 of the password.
    redis_conf = (ROOT / "etc" / "redis-vizdesk.conf").read_text()
    assert REDIS_PASSWORD not in redis_conf
    assert _mode(ROOT / "etc" / "redis-vizdesk.conf")[0] == 0o640
    # no_log: the secrets never appear in the playbook output.
    for out in deployed.runs:
        assert REDIS_PASSWORD not in out
        assert TEST_VARS["vizdesk_jwt_hs256_secret"] not in out


def test_redis_requires_the_password_and_confines_the_daemon(deployed: Deployment) -> None:
    anon = redis.Redis(port=deployed.redis_port, socket_timeout=5)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anon.ping()
    wrong = redis.Redis(
        port=deployed.redis_port, username="vizdesk", password="nope", socket_timeout=5
    )
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.ping()
    daemon = redis.Redis(
        port=deployed.redis_port, username="vizdesk", password=REDIS_PASSWORD, socket_timeout=5
    )
    assert daemon.ping()
    daemon.set("vizdesk:ops-test", "1", ex=30)
    with pytest.raises(redis.exceptions.NoPermissionError):
        daemon.set("other:ops-test", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        daemon.flushall()
    with pytest.raises(redis.exceptions.NoPermissionError):
        daemon.config_get("requirepass")
    # What the daemon needs for the per-session users works, and such a user is confined.
    daemon.acl_setuser(
        "vizdesk-s-opstest",
        enabled=True,
        passwords=["+s3cret-ops"],
        keys=["vizdesk:reg:opstest"],
        commands=["+set", "+get"],
    )
    try:
        job = redis.Redis(
            port=deployed.redis_port,
            username="vizdesk-s-opstest",
            password="s3cret-ops",
            socket_timeout=5,
        )
        job.set("vizdesk:reg:opstest", "{}")
        with pytest.raises(redis.exceptions.NoPermissionError):
            job.set("vizdesk:reg:someoneelse", "{}")
    finally:
        daemon.acl_deluser("vizdesk-s-opstest")
        daemon.delete("vizdesk:ops-test", "vizdesk:reg:opstest")


def test_redis_keeps_transactions_across_a_restart(deployed: Deployment) -> None:
    """MULTI/EXEC writes survive a Redis restart (AOF replay).

    Regression: with a `user default` line without permissions, Redis 7.0 refuses every
    transaction while loading the AOF (NOPERM at EXEC) and the data is silently gone.
    """
    daemon = redis.Redis(
        port=deployed.redis_port, username="vizdesk", password=REDIS_PASSWORD, socket_timeout=5
    )
    key = "vizdesk:ops-test:aof"
    daemon.delete(key)
    pipe = daemon.pipeline(transaction=True)
    pipe.zadd(key, {"a": 1.0, "b": 2.0})
    pipe.expire(key, 600)
    pipe.execute()
    helper = ROOT / "opt" / "libexec" / "vizdesk-direct"
    res = subprocess.run(
        [
            str(helper), "restart", str(ROOT / "run" / "redis.pid"),
            str(ROOT / "log" / "redis.log"), "redis", "--", "/usr/bin/redis-server",
            str(ROOT / "etc" / "redis-vizdesk.conf"),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 20
    while True:
        try:
            members = daemon.zrange(key, 0, -1)
            break
        except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert members == [b"a", b"b"]
    assert 0 < daemon.ttl(key) <= 600
    daemon.delete(key)
    log = (ROOT / "log" / "redis.log").read_text()
    assert "AOF-loading-client" not in log.split("Redis is starting")[-1]


def test_sudoers_rule_is_valid_and_narrow(deployed: Deployment) -> None:
    path = ROOT / "sudoers.d" / "vizdesk"
    assert _mode(path) == (0o440, "root", "root")
    res = subprocess.run(
        [ensure_tool("visudo"), "-cf", str(path)], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stdout + res.stderr
    text = path.read_text()
    assert "Cmnd_Alias VIZDESK_SLURM = /usr/bin/sbatch, /usr/bin/scancel" in text
    assert f"{USER} ALL = (VIZDESK_RUNAS) NOPASSWD: VIZDESK_SLURM" in text
    assert "!root" in text
    # SLURM_CONF only because this deployment names a slurm.conf outside the default place
    keep = "VIZDESK_* SLURM_CONF" if os.environ.get("SLURM_CONF") else "VIZDESK_*"
    assert f'env_keep = "{keep}"' in text


def test_firewall_rules_parse(deployed: Deployment) -> None:
    nft = ensure_tool("nft")
    for name, port_expr in (
        ("vizdesk-node.nft", "5901-5999"),
        ("vizdesk-head.nft", str(deployed.redis_port)),
    ):
        path = ROOT / "nftables.d" / name
        res = subprocess.run(
            [nft, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30
        )
        assert res.returncode == 0, res.stderr
        assert port_expr in path.read_text()
    node = (ROOT / "nftables.d" / "vizdesk-node.nft").read_text()
    assert "192.0.2.5" in node and "reject with tcp reset" in node
    head = (ROOT / "nftables.d" / "vizdesk-head.nft").read_text()
    assert "192.0.2.0/24" in head and "2001:db8::/64" in head


def test_slurm_partition_snippet_is_included(deployed: Deployment) -> None:
    slurm = ROOT / "slurm"
    snippet = (slurm / "vizdesk-partition.conf").read_text()
    assert re.search(r"^PartitionName=viz Nodes=viz\[01-04\] State=UP ", snippet, re.M)
    assert re.search(
        r"^NodeName=viz\[01-04\] CPUs=32 RealMemory=257000 Gres=gpu:a100:2 ", snippet, re.M
    )
    assert "GresTypes=gpu" in snippet
    conf = (slurm / "slurm.conf").read_text().splitlines()
    assert conf.count(f"Include {slurm / 'vizdesk-partition.conf'}") == 1
    gres = (slurm / "gres.conf").read_text()
    assert "NodeName=viz[01-04] Name=gpu Type=a100 File=/dev/nvidia[0-1]" in gres


def test_installed_units_verify_with_their_drop_ins(deployed: Deployment, tmp_path: Path) -> None:
    from .test_systemd import verify_units

    units = ROOT / "systemd"
    out = verify_units(
        tmp_path,
        units={p.name: p.read_text() for p in units.glob("*.service")}
        | {p.name: p.read_text() for p in units.glob("*.timer")},
        dropins={
            f"{d.name}/{f.name}": f.read_text() for d in units.glob("*.d") for f in d.glob("*.conf")
        },
    )
    assert out == ""
    dropin = (units / "vizdesk.service.d" / "10-ansible.conf").read_text()
    assert f"ExecStart={ROOT}/opt/venv/bin/vizdesk --config {ROOT}/etc/vizdesk.yaml serve" in dropin
    assert f"User={USER}" in dropin


# ------------------------------------------------------------------ end to end via sudo
def _testbed_up() -> bool:
    try:
        pwd.getpwnam("alice")
    except KeyError:
        return False
    if not (TESTBED_DIR / "env").exists() or not shutil.which("squeue"):
        return False
    res = subprocess.run(["squeue", "-h"], capture_output=True, timeout=20)
    return res.returncode == 0


def _api(
    deployed: Deployment, method: str, path: str, token: str, body: dict[str, object] | None = None
) -> tuple[int, dict[str, object]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        deployed.url(path),
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def sudoers_installed(deployed: Deployment) -> Iterator[Path]:
    """The role's rule, active for the test's duration (the run keeps it in ROOT)."""
    dest = Path("/etc/sudoers.d/zz-vizdesk-ops-test")
    shutil.copy2(ROOT / "sudoers.d" / "vizdesk", dest)
    os.chmod(dest, 0o440)
    try:
        yield dest
    finally:
        dest.unlink(missing_ok=True)


def test_session_through_the_ansible_installed_daemon(
    deployed: Deployment, sudoers_installed: Path
) -> None:
    if not _testbed_up():
        pytest.skip("the test bed (Slurm, user alice) is not up: testbed/testbed.sh up")
    token = subprocess.run(
        [
            str(ROOT / "opt/venv/bin/vizdesk"),
            "--config",
            str(deployed.config_path),
            "token",
            "--user",
            "alice",
            "--ttl",
            "600",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    status, session = _api(deployed, "POST", "/api/v1/sessions", token, {})
    assert status == 201, session
    sid = str(session["id"])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, session = _api(deployed, "GET", f"/api/v1/sessions/{sid}", token)
            if session.get("state") in ("READY", "FAILED", "ENDED"):
                break
            time.sleep(0.5)
        assert session.get("state") == "READY", session
        # Submitted through sudo as alice, not as the daemon's account or root.
        res = subprocess.run(
            ["squeue", "-h", "-j", str(session["job_id"]), "-o", "%u"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert res.stdout.strip() == "alice"
    finally:
        _api(deployed, "DELETE", f"/api/v1/sessions/{sid}", token)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, session = _api(deployed, "GET", f"/api/v1/sessions/{sid}", token)
        if session.get("state") == "ENDED":
            break
        time.sleep(0.5)
    assert session.get("state") == "ENDED", session
