"""CPU and memory use of a session, summed over its processes (psutil).

``cpu_percent`` needs two samples of the same process; the sampler keeps the
``psutil.Process`` objects between heartbeats, so the first heartbeat reports 0 for
processes it sees for the first time. Blocking: call ``sample`` from a thread.
"""

from __future__ import annotations

import os

import psutil

from vizdesk.node.procs import session_processes


class UsageSampler:
    """Sums CPU percent (100 = one core) and resident memory over the session."""

    def __init__(self, session_id: str, root: int | None = None) -> None:
        self.session_id = session_id
        self.root = root or os.getpid()
        self._known: dict[int, psutil.Process] = {}

    def sample(self) -> tuple[float, int]:
        procs: dict[int, psutil.Process] = {}
        try:
            procs[self.root] = psutil.Process(self.root)
        except psutil.Error:
            pass
        for proc in session_processes(self.session_id, self.root):
            procs[proc.pid] = proc
        cpu = 0.0
        mem = 0
        current: dict[int, psutil.Process] = {}
        for pid, fresh in procs.items():
            known = self._known.get(pid)
            proc = known if known is not None and _same(known, fresh) else fresh
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent(interval=None)
                    mem += proc.memory_info().rss
            except psutil.Error:
                continue
            current[pid] = proc
        self._known = current
        return round(cpu, 1), mem


def _same(a: psutil.Process, b: psutil.Process) -> bool:
    try:
        return a.create_time() == b.create_time()
    except psutil.Error:
        return False
