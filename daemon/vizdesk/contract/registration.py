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

Both are written by the job (with the session's credentials), so the daemon trusts
neither: a value longer than :data:`MAX_VALUE_BYTES` is never fetched (the reader checks
its length first), and :func:`parse_registration` checks every field it takes against a
bound (at most :data:`MAX_GPUS` GPUs with distinct integer indices 0-:data:`MAX_GPU_INDEX`,
finite numbers in range, bounded strings, ``vnc`` one of :data:`VNC_FLAVORS`). Keys outside
:data:`FIELDS` are ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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


#: The largest registration or failure record the daemon reads (it checks the length
#: in Redis before fetching: a larger value is rejected unread).
MAX_VALUE_BYTES = 64 * 1024
#: Bounds of a registration's fields (what a real node writes is far inside them).
MAX_GPUS = 16
MAX_GPU_INDEX = 63
VNC_FLAVORS = ("tigervnc", "turbovnc")
MAX_IMAGE_CHARS = 4096
MAX_HOST_CHARS = 255
MAX_PASSWORD_CHARS = 128
MAX_TEXT_CHARS = 256  # a GPU's name and uuid
MAX_TIMESTAMP_CHARS = 64
MAX_PID = 1 << 22  # Linux's largest pid_max
MAX_DISPLAY = 65535
MAX_CPU_PERCENT = 100.0 * 4096  # 100 = one core
MAX_BYTES = 1 << 60  # memory sizes


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
        data = _load(raw)
    except RegistrationRejected:
        return None
    if isinstance(data, dict) and data.get("session_id") == sid and "error" in data:
        return failure_text(data)
    return None


@dataclass(frozen=True)
class GpuUsage:
    """One GPU of a registration as the daemon read it back (a :class:`GpuReport`)."""

    index: int
    name: str = ""
    uuid: str = ""
    memory_total: int = 0  # bytes
    memory_used: int = 0  # bytes
    utilization: float = -1  # percent, -1 when the driver does not report it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Registration:
    """One registration. Written by the node; read back (every field checked against its
    bound) by :func:`parse_registration`, whose ``gpus`` are :class:`GpuUsage`."""

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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _load(raw: str | bytes) -> dict[str, Any]:
    """The JSON object in ``raw`` (bounded size, nesting and numbers), or rejected."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_VALUE_BYTES:
        raise RegistrationRejected(f"value of {size} bytes exceeds {MAX_VALUE_BYTES}")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nesting
        raise RegistrationRejected("registration is not JSON") from exc
    if not isinstance(data, dict):
        raise RegistrationRejected("registration is not an object")
    return data


def _int(data: dict[str, Any], key: str, lo: int, hi: int, where: str = "") -> int | None:
    """An integer field within [lo, hi] (None when absent or null)."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RegistrationRejected(f"{where}{key} is not an integer {lo}-{hi}")
    return value


def _num(data: dict[str, Any], key: str, lo: float, hi: float, where: str = "") -> float | None:
    """A finite number within [lo, hi] (None when absent or null)."""
    value = data.get(key)
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not lo <= value <= hi:
        raise RegistrationRejected(f"{where}{key} is not a number {lo:g}-{hi:g}")
    return float(value)


def _str(data: dict[str, Any], key: str, max_chars: int, where: str = "") -> str | None:
    """A string field of at most ``max_chars`` (None when absent or null)."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise RegistrationRejected(f"{where}{key} is not a string of at most {max_chars}")
    return value


def _gpus(data: dict[str, Any]) -> list[GpuUsage]:
    value = data.get("gpus")
    if value is None:
        return []
    if not isinstance(value, list):
        raise RegistrationRejected("gpus is not a list")
    if len(value) > MAX_GPUS:
        raise RegistrationRejected(f"gpus has {len(value)} entries, at most {MAX_GPUS}")
    gpus: list[GpuUsage] = []
    seen: set[int] = set()
    for i, entry in enumerate(value):
        where = f"gpus[{i}]."
        if not isinstance(entry, dict):
            raise RegistrationRejected(f"gpus[{i}] is not an object")
        index = _int(entry, "index", 0, MAX_GPU_INDEX, where)
        if index is None:
            raise RegistrationRejected(f"{where}index is missing")
        if index in seen:
            raise RegistrationRejected(f"{where}index {index} is repeated")
        seen.add(index)
        util = _num(entry, "utilization", -1, 100, where)
        gpus.append(
            GpuUsage(
                index=index,
                name=_str(entry, "name", MAX_TEXT_CHARS, where) or "",
                uuid=_str(entry, "uuid", MAX_TEXT_CHARS, where) or "",
                memory_total=_int(entry, "memory_total", 0, MAX_BYTES, where) or 0,
                memory_used=_int(entry, "memory_used", 0, MAX_BYTES, where) or 0,
                utilization=-1 if util is None else util,
            )
        )
    return gpus


def parse_registration(sid: str, raw: str | bytes, port_min: int, port_max: int) -> Registration:
    """Validate the registration of session ``sid``; raises :class:`RegistrationRejected`
    (or :class:`NodeReportedFailure` for a failure record). Rejection messages name the
    field and its bound, never echo the value."""
    data = _load(raw)
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
    if len(password) > MAX_PASSWORD_CHARS:
        raise RegistrationRejected(f"password is longer than {MAX_PASSWORD_CHARS}")
    vnc = _str(data, "vnc", MAX_TEXT_CHARS) or ""
    if vnc and vnc not in VNC_FLAVORS:
        raise RegistrationRejected(f"vnc is not one of {', '.join(VNC_FLAVORS)}")
    return Registration(
        session_id=sid,
        port=port,
        display=_int(data, "display", 0, MAX_DISPLAY),
        password=password,
        pid=_int(data, "pid", 0, MAX_PID) or 0,
        vnc_pid=_int(data, "vnc_pid", 0, MAX_PID) or 0,
        host=_str(data, "host", MAX_HOST_CHARS) or "",
        vnc=vnc,
        started_at=_str(data, "started_at", MAX_TIMESTAMP_CHARS) or "",
        image=_str(data, "image", MAX_IMAGE_CHARS),
        gpus=_gpus(data),
        cpu_percent=_num(data, "cpu_percent", 0, MAX_CPU_PERCENT) or 0.0,
        memory_bytes=_int(data, "memory_bytes", 0, MAX_BYTES) or 0,
        heartbeat_at=_str(data, "heartbeat_at", MAX_TIMESTAMP_CHARS) or "",
    )
