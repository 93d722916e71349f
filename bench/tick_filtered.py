"""One tracker tick, old query vs new, with many jobs known to slurmctld (issue 16, item 2).

Run (test bed up, inside the bed lock, as root)::

    flock -o /tmp/vizdesk-bed.lock .venv/bin/python bench/tick_filtered.py [--known 9800] [--json F]

It fills the test bed's slurmctld with held jobs (``sbatch --hold --wrap true``: 1,000 of
alice = the tracked ones, then bob's up to ``--known`` = the rest of the cluster; all
cancelled by id at the end, also on Ctrl-C), then measures one tick's query interleaved
(old, new, by owner, old, ...):

* old = ``slurm.squeue_query: json``: ``squeue --json --all --states=all`` of every job
  + vizdesk's JSON parser + the filter in Python (what the tracker did before);
* new = ``slurm.squeue_query: text``: ``squeue --jobs=<tracked ids> --Format=...``
  with separators + :func:`vizdesk.slurm.squeue_text.parse_squeue_text`
  (``info_many``: with more than one id squeue still loads every job);
* by owner = ``info_owned`` (what the tracker calls, it knows each job's user): one
  ``squeue --user=<owner> --Format`` (slurmctld packs only that user's jobs).

Cases: alice's 1,000 jobs, bob's 10 (each has only those in Slurm; the other ~8,800 are
root's, a user vizdesk does not track), and 10 of alice's 1,000: the by-owner query costs
what the tracked users have in Slurm. (Not root as a tracked owner: squeue 22.05 takes
``--user=root``, uid 0, for "no user filter".)

for 1,000 and 10 tracked jobs. Client CPU = this process + its children (rusage);
slurmctld CPU = utime+stime of the pid in the test bed's pid file (/proc/<pid>/stat,
10 ms clock ticks, hence several ticks per sample). Wall time is shown too.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import concurrent.futures
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import fmt, machine, median, ratio, table, write_json

from vizdesk.config import SlurmConfig
from vizdesk.slurm.cli import SlurmCliBackend

TESTBED_DIR = Path(os.environ.get("VIZDESK_TESTBED_DIR", "/var/lib/vizdesk-testbed"))
_held: list[str] = []


def testbed_env() -> dict[str, str]:
    env = {}
    for line in (TESTBED_DIR / "env").read_text().splitlines():
        k, _, v = line.partition("=")
        env[k] = v
    return env


def cancel_held() -> None:
    global _held
    ids, _held = _held, []
    for i in range(0, len(ids), 500):
        subprocess.run(["scancel", *ids[i : i + 500]], capture_output=True, check=False)


def submit_one(user: str) -> str:
    prefix = [] if user == "root" else ["runuser", "-u", user, "--"]
    out = subprocess.run(
        [*prefix, "sbatch", "--parsable", "--hold",
         "--job-name=vzbench-filtered", "--time=1", "--chdir=/tmp", "--output=/dev/null",
         "--wrap", "true"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip (slurmctld may be busy purging an earlier run's jobs)
    if out.returncode != 0:
        raise RuntimeError(f"sbatch failed: {out.stderr.strip()}")
    return out.stdout.strip().split(";")[0]


def known_jobs() -> int:
    out = subprocess.run(
        ["squeue", "-h", "--all", "--states=all", "-o", "%A"], capture_output=True, check=True
    )
    return len(out.stdout.split())


def fill(target: int, tracked: int) -> tuple[list[str], list[str]]:
    """``tracked`` held jobs of alice and 10 of bob (what vizdesk tracks), then root's up
    to ``target`` (the rest of the cluster's jobs, of users vizdesk does not track).
    Returns alice's ids and bob's."""
    need = max(target - known_jobs() - tracked - 10, 0)
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        mine = list(pool.map(submit_one, ["alice"] * tracked))
        _held.extend(mine)
        few = list(pool.map(submit_one, ["bob"] * 10))
        _held.extend(few)
        _held.extend(pool.map(submit_one, ["root"] * need))
    print(f"submitted {tracked + 10 + need} held jobs in {time.monotonic() - t0:.1f} s")
    return mine, few


def ctld_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + r.ru_utime + r.ru_stime


def measure(
    backend: SlurmCliBackend, ids: list[str], ticks: int, pid: int, owner: str = ""
) -> dict[str, float]:
    async def run() -> int:
        n = 0
        for _ in range(ticks):
            if owner:  # what the tracker calls: it knows each job's user
                got = await backend.info_owned(dict.fromkeys(ids, owner))
            else:
                got = await backend.info_many(ids)
            n = len(got)
        return n

    c0, k0, t0 = client_cpu(), ctld_cpu(pid), time.perf_counter()
    seen = asyncio.run(run())
    wall = time.perf_counter() - t0
    if seen != len(ids):
        raise RuntimeError(f"{backend.cfg.squeue_query}: saw {seen} of {len(ids)} tracked jobs")
    return {
        "wall_ms": wall * 1000 / ticks,
        "client_cpu_ms": (client_cpu() - c0) * 1000 / ticks,
        "slurmctld_cpu_ms": (ctld_cpu(pid) - k0) * 1000 / ticks,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--known", type=int, default=9800, help="jobs slurmctld should know")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    env = testbed_env()
    os.environ["SLURM_CONF"] = env["SLURM_CONF"]
    pid = int(Path(env["SLURMCTLD_PIDFILE"]).read_text().split()[0])
    atexit.register(cancel_held)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    info = machine()
    mine, few = fill(args.known, 1000)
    known = known_jobs()
    print(f"slurmctld knows {known} jobs; load {os.getloadavg()}", flush=True)
    base = {"conf_path": env["SLURM_CONF"], "command_timeout_seconds": 120.0}
    old = SlurmCliBackend(SlurmConfig(squeue_query="json", **base))
    new = SlurmCliBackend(SlurmConfig(squeue_query="text", **base))
    rows: list[list[Any]] = []
    raw: dict[str, Any] = {"machine": info, "known": known, "cases": {}}
    cases = [(1000, mine, "alice"), (10, few, "bob"), (10, mine, "alice")]
    for tracked, pool_ids, owner in cases:
        ids = pool_ids[:tracked]
        samples: dict[str, list[dict[str, float]]] = {"old": [], "new": [], "owner": []}
        for _ in range(args.rounds):
            samples["old"].append(measure(old, ids, 2, pid))
            samples["new"].append(measure(new, ids, 10, pid))
            samples["owner"].append(measure(new, ids, 10, pid, owner=owner))
        med = {k: {m: median([s[m] for s in v]) for m in v[0]} for k, v in samples.items()}
        raw["cases"][f"{tracked}-{owner}"] = {"samples": samples, "median": med}
        for k, label in (
            ("old", "old: squeue --json, all jobs"),
            ("new", "new: --jobs=<ids> --Format"),
            ("owner", f"new, tracker: --user={owner} --Format"),
        ):
            m = med[k]
            rows.append([
                known, f"{tracked} of {owner}", label, fmt(m["wall_ms"]), fmt(m["client_cpu_ms"]),
                fmt(m["slurmctld_cpu_ms"]),
                fmt(ratio(m["client_cpu_ms"], med["old"]["client_cpu_ms"])),
                fmt(ratio(m["slurmctld_cpu_ms"], med["old"]["slurmctld_cpu_ms"])),
            ])  # fmt: skip
        print(f"tracked={tracked} done", flush=True)
    print(
        table(
            [
                "jobs slurmctld knows",
                "tracked",
                "query",
                "wall ms",
                "client CPU ms",
                "slurmctld CPU ms",
                "client CPU new/old",
                "slurmctld CPU new/old",
            ],
            rows,
        )
    )
    print(f"load at end {os.getloadavg()}")
    write_json(args.json, raw)


if __name__ == "__main__":
    main()
