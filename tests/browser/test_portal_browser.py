"""Real-browser tests of the portal page: Debian's Chromium driven by playwright-core (node).

``test_portal_on_testbed`` is the real test on the test bed: it takes the session-scoped
``daemon`` fixture of tests/conftest.py (real Slurm, Redis, Xvnc) and a token for alice.
``test_portal_against_daemon`` runs the same against any running daemon (``VIZDESK_URL``)
with a JWT of a user allowed to launch a desktop (``VIZDESK_TOKEN``);
optional ``VIZDESK_LAUNCH_BODY`` (JSON form values, e.g. ``{"partition": "viz"}``). It runs
``portal_e2e.mjs``: sign in via ``#token=``, launch, start-up steps, noVNC canvas and a
non-uniform screenshot, remote resize, disconnect/reconnect, stop → ENDED, expired/refused
token → sign-in. Screenshots and ``summary.json`` (timings) go to ``test-output/browser/``.

``test_portal_against_standin`` runs the same script against ``standin_server.py``, a DEV
AID that fakes the API over a local Xvnc: it exercises the page in a real browser without
the test bed (plus clipboard both ways and the scheduler banner), not the daemon.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "portal_e2e.mjs"
STANDIN = HERE / "standin_server.py"
OUTPUT = ROOT / "test-output" / "browser"
CHROMIUM = os.environ.get("VIZDESK_CHROMIUM", "/usr/bin/chromium")


def missing_prerequisite() -> str | None:
    """Why the browser test cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} missing (apt-get install chromium)"
    if not (ROOT / "node_modules" / "playwright-core" / "package.json").exists():
        return "node_modules/playwright-core missing (run `npm ci` at the repo root)"
    return None


