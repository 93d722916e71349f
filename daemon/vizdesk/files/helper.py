"""The user-file helper: one file operation, run AS THE USER, confined to a root directory.

The daemon runs as root but never opens a user's file itself. It starts this program as
``[*slurm.submit_prefix(user), *uploads.helper_command, OP, ARGS...]`` (``runuser -u alice
-- python -I -m vizdesk.files.helper write ...``), so the kernel applies the user's own
permissions to every byte, and this program adds a confinement of its own:

* ``ROOT`` is an absolute directory chosen by the daemon (an upload staging directory, a
  job directory). Its last component must not be a symlink.
* ``REL`` is a relative path checked component by component (none empty, ``.``, ``..``,
  longer than 255 bytes or with a NUL) and resolved by opening each directory from the
  previous one's descriptor with ``O_NOFOLLOW | O_DIRECTORY``: a symlink anywhere below
  ROOT is "not found", never followed; files are opened ``O_NOFOLLOW | O_NONBLOCK`` and
  must be regular files.

Operations (results on stdout: JSON lines, or a JSON header line then raw bytes)::

    mkdir  ROOT [REL]                       create ROOT (parents too) and REL inside, 0700
    write  ROOT REL OFFSET LENGTH [--checksum ALGO:BASE64] [--fsync]
                                            append stdin at OFFSET (== the file's size;
                                            created when OFFSET is 0) → {"offset": N}
    size   ROOT REL                         → {"size", "mtime", "type"}
    remove ROOT REL                         unlink one entry (never a directory)
    rmtree ROOT [REL]                       remove a tree (fd-based, never following links)
    move   SRCROOT SRCREL DSTROOT DSTREL    move a regular file; never overwrites
    list   ROOT [--max N]                   recursive listing, one JSON line per entry
                                            ({"path","type","size","mtime"}), then
                                            {"end": true, "count", "truncated"}
    read   ROOT REL [--range A-B|A-|-N]     header {"size","start","end","length","mtime"}
                                            then exactly ``length`` bytes
    head   ROOT REL MAXBYTES                like read, the first MAXBYTES at most
    zip    ROOT [--stdin]                   a ZIP (stored, zip64 when needed) of every
                                            regular file (or of the NUL-separated REL
                                            paths on stdin), sorted, streamed to stdout

On failure: exit status from :data:`EXIT_CODES` and one JSON line on stderr
``{"error": NAME, "message": TEXT, ...}`` (``offset``/``size`` when they matter).

Standard library only, heavy modules imported lazily: it starts for every operation.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator

OK = 0
USAGE = 2
NOT_FOUND = 3
EXISTS = 4
OFFSET_CONFLICT = 5
CHECKSUM_MISMATCH = 6
NOT_REGULAR = 7
TOO_LARGE = 8
PERMISSION = 9
RANGE = 10
IO_ERROR = 11
BAD_PATH = 12
NO_SPACE = 13

EXIT_CODES = {
    "usage": USAGE,
    "not_found": NOT_FOUND,
    "exists": EXISTS,
    "offset_conflict": OFFSET_CONFLICT,
    "checksum_mismatch": CHECKSUM_MISMATCH,
    "not_regular": NOT_REGULAR,
    "too_large": TOO_LARGE,
    "permission_denied": PERMISSION,
    "range_not_satisfiable": RANGE,
    "io_error": IO_ERROR,
    "bad_path": BAD_PATH,
    "no_space": NO_SPACE,
}
NAME_OF = {code: name for name, code in EXIT_CODES.items()}

CHUNK = 1 << 20
MAX_COMPONENT_BYTES = 255
MAX_DEPTH = 64
DEFAULT_MAX_ENTRIES = 100_000
CHECKSUM_ALGORITHMS = ("sha1", "md5", "sha256")

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
WRITE_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Fail(Exception):
    """One failure of the operation: an exit status, a message and extra JSON fields."""

    def __init__(self, code: int, message: str, **extra: object) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


def from_oserror(exc: OSError, what: str) -> Fail:
    """The failure an ``OSError`` means (a symlink met with O_NOFOLLOW is "not found")."""
    e = exc.errno
    if e in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
        return Fail(NOT_FOUND, f"{what}: not found")
    if e in (errno.EEXIST, errno.ENOTEMPTY):
        return Fail(EXISTS, f"{what}: exists")
    if e in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Fail(PERMISSION, f"{what}: permission denied")
    if e in (errno.ENOSPC, errno.EDQUOT):
        return Fail(NO_SPACE, f"{what}: no space left (or quota exceeded)")
    if e == errno.EFBIG:
        return Fail(TOO_LARGE, f"{what}: file too large")
    if e == errno.EISDIR:
        return Fail(NOT_REGULAR, f"{what}: is a directory")
    return Fail(IO_ERROR, f"{what}: {exc.strerror or exc}")


def components(rel: str) -> list[str]:
    """The components of a relative path, each a safe single name; :class:`Fail`
    (``bad_path``) for an empty, absolute or NUL-containing path, an empty, ``.`` or
    ``..`` component, or one longer than 255 bytes."""
    if not rel or rel.startswith("/") or "\0" in rel:
        raise Fail(BAD_PATH, "a relative path without NUL is required")
    parts = rel.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise Fail(BAD_PATH, "path components may not be empty, '.' or '..'")
        if len(os.fsencode(part)) > MAX_COMPONENT_BYTES:
            raise Fail(BAD_PATH, "a path component is longer than 255 bytes")
    return parts


def check_root(root: str) -> None:
    if not root.startswith("/") or "\0" in root:
        raise Fail(BAD_PATH, "ROOT must be an absolute path")


def open_root(root: str) -> int:
    """A descriptor of ROOT (its last component must not be a symlink)."""
    check_root(root)
    try:
        return os.open(root, DIR_FLAGS)
    except OSError as exc:
        raise from_oserror(exc, "root") from None


def open_parent(rootfd: int, rel: str) -> tuple[int, str]:
    """(descriptor of the directory holding REL's last component, that component),
    walking from ``rootfd`` without following any symlink."""
    parts = components(rel)
    fd = os.dup(rootfd)
    try:
        for part in parts[:-1]:
            nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError as exc:
        os.close(fd)
        raise from_oserror(exc, rel) from None
    return fd, parts[-1]


def open_file(rootfd: int, rel: str, flags: int = READ_FLAGS, mode: int = 0o600) -> int:
    """A descriptor of the regular file REL below ``rootfd`` (never through a symlink)."""
    pfd, name = open_parent(rootfd, rel)
    try:
        fd = os.open(name, flags, mode, dir_fd=pfd)
    except OSError as exc:
        raise from_oserror(exc, rel) from None
    finally:
        os.close(pfd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Fail(NOT_REGULAR, f"{rel}: not a regular file")
    return fd


def emit(obj: object) -> None:
    write_all(1, (json.dumps(obj, separators=(",", ":")) + "\n").encode())


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


# -- operations ---------------------------------------------------------------------------


def op_mkdir(root: str, rel: str | None = None) -> None:
    check_root(root)
    try:
        rootfd = os.open(root, DIR_FLAGS)
    except FileNotFoundError:
        path = ""
        for part in root.split("/")[1:]:
            if not part:
                continue
            path += "/" + part
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                raise from_oserror(exc, "root") from None
        rootfd = open_root(root)
    except OSError as exc:
        raise from_oserror(exc, "root") from None
    fd = rootfd
    try:
        for part in components(rel) if rel else []:
            try:
                os.mkdir(part, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError as exc:
        raise from_oserror(exc, rel or "root") from None
    finally:
        os.close(fd)
    emit({"ok": True})


def parse_checksum(spec: str) -> tuple[str, bytes]:
    import base64
    import binascii

    algo, sep, value = spec.partition(":")
    if not sep or algo not in CHECKSUM_ALGORITHMS:
        raise Fail(USAGE, f"--checksum ALGO:BASE64 with ALGO one of {CHECKSUM_ALGORITHMS}")
    try:
        return algo, base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Fail(USAGE, "--checksum: the value is not base64") from None


def _enlarge_pipe(fd: int) -> None:
    import fcntl

    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)
    except (OSError, AttributeError):
        pass


def copy_in(src: int, dst: int, length: int, digest: Callable[[bytes], None] | None) -> int:
    """Copy up to ``length`` bytes from ``src`` (stdin) to ``dst``; the count copied
    (fewer at end of input). Pipe → file moves pages with ``splice`` when no digest is
    needed; otherwise read + hash + write in 1 MiB blocks."""
    done = 0
    splice = getattr(os, "splice", None)
    if digest is None and splice is not None and stat.S_ISFIFO(os.fstat(src).st_mode):
        try:
            while done < length:
                n = splice(src, dst, min(CHUNK, length - done))
                if n == 0:
                    return done
                done += n
            return done
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS) or done:
                raise CopyError(done, exc) from None
    try:
        while done < length:
            buf = os.read(src, min(CHUNK, length - done))
            if not buf:
                break
            if digest is not None:
                digest(buf)
            write_all(dst, buf)
            done += len(buf)
    except OSError as exc:
        raise CopyError(done, exc) from None
    return done


class CopyError(Exception):
    """A copy failed after ``done`` bytes."""

    def __init__(self, done: int, exc: OSError) -> None:
        super().__init__(str(exc))
        self.done = done
        self.exc = exc


def op_write(
    root: str, rel: str, offset: int, length: int, checksum: str | None, fsync: bool
) -> None:
    want = parse_checksum(checksum) if checksum else None
    rootfd = open_root(root)
    pfd, name = open_parent(rootfd, rel)
    try:
        fd = -1
        if offset == 0:
            try:
                fd = os.open(name, WRITE_FLAGS | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=pfd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise from_oserror(exc, rel) from None
        if fd < 0:
            try:
                fd = os.open(name, WRITE_FLAGS, dir_fd=pfd)
            except OSError as exc:
                raise from_oserror(exc, rel) from None
    finally:
        os.close(pfd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise Fail(NOT_REGULAR, f"{rel}: not a regular file")
    if st.st_size != offset:
        raise Fail(OFFSET_CONFLICT, "offset is not the file's size", size=st.st_size)
    os.lseek(fd, offset, os.SEEK_SET)
    _enlarge_pipe(0)
    hasher = None
    if want is not None:
        import hashlib

        hasher = hashlib.new(want[0])
    try:
        done = copy_in(0, fd, length, hasher.update if hasher is not None else None)
    except CopyError as err:
        keep = offset if want is not None else offset + err.done
        os.ftruncate(fd, keep)
        fail = from_oserror(err.exc, rel)
        fail.extra["offset"] = keep
        raise fail from None
    if want is not None and hasher is not None:
        if hasher.digest() != want[1]:  # a body cut short never matches either
            os.ftruncate(fd, offset)
            raise Fail(
                CHECKSUM_MISMATCH,
                "the body does not match its checksum (or ended early): discarded",
                offset=offset,
            )
    if fsync:
        os.fsync(fd)
    os.close(fd)
    emit({"offset": offset + done})


def op_size(root: str, rel: str) -> None:
    pfd, name = open_parent(open_root(root), rel)
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except OSError as exc:
        raise from_oserror(exc, rel) from None
    if stat.S_ISLNK(st.st_mode):
        raise Fail(NOT_FOUND, f"{rel}: not found")
    emit({"size": st.st_size, "mtime": st.st_mtime, "type": kind_of(st.st_mode)})


def op_remove(root: str, rel: str) -> None:
    pfd, name = open_parent(open_root(root), rel)
    try:
        os.unlink(name, dir_fd=pfd)
    except OSError as exc:
        raise from_oserror(exc, rel) from None
    emit({"ok": True})


def op_rmtree(root: str, rel: str | None = None) -> None:
    import shutil

    if rel:
        pfd, name = open_parent(open_root(root), rel)
    else:
        check_root(root)
        parent, _, name = root.rstrip("/").rpartition("/")
        if not name:
            raise Fail(BAD_PATH, "refusing to remove /")
        pfd = open_root(parent or "/")
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=pfd)  # fd-based: never follows a symlink
        else:
            os.unlink(name, dir_fd=pfd)
    except OSError as exc:
        raise from_oserror(exc, rel or "root") from None
    emit({"ok": True})


def op_move(srcroot: str, srcrel: str, dstroot: str, dstrel: str) -> None:
    spfd, sname = open_parent(open_root(srcroot), srcrel)
    dpfd, dname = open_parent(open_root(dstroot), dstrel)
    try:
        st = os.stat(sname, dir_fd=spfd, follow_symlinks=False)
    except OSError as exc:
        raise from_oserror(exc, srcrel) from None
    if stat.S_ISLNK(st.st_mode):
        raise Fail(NOT_FOUND, f"{srcrel}: not found")
    if not stat.S_ISREG(st.st_mode):
        raise Fail(NOT_REGULAR, f"{srcrel}: not a regular file")
    try:  # a new name for the same inode: fails (EEXIST) rather than overwrite
        os.link(sname, dname, src_dir_fd=spfd, dst_dir_fd=dpfd, follow_symlinks=False)
    except FileExistsError:
        raise Fail(EXISTS, f"{dstrel}: exists") from None
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise from_oserror(exc, dstrel) from None
        _copy_across(spfd, sname, dpfd, dname, dstrel)
    try:
        os.unlink(sname, dir_fd=spfd)
    except OSError as exc:
        raise from_oserror(exc, srcrel) from None
    emit({"ok": True})


def _copy_across(spfd: int, sname: str, dpfd: int, dname: str, dstrel: str) -> None:
    """Copy (another file system, no hard links there) into a new file, never over one."""
    try:
        src = os.open(sname, READ_FLAGS, dir_fd=spfd)
        dst = os.open(dname, WRITE_FLAGS | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dpfd)
    except OSError as exc:
        raise from_oserror(exc, dstrel) from None
    try:
        left = os.fstat(src).st_size
        while left > 0:
            n = os.sendfile(dst, src, None, min(left, 1 << 30))
            if n == 0:
                break
            left -= n
        os.fsync(dst)
    except OSError as exc:
        os.unlink(dname, dir_fd=dpfd)
        raise from_oserror(exc, dstrel) from None
    finally:
        os.close(src)
        os.close(dst)


def walk(rootfd: int, max_entries: int) -> Iterator[tuple[str, os.stat_result] | None]:
    """(relative path, lstat) of every entry below ``rootfd``, depth first in name order,
    without following symlinks; yields None once when ``max_entries`` were seen."""
    count = 0

    def inner(fd: int, prefix: str, depth: int) -> Iterator[tuple[str, os.stat_result] | None]:
        nonlocal count
        with os.scandir(fd) as it:
            names = sorted(e.name for e in it)
        for name in names:
            if count >= max_entries:
                yield None
                return
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue  # vanished meanwhile
            count += 1
            path = prefix + name
            yield path, st
            if stat.S_ISDIR(st.st_mode) and depth < MAX_DEPTH:
                try:
                    sub = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue  # replaced by a symlink meanwhile, or unreadable
                try:
                    for item in inner(sub, path + "/", depth + 1):
                        yield item
                        if item is None:
                            return
                finally:
                    os.close(sub)

    yield from inner(rootfd, "", 0)


def op_list(root: str, max_entries: int) -> None:
    rootfd = open_root(root)
    count, truncated = 0, False
    lines: list[str] = []
    for item in walk(rootfd, max_entries):
        if item is None:
            truncated = True
            break
        path, st = item
        count += 1
        entry = {"path": path, "type": kind_of(st.st_mode), "size": st.st_size}
        entry["mtime"] = st.st_mtime
        lines.append(json.dumps(entry, separators=(",", ":")))
        if len(lines) >= 1000:
            write_all(1, ("\n".join(lines) + "\n").encode())
            lines.clear()
    if lines:
        write_all(1, ("\n".join(lines) + "\n").encode())
    emit({"end": True, "count": count, "truncated": truncated})


def resolve_range(spec: str | None, size: int) -> tuple[int, int]:
    """(start, end inclusive) of ``spec`` (``A-B``, ``A-``, ``-N``; None = everything) in
    a file of ``size`` bytes; :class:`Fail` ``range_not_satisfiable`` when it is not."""
    if spec is None:
        return 0, size - 1
    first, sep, last = spec.partition("-")
    if not sep or not (first or last) or not (first + last).isdigit():
        raise Fail(USAGE, "--range A-B, A- or -N")
    if not first:
        n = int(last)
        if n == 0 or size == 0:
            raise Fail(RANGE, "range not satisfiable", size=size)
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise Fail(RANGE, "range not satisfiable", size=size)
    return start, min(end, size - 1)


def send_bytes(fd: int, start: int, count: int) -> None:
    """Exactly ``count`` bytes of ``fd`` from ``start`` to stdout (sendfile, else read)."""
    pos, left = start, count
    try:
        while left > 0:
            n = os.sendfile(1, fd, pos, min(left, 1 << 30))
            if n == 0:
                break
            pos += n
            left -= n
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
        os.lseek(fd, pos, os.SEEK_SET)
        while left > 0:
            buf = os.read(fd, min(CHUNK, left))
            if not buf:
                break
            write_all(1, buf)
            left -= len(buf)
    if left > 0:  # the file shrank meanwhile: keep the promised length
        zero = bytes(min(CHUNK, left))
        while left > 0:
            write_all(1, zero[: min(len(zero), left)])
            left -= min(len(zero), left)


def op_read(root: str, rel: str, spec: str | None, max_bytes: int | None = None) -> None:
    fd = open_file(open_root(root), rel)
    st = os.fstat(fd)
    if max_bytes is not None:
        start, end = 0, min(st.st_size, max_bytes) - 1
    else:
        start, end = resolve_range(spec, st.st_size)
    length = end - start + 1
    emit({"size": st.st_size, "start": start, "end": end, "length": length, "mtime": st.st_mtime})
    send_bytes(fd, start, length)


def op_zip(root: str, from_stdin: bool) -> None:
    import time
    import zipfile

    rootfd = open_root(root)
    if from_stdin:
        raw = sys.stdin.buffer.read()
        rels = sorted({os.fsdecode(p) for p in raw.split(b"\0") if p})
    else:
        rels = [p for p, st in _regular_files(rootfd)]
    out = os.fdopen(1, "wb", buffering=CHUNK, closefd=False)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for rel in rels:
            try:
                fd = open_file(rootfd, rel)
            except Fail:
                continue  # vanished, a symlink, not a regular file: never in the archive
            try:
                st = os.fstat(fd)
                when = time.gmtime(max(st.st_mtime, 315532800))[:6]  # zip starts at 1980
                info = zipfile.ZipInfo(rel, date_time=when)
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                info.file_size = st.st_size
                left = st.st_size
                with zf.open(info, "w", force_zip64=st.st_size >= 1 << 31) as w:
                    while left > 0:
                        buf = os.read(fd, min(CHUNK, left))
                        if not buf:
                            break
                        w.write(buf)
                        left -= len(buf)
            finally:
                os.close(fd)
    out.flush()


def _regular_files(rootfd: int) -> Iterator[tuple[str, os.stat_result]]:
    for item in walk(rootfd, DEFAULT_MAX_ENTRIES):
        if item is None:
            return
        if stat.S_ISREG(item[1].st_mode):
            yield item


# -- command line --------------------------------------------------------------------------


def _int(value: str, what: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise Fail(USAGE, f"{what} must be a non-negative integer")
    return int(value)


def _split(args: list[str], flags: set[str], options: set[str]) -> tuple[list[str], dict[str, str]]:
    """Positional arguments and ``--option VALUE`` / ``--flag`` (value "1") pairs."""
    positional: list[str] = []
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a in options:
            if i + 1 >= len(args):
                raise Fail(USAGE, f"{a} needs a value")
            opts[a] = args[i + 1]
            i += 2
            continue
        if a in flags:
            opts[a] = "1"
        elif a.startswith("--"):
            raise Fail(USAGE, f"unknown option {a}")
        else:
            positional.append(a)
        i += 1
    return positional, opts


def _arity(pos: list[str], lo: int, hi: int, usage: str) -> None:
    if not lo <= len(pos) <= hi:
        raise Fail(USAGE, f"usage: {usage}")


def run(argv: list[str]) -> None:
    if not argv:
        raise Fail(USAGE, "usage: helper OP ARGS... (see the module's docstring)")
    op, args = argv[0], argv[1:]
    if op == "mkdir":
        pos, _ = _split(args, set(), set())
        _arity(pos, 1, 2, "mkdir ROOT [REL]")
        op_mkdir(pos[0], pos[1] if len(pos) > 1 else None)
    elif op == "write":
        pos, opts = _split(args, {"--fsync"}, {"--checksum"})
        _arity(pos, 4, 4, "write ROOT REL OFFSET LENGTH [--checksum ALGO:B64] [--fsync]")
        op_write(
            pos[0],
            pos[1],
            _int(pos[2], "OFFSET"),
            _int(pos[3], "LENGTH"),
            opts.get("--checksum"),
            "--fsync" in opts,
        )
    elif op in ("size", "remove"):
        pos, _ = _split(args, set(), set())
        _arity(pos, 2, 2, f"{op} ROOT REL")
        (op_size if op == "size" else op_remove)(pos[0], pos[1])
    elif op == "rmtree":
        pos, _ = _split(args, set(), set())
        _arity(pos, 1, 2, "rmtree ROOT [REL]")
        op_rmtree(pos[0], pos[1] if len(pos) > 1 else None)
    elif op == "move":
        pos, _ = _split(args, set(), set())
        _arity(pos, 4, 4, "move SRCROOT SRCREL DSTROOT DSTREL")
        op_move(*pos)
    elif op == "list":
        pos, opts = _split(args, set(), {"--max"})
        _arity(pos, 1, 1, "list ROOT [--max N]")
        op_list(pos[0], _int(opts.get("--max", str(DEFAULT_MAX_ENTRIES)), "--max"))
    elif op == "read":
        pos, opts = _split(args, set(), {"--range"})
        _arity(pos, 2, 2, "read ROOT REL [--range A-B|A-|-N]")
        op_read(pos[0], pos[1], opts.get("--range"))
    elif op == "head":
        pos, _ = _split(args, set(), set())
        _arity(pos, 3, 3, "head ROOT REL MAXBYTES")
        op_read(pos[0], pos[1], None, _int(pos[2], "MAXBYTES"))
    elif op == "zip":
        pos, opts = _split(args, {"--stdin"}, set())
        _arity(pos, 1, 1, "zip ROOT [--stdin]")
        op_zip(pos[0], "--stdin" in opts)
    else:
        raise Fail(USAGE, f"unknown operation {op!r}")


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)
    try:
        if os.geteuid() == 0:
            raise Fail(PERMISSION, "refusing to run as root: run me as the user")
        run(sys.argv[1:] if argv is None else argv)
        return OK
    except Fail as exc:
        failure = exc
    except BrokenPipeError:
        return IO_ERROR  # the reader went away
    except OSError as exc:
        failure = from_oserror(exc, "operation")
    report: dict[str, object] = {
        "error": NAME_OF.get(failure.code, "io_error"),
        "message": failure.message,
    }
    report.update(failure.extra)
    try:
        os.write(2, (json.dumps(report) + "\n").encode())
    except OSError:
        pass
    return failure.code


if __name__ == "__main__":
    sys.exit(main())
