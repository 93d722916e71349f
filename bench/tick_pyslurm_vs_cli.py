"""One tracker tick through pyslurm vs through the Slurm CLI, on the same Slurm 25.11.

Run (root, the 25.11 instance up: ``testbed/slurm2511.sh up``), from the tier's venv:

    /var/lib/vizdesk-slurm2511/venv/bin/python bench/tick_pyslurm_vs_cli.py \
        [--known 100,1000,10000] [--tracked 1000] [--json out.json]

The tracker's tick is ONE ``backend.info_many(<tracked ids>)`` call. This script holds
jobs in the 25.11 cluster (submitted through pyslurm as ``alice`` with priority 0, i.e.
held; they never run and are cancelled at the end) until slurmctld knows K of them, then
measures, interleaved, the cost of one tick of each backend for ``min(K, tracked)``
tracked ids:

* ``cli``: :class:`vizdesk.slurm.cli.SlurmCliBackend` — ``squeue --json --all
  --states=all`` from the prefix + vizdesk's JSON parser, filtered in Python;
* ``pyslurm``: :class:`vizdesk.slurm.pyslurm_backend.PyslurmBackend` —
  ``pyslurm.Jobs.load()`` (one RPC, every job) + the mapping of the tracked ones.

Figures per tick: wall ms, client CPU ms (this process's user+system time, all threads,
plus its children's: squeue, and the pyslurm backend's child processes, where its calls
run; the child is started before the first round), slurmctld CPU ms (utime+stime of its
pid in /proc, read from its pid file), median of the rounds; and the ratio pyslurm / CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import resource
import sys
import time
from pathlib import Path
from typing import Any

from _common import fmt, machine, median, ratio, table, write_json

DIR = Path(os.environ.get("VIZDESK_SLURM2511_DIR", "/var/lib/vizdesk-slurm2511"))
CONF = DIR / "etc" / "slurm.conf"
PREFIX = DIR / "prefix"
os.environ["SLURM_CONF"] = str(CONF)
os.environ.setdefault("PYSLURM_DISABLE_AUTO_INIT", "1")

from vizdesk.config import SlurmConfig  # noqa: E402
from vizdesk.slurm.cli import SlurmCliBackend  # noqa: E402
from vizdesk.slurm.pyslurm_backend import PyslurmBackend, import_pyslurm  # noqa: E402

USER = "alice"
JOB_NAME = "vzbench-tick"
TICKS = os.sysconf("SC_CLK_TCK")


def ctld_cpu_ms() -> float:
    pid = int((DIR / "run" / "slurmctld.pid").read_text().strip())
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / TICKS


def live_children_cpu_s() -> float:
    """CPU seconds of this process's running children (the pyslurm backend's long-lived
    child processes, which RUSAGE_CHILDREN counts only once they have exited)."""
    total = 0.0
    pids: list[str] = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids += (task / "children").read_text().split()
        except OSError:
            continue  # a worker thread that has just ended
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def client_cpu_ms() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime + live_children_cpu_s()) * 1000.0


def submit_held(mod: Any, n: int) -> list[str]:
    pw = pwd.getpwnam(USER)
    ids = []
    env = {"PATH": "/usr/bin:/bin", "HOME": pw.pw_dir, "USER": USER}
    for _ in range(n):
        desc = mod.JobSubmitDescription(
            name=JOB_NAME,
            script="#!/bin/sh\ntrue\n",
            partitions="p2511",
            time_limit=1,
            memory_per_node=10,
            working_directory="/tmp",
            standard_output="/dev/null",
            environment=env,
            user_id=pw.pw_uid,
            group_id=pw.pw_gid,
            priority=0,  # held
        )
        ids.append(str(desc.submit()))
    return ids


def cancel(ids: list[str]) -> None:
    import subprocess

    for i in range(0, len(ids), 500):
        subprocess.run([str(PREFIX / "bin" / "scancel"), *ids[i : i + 500]], check=False,
                       capture_output=True)


async def measure(backend: Any, tracked: list[str], reps: int) -> dict[str, float]:
    wall, cpu, ctld = [], [], []
    for _ in range(reps):
        c0, k0, t0 = client_cpu_ms(), ctld_cpu_ms(), time.perf_counter()
        got = await backend.info_many(tracked)
        t1, c1, k1 = time.perf_counter(), client_cpu_ms(), ctld_cpu_ms()
        assert len(got) == len(tracked), (len(got), len(tracked))
        wall.append((t1 - t0) * 1000)
        cpu.append(c1 - c0)
        ctld.append(k1 - k0)
    return {"wall_ms": median(wall), "client_cpu_ms": sum(cpu) / reps,
            "slurmctld_cpu_ms": sum(ctld) / reps}


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--known", default="100,1000,10000")
    ap.add_argument("--tracked", type=int, default=1000)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    cfg = SlurmConfig(conf_path=str(CONF), squeue=str(PREFIX / "bin" / "squeue"),
                      command_timeout_seconds=120)
    cli, py = SlurmCliBackend(cfg), PyslurmBackend(cfg)
    await py.ping()  # starts the backend's child process outside the measured rounds
    mod = import_pyslurm(str(CONF))
    base = len(mod.Jobs.load())
    held: list[str] = []
    rows: list[dict[str, Any]] = []
    try:
        for known in (int(k) for k in args.known.split(",")):
            t0 = time.monotonic()
            want = max(0, known - base - len(held))
            held += submit_held(mod, want)
            sub_s = time.monotonic() - t0
            total = len(mod.Jobs.load())
            tracked = held[: min(len(held), args.tracked)]
            reps = 30 if total <= 200 else 10 if total <= 2000 else 3
            res: dict[str, list[dict[str, float]]] = {"cli": [], "pyslurm": []}
            await measure(cli, tracked, 1)  # warm-up
            await measure(py, tracked, 1)
            for _ in range(3):  # interleaved rounds
                res["cli"].append(await measure(cli, tracked, reps))
                res["pyslurm"].append(await measure(py, tracked, reps))
            row: dict[str, Any] = {"known": total, "tracked": len(tracked),
                                   "submitted": want, "submit_s": round(sub_s, 1)}
            for name, rounds in res.items():
                for key in ("wall_ms", "client_cpu_ms", "slurmctld_cpu_ms"):
                    row[f"{name}_{key}"] = median([r[key] for r in rounds])
            rows.append(row)
            print(f"known={total} tracked={len(tracked)} submitted {want} in {sub_s:.1f}s: "
                  + " ".join(f"{k}={fmt(v)}" for k, v in row.items() if k.endswith("_ms")),
                  flush=True)
    finally:
        cancel(held)
        await py.close()
    headers = ["jobs slurmctld knows", "tracked", "backend", "wall ms", "client CPU ms",
               "slurmctld CPU ms", "client CPU pyslurm/CLI", "slurmctld CPU pyslurm/CLI"]
    out = []
    for r in rows:
        for name in ("cli", "pyslurm"):
            out.append([
                fmt(r["known"]), fmt(r["tracked"]), name,
                fmt(r[f"{name}_wall_ms"]), fmt(r[f"{name}_client_cpu_ms"]),
                fmt(r[f"{name}_slurmctld_cpu_ms"]),
                fmt(ratio(r["pyslurm_client_cpu_ms"], r["cli_client_cpu_ms"]))
                if name == "pyslurm" else "1.00",
                fmt(ratio(r["pyslurm_slurmctld_cpu_ms"], r["cli_slurmctld_cpu_ms"]))
                if name == "pyslurm" else "1.00",
            ])
    print(table(headers, out))
    if args.json:
        write_json(args.json, {"machine": machine(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
