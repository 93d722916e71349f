"""The child process of :class:`~vizdesk.slurm.pyslurm_process.PyslurmProcess`.

``python -m vizdesk.slurm.pyslurm_child <slurm.conf>`` imports pyslurm (``slurm_init`` with
that file, "" for libslurm's default), then answers requests one at a time until its
standard input closes. A request is one frame ``(op, args)``; an answer is one frame
``("ok", result)`` or ``("err", kind, errno, message)``. A frame is a 4-byte big-endian
length followed by a pickle. Only the daemon that started this process writes to it.

libslurm's own output (it may print) goes to standard error: the frames use a private
copy of the original standard output.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any, BinaryIO

from .base import SlurmError
from .pyslurm_backend import OPS, import_pyslurm
from .pyslurm_process import HEADER


def read_frame(stream: BinaryIO) -> Any | None:
    """One frame from ``stream``; None at the end of the stream."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)  # noqa: S301 - written by the daemon that started us


def write_frame(stream: BinaryIO, value: Any) -> None:
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(body)) + body)
    stream.flush()


def error_frame(exc: BaseException) -> tuple[str, str, int | None, str]:
    """What the parent needs to rebuild the error: its kind, Slurm errno and message."""
    if isinstance(exc, SlurmError):
        kind = type(exc).__name__
    elif isinstance(exc, ValueError):
        kind = "ValueError"
    else:
        kind = "RPCError"
    errno = getattr(exc, "errno", None)
    if not isinstance(errno, int) or isinstance(errno, bool):
        errno = None
    msg = getattr(exc, "msg", None)
    return ("err", kind, errno, str(msg) if msg else str(exc))


def serve(conf_path: str, requests: BinaryIO, answers: BinaryIO) -> None:
    mod = import_pyslurm(conf_path)
    while True:
        request = read_frame(requests)
        if request is None:
            return
        op, args = request
        try:
            write_frame(answers, ("ok", OPS[op](mod, *args)))
        except Exception as exc:
            write_frame(answers, error_frame(exc))


def main() -> None:
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed to stdout lands in the log, not in a frame
    sys.stdout = sys.stderr
    serve(sys.argv[1] if len(sys.argv) > 1 else "", sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