def run_portal_e2e(
    url: str,
    token: str,
    output_dir: Path,
    *,
    standin: bool = False,
    launch_values: dict[str, Any] | None = None,
    timeout_s: float = 600,
) -> dict[str, Any]:
    """Runs portal_e2e.mjs against ``url``; returns its summary (asserts it passed)."""
    env = {
        **os.environ,
        "VIZDESK_URL": url,
        "VIZDESK_TOKEN": token,
        "VIZDESK_OUTPUT": str(output_dir),
        "VIZDESK_CHROMIUM": CHROMIUM,
        "VIZDESK_STANDIN": "1" if standin else "0",
    }
    if launch_values is not None:
        env["VIZDESK_LAUNCH_BODY"] = json.dumps(launch_values)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary_path = output_dir / "summary.json"
    summary_path.unlink(missing_ok=True)
    proc = subprocess.run(
        ["node", str(SCRIPT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    sys.stdout.write(proc.stdout[-20000:])
    sys.stderr.write(proc.stderr[-5000:])
    assert summary_path.exists(), f"no summary (exit {proc.returncode}): {proc.stderr[-2000:]}"
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    assert proc.returncode == 0 and summary.get("ok"), summary.get("error", proc.stderr[-2000:])
    return summary


def check_summary(summary: dict[str, Any]) -> None:
    shots = [Path(p) for p in summary["screenshots"]]
    names = {p.name for p in shots}
    assert {"03-desktop.png", "04-resized-1024x680.png", "08-ended.png"} <= names
    for p in shots:
        assert p.exists() and p.stat().st_size > 1000, p
    stats = summary["screenshot_stats"]
    assert stats["distinctColors"] >= 3 and stats["dominantShare"] < 0.97, stats
    timings = summary["timings_ms"]
    assert timings["click_to_first_frame"] > 0
    assert timings["resize_smaller"] > 0 and timings["resize_larger"] > 0
    # noVNC logs "Got data while in an invalid state" or "Got data while disconnected"
    # (rfb.js, depending on when the last frame lands) when frames still arrive after the
    # page itself disconnected (the test's deliberate disconnect/stop): not a fault.
    late_data = {
        "console: Got data while in an invalid state",
        "console: Got data while disconnected",
    }
    problems = [p for p in summary["problems"] if p.startswith("console:") and p not in late_data]
    assert not problems, summary["problems"]


@pytest.mark.e2e
def test_portal_on_testbed(daemon: Any) -> None:
    """The same browser test on the session-scoped test bed daemon (tests/conftest.py)."""
    reason = missing_prerequisite()
    if reason:  # `make test` installs them (scripts/test-deps.sh): missing is a failure
        pytest.fail(reason)
    summary = run_portal_e2e(daemon.url, daemon.token("alice"), OUTPUT)
    check_summary(summary)
    assert summary.get("csp_header"), "the daemon must send a Content-Security-Policy on /"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def standin_url() -> Iterator[str]:
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    if shutil.which("Xvnc") is None:
        pytest.skip("Xvnc missing (tigervnc-standalone-server) for the stand-in")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (OUTPUT / "standin").resolve()
    log.mkdir(parents=True, exist_ok=True)
    with (log / "standin-server.log").open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(STANDIN), "--port", str(port)], stdout=out, stderr=out
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/readyz", timeout=1) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                assert proc.poll() is None, "stand-in server exited"
                assert time.monotonic() < deadline, "stand-in server did not start"
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_portal_against_standin(standin_url: str) -> None:
    token = subprocess.run(
        [sys.executable, str(STANDIN), "--print-token"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    summary = run_portal_e2e(standin_url, token, OUTPUT / "standin", standin=True)
    check_summary(summary)
    steps = "\n".join(summary["steps"])
    assert "policy refusal shown" in steps
    assert "scheduler-unreachable banner shown and cleared" in steps
    if shutil.which("xclip"):
        assert "clipboard panel text became the desktop's clipboard" in steps
    assert summary["csp_header"] and "default-src 'self'" in summary["csp_header"]


# --- the batch side (issue 12) --------------------------------------------------------

BATCH_SCRIPT = HERE / "batch_e2e.mjs"


def run_batch_e2e(url: str, env_extra: dict[str, str], output_dir: Path) -> dict[str, Any]:
    """Runs batch_e2e.mjs against ``url``; returns its summary (asserts it passed)."""
    env = {**os.environ, "VIZDESK_URL": url, "VIZDESK_OUTPUT": str(output_dir),
           "VIZDESK_CHROMIUM": CHROMIUM, **env_extra}  # fmt: skip
    output_dir.mkdir(parents=True, exist_ok=True)
    summary_path = output_dir / "summary.json"
    summary_path.unlink(missing_ok=True)
    proc = subprocess.run(["node", str(BATCH_SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1200, check=False)  # fmt: skip
    sys.stdout.write(proc.stdout[-20000:])
    sys.stderr.write(proc.stderr[-5000:])
    assert summary_path.exists(), f"no summary (exit {proc.returncode}): {proc.stderr[-2000:]}"
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    assert proc.returncode == 0 and summary.get("ok"), summary.get("error", proc.stderr[-2000:])
    return summary


def check_batch_summary(summary: dict[str, Any], *, renewal: bool) -> None:
    for p in summary["screenshots"]:
        assert Path(p).exists() and Path(p).stat().st_size > 1000, p
    assert set(summary["axe"]) >= {"signin", "desktops", "library", "jobform", "job", "jobs"}
    for page, violations in summary["axe"].items():
        assert not [v for v in violations if v["impact"] in ("serious", "critical")], page
    assert summary["upload"]["resumed_from"] > 0
    assert summary["job"]["states"][-1] == "COMPLETED"
    assert summary["timings_ms"]["load_to_interactive"] > 0
    if renewal:
        assert summary["renewal"]["websockets"] == 0


def short_token_server(mint: Callable[[], str]) -> str:
    """A loopback URL that answers each GET with {"token": mint()}: the renewal step fetches
    its soon-expiring token when it starts, not when the test starts."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"token": mint()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/token"


@pytest.mark.e2e
def test_batch_portal_on_testbed(daemon: Any) -> None:
    """The batch side in Chromium on the test bed daemon, with the shipped templates
    python-config, python-script and checksum (its ``data`` slot takes the 200 MB upload);
    VIZDESK_BIG_TEMPLATE / VIZDESK_BIG_SLOT / VIZDESK_BIG_FILE_NAME choose others."""
    reason = missing_prerequisite()
    if reason:
        pytest.fail(reason)
    env = {
        "VIZDESK_TOKEN": daemon.token("alice"),
        "VIZDESK_SHORT_TOKEN_URL": short_token_server(lambda: daemon.token("alice", ttl=90)),
        "VIZDESK_RENEW_TOKEN": daemon.token("alice"),
        "VIZDESK_BIG_TEMPLATE": "checksum",
        "VIZDESK_BIG_SLOT": "data",
        "VIZDESK_BIG_FILE_NAME": "big.bin",
    }
    for key in ("VIZDESK_BIG_TEMPLATE", "VIZDESK_BIG_SLOT", "VIZDESK_BIG_FILE_NAME"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    summary = run_batch_e2e(daemon.url, env, OUTPUT / "batch")
    check_batch_summary(summary, renewal=True)


def test_batch_portal_against_standin(standin_url: str) -> None:
    """DEV AID: the same script against the stand-in (fake jobs, minimal tus)."""
    token = subprocess.run([sys.executable, str(STANDIN), "--print-token"], capture_output=True,
                           text=True, check=True).stdout.strip()  # fmt: skip
    short_url = f"{standin_url}/_standin/token?ttl=45"
    env = {"VIZDESK_TOKEN": token, "VIZDESK_SHORT_TOKEN_URL": short_url,
           "VIZDESK_RENEW_TOKEN": token, "VIZDESK_STANDIN": "1",
           "VIZDESK_UPLOAD_KBPS": "60000"}  # fmt: skip
    summary = run_batch_e2e(standin_url, env, OUTPUT / "batch-standin")
    check_batch_summary(summary, renewal=True)


# --- automatic reconnect (issue 15) ---------------------------------------------------

RECONNECT_SCRIPT = HERE / "reconnect_e2e.mjs"


def run_reconnect_e2e(
    url: str,
    token: str,
    output_dir: Path,
    *,
    standin: bool = False,
    restart: Callable[[str], None] | None = None,
    timeout_s: float = 600,
) -> dict[str, Any]:
    """Runs reconnect_e2e.mjs against ``url``; returns its summary (asserts it passed).
    Without ``standin`` the script asks for each daemon restart with a line
    ``VIZDESK-E2E restart <graceful|kill>`` on its stdout: ``restart(mode)`` performs it
    and the script is told ``restarted``."""
    env = {**os.environ, "VIZDESK_URL": url, "VIZDESK_TOKEN": token,
           "VIZDESK_OUTPUT": str(output_dir), "VIZDESK_CHROMIUM": CHROMIUM,
           "VIZDESK_STANDIN": "1" if standin else "0"}  # fmt: skip
    output_dir.mkdir(parents=True, exist_ok=True)
    summary_path = output_dir / "summary.json"
    summary_path.unlink(missing_ok=True)
    proc = subprocess.Popen(
        ["node", str(RECONNECT_SCRIPT)], cwd=ROOT, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    err_lines: list[str] = []
    threading.Thread(target=lambda: err_lines.extend(proc.stderr or []), daemon=True).start()
    killer = threading.Timer(timeout_s, proc.kill)
    killer.start()
    out_lines: list[str] = []
    try:
        for line in proc.stdout:
            out_lines.append(line)
            if line.startswith("VIZDESK-E2E restart "):
                assert restart is not None, "the script asked for a restart"
                restart(line.split()[-1])
                proc.stdin.write("restarted\n")
                proc.stdin.flush()
        proc.wait()
    finally:
        killer.cancel()
    errors = "".join(err_lines)
    sys.stdout.write("".join(out_lines)[-20000:])
    sys.stderr.write(errors[-5000:])
    assert summary_path.exists(), f"no summary (exit {proc.returncode}): {errors[-2000:]}"
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    assert proc.returncode == 0 and summary.get("ok"), summary.get("error", errors[-2000:])
    return summary


def check_reconnect_summary(summary: dict[str, Any], rounds: int) -> None:
    assert len(summary["rounds"]) == rounds, summary["rounds"]
    for r in summary["rounds"]:
        assert "reconnecting" in " ".join(r["indicator_log"]).lower(), r
        assert r["indicator_log"][-1] == "", r  # the indicator went away again
        assert r["tickets"] >= 1, r  # a fresh ticket for the new connection
        assert r["after"]["canvases"] == 1 and r["after"]["focus"] == "clipboard-text", r
    assert summary["axe"] and all(v == [] for v in summary["axe"].values()), summary["axe"]
    for p in summary["screenshots"]:
        assert Path(p).exists() and Path(p).stat().st_size > 1000, p


def test_reconnect_against_standin(standin_url: str) -> None:
    """DEV AID: the reconnect scenario against the stand-in, whose /_standin/drop closes the
    desktop websockets (1012, then a cut connection: 1006), ends the events streams and
    answers 503 for a few seconds; a last 1008 close must not reconnect by itself."""
    token = subprocess.run([sys.executable, str(STANDIN), "--print-token"], capture_output=True,
                           text=True, check=True).stdout.strip()  # fmt: skip
    summary = run_reconnect_e2e(standin_url, token, OUTPUT / "reconnect-standin", standin=True)
    check_reconnect_summary(summary, rounds=2)
    assert "a 1008 close is final" in "\n".join(summary["steps"])


def _restart_daemon(d: Any, mode: str) -> None:
    """Stops the test's own daemon process (SIGTERM: a graceful shutdown, which closes the
    desktop websockets with 1012 at once and ends the events streams; or SIGKILL: the browser
    sees 1006) and starts it again with the same config: same port, same Redis prefix, so
    the desktop's job is found again."""
    d.proc.send_signal(signal.SIGKILL if mode == "kill" else signal.SIGTERM)
    try:
        d.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait()
    log = d.log_path.open("ab")
    d.proc = subprocess.Popen(
        [sys.executable, "-m", "vizdesk", "--config", str(d.config_path), "serve"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        assert d.proc.poll() is None, f"restarted daemon exited: {d.log_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{d.url}/readyz", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers (503: Slurm or Redis degraded, which is not this test's)
        except OSError:
            pass  # not listening yet
        assert time.monotonic() < deadline, "the restarted daemon did not answer within 30 s"
        time.sleep(0.1)


@pytest.fixture
def own_daemon(testbed: Any) -> Iterator[Any]:
    """A daemon of this test's own (it restarts it), on the test bed."""
    from tests.conftest import start_daemon, stop_daemon

    d = start_daemon(testbed, "reconnect-browser", {})
    yield d
    stop_daemon(d)


@pytest.mark.e2e
def test_portal_reconnects_after_daemon_restart(own_daemon: Any) -> None:
    """With a desktop open, the daemon serving it is restarted twice (gracefully, then
    killed with SIGKILL): the page shows "reconnecting…" and is back each time (a fresh
    ticket, a new noVNC connection with new frames, the events stream live again and the
    list fetched again) without a reload and with nothing else changed."""
    reason = missing_prerequisite()
    if reason:
        pytest.fail(reason)
    summary = run_reconnect_e2e(
        own_daemon.url, own_daemon.token("alice"), OUTPUT / "reconnect",
        restart=lambda mode: _restart_daemon(own_daemon, mode),
    )  # fmt: skip
    check_reconnect_summary(summary, rounds=2)
    # graceful: the stopping daemon says "service restart"; SIGKILL: the connection is cut
    assert [r.get("close_code") for r in summary["rounds"]] == ["1012", "1006"], summary
