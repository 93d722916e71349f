"""The daemon's side of the user-file helper: :class:`UserFiles` runs one helper process
per operation, as the user, and turns its exit status into a :class:`~.errors.FilesError`.

Never a shell: the argv is ``[*submit_prefix with {user}, *helper_command, OP, ARGS...]``
and user-given names reach it only as single argv elements (validated by the caller, and
again by the helper). Nothing blocks the event loop: processes are asyncio subprocesses,
bodies stream through pipes with backpressure, and a caller that goes away kills its
helper (reads) or ends its input (writes: what was written stays, tus semantics).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from . import helper
from .errors import (
    ChecksumMismatch,
    FileExists,
    FileMissing,
    FilePermission,
    FilesError,
    FileTooLarge,
    HelperFailed,
    NoSpace,
    OffsetConflict,
    RangeNotSatisfiable,
)

log = structlog.get_logger("vizdesk.files")

STREAM_CHUNK = 1 << 20
FALLBACK_PYTHON = "/usr/bin/python3"


def usable_by_all(path: str, execute: bool) -> bool:
    """Whether every user may read (and ``execute``) ``path``: every directory on its real
    path searchable by others, the file readable (and executable) by others."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
        need = stat.S_IROTH | (stat.S_IXOTH if execute else 0)
        if st.st_mode & need != need:
            return False
        parent = os.path.dirname(real)
        while True:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
            if parent == "/":
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


def default_helper_command() -> list[str]:
    """``uploads.helper_command`` when the config leaves it empty: the helper script of
    this package run by a Python every user can execute (the daemon's own, else
    ``/usr/bin/python3``: the helper needs the standard library only), isolated (``-I``).
    A daemon whose Python or package users cannot read falls back to ``-m``."""
    script = os.path.abspath(helper.__file__)
    if usable_by_all(script, execute=False):
        for python in (sys.executable, FALLBACK_PYTHON):
            if python and usable_by_all(python, execute=True):
                return [python, "-I", script]
    return [sys.executable, "-I", "-m", "vizdesk.files.helper"]


@dataclass(frozen=True)
class FileInfo:
    size: int
    mtime: float
    type: str  # file | dir | other


@dataclass(frozen=True)
class Entry:
    """One entry of a listing (symlinks are listed as such, never followed)."""

    path: str
    type: str  # file | dir | symlink | other
    size: int
    mtime: float


@dataclass(frozen=True)
class Listing:
    entries: list[Entry]
    truncated: bool


@dataclass(frozen=True)
class ReadHeader:
    """What a read sends: bytes ``start``..``end`` (inclusive), ``length`` of them, of a
    file of ``size`` bytes."""

    size: int
    start: int
    end: int
    length: int
    mtime: float


@dataclass(frozen=True)
class WriteResult:
    offset: int  # the file's size after the write
    complete: bool  # all ``length`` bytes arrived (False: the input ended early)
    overflow: bool = False  # the body had more than ``length`` bytes (the rest was dropped)


class Download:
    """A running ``read``/``zip`` helper: :attr:`header` (reads), then :meth:`chunks`."""

    def __init__(self, proc: asyncio.subprocess.Process, header: ReadHeader | None) -> None:
        self.proc = proc
        self.header = header

    async def chunks(self, size: int = STREAM_CHUNK) -> AsyncIterator[bytes]:
        assert self.proc.stdout is not None
        while True:
            chunk = await self.proc.stdout.read(size)
            if not chunk:
                break
            yield chunk
        await self.proc.wait()
        if self.proc.returncode:
            err = await _stderr(self.proc)
            raise _error(self.proc.returncode, err)


def _error(code: int, report: dict[str, Any]) -> FilesError:
    message = str(report.get("message") or helper.NAME_OF.get(code, "failed"))
    if code in (helper.NOT_FOUND, helper.NOT_REGULAR, helper.BAD_PATH):
        return FileMissing()
    if code == helper.EXISTS:
        return FileExists()
    if code == helper.OFFSET_CONFLICT:
        size = report.get("size")
        return OffsetConflict(size if isinstance(size, int) else None)
    if code == helper.CHECKSUM_MISMATCH:
        return ChecksumMismatch()
    if code == helper.TOO_LARGE:
        return FileTooLarge()
    if code == helper.PERMISSION:
        return FilePermission()
    if code == helper.RANGE:
        size = report.get("size")
        return RangeNotSatisfiable(size if isinstance(size, int) else 0)
    if code == helper.NO_SPACE:
        return NoSpace()
    log.warning("files.helper_failed", code=code, message=message)
    return HelperFailed(f"file helper failed ({helper.NAME_OF.get(code, code)}): {message}")


