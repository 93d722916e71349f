"""Helpers shared by the benchmarks: percentiles, process-tree CPU/memory, tables, machine facts.

Not a test module and not part of the package: the scripts in bench/ import it from their
own directory (``python bench/<name>.py`` puts bench/ first on ``sys.path``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def pct(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) by linear interpolation; nan when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def machine() -> dict[str, Any]:
    """What the numbers were measured on (2 shared cores here: record the load)."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


# -- process trees ---------------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [root]


@dataclass
class CpuSnapshot:
    per_pid: dict[int, float]
    reaped: float  # CPU of children the root has already waited for


def cpu_snapshot(pid: int) -> CpuSnapshot:
    """User+system CPU seconds of ``pid`` and its live descendants, and of reaped children."""
    per_pid: dict[int, float] = {}
    reaped = 0.0
    for p in tree(pid):
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        per_pid[p.pid] = t.user + t.system
        if p.pid == pid:
            reaped = t.children_user + t.children_system
    return CpuSnapshot(per_pid, reaped)


def cpu_used(before: CpuSnapshot, after: CpuSnapshot) -> float:
    """CPU seconds the tree used between two snapshots.

    A child that existed at ``before`` and was reaped by ``after`` moves its time into the
    root's ``children_*``; its ``before`` share is subtracted so nothing counts twice.
    """
    live = sum(v - before.per_pid.get(pid, 0.0) for pid, v in after.per_pid.items())
    gone = sum(v for pid, v in before.per_pid.items() if pid not in after.per_pid)
    return live + (after.reaped - before.reaped) - gone


@dataclass
class MemSnapshot:
    rss: int  # sum over the tree (counts pages shared between forked children again)
    uss: int  # memory unique to each process, summed: what the tree really added
    processes: int


def mem_snapshot(pid: int) -> MemSnapshot:
    rss = uss = n = 0
    for p in tree(pid):
        try:
            full = p.memory_full_info()
            rss += full.rss
            uss += full.uss
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:  # pragma: no cover - we run as the owner or root
            rss += p.memory_info().rss
        n += 1
    return MemSnapshot(rss, uss, n)


# -- output ----------------------------------------------------------------------------


def fmt(v: Any, digits: int = 2) -> str:
    if isinstance(v, float):
        if v != v:  # nan
            return "n/a"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (readable in a terminal too)."""
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    return "\n".join([line, sep, *body])


def write_json(path: str | None, data: dict[str, Any]) -> None:
    if not path:
        return
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"results written to {path}", file=sys.stderr)
