"""The helper scripts the units and roles run: vizdesk-healthcheck and vizdesk-direct."""

from __future__ import annotations

import http.server
import os
import pwd
import socket
import subprocess
import sys
import threading
import time
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO

HEALTHCHECK = REPO / "systemd" / "vizdesk-healthcheck"
DIRECT = REPO / "ansible" / "roles" / "vizdesk" / "files" / "vizdesk-direct"


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: typing.ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server() -> Iterator[tuple[int, type[_Handler]]]:
    handler = type("H", (_Handler,), {"status": 200, "paths": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield httpd.server_address[1], handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args], capture_output=True, text=True, timeout=60
    )


def test_healthy_daemon(server: tuple[int, type[_Handler]]) -> None:
    port, handler = server
    res = _check("--url", f"http://127.0.0.1:{port}/healthz")
    assert res.returncode == 0, res.stderr
    assert handler.paths == ["/healthz"]


def test_unhealthy_daemon_after_all_tries(server: tuple[int, type[_Handler]]) -> None:
    port, handler = server
    handler.status = 503
    res = _check("--url", f"http://127.0.0.1:{port}/healthz", "--tries", "3", "--interval", "0.05")
    assert res.returncode == 1
    assert "HTTP 503" in res.stderr
    assert len(handler.paths) == 3


def test_nothing_listening_is_unhealthy() -> None:
    res = _check("--url", f"http://127.0.0.1:{_free_port()}/healthz", "--timeout", "1")
    assert res.returncode == 1


def test_url_comes_from_the_config(server: tuple[int, type[_Handler]], tmp_path: Path) -> None:
    port, _handler = server
    cfg = tmp_path / "vizdesk.yaml"
    cfg.write_text(f"server:\n  host: 0.0.0.0\n  port: {port}\n")
    res = _check("--config", str(cfg))
    assert res.returncode == 0, res.stderr
    assert f"http://127.0.0.1:{port}/healthz" in res.stdout  # wildcard bind → loopback
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {port: 'x'}\n")
    assert _check("--config", str(bad)).returncode == 2


def test_wait_mode_polls_until_the_daemon_is_up() -> None:
    port = _free_port()
    handler = type("H", (_Handler,), {"status": 200, "paths": []})
    holder: dict[str, http.server.ThreadingHTTPServer] = {}

    def start_late() -> None:
        time.sleep(1.0)
        holder["s"] = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        holder["s"].serve_forever()

    threading.Thread(target=start_late, daemon=True).start()
    try:
        res = _check(
            "--url",
            f"http://127.0.0.1:{port}/healthz",
            "--wait",
            "20",
            "--interval",
            "0.1",
            "--timeout",
            "1",
        )
        assert res.returncode == 0, res.stderr
        assert "attempt" in res.stdout and "attempt 1)" not in res.stdout
    finally:
        for _ in range(50):
            if "s" in holder:
                holder["s"].shutdown()
                break
            time.sleep(0.1)


def test_wait_mode_gives_up() -> None:
    res = _check(
        "--url",
        f"http://127.0.0.1:{_free_port()}/healthz",
        "--wait",
        "1",
        "--interval",
        "0.1",
        "--timeout",
        "0.2",
    )
    assert res.returncode == 1


# ------------------------------------------------------------------ vizdesk-direct
def _direct(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(DIRECT), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="setpriv needs root to switch users")
def test_direct_start_is_idempotent_and_stop_ends_the_process(tmp_path: Path) -> None:
    pidfile, log = tmp_path / "run" / "svc.pid", tmp_path / "log" / "svc.log"
    user = pwd.getpwuid(65534).pw_name  # nobody
    cmd = ["/bin/sleep", "300"]
    first = _direct("start", str(pidfile), str(log), user, "--", *cmd)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("started ")
    pid = int(pidfile.read_text())
    try:
        assert Path(f"/proc/{pid}").stat().st_uid == 65534  # runs as the given user
        again = _direct("start", str(pidfile), str(log), user, "--", *cmd)
        assert again.stdout.strip() == f"running {pid}"
        assert _direct("status", str(pidfile)).returncode == 0
        # A pid file naming some other program (pid reuse) does not count as running.
        other = subprocess.Popen(["/usr/bin/tail", "-f", "/dev/null"])
        try:
            pidfile.write_text(f"{other.pid}\n")
            restarted = _direct("start", str(pidfile), str(log), user, "--", *cmd)
            assert restarted.stdout.startswith("started "), restarted.stdout
        finally:
            other.kill()
            other.wait()
        new_pid = int(pidfile.read_text())
        stop = _direct("stop", str(pidfile))
        assert stop.returncode == 0 and stop.stdout.startswith("stopped")
        assert not pidfile.exists()
        for _ in range(50):
            if not Path(f"/proc/{new_pid}").exists():
                break
            time.sleep(0.1)
    finally:
        subprocess.run(["kill", str(pid)], capture_output=True)
    assert _direct("status", str(pidfile)).returncode == 3


def test_direct_reports_a_command_that_dies_at_once(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("setpriv needs root to switch users")
    res = _direct(
        "start",
        str(tmp_path / "x.pid"),
        str(tmp_path / "x.log"),
        "root",
        "--",
        "/bin/sh",
        "-c",
        "echo boom; exit 3",
    )
    assert res.returncode == 1
    assert "boom" in res.stderr
    assert not (tmp_path / "x.pid").exists()