async def _stderr(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    if proc.stderr is None:
        return {}
    raw = await proc.stderr.read(65536)
    for line in raw.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict):
                return doc
    return {"message": raw.decode(errors="replace").strip()[-500:]}


def _json_line(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise HelperFailed("file helper answered something that is not JSON") from None
    if not isinstance(doc, dict):
        raise HelperFailed("file helper answered something that is not a JSON object")
    return doc


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(Exception):
        await proc.wait()


class UserFiles:
    """File operations on users' directories, each run by the helper AS THE USER.

    Contract: every method takes the user, an absolute ROOT the daemon chose (an upload
    staging directory, a job directory) and paths relative to it; nothing outside ROOT is
    reachable and no symlink is followed. Failures raise :class:`~.errors.FilesError`
    subclasses (404 not found, 409 exists/offset, 460 checksum, 416 range, 403, 413,
    507, 503 helper failed). Non-streaming calls time out after ``timeout`` seconds.
    """

    def __init__(
        self, submit_prefix: list[str], helper_command: list[str] | None, timeout: float
    ) -> None:
        self.submit_prefix = list(submit_prefix)
        self.helper_command = list(helper_command or default_helper_command())
        self.timeout = timeout

    def argv(self, user: str, op: str, *args: str) -> list[str]:
        """The helper's command line for ``op`` as ``user`` (no shell ever parses it)."""
        prefix = [part.replace("{user}", user) for part in self.submit_prefix]
        return [*prefix, *self.helper_command, op, *args]

    async def _spawn(
        self, user: str, op: str, *args: str, stdin: bool = False
    ) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                *self.argv(user, op, *args),
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=STREAM_CHUNK,
                start_new_session=True,
            )
        except OSError as exc:
            raise HelperFailed(f"cannot start the file helper: {exc.strerror}") from None

    async def _call(self, user: str, op: str, *args: str, stdin: bytes | None = None) -> bytes:
        """Run one short operation to its end; its stdout."""
        proc = await self._spawn(user, op, *args, stdin=stdin is not None)
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate(stdin)
        except TimeoutError:
            await _kill(proc)
            raise HelperFailed(f"file helper {op} timed out after {self.timeout:g}s") from None
        finally:
            await _kill(proc)
        if proc.returncode:
            return_code = proc.returncode
            report: dict[str, Any] = {}
            for line in err.decode(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if isinstance(doc, dict):
                        report = doc
            if not report:
                report = {"message": err.decode(errors="replace").strip()[-500:]}
            raise _error(return_code if return_code > 0 else helper.IO_ERROR, report)
        return out

    # -- short operations -----------------------------------------------------------------

    async def mkdir(self, user: str, root: str, rel: str | None = None) -> None:
        """Create ROOT (parents too) and REL inside it, mode 0700, owned by the user."""
        await self._call(user, "mkdir", root, *([rel] if rel else []))

    async def create(self, user: str, root: str, rel: str) -> None:
        """Create an empty file REL (no error if it exists empty)."""
        await self._call(user, "write", root, rel, "0", "0", stdin=b"")

    async def size(self, user: str, root: str, rel: str) -> FileInfo:
        doc = _json_line(await self._call(user, "size", root, rel))
        return FileInfo(int(doc["size"]), float(doc["mtime"]), str(doc["type"]))

    async def remove(self, user: str, root: str, rel: str) -> None:
        await self._call(user, "remove", root, rel)

    async def rmtree(self, user: str, root: str, rel: str | None = None) -> None:
        """Remove REL (a tree or a file) below ROOT, or ROOT itself without REL."""
        await self._call(user, "rmtree", root, *([rel] if rel else []))

    async def move(
        self, user: str, src_root: str, src_rel: str, dst_root: str, dst_rel: str
    ) -> None:
        """Move a regular file between two of the user's roots; never overwrites (409)."""
        await self._call(user, "move", src_root, src_rel, dst_root, dst_rel)

    async def list(self, user: str, root: str, max_entries: int = 100_000) -> Listing:
        """Every entry below ROOT, recursively (symlinks listed, never followed)."""
        out = await self._call(user, "list", root, "--max", str(max_entries))
        entries: list[Entry] = []
        truncated = False
        for line in out.splitlines():
            doc = _json_line(line)
            if doc.get("end"):
                truncated = bool(doc.get("truncated"))
                break
            entries.append(
                Entry(str(doc["path"]), str(doc["type"]), int(doc["size"]), float(doc["mtime"]))
            )
        return Listing(entries, truncated)

    async def head(self, user: str, root: str, rel: str, max_bytes: int) -> tuple[int, bytes]:
        """(the file's size, its first ``max_bytes`` at most)."""
        out = await self._call(user, "head", root, rel, str(max_bytes))
        line, _, data = out.partition(b"\n")
        doc = _json_line(line)
        return int(doc["size"]), data[: int(doc["length"])]

    # -- streams ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def read(
        self, user: str, root: str, rel: str, range_spec: str | None = None
    ) -> AsyncIterator[Download]:
        """Read REL (``range_spec``: ``A-B``, ``A-`` or ``-N``, resolved against the size
        of the very file opened): the header first (errors raise here, before anything is
        sent), then ``download.chunks()``. Leaving the block kills an unfinished helper."""
        proc = await self._spawn(
            user, "read", root, rel, *(["--range", range_spec] if range_spec else [])
        )
        try:
            assert proc.stdout is not None
            try:
                async with asyncio.timeout(self.timeout):
                    line = await proc.stdout.readline()
                    if not line:
                        await proc.wait()
                        raise _error(proc.returncode or helper.IO_ERROR, await _stderr(proc))
            except TimeoutError:
                raise HelperFailed("file helper read timed out") from None
            doc = _json_line(line)
            header = ReadHeader(
                int(doc["size"]),
                int(doc["start"]),
                int(doc["end"]),
                int(doc["length"]),
                float(doc["mtime"]),
            )
            yield Download(proc, header)
        finally:
            await _kill(proc)

    @contextlib.asynccontextmanager
    async def zip(
        self, user: str, root: str, rels: Iterable[str] | None = None
    ) -> AsyncIterator[Download]:
        """A streamed ZIP of every regular file below ROOT (or of ``rels``)."""
        names = None if rels is None else list(rels)
        proc = await self._spawn(
            user, "zip", root, *(["--stdin"] if names is not None else []), stdin=names is not None
        )
        try:
            if names is not None:
                assert proc.stdin is not None
                proc.stdin.write(b"\0".join(os.fsencode(n) for n in names))
                with contextlib.suppress(ConnectionError):
                    await proc.stdin.drain()
                proc.stdin.close()
            yield Download(proc, None)
        finally:
            await _kill(proc)

    async def write(
        self,
        user: str,
        root: str,
        rel: str,
        offset: int,
        length: int,
        body: AsyncIterable[bytes],
        *,
        checksum: str | None = None,
        fsync: bool = False,
        progress: Callable[[int], None] | None = None,
        stop: asyncio.Event | None = None,
        idle_timeout: float | None = None,
    ) -> WriteResult:
        """Append at most ``length`` bytes of ``body`` to REL at ``offset`` (which must be
        its size; 0 creates it). ``checksum`` ("sha1:BASE64"): the whole body must match or
        nothing of it is kept (:class:`ChecksumMismatch`). Without one, an input that ends
        early (client gone, ``stop`` set, ``idle_timeout`` without data) keeps what was
        written. ``progress(n)`` is called with the bytes handed to the helper so far."""
        args = [root, rel, str(offset), str(length)]
        if checksum:
            args += ["--checksum", checksum]
        if fsync:
            args.append("--fsync")
        proc = await self._spawn(user, "write", *args, stdin=True)
        assert proc.stdin is not None and proc.stdout is not None
        stdin = proc.stdin
        fed = 0
        overflow = False

        async def feed() -> None:
            nonlocal fed, overflow
            it = aiter(body)
            while fed < length:
                try:
                    async with asyncio.timeout(idle_timeout):
                        chunk = await anext(it)
                except (StopAsyncIteration, TimeoutError):
                    return
                if fed + len(chunk) > length:
                    chunk = chunk[: length - fed]
                    overflow = True
                stdin.write(chunk)
                fed += len(chunk)
                await stdin.drain()
                if progress is not None:
                    progress(fed)

        feeder = asyncio.create_task(feed())
        stopper = asyncio.create_task(stop.wait()) if stop is not None else None
        exited = asyncio.create_task(proc.wait())
        try:
            waiting = {feeder, exited} | ({stopper} if stopper else set())
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not feeder.done():
                feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, Exception):
                await feeder  # a client error mid-body: the input just ends
            with contextlib.suppress(ConnectionError, RuntimeError):
                stdin.close()
            async with asyncio.timeout(self.timeout + (60 if fsync else 0)):
                out = await proc.stdout.read()
                await exited
        except TimeoutError:
            raise HelperFailed("file helper write did not finish") from None
        finally:
            for task in (feeder, stopper, exited):
                if task is not None and not task.done():
                    task.cancel()
            await _kill(proc)
        if proc.returncode:
            raise _error(
                proc.returncode if proc.returncode > 0 else helper.IO_ERROR, await _stderr(proc)
            )
        lines = out.splitlines()
        if not lines:
            raise HelperFailed("file helper write answered nothing")
        new_offset = int(_json_line(lines[-1])["offset"])
        return WriteResult(new_offset, new_offset == offset + length, overflow)
