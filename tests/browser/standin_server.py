# ruff: noqa: E501  (dev aid: the fake templates and error bodies read better on one line)
"""DEV AID ONLY: a stand-in for the vizdesk daemon, to develop and smoke-test the portal page.

It is NOT the daemon and proves nothing about it: no Slurm, no Redis, no JWT signature check,
no tickets bound to an origin, no VNC authentication. It serves daemon/vizdesk/static/ the way
the daemon does (index.html at ``/``, the rest under ``/static/``, with a strict CSP) and fakes
the API v1 endpoints the page uses over a real TigerVNC ``Xvnc`` it starts per session
(``-SecurityTypes None``, loopback only), bridging the websocket to it byte for byte.

Run:  python tests/browser/standin_server.py --port 18080
      then open http://127.0.0.1:18080/#token=<any JWT-shaped token, see --print-token>

Tokens are only decoded; one whose signature part is ``invalid`` is refused (401) so the
page's "sign in again" path can be exercised. The image ``python`` is refused with 403
``policy_violation``. Extra dev endpoints (not part of the API): ``POST /_standin/health``
{"slurm": bool} flips the fake scheduler state (emits a ``status`` event);
``GET|POST /_standin/sessions/{id}/clipboard`` reads / sets the X clipboard of a session's
display (needs ``xclip``).

Batch side (just enough for the page, see ``Batch`` below): two templates (``python-config``
with a JSON ``config`` slot, ``big-input`` with a 1 GiB ``data`` slot and one parameter of
every type), the validate endpoint (pattern, size, JSON + a tiny schema check with a JSON
path), tus 1.0 uploads (creation, termination; bodies appended to a temp file), dry runs,
fake jobs (QUEUED → RUNNING with growing output → COMPLETED with results/ files), results
listing, download and zip, and ``job`` / ``upload`` events.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

STATIC_DIR = Path(__file__).resolve().parents[2] / "daemon" / "vizdesk" / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
POLICY: dict[str, Any] = {
    "partitions": ["standin", "viz"],
    "images": ["*"],
    "max_gpus": 1,
    "max_cpus": 8,
    "max_memory_gb": 16,
    "max_time_limit_minutes": 240,
    "max_sessions": 3,
}
IMAGES = [
    {"id": "xfce", "name": "XFCE desktop", "kind": "viz", "description": "Plain XFCE desktop"},
    {"id": "paraview", "name": "ParaView 5.11", "kind": "viz", "description": "ParaView + XFCE"},
    {"id": "python", "name": "Python 3.12", "kind": "compute", "description": "Batch image"},
]


MAX_UPLOAD = 5 * 2**30
TEMPLATES: list[dict[str, Any]] = [
    {
        "ref": "python-config", "name": "python-config", "source": "admin", "owner": None,
        "editable": False, "visibility": None, "version": "1.0",
        "display_name": "Python with a JSON config", "category": "examples",
        "tags": ["python", "json"], "image": None, "partition": "batch", "launcher": "direct",
        "notify": None,
        "description": "Sums a series described by an uploaded JSON config; writes results/report.json",
        "resources": {"cpus": {"default": 1, "max": 1}, "memory_gb": {"default": 1, "max": 1},
                      "time_limit_minutes": {"default": 5, "max": 60}},
        "parameters": [],
        "files": [{"name": "config", "pattern": "*.json", "required": True, "multiple": False,
                   "max_size": 65536, "format": "json", "description": "{\"n\": <int>}",
                   "schema": {"type": "object", "required": ["n"]}}],
        "outputs": ["results/*"],
    },
    {
        "ref": "big-input", "name": "big-input", "source": "admin", "owner": None,
        "editable": False, "visibility": None, "version": "1.0",
        "display_name": "Big input (test)", "category": "tests", "tags": ["test", "upload"],
        "image": None, "partition": "batch", "launcher": "direct", "notify": None,
        "description": "Checksums a large data file; one parameter of every type",
        "resources": {"cpus": {"default": 1, "max": 4}, "memory_gb": {"default": 1, "max": 4},
                      "time_limit_minutes": {"default": 10, "max": 60}},
        "parameters": [
            {"name": "steps", "type": "int", "required": False, "default": 8, "min": 1, "max": 100},
            {"name": "tolerance", "type": "float", "required": False, "default": 0.5, "min": 0, "max": 1},
            {"name": "label", "type": "string", "required": False, "default": "run",
             "pattern": "^[A-Za-z0-9 _.-]*$", "max_length": 40},
            {"name": "method", "type": "enum", "required": True, "default": "sum",
             "choices": ["sum", "squares"]},
            {"name": "verbose", "type": "bool", "required": False, "default": False},
        ],
        "files": [
            {"name": "data", "pattern": "*.bin", "required": True, "multiple": False,
             "max_size": 2**30, "format": None, "description": "The data file"},
            {"name": "config", "pattern": "*.json", "required": False, "multiple": False,
             "max_size": 65536, "format": "json", "description": "Optional JSON config",
             "schema": {"type": "object", "required": ["n"]}},
        ],
        "outputs": ["results/*"],
    },
    {
        "ref": "python-script", "name": "python-script", "source": "admin", "owner": None,
        "editable": False, "visibility": None, "version": "1.1",
        "display_name": "Python script (sum 1..N)", "category": "examples",
        "tags": ["demo", "python"], "image": None, "partition": "batch", "launcher": "direct",
        "notify": None, "description": "Sum 1..N in Python, optionally after a pause",
        "resources": {"cpus": {"default": 1, "max": 4}, "memory_gb": {"default": 1, "max": 4},
                      "time_limit_minutes": {"default": 10, "max": 120}},
        "parameters": [
            {"name": "n", "type": "int", "required": False, "default": 10, "min": 1, "max": 10000000},
            {"name": "sleep_seconds", "type": "float", "required": False, "default": 0, "min": 0,
             "max": 3600},
        ],
        "files": [], "outputs": [],
    },
]  # fmt: skip


def iso_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    return web.json_response({"error": body}, status=status)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_display() -> int:
    for n in range(40, 400):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number")


def claims_of(token: str) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(raw)
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


def make_token(user: str = "alice", ttl: int = 3600) -> str:
    """An UNSIGNED JWT-shaped token: the stand-in only decodes it."""

    def enc(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"sub": user, "groups": ["viz-users"], "iat": now, "exp": now + ttl}
    return f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(claims)}.standin"


class Desktop:
    """One Xvnc (security None, loopback) plus a few X clients to show."""

    def __init__(self, geometry: str, desktop_cmd: list[str] | None) -> None:
        self.geometry = geometry
        self.desktop_cmd = desktop_cmd
        self.display = free_display()
        self.port = free_port()
        self.procs: list[asyncio.subprocess.Process] = []

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": f":{self.display}"}

    async def start(self, timeout: float = 15.0) -> None:
        xvnc = await asyncio.create_subprocess_exec(
            "Xvnc", f":{self.display}", "-rfbport", str(self.port), "-localhost",
            "-SecurityTypes", "None", "-geometry", self.geometry, "-depth", "24",
            "-AlwaysShared", "-AcceptSetDesktopSize=1", "-SendCutText=1", "-AcceptCutText=1",
            "-nolisten", "tcp",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.procs.append(xvnc)
        deadline = time.monotonic() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                banner = await asyncio.wait_for(reader.readexactly(12), 2)
                writer.close()
                if banner.startswith(b"RFB 003."):
                    break
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                pass
            if xvnc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("Xvnc did not start")
            await asyncio.sleep(0.05)
        clients = [self.desktop_cmd] if self.desktop_cmd else [
            ["xsetroot", "-solid", "#2b5b84"],
            ["xterm", "-geometry", "90x26+40+40", "-title", "vizdesk stand-in desktop",
             "-bg", "#fdf6e3", "-fg", "#073642", "-e",
             "sh", "-c", "echo 'vizdesk stand-in desktop (dev aid)'; echo; uname -a; date; "
             "echo; echo 'type here: keyboard goes through the websocket'; exec sh"],
        ]  # fmt: skip
        for cmd in clients:
            if shutil.which(cmd[0]):
                p = await asyncio.create_subprocess_exec(
                    *cmd, env=self.env, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
                self.procs.append(p)

    async def stop(self) -> None:
        for p in reversed(self.procs):
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(p.wait(), 5)
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                await p.wait()

    async def clipboard(self, text: str | None = None) -> str:
        if not shutil.which("xclip"):
            raise web.HTTPNotImplemented(text="xclip is not installed")
        if text is not None:
            p = await asyncio.create_subprocess_exec(
                "xclip", "-selection", "clipboard", "-i", env=self.env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            assert p.stdin is not None
            p.stdin.write(text.encode())
            p.stdin.close()
            self.procs.append(p)  # xclip stays alive to own the selection
            return text
        p = await asyncio.create_subprocess_exec(
            "xclip", "-selection", "clipboard", "-o", env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await p.communicate()
        return out.decode(errors="replace")


class StandIn:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sessions: dict[str, dict[str, Any]] = {}
        self.desktops: dict[str, Desktop] = {}
        self.tickets: dict[str, str] = {}
        self.listeners: dict[str, set[asyncio.Queue[tuple[str, dict[str, Any]]]]] = {}
        self.slurm_ok = True
        # what /_standin/drop ends: open VNC websockets (with their requests) and events
        # streams; until down_until (monotonic) the API answers 503 (a restarting daemon)
        self.open_ws: dict[int, tuple[web.Request, web.WebSocketResponse]] = {}
        self.down_until = 0.0
        self.tasks: set[asyncio.Task[None]] = set()
        self.uploads: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, dict[str, Any]] = {}
        self.tmp = tempfile.TemporaryDirectory(prefix="vizdesk-standin-")

    # --- helpers ---------------------------------------------------------------------
    def user_of(self, request: web.Request) -> str:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": {"code": "unauthorized", "message": "missing token"}}),
                content_type="application/json",
            )
        token = auth[7:].strip()
        claims = claims_of(token)
        if claims is None or token.endswith(".invalid"):
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": {"code": "unauthorized", "message": "invalid token"}}),
                content_type="application/json",
            )
        if isinstance(claims.get("exp"), int | float) and claims["exp"] < time.time():
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": {"code": "token_expired", "message": "token expired"}}),
                content_type="application/json",
            )
        return str(claims.get("sub", "alice"))

    def own(self, request: web.Request) -> dict[str, Any]:
        user = self.user_of(request)
        s = self.sessions.get(request.match_info["sid"])
        if s is None or s["user"] != user:
            raise web.HTTPNotFound(
                text=json.dumps({"error": {"code": "not_found", "message": "no such session"}}),
                content_type="application/json",
            )
        return s

    def emit(self, user: str, event: str, data: dict[str, Any]) -> None:
        for q in self.listeners.get(user, set()):
            q.put_nowait((event, data))

    def move(self, s: dict[str, Any], state: str, reason: str = "", **fields: Any) -> None:
        s.update(state=state, reason=reason, **fields)
        self.emit(s["user"], "session", dict(s))

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # --- static ------------------------------------------------------------------------
    @staticmethod
    @web.middleware
    async def headers_mw(request: web.Request, handler: Any) -> web.StreamResponse:
        resp: web.StreamResponse = await handler(request)
        if not isinstance(resp, web.WebSocketResponse):
            resp.headers.setdefault("X-Content-Type-Options", "nosniff")
            resp.headers.setdefault("Referrer-Policy", "no-referrer")
            if request.path == "/" or request.path.endswith(".html"):
                resp.headers["Content-Security-Policy"] = CSP
                resp.headers["Cache-Control"] = "no-store"
        return resp

    @web.middleware
    async def down_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/api/") and time.monotonic() < self.down_until:
            return error(503, "unavailable", "the stand-in is restarting (/_standin/drop)")
        resp: web.StreamResponse = await handler(request)
        return resp

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    # --- API ---------------------------------------------------------------------------
    async def me(self, request: web.Request) -> web.Response:
        user = self.user_of(request)
        return web.json_response(
            {"user": user, "groups": ["viz-users"], "is_admin": False, "policy": POLICY}
        )

    async def images(self, request: web.Request) -> web.Response:
        self.user_of(request)
        if self.args.no_images:
            return error(404, "not_found", "no image catalog")
        return web.json_response({"images": IMAGES})

    async def list_sessions(self, request: web.Request) -> web.Response:
        user = self.user_of(request)
        mine = [dict(s) for s in self.sessions.values() if s["user"] == user]
        return web.json_response({"sessions": mine})

    async def get_session(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.own(request)))

    async def create_session(self, request: web.Request) -> web.Response:
        user = self.user_of(request)
        try:
            body = await request.json()
        except ValueError:
            return error(400, "invalid_json", "body is not JSON")
        if not isinstance(body, dict):
            return error(400, "invalid_json", "body must be an object")
        limits = {"cpus": "max_cpus", "memory_gb": "max_memory_gb", "gpus": "max_gpus",
                  "time_limit_minutes": "max_time_limit_minutes"}  # fmt: skip
        for name, limit in limits.items():
            value = body.get(name)
            if value is not None and (not isinstance(value, int) or value < 0):
                return error(400, "invalid", f"{name} must be a non-negative integer", name)
            if value is not None and value > POLICY[limit]:
                return error(403, "policy_violation", f"{limit} is {POLICY[limit]}", name)
        partition = body.get("partition") or "standin"
        if partition not in POLICY["partitions"]:
            msg = f"partition {partition!r} not allowed"
            return error(403, "policy_violation", msg, "partition")
        active = [s for s in self.sessions.values() if s["user"] == user
                  and s["state"] not in ("ENDED", "FAILED")]  # fmt: skip
        if len(active) >= POLICY["max_sessions"]:
            return error(403, "policy_violation", f"max_sessions is {POLICY['max_sessions']}")
        image = body.get("image")
        if image is not None and image not in {i["id"] for i in IMAGES if i["kind"] == "viz"}:
            # a server-side rule the page cannot know in advance: shows the policy message
            msg = f"image {image!r} is not a desktop image"
            return error(403, "policy_violation", msg, "image")
        geometry = str(body.get("geometry") or "1280x800")
        sid = secrets.token_hex(8)
        s = {
            "id": sid, "user": user, "state": "PENDING", "reason": "Priority", "job_id": None,
            "node": None, "image": body.get("image"), "partition": partition,
            "cpus": body.get("cpus", 1), "memory_gb": body.get("memory_gb", 2),
            "gpus": body.get("gpus", 0), "time_limit_minutes": body.get("time_limit_minutes", 60),
            "geometry": geometry, "created_at": iso_now(), "started_at": None, "ready_at": None,
            "ended_at": None,
        }  # fmt: skip
        self.sessions[sid] = s
        self.spawn(self.run_session(s))
        return web.json_response(dict(s), status=201)

    async def run_session(self, s: dict[str, Any]) -> None:
        await asyncio.sleep(self.args.queue_seconds)
        if s["state"] != "PENDING":
            return
        s["job_id"] = str(1000 + len(self.sessions))
        self.move(s, "PENDING", "Resources")
        await asyncio.sleep(self.args.queue_seconds)
        if s["state"] != "PENDING":
            return
        self.move(s, "STARTING", "", node="standin-node", started_at=iso_now())
        desktop = Desktop(s["geometry"], self.args.desktop_cmd)
        self.desktops[s["id"]] = desktop
        try:
            await desktop.start()
        except RuntimeError as exc:
            await desktop.stop()
            self.move(s, "FAILED", str(exc), ended_at=iso_now())
            return
        if s["state"] == "STARTING":
            self.move(s, "READY", "", ready_at=iso_now())

    async def delete_session(self, request: web.Request) -> web.Response:
        s = self.own(request)
        if s["state"] in ("ENDED", "FAILED"):
            return web.json_response(dict(s), status=202)
        self.move(s, "STOPPING", "cancelled by user")
        self.spawn(self.end_session(s))
        return web.json_response(dict(s), status=202)

    async def end_session(self, s: dict[str, Any]) -> None:
        desktop = self.desktops.pop(s["id"], None)
        if desktop:
            await desktop.stop()
        await asyncio.sleep(0.3)
        self.move(s, "ENDED", "cancelled by user", ended_at=iso_now())

    async def connect(self, request: web.Request) -> web.Response:
        s = self.own(request)
        if s["state"] != "READY":
            return error(409, "not_ready", f"session is {s['state']}")
        ticket = secrets.token_urlsafe(24)
        self.tickets[ticket] = s["id"]
        return web.json_response({
            "ticket": ticket, "ws_path": f"/api/v1/sessions/{s['id']}/vnc?ticket={ticket}",
            "expires_in": 15,
        })  # fmt: skip

    async def vnc(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["sid"]
        ticket = request.query.get("ticket", "")
        if self.tickets.pop(ticket, None) != sid:  # one-time
            return error(403, "bad_ticket", "invalid ticket")
        desktop = self.desktops.get(sid)
        if desktop is None:
            return error(409, "not_ready", "no desktop")
        reader, writer = await asyncio.open_connection("127.0.0.1", desktop.port)
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        self.open_ws[id(ws)] = (request, ws)

        async def tcp_to_ws() -> None:
            while data := await reader.read(65536):
                await ws.send_bytes(data)
            await ws.close()

        pump = asyncio.get_running_loop().create_task(tcp_to_ws())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    writer.write(msg.data)
                    await writer.drain()
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.open_ws.pop(id(ws), None)
            pump.cancel()
            writer.close()
        return ws

    async def events(self, request: web.Request) -> web.StreamResponse:
        user = self.user_of(request)
        resp = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        })  # fmt: skip
        await resp.prepare(request)
        q: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.listeners.setdefault(user, set()).add(q)
        try:
            status = {"slurm": "ok" if self.slurm_ok else "unreachable"}
            await resp.write(f"event: status\ndata: {json.dumps(status)}\n\n".encode())
            while True:
                try:
                    event, data = await asyncio.wait_for(q.get(), 15)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if event == "_drop":  # /_standin/drop: the stream ends
                    break
                await resp.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.listeners[user].discard(q)
        return resp

    async def readyz(self, request: web.Request) -> web.Response:
        return web.json_response({
            "status": "ok" if self.slurm_ok else "degraded", "slurm": self.slurm_ok, "redis": True,
        })  # fmt: skip

    # --- dev endpoints -------------------------------------------------------------------
    async def dev_health(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.slurm_ok = bool(body.get("slurm", True))
        for user in list(self.listeners):
            self.emit(user, "status", {"slurm": "ok" if self.slurm_ok else "unreachable"})
        return web.json_response({"slurm": self.slurm_ok})

    async def dev_drop(self, request: web.Request) -> web.Response:
        """Acts out a daemon restart: every desktop websocket closes with ``code`` (1006:
        the connection is cut without a close frame, as when the daemon is killed), every
        events stream ends, and the API answers 503 for ``down_seconds``."""
        body = await request.json()
        code = int(body.get("code", 1012))
        self.down_until = time.monotonic() + float(body.get("down_seconds", 0))
        dropped = len(self.open_ws)
        for req, ws in list(self.open_ws.values()):
            if code == 1006:
                if req.transport is not None:
                    req.transport.abort()
            else:
                await ws.close(code=code, message=b"service restart")
        for queues in self.listeners.values():
            for q in queues:
                q.put_nowait(("_drop", {}))
        return web.json_response({"dropped": dropped})

    async def dev_clipboard(self, request: web.Request) -> web.Response:
        desktop = self.desktops.get(request.match_info["sid"])
        if desktop is None:
            return error(404, "not_found", "no desktop")
        if request.method == "POST":
            text = (await request.json())["text"]
            return web.json_response({"text": await desktop.clipboard(str(text))})
        return web.json_response({"text": await desktop.clipboard()})

    # --- batch ------------------------------------------------------------------------
    def tmpl(self, request: web.Request) -> dict[str, Any]:
        self.user_of(request)
        name = request.match_info["name"]
        t = next((t for t in TEMPLATES if t["ref"] == name), None)
        if t is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": {"code": "not_found", "message": "no such template"}}),
                content_type="application/json",
            )
        return t

    async def list_templates(self, request: web.Request) -> web.Response:
        self.user_of(request)
        q = request.query.get("q", "").lower()
        out = [t for t in TEMPLATES if not q or q in json.dumps(t).lower()]
        return web.json_response({"templates": out})

    async def get_template(self, request: web.Request) -> web.Response:
        t = self.tmpl(request)
        return web.json_response({**t, "definition": {"name": t["name"]}})

    async def readonly_template(self, request: web.Request) -> web.Response:
        self.tmpl(request)
        return error(403, "read_only_template", "admin templates are read-only")

    def check_files(self, user: str, t: dict[str, Any], files: Any) -> dict[str, Any]:
        slots: dict[str, Any] = {}
        files = files if isinstance(files, dict) else {}
        for name in files:
            if name not in {s["name"] for s in t["files"]}:
                slots[name] = {"ok": False, "files": [], "errors": [
                    {"code": "unknown_slot", "message": f"no slot {name!r}"}]}  # fmt: skip
        for slot in t["files"]:
            ids = files.get(slot["name"]) or []
            errs: list[dict[str, Any]] = []
            names: list[str] = []
            if not ids and slot["required"]:
                errs.append({"code": "missing", "message": "a file is required"})
            for uid in ids:
                u = self.uploads.get(uid)
                if u is None or u["user"] != user:
                    errs.append({"code": "missing", "message": f"no upload {uid}"})
                    continue
                names.append(u["filename"])
                if u["offset"] != u["length"]:
                    errs.append({"code": "incomplete", "message": "upload not finished",
                                 "file": u["filename"]})  # fmt: skip
                elif not fnmatchcase(u["filename"], slot["pattern"]):
                    errs.append({"code": "wrong_pattern", "file": u["filename"],
                                 "message": f"{u['filename']} does not match {slot['pattern']}"})  # fmt: skip
                elif u["length"] > slot["max_size"]:
                    errs.append({"code": "too_big", "file": u["filename"],
                                 "message": f"larger than {slot['max_size']} bytes"})  # fmt: skip
                elif slot.get("format") == "json":
                    try:
                        doc = json.loads(Path(u["path"]).read_text())
                    except ValueError as exc:
                        errs.append({"code": "unparsable", "file": u["filename"],
                                     "message": f"not JSON: {exc}"})  # fmt: skip
                        continue
                    n = doc.get("n") if isinstance(doc, dict) else None
                    if not isinstance(doc, dict) or "n" not in doc:
                        errs.append({"code": "schema", "file": u["filename"], "path": "$",
                                     "message": "'n' is a required property"})  # fmt: skip
                    elif not isinstance(n, int) or isinstance(n, bool) or n < 1:
                        errs.append({"code": "schema", "file": u["filename"], "path": "$.n",
                                     "message": f"{n!r} is not a positive integer"})  # fmt: skip
            slots[slot["name"]] = {"ok": not errs, "files": names, "errors": errs}
        return {"valid": all(v["ok"] for v in slots.values()), "slots": slots}

    async def validate(self, request: web.Request) -> web.Response:
        t = self.tmpl(request)
        user = self.user_of(request)
        body = await request.json()
        return web.json_response(self.check_files(user, t, body.get("files")))

    # tus 1.0: creation + termination (enough for tus-js-client)
    def tus_headers(self, u: dict[str, Any] | None = None) -> dict[str, str]:
        h = {"Tus-Resumable": "1.0.0", "Cache-Control": "no-store"}
        if u is not None:
            h.update({"Upload-Offset": str(u["offset"]), "Upload-Length": str(u["length"])})
        return h

    def upload_view(self, u: dict[str, Any]) -> dict[str, Any]:
        return {k: u[k] for k in ("id", "user", "filename", "slot", "template", "length",
                                  "offset", "state", "created_at", "expires_at")}  # fmt: skip

    def own_upload(self, request: web.Request) -> dict[str, Any]:
        user = self.user_of(request)
        u = self.uploads.get(request.match_info["uid"])
        if u is None or u["user"] != user:
            raise web.HTTPNotFound(headers=self.tus_headers())
        return u

    async def tus_options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={**self.tus_headers(), "Tus-Version": "1.0.0",
                            "Tus-Extension": "creation,termination", "Tus-Max-Size": str(MAX_UPLOAD)})  # fmt: skip

    async def tus_create(self, request: web.Request) -> web.Response:
        user = self.user_of(request)
        length = int(request.headers.get("Upload-Length", "-1"))
        if length < 0:
            return error(400, "invalid", "Upload-Length required", "Upload-Length")
        if length > MAX_UPLOAD:
            return error(413, "too_large", f"max {MAX_UPLOAD} bytes", "Upload-Length")
        meta: dict[str, str] = {}
        for item in request.headers.get("Upload-Metadata", "").split(","):
            if item.strip():
                k, _, v = item.strip().partition(" ")
                meta[k] = base64.b64decode(v).decode() if v else ""
        if not meta.get("filename"):
            return error(400, "missing_field", "filename", "Upload-Metadata.filename")
        uid = secrets.token_hex(8)
        path = Path(self.tmp.name) / f"upload-{uid}"
        path.write_bytes(b"")
        u = {"id": uid, "user": user, "filename": meta["filename"], "slot": meta.get("slot"),
             "template": meta.get("template"), "length": length, "offset": 0, "state": "uploading",
             "created_at": iso_now(), "expires_at": None, "path": str(path)}  # fmt: skip
        self.uploads[uid] = u
        return web.json_response(self.upload_view(u), status=201, headers={
            **self.tus_headers(), "Location": f"/api/v1/uploads/{uid}"})  # fmt: skip

    async def tus_head(self, request: web.Request) -> web.Response:
        u = self.own_upload(request)
        return web.Response(status=200, headers=self.tus_headers(u))

    async def tus_patch(self, request: web.Request) -> web.Response:
        u = self.own_upload(request)
        offset = int(request.headers.get("Upload-Offset", "-1"))
        if offset != u["offset"]:
            return web.Response(status=409, headers=self.tus_headers(u))
        last = time.monotonic()
        with open(u["path"], "ab") as fh:
            try:
                async for chunk in request.content.iter_chunked(1 << 20):
                    fh.write(chunk)
                    u["offset"] += len(chunk)
                    if self.args.upload_delay:
                        await asyncio.sleep(self.args.upload_delay * len(chunk) / (1 << 20))
                    if time.monotonic() - last > 0.5:
                        last = time.monotonic()
                        self.emit(u["user"], "upload", self.upload_view(u))
            finally:
                fh.flush()
        if u["offset"] >= u["length"]:
            u["state"] = "complete"
        self.emit(u["user"], "upload", self.upload_view(u))
        return web.Response(status=204, headers=self.tus_headers(u))

    async def tus_delete(self, request: web.Request) -> web.Response:
        u = self.own_upload(request)
        self.uploads.pop(u["id"], None)
        Path(u["path"]).unlink(missing_ok=True)
        self.emit(u["user"], "upload", {**self.upload_view(u), "state": "terminated"})
        return web.Response(status=204, headers=self.tus_headers())

    async def list_uploads(self, request: web.Request) -> web.Response:
        user = self.user_of(request)
        return web.json_response({"uploads": [self.upload_view(u) for u in self.uploads.values()
                                              if u["user"] == user]})  # fmt: skip

    # jobs
    def own_job(self, request: web.Request) -> dict[str, Any]:
        user = self.user_of(request)
        j = self.jobs.get(request.match_info["jid"])
        if j is None or j["user"] != user:
            raise web.HTTPNotFound(
                text=json.dumps({"error": {"code": "not_found", "message": "no such job"}}),
                content_type="application/json",
            )
        return j

    async def create_job(self, request: web.Request) -> web.Response:
        user = self.user_of(request)
        body = await request.json()
        t = next((t for t in TEMPLATES if t["ref"] == body.get("template")), None)
        if t is None:
            return error(400, "unknown_template", "no such template", "template")
        for p in t["parameters"]:
            v = (body.get("parameters") or {}).get(p["name"])
            if v is None and p.get("required"):
                return error(
                    400, "missing_field", f"{p['name']} is required", f"parameters.{p['name']}"
                )
            if (
                p["type"] == "int"
                and v is not None
                and not (p.get("min", v) <= v <= p.get("max", v))
            ):
                return error(400, "out_of_range", "out of range", f"parameters.{p['name']}")
        res = t["resources"]
        for key, r in res.items():
            v = body.get(key)
            if v is not None and v > r["max"]:
                return error(403, "policy_violation", f"{key} at most {r['max']}", key)
        check = self.check_files(user, t, body.get("files"))
        if not check["valid"]:
            slot, r = next((k, v) for k, v in check["slots"].items() if not v["ok"])
            e = r["errors"][0]
            msg = e["message"] + (f" at {e['path']}" if e.get("path") else "")
            return error(400, e["code"], msg, f"files.{slot}")
        resources = {k: body.get(k, r["default"]) for k, r in res.items()}
        opts = [f"--partition={body.get('partition') or t['partition']}",
                f"--cpus-per-task={resources.get('cpus', 1)}",
                f"--mem={resources.get('memory_gb', 1)}G",
                f"--time={resources.get('time_limit_minutes', 5)}"]  # fmt: skip
        if request.query.get("dry_run") == "true":
            return web.json_response({
                "dry_run": True, "script": "#!/bin/bash\nexec vizdesk-job-runner\n",
                "script_path": "/usr/lib/vizdesk/batch.sbatch", "sbatch_options": opts,
                "environment": ["VIZDESK_JOB_ID", "VIZDESK_PARAMS_JSON"] + [
                    f"VIZDESK_FILE_{s['name'].upper()}" for s in t["files"]],
                "workdir": "/home/alice/vizdesk-jobs/<id>",
                "estimate": {"start_time": iso_now(), "processors": 1, "nodes": "standin-node",
                             "partition": "batch", "message": None},
            })  # fmt: skip
        jid = secrets.token_hex(8)
        wd = Path(self.tmp.name) / f"job-{jid}"
        wd.mkdir()
        files: dict[str, list[str]] = {}
        for slot, ids in (body.get("files") or {}).items():
            for uid in ids:
                u = self.uploads.pop(uid)
                os.replace(u["path"], wd / u["filename"])
                files.setdefault(slot, []).append(u["filename"])
        j = {"id": jid, "user": user, "state": "QUEUED", "reason": "Priority", "job_id": None,
             "node": None, "template": t["ref"], "template_version": t["version"],
             "partition": body.get("partition") or t["partition"], **resources,
             "exit_code": None, "signal": None, "workdir": str(wd), "files": files,
             "outputs": t["outputs"], "created_at": iso_now(), "started_at": None,
             "ended_at": None, "runtime_seconds": None, "job_name": body.get("job_name")}  # fmt: skip
        self.jobs[jid] = j
        self.requests[jid] = {"template": t["ref"], "template_version": t["version"],
                              "parameters": body.get("parameters") or {}, "files": files,
                              **{k: body.get(k) for k in ("cpus", "memory_gb", "time_limit_minutes",
                                                          "partition") if body.get(k) is not None}}  # fmt: skip
        self.spawn(self.run_job(j, (body.get("parameters") or {})))
        return web.json_response(j, status=201)

    def move_job(self, j: dict[str, Any], **fields: Any) -> None:
        j.update(fields)
        if j["started_at"]:
            end = datetime.fromisoformat(j["ended_at"] or iso_now())
            j["runtime_seconds"] = (end - datetime.fromisoformat(j["started_at"])).total_seconds()
        self.emit(
            j["user"], "job", {k: v for k, v in j.items() if k != "user"} | {"user": j["user"]}
        )

    async def run_job(self, j: dict[str, Any], params: dict[str, Any]) -> None:
        await asyncio.sleep(self.args.queue_seconds * 2)
        if j["state"] != "QUEUED":
            return
        self.move_job(j, state="RUNNING", reason="", job_id=str(2000 + len(self.jobs)),
                      node="standin-node", started_at=iso_now())  # fmt: skip
        wd = Path(j["workdir"])
        out = wd / f"slurm-{j['job_id']}.out"
        steps = int(params.get("steps", self.args.job_steps))
        steps += int(2 * float(params.get("sleep_seconds", 0)))
        for i in range(steps):
            if j["state"] != "RUNNING":
                return
            with out.open("a") as fh:
                fh.write(f"step {i + 1} of {steps}\n")
            await asyncio.sleep(0.5)
        (wd / "results").mkdir(exist_ok=True)
        cfg = next(iter(wd.glob("*.json")), None)
        n = json.loads(cfg.read_text()).get("n", 0) if cfg else 0
        (wd / "results" / "report.json").write_text(json.dumps({"n": n, "total": n * (n + 1) // 2}))
        with out.open("a") as fh:
            fh.write("done\n")
        self.move_job(j, state="COMPLETED", reason="completed (exit code 0)", exit_code=0,
                      ended_at=iso_now())  # fmt: skip

    async def list_jobs(self, request: web.Request) -> web.Response:
        user = self.user_of(request)
        return web.json_response({"jobs": [j for j in self.jobs.values() if j["user"] == user]})

    async def get_job(self, request: web.Request) -> web.Response:
        return web.json_response(self.own_job(request))

    async def job_request(self, request: web.Request) -> web.Response:
        j = self.own_job(request)
        return web.json_response(self.requests[j["id"]])

    async def cancel_job(self, request: web.Request) -> web.Response:
        j = self.own_job(request)
        if j["state"] in ("QUEUED", "RUNNING"):
            self.move_job(j, state="CANCELLING", reason="cancel requested")
            await asyncio.sleep(0.2)
            self.move_job(j, state="CANCELLED", reason="cancelled by request", ended_at=iso_now())
        return web.json_response(j, status=202)

    async def job_output(self, request: web.Request) -> web.Response:
        j = self.own_job(request)
        out = next(iter(Path(j["workdir"]).glob("slurm-*.out")), None)
        if out is None:
            return error(404, "no_output", "no output yet")
        data = out.read_bytes()
        tail = int(request.query.get("tail_bytes", "65536"))
        return web.Response(body=data[-tail:], content_type="text/plain", headers={
            "X-Output-Size": str(len(data)), "X-Output-Truncated": str(len(data) > tail).lower()})  # fmt: skip

    def job_files(self, j: dict[str, Any]) -> list[Path]:
        wd = Path(j["workdir"])
        return sorted(p for p in wd.rglob("*") if p.is_file())

    async def list_job_files(self, request: web.Request) -> web.Response:
        j = self.own_job(request)
        wd = Path(j["workdir"])
        files = []
        for p in self.job_files(j):
            rel = str(p.relative_to(wd))
            st = p.stat()
            files.append({"path": rel, "name": p.name, "type": "file", "size": st.st_size,
                          "mtime": datetime.fromtimestamp(st.st_mtime, UTC).isoformat(),
                          "outputs": [o for o in j["outputs"] if fnmatchcase(rel, o)]})  # fmt: skip
        return web.json_response({"job": j["id"], "outputs": j["outputs"], "files": files,
                                  "truncated": False})  # fmt: skip

    async def job_file(self, request: web.Request) -> web.StreamResponse:
        j = self.own_job(request)
        rel = request.match_info["path"]
        wd = Path(j["workdir"])
        p = (wd / rel).resolve()
        if ".." in rel.split("/") or not p.is_file() or wd.resolve() not in p.parents:
            return error(404, "not_found", "no such file")
        return web.Response(body=p.read_bytes(), content_type="application/octet-stream", headers={
            "Content-Disposition": f'attachment; filename="{p.name}"'})  # fmt: skip

    async def job_zip(self, request: web.Request) -> web.Response:
        j = self.own_job(request)
        wd = Path(j["workdir"])
        buf = Path(self.tmp.name) / f"zip-{j['id']}.zip"
        with zipfile.ZipFile(buf, "w") as z:
            for p in self.job_files(j):
                rel = str(p.relative_to(wd))
                if request.query.get("outputs") != "true" or any(
                    fnmatchcase(rel, o) for o in j["outputs"]
                ):
                    z.write(p, rel)
        return web.Response(body=buf.read_bytes(), content_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="job-{j["id"]}.zip"'})  # fmt: skip

    async def dev_token(self, request: web.Request) -> web.Response:
        ttl = int(request.query.get("ttl", "3600"))
        return web.json_response({"token": make_token(request.query.get("user", "alice"), ttl)})

    async def shutdown(self, app: web.Application) -> None:
        for desktop in list(self.desktops.values()):
            await desktop.stop()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.headers_mw, self.down_mw])
        r = app.router
        r.add_get("/", self.index)
        r.add_static("/static/", STATIC_DIR, follow_symlinks=False)
        r.add_get("/readyz", self.readyz)
        r.add_get("/api/v1/me", self.me)
        r.add_get("/api/v1/images", self.images)
        r.add_get("/api/v1/sessions", self.list_sessions)
        r.add_post("/api/v1/sessions", self.create_session)
        r.add_get("/api/v1/sessions/{sid}", self.get_session)
        r.add_delete("/api/v1/sessions/{sid}", self.delete_session)
        r.add_post("/api/v1/sessions/{sid}/connect", self.connect)
        r.add_get("/api/v1/sessions/{sid}/vnc", self.vnc)
        r.add_get("/api/v1/events", self.events)
        r.add_post("/_standin/health", self.dev_health)
        r.add_post("/_standin/drop", self.dev_drop)
        r.add_route("*", "/_standin/sessions/{sid}/clipboard", self.dev_clipboard)
        r.add_get("/_standin/token", self.dev_token)
        r.add_get("/api/v1/job-templates", self.list_templates)
        r.add_get("/api/v1/job-templates/{name}", self.get_template)
        r.add_put("/api/v1/job-templates/{name}", self.readonly_template)
        r.add_delete("/api/v1/job-templates/{name}", self.readonly_template)
        r.add_post("/api/v1/job-templates/{name}/validate", self.validate)
        r.add_route("OPTIONS", "/api/v1/uploads", self.tus_options)
        r.add_post("/api/v1/uploads", self.tus_create)
        r.add_get("/api/v1/uploads", self.list_uploads)
        r.add_head("/api/v1/uploads/{uid}", self.tus_head)
        r.add_patch("/api/v1/uploads/{uid}", self.tus_patch)
        r.add_delete("/api/v1/uploads/{uid}", self.tus_delete)
        r.add_get("/api/v1/jobs", self.list_jobs)
        r.add_post("/api/v1/jobs", self.create_job)
        r.add_get("/api/v1/jobs/{jid}", self.get_job)
        r.add_delete("/api/v1/jobs/{jid}", self.cancel_job)
        r.add_get("/api/v1/jobs/{jid}/request", self.job_request)
        r.add_get("/api/v1/jobs/{jid}/output", self.job_output)
        r.add_get("/api/v1/jobs/{jid}/files", self.list_job_files)
        r.add_get("/api/v1/jobs/{jid}/files.zip", self.job_zip)
        r.add_get("/api/v1/jobs/{jid}/files/{path:.+}", self.job_file)
        app.on_shutdown.append(self.shutdown)
        return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument(
        "--queue-seconds",
        type=float,
        default=0.4,
        help="fake time spent PENDING (twice: Priority, then Resources)",
    )
    ap.add_argument("--no-images", action="store_true", help="answer 404 on /api/v1/images")
    ap.add_argument(
        "--upload-delay",
        type=float,
        default=0.0,
        help="seconds of delay per MiB received (to watch uploads progress)",
    )
    ap.add_argument("--job-steps", type=int, default=8, help="output lines of a fake job")
    ap.add_argument(
        "--desktop-cmd",
        nargs="+",
        default=None,
        help="X client to run instead of xsetroot+xterm (e.g. startxfce4)",
    )
    ap.add_argument("--print-token", action="store_true", help="print a dev token and exit")
    args = ap.parse_args()
    if args.print_token:
        print(make_token())
        return
    if not shutil.which("Xvnc"):
        sys.exit("Xvnc (tigervnc-standalone-server) is required")
    standin = StandIn(args)
    print(f"vizdesk STAND-IN (dev aid) on http://{args.host}:{args.port}/", flush=True)
    web.run_app(standin.app(), host=args.host, port=args.port, print=None,
                handle_signals=True, shutdown_timeout=5)  # fmt: skip


if __name__ == "__main__":
    main()
