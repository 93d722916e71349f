"""The registration: the JSON a session's job writes to ``keys.registration(id)``.

The node builds a :class:`Registration` and writes :meth:`Registration.to_json` (with
the session's ACL user, a TTL and a heartbeat); the daemon reads it back with
:func:`parse_registration`, which rejects anything it must not use. The exact key set is
:data:`FIELDS`; the value contains the VNC password (the daemon uses it for the RFB
handshake) and nothing else secret, never the Redis credentials. The daemon never takes
the host from it: it connects to the node Slurm reports.

A wrapper that cannot start its desktop writes a *failure record* to the same key instead:
``{"session_id", "error", "at"}`` (:func:`failure_json`); :func:`parse_registration`
raises :class:`NodeReportedFailure` for it and the daemon fails the session with that
reason (bounded to :data:`MAX_FAILURE_CHARS`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

#: The exact key set of a registration (the daemon's contract).
FIELDS = (
    "session_id",
    "port",
    "display",
    "password",
    "pid",
    "vnc_pid",
    "host",
    "vnc",
    "gpus",
    "cpu_percent",
    "memory_bytes",
    "started_at",
    "heartbeat_at",
    "image",
)


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class GpuReport(Protocol):
    """One GPU as a registration reports it (the node's ``GpuInfo``)."""

    def to_json(self) -> dict[str, Any]: ...


class RegistrationRejected(ValueError):
    """The registration exists but must not be used (port out of range, wrong session...)."""


#: A failure record stays this long, past the job's end, for the daemon to read.
FAILURE_TTL_SECONDS = 600
#: The longest failure text written by the node and taken by the daemon.
MAX_FAILURE_CHARS = 500


class NodeReportedFailure(Exception):
    """The node's wrapper could not start the desktop and left why in the registration
    key (a failure record, written with the session's own credentials)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def failure_json(session_id: str, error: str) -> str:
    """The failure record for ``session_id``: why its desktop could not start."""
    text = " ".join(error.split())[:MAX_FAILURE_CHARS]
    doc = {"session_id": session_id, "error": text, "at": utc_now_iso()}
    return json.dumps(doc, separators=(",", ":"))


def failure_text(data: dict[str, Any]) -> str:
    """The (bounded, one-line) reason of a failure record."""
    err = data.get("error")
    if not isinstance(err, str) or not err.strip():
        return "the node reported an unspecified error"
    return " ".join(err.split())[:MAX_FAILURE_CHARS]


def parse_failure(sid: str, raw: str | bytes) -> str | None:
    """The reason, when ``raw`` is session ``sid``'s failure record; else None."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("session_id") == sid and "error" in data:
        return failure_text(data)
    return None


@dataclass
class Registration:
    """One registration. Written by the node; read back by :func:`parse_registration`,
    which fills the fields the daemon uses and keeps the whole JSON in ``raw``
    (usage numbers: ``cpu_percent``, ``memory_bytes``, ``gpus``)."""

    session_id: str
    port: int
    display: int | None  # the X display number N (DISPLAY=:N)
    password: str = field(repr=False)
    pid: int = 0
    vnc_pid: int = 0
    host: str = ""  # informational only: the daemon uses the node Slurm reports
    vnc: str = ""  # "tigervnc" | "turbovnc"
    started_at: str = ""
    image: str | None = None
    gpus: Sequence[GpuReport] = field(default_factory=list)
    cpu_percent: float = 0.0
    memory_bytes: int = 0
    heartbeat_at: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "port": self.port,
            "display": self.display,
            "password": self.password,
            "pid": self.pid,
            "vnc_pid": self.vnc_pid,
            "host": self.host,
            "vnc": self.vnc,
            "gpus": [g.to_json() for g in self.gpus],
            "cpu_percent": self.cpu_percent,
            "memory_bytes": self.memory_bytes,
            "started_at": self.started_at,
            "heartbeat_at": self.heartbeat_at or utc_now_iso(),
            "image": self.image,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def for_log(self) -> dict[str, Any]:
        """The registration without the password, for logging."""
        d = self.to_dict()
        d["password"] = "***"  # noqa: S105 - redaction marker
        return d


def parse_registration(sid: str, raw: str | bytes, port_min: int, port_max: int) -> Registration:
    """Validate the registration of session ``sid``; raises :class:`RegistrationRejected`."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise RegistrationRejected("registration is not JSON") from exc
    if not isinstance(data, dict):
        raise RegistrationRejected("registration is not an object")
    if data.get("session_id") != sid:
        raise RegistrationRejected("registration names another session")
    if "error" in data:
        raise NodeReportedFailure(failure_text(data))
    port = data.get("port")
    if not isinstance(port, int) or isinstance(port, bool):
        raise RegistrationRejected("registration port is not an integer")
    if not port_min <= port <= port_max:
        raise RegistrationRejected(f"registered port {port} outside {port_min}-{port_max}")
    password = data.get("password")
    if not isinstance(password, str) or not password:
        raise RegistrationRejected("registration has no VNC password")
    display = data.get("display")
    return Registration(
        session_id=sid,
        port=port,
        display=display if isinstance(display, int) else None,
        password=password,
        vnc=str(data.get("vnc", "")),
        raw=data,
    )
