"""vizdesk_head with several daemon replicas on several hosts: the templates, for real.

tests/ops/ansible/replicas.yml renders the role's replica, unit, HAProxy, Sentinel and
Redis templates for three hosts of one inventory (all ``--connection=local``, each under
its own directory): head-a with 3 replicas, head-b with 2, head-c with the default 1.
The roles' defaults are the inventory's group vars (each host's own values win, as in a
real inventory). Checked with the real tools: ``haproxy -c`` (in the play, as the role's
``validate``, and again here), ``vizdesk check-config`` on every replica's config,
``systemd-analyze verify`` on the instance units, and a real Redis Sentinel started on
the rendered Sentinel config. The single-replica path of the whole role (nothing changes
by default) is the full run of test_ansible.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, ensure_tool, which

PLAYBOOK = REPO / "tests" / "ops" / "ansible" / "replicas.yml"
ROLES = REPO / "ansible" / "roles"
REDIS_PORT = 16479
SENTINEL_PASSWORD = "ops-test-sentinel-password-0123"
SENTINEL_REDIS_PASSWORD = "ops-test-sentinel-redis-password-0123"
HOSTS = {
    "head-a": {"vizdesk_head_replicas": 3, "vizdesk_head_replica_base_port": 18581,
               "vizdesk_head_replica_address": "127.0.0.1", "ansible_host": "127.0.0.1"},
    "head-b": {"vizdesk_head_replicas": 2, "vizdesk_head_replica_base_port": 18591,
               "vizdesk_head_replica_address": "127.0.0.2"},
    "head-c": {"vizdesk_listen_port": 18599, "vizdesk_head_replica_address": "::1"},
}  # fmt: skip


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the ops tests run as root")


@dataclasses.dataclass
class Rendered:
    root: Path
    output: str

    def host(self, name: str) -> Path:
        return self.root / name


def _group_vars(root: Path) -> dict[str, object]:
    gvars: dict[str, object] = {}
    for path in (
        ROLES / "vizdesk" / "defaults" / "main.yml",
        ROLES / "vizdesk_head" / "defaults" / "main.yml",
        ROLES / "vizdesk_head" / "vars" / "main.yml",
    ):
        gvars.update(yaml.safe_load(path.read_text()))
    venv = Path(sys.prefix)
    check = f"{venv}/bin/vizdesk --config %s check-config"
    gvars.update(
        {
            "vizdesk_prefix": f"{root}/{{{{ inventory_hostname }}}}/opt",
            "vizdesk_etc_dir": f"{root}/{{{{ inventory_hostname }}}}/etc",
            "vizdesk_venv": str(venv),
            "vizdesk_redis_port": REDIS_PORT,
            "vizdesk_redis_password": "ops-test-redis-password-0123456789",
            "vizdesk_head_redis_bind": ["127.0.0.1"],
            "vizdesk_head_redis_dir": f"{root}/{{{{ inventory_hostname }}}}/redis",
            "vizdesk_head_haproxy_enabled": True,
            "vizdesk_head_haproxy_binary": ensure_haproxy(),
            "vizdesk_head_haproxy_socket": f"{root}/{{{{ inventory_hostname }}}}/haproxy.sock",
            "vizdesk_head_haproxy_pidfile": f"{root}/{{{{ inventory_hostname }}}}/haproxy.pid",
            "vizdesk_head_sentinel_manage": True,
            "vizdesk_head_sentinel_redis_password": SENTINEL_REDIS_PASSWORD,
            "vizdesk_redis_sentinel_password": SENTINEL_PASSWORD,
            "vizdesk_service_manager": "direct",
            "replicas_check_config": check,
        }
    )
    gvars["vizdesk_redis_sentinel_hosts"] = [f"127.0.0.1:{p}" for p in (26481, 26482, 26483)]
    return gvars


def ensure_haproxy() -> str:
    found = which("haproxy")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "-o", "DPkg::Lock::Timeout=900", "install", "-y",
             "--no-install-recommends", "haproxy"],
            env=env, capture_output=True, timeout=1200,
        )  # fmt: skip
        found = which("haproxy")
        if found:
            return found
    pytest.fail("haproxy is not installed and apt-get could not install it (package haproxy)")


@pytest.fixture(scope="module")
def rendered(ops_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    root = tmp_path_factory.mktemp("replicas")
    inventory = root / "inventory.yml"
    hosts = {name: {"ansible_connection": "local", **hv} for name, hv in HOSTS.items()}
    inventory.write_text(
        yaml.safe_dump({"all": {"vars": _group_vars(root), "hosts": hosts}}, sort_keys=False)
    )
    cmd = [
        "ansible-playbook", "-i", str(inventory), str(PLAYBOOK),
        "-e", f"vizdesk_test_root={root}", "-e", f"vizdesk_repo_dir={REPO}",
        "-e", "ansible_python_interpreter=/usr/bin/python3",
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=REPO, env=ops_env, capture_output=True, text=True, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"ansible-playbook failed:\n{out[-6000:]}"
    return Rendered(root, out)


def test_haproxy_lists_every_replica_of_every_host(rendered: Rendered) -> None:
    want = [
        "server head-a_18581 127.0.0.1:18581", "server head-a_18582 127.0.0.1:18582",
        "server head-a_18583 127.0.0.1:18583", "server head-b_18591 127.0.0.2:18591",
        "server head-b_18592 127.0.0.2:18592", "server head-c_18599 [::1]:18599",
    ]  # fmt: skip
    haproxy = ensure_haproxy()
    for host in HOSTS:
        cfg = rendered.host(host) / "haproxy.cfg"
        text = cfg.read_text()
        servers = [line.strip() for line in text.splitlines() if line.strip().startswith("server ")]
        assert servers == want, host
        res = subprocess.run(
            [haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0, res.stdout + res.stderr
        for line in (
            "balance roundrobin",
            "option httpchk GET /readyz",
            "http-check expect status 200",
            "default-server check inter 1000 fastinter 1000 downinter 1000 fall 2 rise 1",
            "option redispatch 1",
            "option forwardfor",
            "timeout tunnel 1h",
            "maxconn 8000",
            f"stats socket {rendered.host(host)}/haproxy.sock mode 600 level admin",
        ):
            assert re.search(rf"^\s*{re.escape(line)}$", text, re.M), line
        assert "shutdown-sessions" not in text.replace("No on-marked-down shutdown-sessions", "")
        assert not re.search(r"^\s*daemon\b", text, re.M)


def test_each_replica_has_its_own_config(rendered: Rendered) -> None:
    for host, count, base in (("head-a", 3, 18581), ("head-b", 2, 18591)):
        etc = rendered.host(host) / "etc"
        names = sorted(p.name for p in etc.glob("vizdesk-*.yaml"))
        assert names == [f"vizdesk-{base + i}.yaml" for i in range(count)]
        for i in range(count):
            cfg = yaml.safe_load((etc / f"vizdesk-{base + i}.yaml").read_text())
            assert cfg["server"]["port"] == base + i
            assert cfg["tracker"] == {"replica_name": f"{host}:{base + i}"}
            # the rest is the shared config
            shared = yaml.safe_load((etc / "vizdesk.yaml").read_text())
            assert {k: v for k, v in cfg.items() if k not in ("server", "tracker")} == {
                k: v for k, v in shared.items() if k != "server"
            }
        assert "tracker" not in yaml.safe_load((etc / "vizdesk.yaml").read_text())
    # the default (one replica): no per-replica files, the config as it always was
    etc_c = rendered.host("head-c") / "etc"
    assert not list(etc_c.glob("vizdesk-*.yaml"))
    shared_c = yaml.safe_load((etc_c / "vizdesk.yaml").read_text())
    assert shared_c["server"]["port"] == 18599
    assert "tracker" not in shared_c


def test_replica_configs_pass_check_config(rendered: Rendered) -> None:
    for path in sorted(rendered.root.glob("head-*/etc/vizdesk-*.yaml")):
        res = subprocess.run(
            [f"{sys.prefix}/bin/vizdesk", "--config", str(path), "check-config"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert res.returncode == 0, f"{path}: {res.stderr}"


def test_sentinel_keys_only_when_sentinels_are_set(rendered: Rendered) -> None:
    shared = yaml.safe_load((rendered.host("head-a") / "etc" / "vizdesk.yaml").read_text())
    assert shared["redis"]["sentinel_hosts"] == [
        "127.0.0.1:26481", "127.0.0.1:26482", "127.0.0.1:26483",
    ]  # fmt: skip
    assert shared["redis"]["sentinel_master"] == "vizdesk"
    assert shared["redis"]["sentinel_password_file"].endswith("/secrets/redis-sentinel-password")


def test_instance_units_verify(rendered: Rendered, tmp_path: Path) -> None:
    from .test_systemd import verify_units

    units_dir = rendered.host("head-a") / "systemd"
    port = 18581
    units = {
        p.name.replace("@.", f"@{port}."): p.read_text()
        for p in units_dir.iterdir()
        if p.suffix in (".service", ".timer")
    }
    assert set(units) == {
        f"vizdesk@{port}.service", f"vizdesk-healthcheck@{port}.service",
        f"vizdesk-healthcheck@{port}.timer", f"vizdesk-healthcheck-failed@{port}.service",
    }  # fmt: skip
    dropins = {
        f"{p.stem.replace('@.', f'@{port}.')}.d/10-ansible.conf": p.read_text()
        for p in units_dir.glob("*.conf")
    }
    assert verify_units(tmp_path, units, dropins) == ""
    daemon = units[f"vizdesk@{port}.service"]
    assert "Wants=network-online.target vizdesk-healthcheck@%i.timer" in daemon
    assert re.search(r"^RuntimeDirectory=vizdesk-%i$", daemon, re.M)
    probe = units[f"vizdesk-healthcheck@{port}.service"]
    assert "Requisite=vizdesk@%i.service" in probe
    assert "OnFailure=vizdesk-healthcheck-failed@%i.service" in probe
    failed = units[f"vizdesk-healthcheck-failed@{port}.service"]
    assert "try-restart vizdesk@%i.service" in failed
    dropin = dropins[f"vizdesk@{port}.service.d/10-ansible.conf"]
    etc = rendered.host("head-a") / "etc"
    assert f"ExecStart={sys.prefix}/bin/vizdesk --config {etc}/vizdesk-%i.yaml serve" in dropin
    # the hardening is the repository unit's, line for line
    repo_unit = (REPO / "systemd" / "vizdesk.service").read_text()
    for line in repo_unit.splitlines():
        if line.startswith(("Protect", "Restrict", "CapabilityBoundingSet", "SystemCall")):
            assert line in daemon.splitlines(), line


def test_redis_and_sentinel_configs(rendered: Rendered) -> None:
    primary = (rendered.host("head-a") / "redis-vizdesk.conf").read_text()
    replica = (rendered.host("head-b") / "redis-vizdesk.conf").read_text()
    assert not re.search(r"^replicaof ", primary, re.M)
    assert f"\nreplicaof 127.0.0.1 {REDIS_PORT}\n" in replica
    for text in (primary, replica):
        assert "\nmasteruser vizdesk-sentinel\n" in text
        assert re.search(r"^user vizdesk-sentinel on #[0-9a-f]{64} ", text, re.M)
        # plain text only where Redis needs it (masterauth); the ACL holds its SHA-256
        assert text.count(SENTINEL_REDIS_PASSWORD) == 1
        assert f"\nmasterauth {SENTINEL_REDIS_PASSWORD}\n" in text
    for host in HOSTS:
        conf = (rendered.host(host) / "sentinel-vizdesk.conf").read_text()
        for line in (
            f"sentinel monitor vizdesk 127.0.0.1 {REDIS_PORT} 2",
            "sentinel down-after-milliseconds vizdesk 5000",
            "sentinel failover-timeout vizdesk 60000",
            "sentinel auth-user vizdesk vizdesk-sentinel",
            f"sentinel auth-pass vizdesk {SENTINEL_REDIS_PASSWORD}",
            f"requirepass {SENTINEL_PASSWORD}",
        ):
            assert re.search(rf"^{re.escape(line)}$", conf, re.M), (host, line)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_real_sentinel_loads_the_rendered_config(rendered: Rendered, tmp_path: Path) -> None:
    server = ensure_tool("redis-server")
    cli = ensure_tool("redis-cli")
    conf = tmp_path / "sentinel.conf"  # Sentinel rewrites its config: a copy
    conf.write_text((rendered.host("head-a") / "sentinel-vizdesk.conf").read_text())
    port = _free_port()
    proc = subprocess.Popen(
        [server, str(conf), "--sentinel", "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        out = ""
        while time.monotonic() < deadline:
            res = subprocess.run(
                [cli, "-p", str(port), "--no-auth-warning", "-a", SENTINEL_PASSWORD,
                 "SENTINEL", "MASTERS"],
                capture_output=True, text=True, timeout=10,
            )  # fmt: skip
            out = res.stdout
            if res.returncode == 0 and "vizdesk" in out:
                break
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.2)
        fields = out.split()
        assert fields[fields.index("name") + 1] == "vizdesk", out
        assert fields[fields.index("quorum") + 1] == "2", out
        assert fields[fields.index("down-after-milliseconds") + 1] == "5000", out
        anon = subprocess.run(
            [cli, "-p", str(port), "SENTINEL", "MASTERS"], capture_output=True, text=True,
            timeout=10,
        )  # fmt: skip
        assert "NOAUTH" in anon.stdout + anon.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ------------------------------------------------------------------ the whole role, 2 replicas
@dataclasses.dataclass
class ReplicaDeployment:
    root: Path
    runs: list[str]
    recaps: list[tuple[int, ...]]
    ports: list[int]
    redis_port: int
    haproxy_port: int
    sentinel_port: int


def _stop_replica_deployment(root: Path) -> None:
    helper = root / "opt" / "libexec" / "vizdesk-direct"
    for pidfile in sorted((root / "run").glob("*.pid")) if (root / "run").is_dir() else []:
        if helper.exists() and pidfile.name != "haproxy.pid":
            subprocess.run([str(helper), "stop", str(pidfile)], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def deployed_replicas(ops_env: dict[str, str], vizdesk_wheel: Path) -> Iterator[ReplicaDeployment]:
    """local.yml (the full roles, direct service manager) with vizdesk_head_replicas: 2,
    HAProxy and a Sentinel, in a root and on ports of its own; run twice."""
    from .test_ansible import OUTPUT_DIR, ROOT, _free_port, _run_playbook

    for tool in ("visudo", "nft", "redis-server"):
        ensure_tool(tool)
    ensure_haproxy()
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    root = Path(f"{ROOT}-replicas")
    _stop_replica_deployment(root)
    base = _free_port(range(18189, 18199))
    second = _free_port(range(base + 1, base + 2))
    redis_port = _free_port(range(16593, 16599))
    sentinel_port = _free_port(range(26593, 26599))
    haproxy_port = _free_port(range(18480, 18489))
    variables = {
        "vizdesk_test_root": str(root),
        "vizdesk_repo_dir": str(REPO),
        "vizdesk_wheel": str(vizdesk_wheel),
        "vizdesk_listen_port": base,
        "vizdesk_redis_port": redis_port,
        "ansible_python_interpreter": "/usr/bin/python3",
        "vizdesk_head_replicas": 2,
        "vizdesk_head_haproxy_enabled": True,
        "vizdesk_head_haproxy_conf": f"{root}/haproxy/haproxy.cfg",
        "vizdesk_head_haproxy_bind": f"127.0.0.1:{haproxy_port}",
        "vizdesk_head_haproxy_socket": f"{root}/run/haproxy.sock",
        "vizdesk_head_haproxy_pidfile": f"{root}/run/haproxy.pid",
        "vizdesk_head_sentinel_manage": True,
        "vizdesk_head_sentinel_conf": f"{root}/redis/sentinel-vizdesk.conf",
        "vizdesk_head_sentinel_port": sentinel_port,
        "vizdesk_head_sentinel_down_after_ms": 1000,
        "vizdesk_head_sentinel_redis_password": SENTINEL_REDIS_PASSWORD,
        "vizdesk_redis_sentinel_password": SENTINEL_PASSWORD,
    }
    variables["vizdesk_redis_sentinel_hosts"] = [f"127.0.0.1:{sentinel_port}"]
    if os.environ.get("SLURM_CONF"):
        variables["vizdesk_slurm_conf"] = os.environ["SLURM_CONF"]
    extra = ["-e", json.dumps(variables)]
    runs, recaps = [], []
    try:
        for _ in range(2):
            out, recap = _run_playbook(ops_env, extra)
            runs.append(out)
            recaps.append(recap)
        yield ReplicaDeployment(
            root, runs, recaps, [base, second], redis_port, haproxy_port, sentinel_port
        )
    finally:
        _stop_replica_deployment(root)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_replicas_converge_and_run(deployed_replicas: ReplicaDeployment) -> None:
    from .test_ansible import _changed_tasks

    d = deployed_replicas
    for _ok, _changed, unreachable, failed in d.recaps:
        assert (unreachable, failed) == (0, 0)
    assert d.recaps[1][1] == 0, f"second run changed: {_changed_tasks(d.runs[1])}"
    for port in d.ports:
        status, _ = _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200, port
        cfg = yaml.safe_load((d.root / "etc" / f"vizdesk-{port}.yaml").read_text())
        assert cfg["server"]["port"] == port
        assert cfg["tracker"]["replica_name"] == f"localhost:{port}"
        pid = int((d.root / "run" / f"vizdesk-{port}.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert str(d.root / "etc" / f"vizdesk-{port}.yaml").encode() in cmdline
    # the single daemon of one replica is not started
    assert not (d.root / "run" / "vizdesk.pid").exists()


def test_haproxy_balances_over_the_replicas(deployed_replicas: ReplicaDeployment) -> None:
    d = deployed_replicas
    cfg = d.root / "haproxy" / "haproxy.cfg"
    servers = [
        ln.split()[2] for ln in cfg.read_text().splitlines() if ln.strip().startswith("server ")
    ]
    assert servers == [f"127.0.0.1:{p}" for p in d.ports]
    for port in d.ports:  # ready: Redis through the Sentinel, the test bed's Slurm
        deadline = time.monotonic() + 30
        while True:
            status, body = _get(f"http://127.0.0.1:{port}/readyz")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200, f"replica {port} is not ready: {body[:300]!r}"
    pidfile = d.root / "run" / "haproxy.pid"
    res = subprocess.run(
        [ensure_haproxy(), "-D", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stdout + res.stderr
    try:
        deadline = time.monotonic() + 20
        while True:  # until HAProxy's /readyz checks have marked the replicas up
            status, body = _get(f"http://127.0.0.1:{d.haproxy_port}/healthz")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200, body
        status, _ = _get(f"http://127.0.0.1:{d.haproxy_port}/metrics")
        assert status == 403
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text().split()[0]), 15)


def test_sentinel_watches_the_primary(deployed_replicas: ReplicaDeployment) -> None:
    cli = ensure_tool("redis-cli")
    d = deployed_replicas
    time.sleep(2.5)  # more than down-after-milliseconds (1000): a failed auth shows by now
    res = subprocess.run(
        [cli, "-p", str(d.sentinel_port), "--no-auth-warning", "-a", SENTINEL_PASSWORD,
         "SENTINEL", "MASTER", "vizdesk"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    fields = res.stdout.split()
    assert fields[fields.index("flags") + 1] == "master", res.stdout + res.stderr
    assert fields[fields.index("port") + 1] == str(d.redis_port)
