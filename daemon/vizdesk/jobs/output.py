"""Reading a job's output file safely: the tail, as the job's user would see it."""

from __future__ import annotations

import asyncio
import os
import pwd
import stat

import structlog

from .model import BatchJob

log = structlog.get_logger("vizdesk.jobs")


def read_tail(path: str, uid: int, max_bytes: int) -> tuple[bytes, int]:
    """The last ``max_bytes`` of a job's output file and its size (blocking).

    The daemon may run as root and the path is in a place the user controls, so the
    file is opened without following a symlink and must be a regular file owned by the
    job's user (a link to someone else's file is refused).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
            raise PermissionError(f"{path}: not a regular file owned by the job's user")
        start = max(0, st.st_size - max_bytes)
        os.lseek(fd, start, os.SEEK_SET)
        chunks = []
        left = st.st_size - start
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st.st_size
    finally:
        os.close(fd)


async def read_output(job: BatchJob, max_bytes: int) -> tuple[bytes, int] | None:
    """Tail of the job's output file, read safely (None when it does not exist yet);
    ``PermissionError`` when the file is not the job user's own regular file."""
    if not job.output_path or "%" in job.output_path:
        return None
    try:
        uid = (await asyncio.to_thread(pwd.getpwnam, job.user)).pw_uid
        return await asyncio.to_thread(read_tail, job.output_path, uid, max_bytes)
    except FileNotFoundError:
        return None
    except (KeyError, OSError) as exc:
        log.warning("job.output_refused", job=job.id, user=job.user, error=str(exc))
        raise PermissionError("output file not readable") from exc
