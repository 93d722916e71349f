"""Prometheus metrics of the daemon, in a registry of their own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

START_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300, 600)


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
        self.jobs = Gauge("vizdesk_jobs", "Batch jobs by state", ["state"], registry=r)
        self.http = Histogram(
            "vizdesk_http_request_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        labels = ["session", "user", "node"]
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

    def session_failed(self, reason: str) -> None:
        self.sessions_failed.labels(reason=reason).inc()

    def on_slurm_call(self, op: str, seconds: float, ok: bool) -> None:
        self.slurm_call.labels(op=op).observe(seconds)
        if not ok:
            self.slurm_errors.labels(op=op).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
