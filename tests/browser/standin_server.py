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
import time
from datetime import UTC, datetime
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
        self.tasks: set[asyncio.Task[None]] = set()

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

    async def dev_clipboard(self, request: web.Request) -> web.Response:
        desktop = self.desktops.get(request.match_info["sid"])
        if desktop is None:
            return error(404, "not_found", "no desktop")
        if request.method == "POST":
            text = (await request.json())["text"]
            return web.json_response({"text": await desktop.clipboard(str(text))})
        return web.json_response({"text": await desktop.clipboard()})

    async def shutdown(self, app: web.Application) -> None:
        for desktop in list(self.desktops.values()):
            await desktop.stop()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.headers_mw])
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
        r.add_route("*", "/_standin/sessions/{sid}/clipboard", self.dev_clipboard)
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
