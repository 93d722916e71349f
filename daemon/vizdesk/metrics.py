"""Prometheus metrics of the daemon, in a registry of their own (one per app).

No label carries a user name or a session id: a desktop's usage gauges are labelled
with :func:`session_label` (a short one-way hash of its id) and its node, and their
label sets are removed as soon as a GPU leaves the registration or the session ends.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Collection, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

START_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300, 600)


def session_label(sid: str) -> str:
    """The ``session`` label of a desktop's gauges: 12 hex digits of SHA-256 of its id
    (``printf %s ID | sha256sum | cut -c1-12``); the id itself is never on /metrics."""
    return hashlib.sha256(sid.encode()).hexdigest()[:12]


class Metrics:
    """Role: the Prometheus metrics of the daemon, in their own registry (names are part
    of the interface: dashboards and alerts use them)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions_active = Gauge(
            "vnc_sessions_active", "Sessions not yet ended, by state", ["state"], registry=r
        )
        self.sessions_created = Counter(
            "vnc_sessions_created", "Sessions submitted to Slurm", registry=r
        )
        self.sessions_reclaimed = Counter(
            "vizdesk_sessions_reclaimed",
            "Desktops vizdesk ended because nobody used them, by reason",
            ["reason"],
            registry=r,
        )
        self.share_connections = Gauge(
            "vizdesk_share_connections",
            "Open proxy connections through share links",
            ["scope"],
            registry=r,
        )
        self.thumbnail_seconds = Histogram(
            "vizdesk_thumbnail_seconds",
            "Time to grab, scale and encode one desktop thumbnail",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.session_start = Histogram(
            "vnc_session_start_seconds",
            "Time from submission to READY",
            buckets=START_BUCKETS,
            registry=r,
        )
        self.sessions_failed = Counter(
            "vnc_sessions_failed",
            "Sessions that ended in FAILED, by reason",
            ["reason"],
            registry=r,
        )
        self.proxy_bytes = Counter(
            "vizdesk_proxy_bytes", "Bytes through the websocket proxy", ["direction"], registry=r
        )
        self.proxy_open = Gauge(
            "vizdesk_proxy_connections_open", "Open proxied VNC connections", registry=r
        )
        self.slurm_call = Histogram(
            "vizdesk_slurm_call_seconds", "Latency of Slurm calls", ["op"], registry=r
        )
        self.slurm_errors = Counter(
            "vizdesk_slurm_errors", "Failed Slurm calls", ["op"], registry=r
        )
        self.redis_errors = Counter("vizdesk_redis_errors", "Redis errors", registry=r)
        self.event_streams_open = Gauge(
            "vizdesk_event_streams_open", "Open events streams (SSE) on this replica", registry=r
        )
        self.tracker_leader = Gauge(
            "vizdesk_tracker_leader",
            "1 while this replica holds the tracker lease (runs the Slurm queries), else 0",
            ["replica"],
            registry=r,
        )
        self.tracker_leader_changes = Counter(
            "vizdesk_tracker_leader_changes",
            "Times this replica took (acquired) or lost the tracker lease",
            ["change"],
            registry=r,
        )
        self.tracker_fenced_out = Counter(
            "vizdesk_tracker_fenced_out",
            "Ticks whose writes were refused because the lease had moved on",
            registry=r,
        )
        self.jobs = Gauge("vizdesk_jobs", "Batch jobs by state", ["state"], registry=r)
        self.http = Histogram(
            "vizdesk_http_request_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        labels = ["session", "node"]  # session: session_label(id); never the user
        self.session_cpu = Gauge(
            "vizdesk_session_cpu_percent", "CPU use of a session's processes", labels, registry=r
        )
        self.session_mem = Gauge(
            "vizdesk_session_memory_bytes", "Memory of a session's processes", labels, registry=r
        )
        self.session_gpu_util = Gauge(
            "vizdesk_session_gpu_utilization_percent",
            "GPU utilisation seen by a session",
            [*labels, "gpu"],
            registry=r,
        )
        self.session_gpu_mem = Gauge(
            "vizdesk_session_gpu_memory_bytes",
            "GPU memory used on a session's GPU",
            [*labels, "gpu"],
            registry=r,
        )

        # session id -> (its labels, the gpu labels set): what to remove when it goes
        self._usage: dict[str, tuple[tuple[str, str], frozenset[str]]] = {}

    def set_session_usage(
        self,
        sid: str,
        node: str,
        cpu_percent: float,
        memory_bytes: int,
        gpus: Mapping[str, tuple[float, int]],
    ) -> None:
        """A desktop's usage from its registration; ``gpus``: gpu label -> (utilisation,
        memory used). Label sets that are no longer reported are removed."""
        labels = (session_label(sid), node)
        old = self._usage.get(sid)
        if old is not None:
            if old[0] != labels:
                self.forget_session(sid)
            else:
                self._remove_gpus(labels, old[1] - set(gpus))
        self.session_cpu.labels(*labels).set(cpu_percent)
        self.session_mem.labels(*labels).set(memory_bytes)
        for gpu, (util, mem) in gpus.items():
            self.session_gpu_util.labels(*labels, gpu).set(util)
            self.session_gpu_mem.labels(*labels, gpu).set(mem)
        self._usage[sid] = (labels, frozenset(gpus))

    def forget_session(self, sid: str) -> None:
        """Remove every usage series of a desktop (it ended)."""
        entry = self._usage.pop(sid, None)
        if entry is None:
            return
        labels, gpus = entry
        for g in (self.session_cpu, self.session_mem):
            with contextlib.suppress(KeyError):
                g.remove(*labels)
        self._remove_gpus(labels, gpus)

    def keep_sessions(self, sids: Collection[str]) -> None:
        """Remove the usage series of every desktop not in ``sids`` (the live ones)."""
        for sid in [s for s in self._usage if s not in sids]:
            self.forget_session(sid)

    def _remove_gpus(self, labels: tuple[str, str], gpus: Collection[str]) -> None:
        for gpu in gpus:
            for g in (self.session_gpu_util, self.session_gpu_mem):
                with contextlib.suppress(KeyError):
                    g.remove(*labels, gpu)

    def session_failed(self, reason: str) -> None:
        self.sessions_failed.labels(reason=reason).inc()

    def on_slurm_call(self, op: str, seconds: float, ok: bool) -> None:
        self.slurm_call.labels(op=op).observe(seconds)
        if not ok:
            self.slurm_errors.labels(op=op).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
