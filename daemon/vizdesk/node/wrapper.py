"""``vizdesk node vnc``: start a VNC desktop in a Slurm job, register it, clean up.

Sequence: read the job environment (see :mod:`vizdesk.node.jobenv`) → sweep what killed
earlier sessions of the user left (:mod:`vizdesk.node.sweep`) → private dir with a
one-time VNC password and an X cookie → start the guardian that cleans up should we be
SIGKILLed (:mod:`vizdesk.node.guardian`) → detect GPUs → start the VNC server on a free
port (retrying with another port/display if it lost a race for one) → wait for the
``RFB 003.`` banner → start the desktop session (unless the server runs it itself) →
register in Redis and heartbeat → wait for a signal (SIGTERM/SIGINT/SIGHUP), the VNC
server dying or the desktop exiting → delete the registration, end every session
process (SIGTERM, then SIGKILL after a grace period), remove the private files.

Exit codes: 0 clean shutdown (signal, or the user logged out of the desktop);
1 unexpected error; 2 bad job environment or configuration; 3 the VNC server or the
desktop could not be started; 4 the VNC server died.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psutil
import structlog

from vizdesk.config import Config, ConfigError, load_config
from vizdesk.contract.jobenv import (
    ENV_SESSION_TAG,
    JobEnv,
    JobEnvError,
    child_environ,
    parse_job_env,
)
from vizdesk.contract.keys import Keys, notice_key
from vizdesk.contract.registration import (
    FAILURE_TTL_SECONDS,
    GpuReport,
    Registration,
    failure_json,
    utc_now_iso,
)
from vizdesk.node import container, fuse, procs, sweep, virtualgl
from vizdesk.node.display import parse_displayfd_output, pick_free_display, x_socket_exists
from vizdesk.node.gpu import detect_gpus
from vizdesk.node.guardian import DONE, handoff_line
from vizdesk.node.listen import ListenError, listen_address, probe_host
from vizdesk.node.logs import setup_logging
from vizdesk.node.notice import DesktopNotifier
from vizdesk.node.password import PrivateDir, generate_password, write_vncpasswd, write_xauthority
from vizdesk.node.ports import pick_free_port, port_is_free
from vizdesk.node.probe import is_rfb3, listener_pids, rfb_banner
from vizdesk.node.registration import Registrar
from vizdesk.node.stats import UsageSampler
from vizdesk.node.vnc_server import (
    ServerSpec,
    TurboVNCServer,
    VncServer,
    choose_server,
    desktop_argv,
    is_clash,
    make_server,
)

log = structlog.get_logger("vizdesk.node.wrapper")

# Start of the wrapper (psutil's process create_time is only as exact as the kernel's
# boot time, which is off by up to a second in some sandboxes).
_T0_WALL = time.time()
_T0_MONO = time.monotonic()

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_STARTUP_FAILED = 3
EXIT_SERVER_DIED = 4

MAX_START_ATTEMPTS = 3  # first try + retries after a port/display clash
KILL_GRACE_SECONDS = 3.0
OUTPUT_TAIL_LINES = 40
MAX_LOGGED_LINE = 2000


class StartupError(RuntimeError):
    """The VNC server or the desktop did not come up; ``clash``: retry elsewhere."""

    def __init__(self, message: str, *, clash: bool = False) -> None:
        super().__init__(message)
        self.clash = clash


@dataclass
class Child:
    """A process the wrapper started, with its output relay."""

    name: str
    proc: asyncio.subprocess.Process
    output: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_TAIL_LINES))
    relay: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Started:
    server: Child
    port: int
    display: int


class Wrapper:
    """Role: the compute-node side of one desktop session (``vizdesk node vnc``).

    Contract with the daemon (``vizdesk.contract``): from the job environment it takes the
    session id and the per-session Redis credentials; it starts the VNC server (and the
    desktop) on a free port in ``node.port_min..port_max`` — inside Apptainer when an image
    is set, with ``--unsquash`` where this user may not use FUSE — waits for the RFB banner,
    then writes its :class:`Registration` and heartbeats it. If the desktop cannot start it
    writes a failure record (the session's reason) instead and exits 3. On SIGTERM/SIGINT/
    SIGHUP, or when the server or desktop exits, it deletes the registration and ends every
    process of the session; a guardian process does the same if the wrapper is killed.
    :meth:`run` returns the exit code (0 stopped, 3 start-up failed, 4 the VNC server died,
    1 any other error; 2 is a bad job environment, found before it is built).
    """

    def __init__(self, cfg: Config, job: JobEnv, env: Mapping[str, str]) -> None:
        self.cfg = cfg
        self.node = cfg.node
        self.job = job
        self.env = dict(env)
        self.stop = asyncio.Event()
        self.stop_reason = ""
        self.children: list[Child] = []
        self.private: PrivateDir | None = None
        self.registrar: Registrar | None = None
        self.heartbeat_task: asyncio.Task[None] | None = None
        self.notifier: DesktopNotifier | None = None
        self.guardian: asyncio.subprocess.Process | None = None
        self.record_task: asyncio.Task[None] | None = None
        self.t0 = _T0_WALL
        self.unsquash = False  # extract the image instead of a FUSE mount (see _plan_image)
        self.fuse_note = ""  # why FUSE is not usable here, for failure reasons
        self.failure_reported = False  # a failure record stands in the registration key
        self._listen: tuple[str | None] | None = None  # node.vnc_listen, resolved once

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)
        if not procs.set_child_subreaper():
            log.warning("subreaper_unavailable")
        serve = asyncio.create_task(self._serve(), name="serve")
        stopper = asyncio.create_task(self.stop.wait(), name="stop")
        code = EXIT_ERROR
        try:
            await asyncio.wait({serve, stopper}, return_when=asyncio.FIRST_COMPLETED)
            # A Slurm cancel signals every process of the job at once: when the signal
            # and a child's death arrive together, the signal is what happened.
            if self.stop.is_set():
                serve.cancel()
                await asyncio.gather(serve, return_exceptions=True)
                log.info("stop_requested", reason=self.stop_reason)
                code = EXIT_OK
            else:
                code = serve.result()
        except StartupError as exc:
            log.error("startup_failed", error=str(exc))
            print(f"vizdesk node vnc: {exc}", file=sys.stderr, flush=True)
            await self._report_failure(str(exc))
            code = EXIT_STARTUP_FAILED
        except Exception as exc:
            log.exception("wrapper_error", error=f"{type(exc).__name__}: {exc}")
            code = EXIT_ERROR
        finally:
            stopper.cancel()
            await self._cleanup()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        log.info("exit", code=code)
        return code

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self.stop.is_set():
            log.info("signal_ignored", signal=name, reason="already stopping")
            return
        log.info("signal", signal=name)
        self.stop_reason = name
        self.stop.set()

    async def _serve(self) -> int:
        job = self.job
        self.registrar = Registrar(
            job.redis_url,
            job.redis_username,
            job.redis_password,
            job.reg_key,
            job.reg_ttl,
            sentinels=job.sentinels,
            sentinel_master=job.sentinel_master,
        )
        swept = await asyncio.to_thread(
            sweep.sweep_stale, PrivateDir.base(self.env), grace=KILL_GRACE_SECONDS
        )
        if swept:
            log.info("swept_stale_sessions", sessions=swept)
        self.private = PrivateDir(self.env)
        sweep.write_owner(self.private.path, job.session_id)
        await self._start_guardian(str(self.private.path))
        self.record_task = asyncio.create_task(self._record_processes(), name="record")
        password = generate_password()
        pwfile = self.private.file("passwd")
        xauth = self.private.file("Xauthority")
        write_vncpasswd(pwfile, password)
        write_xauthority(xauth, secrets.token_bytes(16))

        gpus = await asyncio.to_thread(detect_gpus, self.env)
        gpu = bool(gpus)
        self._add_3d_xauthority(str(xauth), gpu)
        self._plan_image()
        adapter = await self._choose_adapter()
        log.info(
            "starting",
            vnc=adapter.flavor,
            image=job.image,
            gpus=len(gpus),
            geometry=job.geometry,
            redis=job.redis_location(),
            reg_key=job.reg_key,
        )
        started = await self._start_server(adapter, gpu, str(pwfile), str(xauth))
        desktop: Child | None = None
        if not adapter.runs_desktop:
            desktop = await self._start_desktop(started.display, gpu, str(xauth))

        vnc_pid = await asyncio.to_thread(self._find_vnc_pid, adapter, started)
        reg = Registration(
            session_id=job.session_id,
            port=started.port,
            display=started.display,
            password=password,
            pid=os.getpid(),
            vnc_pid=vnc_pid,
            host=socket.gethostname(),
            vnc=adapter.flavor,
            started_at=_iso(self.t0),
            image=job.image,
            gpus=gpus,
        )
        log.info("vnc_ready", port=started.port, display=started.display, vnc_pid=vnc_pid)
        desktop_env = child_environ(self.env, job.session_id)
        desktop_env.update(DISPLAY=f":{started.display}", XAUTHORITY=str(xauth))
        self.notifier = DesktopNotifier(
            self.node.notify_command, job.session_id, notice_key(job.reg_key), desktop_env,
            lambda argv, env: self._wrap(argv, env, False),
        )  # fmt: skip
        self.heartbeat_task = asyncio.create_task(self._heartbeat(reg, gpu), name="heartbeat")
        return await self._watch(started.server, desktop, vnc_pid, adapter)

    async def _start_guardian(self, private_dir: str) -> None:
        """Start the process that cleans up if we are killed without a chance to."""
        env = child_environ(self.env, self.job.session_id)
        env.pop(ENV_SESSION_TAG, None)
        try:
            self.guardian = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "vizdesk.node.guardian",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
            assert self.guardian.stdin is not None
            self.guardian.stdin.write(
                handoff_line(
                    url=self.job.redis_url,
                    sentinels=[f"{h}:{p}" for h, p in self.job.sentinels],
                    sentinel_master=self.job.sentinel_master,
                    username=self.job.redis_username,
                    password=self.job.redis_password,
                    key=self.job.reg_key,
                    session_id=self.job.session_id,
                    grace=KILL_GRACE_SECONDS,
                    private_dir=private_dir,
                )
            )
            await self.guardian.stdin.drain()
        except (OSError, ConnectionError) as exc:
            log.warning("guardian_unavailable", error=f"{type(exc).__name__}: {exc}")
            self.guardian = None

    def _managed_pids(self) -> set[int]:
        """Children whose exit status asyncio collects (never reaped by us)."""
        pids = {c.pid for c in self.children}
        if self.guardian is not None:
            pids.add(self.guardian.pid)
        return pids

    async def _release_guardian(self) -> None:
        guardian = self.guardian
        if guardian is None or guardian.stdin is None:
            return
        with contextlib.suppress(OSError, ConnectionError):
            guardian.stdin.write(DONE + b"\n")
            await guardian.stdin.drain()
            guardian.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(guardian.wait(), 2.0)
        self.guardian = None

    def _plan_image(self) -> None:
        """Mount the image with FUSE where this user may, else have Apptainer extract it."""
        if not self.job.image:
            return
        check = fuse.check_fuse()
        self.unsquash = fuse.wants_unsquash(self.node.apptainer_unsquash, check)
        if not check.usable:
            self.fuse_note = check.reason
            log.warning(
                "fuse_unavailable",
                reason=check.reason,
                unsquash=self.unsquash,
                setting=self.node.apptainer_unsquash,
            )

    async def _report_failure(self, error: str) -> None:
        """Leave the reason in the registration key, where the daemon reads it."""
        if self.registrar is None:
            return
        if self.fuse_note and not self.unsquash:
            error = f"{self.fuse_note} and node.apptainer_unsquash is never: {error}"
        value = failure_json(self.job.session_id, error)
        if await self.registrar.put(value, ttl=FAILURE_TTL_SECONDS):
            self.failure_reported = True
            log.info("failure_reported", key=self.job.reg_key)

    # ------------------------------------------------------------------ adapters
    async def _choose_adapter(self) -> VncServer:
        if not self.job.image:
            return choose_server(self.node)
        if self.node.vnc_flavor != "auto":
            return make_server(self.node.vnc_flavor, self.node)
        # With an image, what counts is what the image has, not the host: its label
        # (cheap: SIF metadata), else whether TurboVNC's vncserver exists inside.
        node, image = self.node, self.job.image
        rc, out = await self._run_quiet(container.inspect_labels_argv(node.apptainer, image))
        flavor = container.vnc_flavor_from_inspect(out) if rc == 0 else None
        if flavor is None:
            probe = ["test", "-x", node.turbovnc_vncserver]
            rc, _ = await self._run_quiet(
                container.apptainer_exec_argv(
                    node.apptainer, image, probe, gpu=False, unsquash=self.unsquash
                )
            )
            flavor = "turbovnc" if rc == 0 else "tigervnc"
        log.info("image_vnc_flavor", image=image, vnc=flavor)
        return make_server(flavor, node)

    async def _run_quiet(self, argv: list[str]) -> tuple[int, bytes]:
        """Run a short helper command; (exit code, stdout). Raises StartupError if absent."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env=child_environ(self.env, self.job.session_id),
                start_new_session=True,
            )
        except OSError as exc:
            raise StartupError(f"cannot run {argv[0]}: {exc.strerror}") from exc
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.node.startup_timeout_seconds)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise StartupError(f"{argv[0]} {argv[1]} did not finish in time") from None
        return (proc.returncode if proc.returncode is not None else -1), out

    def _desktop_command(self, gpu: bool) -> list[str]:
        cmd = list(self.node.desktop_command)
        if not cmd:
            raise StartupError("node.desktop_command is empty")
        device = virtualgl.vgl_device(self.node, gpu)
        if self.job.image:
            if device is not None:
                return container.vgl_if_present_argv(self.node.vglrun, device, cmd)
            return cmd
        vglrun = shutil.which(self.node.vglrun) if device is not None else None
        if device is not None and not vglrun:
            log.info("virtualgl_not_found", vglrun=self.node.vglrun)
        return desktop_argv(cmd, vglrun=vglrun, device=device)

    def _add_3d_xauthority(self, xauth: str, gpu: bool) -> None:
        """Give the desktop the cookie of the GLX 3D X server it renders on (if any)."""
        extra = virtualgl.xauthority_to_merge(self.node, virtualgl.vgl_device(self.node, gpu))
        if extra is None:
            return
        try:
            virtualgl.merge_xauthority(xauth, extra)
        except OSError as exc:
            raise StartupError(
                f"cannot read node.virtualgl_xauthority {extra}: {exc.strerror}"
            ) from exc

    def _wrap(
        self, argv: list[str], env: dict[str, str], gpu: bool
    ) -> tuple[list[str], dict[str, str]]:
        """Run inside the image when one is set."""
        if not self.job.image:
            return argv, env
        assert self.private is not None
        binds = container.existing_binds(self.node.apptainer_binds)
        wrapped = container.apptainer_exec_argv(
            self.node.apptainer,
            self.job.image,
            argv,
            gpu=gpu,
            binds=binds,
            private_dir=str(self.private.path),
            unsquash=self.unsquash,
        )
        return wrapped, container.container_environ(env)

    # ------------------------------------------------------------------ processes
    async def _spawn(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        pass_fds: Sequence[int] = (),
        cwd: str | None = None,
    ) -> Child:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                pass_fds=tuple(pass_fds),
                start_new_session=True,
            )
        except OSError as exc:
            raise StartupError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from exc
        child = Child(name=name, proc=proc)
        child.relay = asyncio.create_task(self._relay(child), name=f"relay-{name}")
        self.children.append(child)
        log.info("started", process=name, pid=proc.pid, argv=list(argv))
        return child

    async def _relay(self, child: Child) -> None:
        """Forward a child's output into our JSON log, keeping a tail for error messages."""
        stream = child.proc.stdout
        if stream is None:
            return
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # an over-long line: dropped by readline
                continue
            except (OSError, asyncio.CancelledError):
                return
            if not raw:
                return
            line = raw.decode("utf-8", errors="replace").rstrip()[:MAX_LOGGED_LINE]
            if line:
                child.output.append(line)
                log.info("output", process=child.name, line=line)

    async def _stop_child(self, child: Child) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, sig)
            try:
                await asyncio.wait_for(child.proc.wait(), KILL_GRACE_SECONDS)
                break
            except TimeoutError:
                continue
        if child.relay is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(child.relay, 1.0)
        if child in self.children:
            self.children.remove(child)

    # ------------------------------------------------------------------ start-up
    async def _start_server(
        self, adapter: VncServer, gpu: bool, pwfile: str, xauth: str
    ) -> Started:
        tried_ports: set[int] = set()
        tried_displays: set[int] = set()
        # -displayfd also works through `apptainer exec` (inherited descriptors are kept;
        # verified with Apptainer 1.4.5).
        use_displayfd = adapter.supports_displayfd
        last: StartupError | None = None
        for attempt in range(1, MAX_START_ATTEMPTS + 1):
            port = pick_free_port(self.node.port_min, self.node.port_max, exclude=tried_ports)
            display = None if use_displayfd else pick_free_display(exclude=tried_displays)
            try:
                return await self._launch_server(adapter, gpu, pwfile, xauth, port, display)
            except StartupError as exc:
                tried_ports.add(port)
                if display is not None:
                    tried_displays.add(display)
                if not exc.clash:
                    raise
                last = exc
                log.warning(
                    "vnc_start_clash", attempt=attempt, port=port, display=display, error=str(exc)
                )
        raise StartupError(f"VNC server did not start after {MAX_START_ATTEMPTS} attempts: {last}")

    async def _launch_server(
        self,
        adapter: VncServer,
        gpu: bool,
        pwfile: str,
        xauth: str,
        port: int,
        display: int | None,
    ) -> Started:
        assert self.private is not None
        spec = ServerSpec(
            port=port,
            display=display,
            width=self.job.width,
            height=self.job.height,
            depth=self.node.depth,
            password_file=pwfile,
            xauthority=xauth,
            private_dir=str(self.private.path),
            desktop=self._desktop_command(gpu) if adapter.runs_desktop else (),
            listen=self._listen_address(),
        )
        adapter.prepare(spec)
        rfd = wfd = -1
        if display is None:
            rfd, wfd = os.pipe()
        try:
            argv = adapter.server_argv(spec, displayfd=wfd if display is None else None)
            env = child_environ(self.env, self.job.session_id)
            env["XAUTHORITY"] = xauth
            argv, env = self._wrap(argv, env, gpu)
            child = await self._spawn(
                adapter.flavor, argv, env, pass_fds=(wfd,) if display is None else ()
            )
        except BaseException:
            if rfd >= 0:
                os.close(rfd)
            raise
        finally:
            if wfd >= 0:
                os.close(wfd)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.node.startup_timeout_seconds
        try:
            if display is None:
                display = await self._read_displayfd(rfd, child, port, deadline)
            else:
                await self._wait_x_socket(display, child, port, deadline)
            await self._wait_banner(port, child, deadline)
        except BaseException:
            await self._stop_child(child)
            raise
        return Started(server=child, port=port, display=display)

    def _listen_address(self) -> str | None:
        if self._listen is None:
            try:
                self._listen = (listen_address(self.node.vnc_listen),)
            except ListenError as exc:
                raise StartupError(str(exc)) from None
        return self._listen[0]

    def _failure(self, child: Child, port: int, what: str) -> StartupError:
        tail = " | ".join(list(child.output)[-5:])
        clash = is_clash(child.output) or not port_is_free(port)
        msg = f"{child.name} {what}" + (f": {tail}" if tail else "")
        return StartupError(msg, clash=clash)

    async def _read_displayfd(self, rfd: int, child: Child, port: int, deadline: float) -> int:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        pipe = os.fdopen(rfd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        try:
            data = await asyncio.wait_for(reader.readline(), max(0.1, deadline - loop.time()))
        except TimeoutError:
            raise StartupError(
                f"{child.name} reported no display within {self.node.startup_timeout_seconds:g} s"
            ) from None
        finally:
            transport.close()
        n = parse_displayfd_output(data)
        if n is None:
            await self._settle(child)
            raise self._failure(child, port, "exited during start-up")
        return n

    async def _settle(self, child: Child) -> None:
        """Give a dying child a moment to exit and its relay to drain the output."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.proc.wait(), 2.0)
        if child.relay is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.relay), 1.0)

    async def _wait_x_socket(self, display: int, child: Child, port: int, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while not x_socket_exists(display):
            if child.proc.returncode is not None:
                await self._settle(child)
                raise self._failure(child, port, "exited during start-up")
            if loop.time() > deadline:
                raise StartupError(
                    f"{child.name}: display :{display} did not appear within "
                    f"{self.node.startup_timeout_seconds:g} s"
                )
            await asyncio.sleep(0.05)

    async def _wait_banner(self, port: int, child: Child, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if child.proc.returncode is not None:
                await self._settle(child)
                raise self._failure(child, port, "exited during start-up")
            banner = await rfb_banner(probe_host(self._listen_address()), port, wait=2.0)
            if is_rfb3(banner):
                await self._check_listener(port, child)
                return
            if loop.time() > deadline:
                raise StartupError(
                    f"{child.name}: port {port} did not answer 'RFB 003.' within "
                    f"{self.node.startup_timeout_seconds:g} s"
                    + (f" (got {banner!r})" if banner else "")
                )
            await asyncio.sleep(0.05)

    async def _check_listener(self, port: int, child: Child) -> None:
        """Make sure the banner came from our server, not from a process that won the port."""
        session = await asyncio.to_thread(procs.session_processes, self.job.session_id)
        ours = [p.pid for p in session]
        found, readable = await asyncio.to_thread(listener_pids, port, ours)
        if readable and not found:
            raise StartupError(f"port {port} is answered by another process", clash=True)

    async def _start_desktop(self, display: int, gpu: bool, xauth: str) -> Child:
        env = child_environ(self.env, self.job.session_id)
        env["DISPLAY"] = f":{display}"
        env["XAUTHORITY"] = xauth
        argv, env = self._wrap(self._desktop_command(gpu), env, gpu)
        return await self._spawn("desktop", argv, env, cwd=_home_dir(self.env))

    def _find_vnc_pid(self, adapter: VncServer, started: Started) -> int:
        tagged = [p.pid for p in procs.tagged_processes(self.job.session_id)]
        pid = adapter.find_vnc_pid(os.getpid(), started.display, extra=tagged)
        return pid if pid is not None else started.server.pid

    # ------------------------------------------------------------------ running
    async def _watch(
        self, server: Child, desktop: Child | None, vnc_pid: int, adapter: VncServer
    ) -> int:
        waits: dict[asyncio.Task[object], str] = {
            asyncio.create_task(server.proc.wait()): "server_process",
        }
        if desktop is not None:
            waits[asyncio.create_task(desktop.proc.wait())] = "desktop"
        if vnc_pid != server.pid:
            waits[asyncio.create_task(_wait_pid_gone(vnc_pid))] = "vnc_process"
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        what = waits[next(iter(done))]
        if what == "desktop" and desktop is not None:
            # An X server crash takes the desktop with it: tell the two cases apart.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.proc.wait(), 1.0)
            if server.proc.returncode is None and psutil.pid_exists(vnc_pid):
                log.info("desktop_exited", returncode=desktop.proc.returncode)
                return EXIT_OK
            what = "server_process"
        if what == "server_process" and isinstance(adapter, TurboVNCServer):
            # vncserver -fg returns when the xstartup script (the desktop) ends.
            log.info("desktop_exited", returncode=server.proc.returncode)
            return EXIT_OK
        log.error(
            "vnc_server_exited",
            returncode=server.proc.returncode,
            output_tail=list(server.output)[-5:],
        )
        return EXIT_SERVER_DIED

    async def _heartbeat(self, reg: Registration, gpu: bool) -> None:
        assert self.registrar is not None
        interval = max(0.5, min(self.node.heartbeat_interval_seconds, self.job.reg_ttl / 3))
        sampler = UsageSampler(self.job.session_id)
        managed = self._managed_pids()
        first = True
        while True:
            try:
                cpu, mem = await asyncio.to_thread(sampler.sample)
                reg.cpu_percent, reg.memory_bytes = cpu, mem
                if gpu:
                    reg.gpus = await asyncio.to_thread(_gpus_or_keep, self.env, reg.gpus)
                reg.heartbeat_at = utc_now_iso()
                ok = await self.registrar.put(reg.to_json())
                if ok and first:
                    first = False
                    log.info(
                        "registered",
                        # since this module was imported (interpreter start-up excluded)
                        startup_seconds=round(time.monotonic() - _T0_MONO, 3),
                        registration=reg.for_log(),
                    )
                if ok and self.notifier is not None:
                    await self.notifier.poll(self.registrar.read)
                await asyncio.to_thread(procs.reap_zombie_children, managed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let a heartbeat problem end the desktop
                log.warning("heartbeat_error", error=f"{type(exc).__name__}: {exc}")
            # Until the first registration succeeds, retry sooner.
            await asyncio.sleep(min(1.0, interval) if first else interval)

    async def _record_processes(self, period: float = 1.0) -> None:
        """Keep the record of our descendants current, for whoever cleans up after us."""
        assert self.private is not None
        path = self.private.file(sweep.PIDS)
        last: list[procs.ProcId] | None = None
        while True:
            try:
                skip = {self.guardian.pid} if self.guardian is not None else set()
                found = await asyncio.to_thread(procs.descendants)
                ours = [p for p in found if p.pid not in skip]
                ids = sorted(i for i in (procs.proc_id(p) for p in ours) if i is not None)
                if ids != last:
                    await asyncio.to_thread(procs.write_record, path, ours)
                    last = ids
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("process_record_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(period)

    # ------------------------------------------------------------------ clean-up
    async def _cleanup(self) -> None:
        """DEL the registration, end every session process, remove the private files.

        Each step runs even if an earlier one failed; the guardian stays until the end,
        so a SIGKILL in the middle of this still leaves nothing behind.
        """
        for task in (self.heartbeat_task, self.record_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        try:
            if self.registrar is not None:
                # A failure record stays (with its own TTL) for the daemon to read.
                if not self.failure_reported and await self.registrar.delete():
                    log.info("registration_deleted", key=self.job.reg_key)
                await self.registrar.close()
        except Exception as exc:
            log.error("cleanup_step_failed", step="registration", error=repr(exc))
        try:
            guardian = {self.guardian.pid} if self.guardian is not None else set()
            known = procs.read_record(self.private.file(sweep.PIDS)) if self.private else []
            leftover = await asyncio.to_thread(
                procs.terminate_session,
                self.job.session_id,
                grace=KILL_GRACE_SECONDS,
                pgids=[c.pid for c in self.children],
                managed=self._managed_pids(),
                exclude=guardian,
                known=known,
            )
            if leftover:
                log.error("processes_left", pids=leftover)
            for child in list(self.children):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(child.proc.wait(), 2.0)
                if child.relay is not None:
                    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                        await asyncio.wait_for(child.relay, 1.0)
        except Exception as exc:
            log.error("cleanup_step_failed", step="processes", error=repr(exc))
        if self.private is not None:
            self.private.cleanup()
        await self._release_guardian()
        log.info("cleaned_up")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _home_dir(env: Mapping[str, str]) -> str | None:
    home = env.get("HOME")
    return home if home and os.path.isdir(home) else None


def _gpus_or_keep(env: Mapping[str, str], previous: Sequence[GpuReport]) -> Sequence[GpuReport]:
    fresh = detect_gpus(env)
    return fresh or previous


async def _wait_pid_gone(pid: int, poll: float = 0.5) -> None:
    while True:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        except psutil.Error:
            pass
        await asyncio.sleep(poll)


async def run_wrapper(cfg: Config, env: Mapping[str, str]) -> int:
    """Run one desktop session for the job described by ``env``; the exit code."""
    try:
        job = parse_job_env(env)
    except JobEnvError as exc:
        setup_logging(cfg.log.level)
        log.error("bad_job_environment", error=str(exc))
        print(f"vizdesk node vnc: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    setup_logging(cfg.log.level, session_id=job.session_id)
    expected = Keys(cfg.redis.key_prefix).registration(job.session_id)
    if expected != job.reg_key:
        log.warning("registration_key_mismatch", expected=expected, given=job.reg_key)
    return await Wrapper(cfg, job, env).run()


def main(cfg: Config) -> int:
    """Synchronous entry point for ``vizdesk node vnc``."""
    return asyncio.run(run_wrapper(cfg, os.environ))


if __name__ == "__main__":
    try:
        _cfg = load_config()
    except ConfigError as _exc:
        print(f"vizdesk node vnc: {_exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    sys.exit(main(_cfg))
