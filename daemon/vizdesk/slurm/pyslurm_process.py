"""pyslurm's calls in child processes, so libslurm never stalls the daemon.

pyslurm 25.11 calls libslurm without releasing the GIL: while slurmctld is down one RPC
blocks for MessageTimeout and retries (about 20 s), and a worker *thread* then freezes the
whole daemon (every request, the proxy, the tracker) for that long. Here each call runs in
a child (:mod:`vizdesk.slurm.pyslurm_child`), at most ``workers`` at once; a call that
outlives its timeout kills its child, and the next call starts a fresh one. libslurm's
``exit()`` on a bad slurm.conf ends a child, never the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import struct
import sys
from typing import Any

import structlog

from .base import SlurmError, SlurmRejected, SlurmUnavailable

log = structlog.get_logger("vizdesk.slurm")

HEADER = struct.Struct(">I")
_ERRORS: dict[str, type[Exception]] = {
    "SlurmError": SlurmError,
    "SlurmRejected": SlurmRejected,
    "SlurmUnavailable": SlurmUnavailable,
    "ValueError": ValueError,
}


class PyslurmCallError(Exception):
    """An error pyslurm raised in the child (``errno``/``msg`` as on ``pyslurm.RPCError``)."""

    def __init__(self, msg: str, errno: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.errno = errno


def rebuild_error(kind: str, errno: int | None, msg: str) -> Exception:
    """The parent-side exception for an ``("err", kind, errno, msg)`` answer."""
    cls = _ERRORS.get(kind)
    return cls(msg) if cls is not None else PyslurmCallError(msg, errno)


class _Child:
    """One child process; one request at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def request(self, op: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """The child's answer frame for one request."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        body = pickle.dumps((op, args), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.proc.stdin.write(HEADER.pack(len(body)) + body)
            await self.proc.stdin.drain()
            head = await self.proc.stdout.readexactly(HEADER.size)
            answer = await self.proc.stdout.readexactly(HEADER.unpack(head)[0])
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            code = await self.proc.wait()
            raise PyslurmCallError(f"the pyslurm worker process exited (code {code})") from exc
        reply: tuple[Any, ...] = pickle.loads(answer)  # noqa: S301 - our own child's pipe
        return reply

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()


class PyslurmProcess:
    """Runs ``OPS[op](pyslurm, *args)`` of :mod:`vizdesk.slurm.pyslurm_backend` in a child.

    ``call`` waits for a free child (at most ``workers`` run), raises the child's error
    rebuilt (:func:`rebuild_error`), ``TimeoutError`` after ``call_timeout`` seconds (the child
    is killed) and :class:`PyslurmCallError` when the child died. ``close`` ends them all.
    """

    def __init__(self, conf_path: str, call_timeout: float, workers: int = 2) -> None:
        self.conf_path = conf_path
        self.call_timeout = call_timeout
        self._slots = asyncio.Semaphore(workers)
        self._idle: list[_Child] = []
        self._all: set[_Child] = set()

    async def _start(self) -> _Child:
        env = {
            **os.environ,
            "PYSLURM_DISABLE_AUTO_INIT": "1",
            # the child imports vizdesk and pyslurm from where this process does
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "vizdesk.slurm.pyslurm_child", self.conf_path,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        log.debug("slurm.pyslurm_worker_started", pid=proc.pid)
        child = _Child(proc)
        self._all.add(child)
        return child

    async def call(self, op: str, args: tuple[Any, ...]) -> Any:
        async with self._slots:
            while self._idle and not self._idle[-1].alive:
                self._all.discard(self._idle.pop())
            child = self._idle.pop() if self._idle else await self._start()
            try:
                reply = await asyncio.wait_for(child.request(op, args), self.call_timeout)
            except BaseException:
                # timed out, cancelled or died: its pipe may hold half a frame
                self._all.discard(child)
                await asyncio.shield(child.kill())
                raise
            self._idle.append(child)
        if reply[0] == "ok":
            return reply[1]
        raise rebuild_error(reply[1], reply[2], reply[3])

    async def close(self) -> None:
        children, self._all, self._idle = list(self._all), set(), []
        for child in children:
            await child.kill()
