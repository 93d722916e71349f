"""One batched Slurm query per tick (vizdesk's tracker) versus one query per session (peers).

Run: ``python bench/tracker_scaling.py [--quick] [--json out.json]`` (test bed up).

Open OnDemand and JupyterHub's batchspawner ask Slurm about each session separately
(``squeue -j <id>`` per session, per poll). vizdesk's tracker asks once per tick for all
sessions: ``squeue --json --all --states=all`` and a filter in Python (the CLI backend,
:class:`vizdesk.slurm.cli.SlurmCliBackend`). This script holds N real, tiny jobs in the
test bed's Slurm (``sbatch --hold --wrap true`` as ``alice`` through ``runuser``; they
never run and are cancelled at the end), then measures, interleaved, what one tracker
tick costs against what one round of per-session polling costs for N = 10 and 50:

* ``batched``: one ``squeue --json --all --states=all`` plus vizdesk's parser
  (:func:`vizdesk.slurm.squeue_json.parse_squeue_json`);
* ``per-session JSON``: N x ``squeue --json -j <id>`` (on Slurm 22.05 ``--json`` ignores
  ``-j`` and every call returns all jobs; newer Slurm filters);
* ``per-session text``: N x ``squeue --all --states=all --noconvert -h -j <id> -o ...``,
  the form Open OnDemand's Slurm adapter uses;
* ``batched text`` (not what vizdesk does today; shown for the tracker's owner): one
  ``squeue --all --states=all -h -o ...`` for all jobs, the same fields in text form.

The batched query returns every job slurmctld remembers (running, pending, and finished
ones for ``MinJobAge``), so its cost follows the cluster's job count, not N; the table
shows how many jobs each answer held.

Figures: wall time, CPU of the client processes (rusage of the children) and CPU of
``slurmctld`` itself (psutil), per round; the ratio per-session / batched.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from _common import fmt, machine, median, ratio, table, write_json

TESTBED_DIR = Path(os.environ.get("VIZDESK_TESTBED_DIR", "/var/lib/vizdesk-testbed"))
USER = "alice"
JOB_NAME = "vzbench-hold"
OOD_FORMAT = "%i\x1f%T\x1f%r\x1f%N\x1f%u\x1f%j\x1f%M\x1f%l"

_held: list[str] = []


def cancel_held() -> None:
    """Cancel every job this run submitted (by id; nobody else's)."""
    global _held
    if not _held:
        return
    ids, _held = _held, []
    deadline = time.monotonic() + 60  # slurmctld may be restarting (outage tests share it)
    for i in range(0, len(ids), 100):
        while True:
            out = subprocess.run(
                ["scancel", *ids[i : i + 100]], capture_output=True, text=True, check=False
            )
            if "unable to contact" not in out.stderr.lower() or time.monotonic() > deadline:
                break
            time.sleep(2)
        if out.returncode != 0 and "invalid job id" not in out.stderr.lower():
            print(f"scancel {' '.join(ids)} failed: {out.stderr.strip()}", file=sys.stderr)


def submit_held(n: int) -> list[str]:
    ids = []
    for _ in range(n):
        out = subprocess.run(
            [
                "runuser",
                "-u",
                USER,
                "--",
                "sbatch",
                "--parsable",
                "--hold",
                f"--job-name={JOB_NAME}",
                "--time=1",
                "--chdir=/tmp",
                "--output=/dev/null",
                "--wrap",
                "true",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if out.returncode != 0:
            raise RuntimeError(f"sbatch failed: {out.stderr.strip()}")
        jid = out.stdout.strip().split(";")[0]
        ids.append(jid)
        _held.append(jid)
    return ids


def slurmctld() -> psutil.Process:
    """The test bed's slurmctld (not its slurmscriptd child, not another test's private one)."""
    found = []
    for p in psutil.process_iter(["name", "cmdline", "ppid"]):
        if p.info["name"] != "slurmctld":
            continue
        try:
            parent = psutil.Process(p.info["ppid"]).name()
        except psutil.Error:
            parent = ""
        if parent != "slurmctld":
            found.append(p)
    ours = [p for p in found if str(TESTBED_DIR) in " ".join(p.info["cmdline"] or [])]
    if len(ours) == 1:
        return ours[0]
    if len(found) == 1:
        return found[0]
    raise RuntimeError(f"cannot tell the test bed's slurmctld among {[p.pid for p in found]}")


def ctld_cpu(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
    except psutil.NoSuchProcess:
        raise SystemExit(
            "slurmctld restarted during the run (an outage test on the shared test bed?): "
            "run again when it is stable"
        ) from None
    return t.user + t.system


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_cmd(argv: list[str]) -> bytes:
    out = subprocess.run(argv, capture_output=True, check=False, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed: {out.stderr.decode(errors='replace')[-300:]}")
    return out.stdout


def measure(ctld: psutil.Process, fn: Any) -> dict[str, float]:
    c0, k0, p0, t0 = children_cpu(), ctld_cpu(ctld), time.process_time(), time.perf_counter()
    extra = fn()
    wall = time.perf_counter() - t0
    return {
        "wall_ms": wall * 1000,
        "client_cpu_ms": (children_cpu() - c0 + time.process_time() - p0) * 1000,
        "slurmctld_cpu_ms": (ctld_cpu(ctld) - k0) * 1000,
        **extra,
    }


def batched(ids: list[str]) -> dict[str, float]:
    from vizdesk.slurm.squeue_json import parse_squeue_json

    raw = run_cmd(["squeue", "--json", "--all", "--states=all"])
    statuses = parse_squeue_json(raw)
    wanted = {j: statuses[j] for j in ids if j in statuses}
    if len(wanted) != len(ids):
        raise RuntimeError(f"batched query saw {len(wanted)} of {len(ids)} held jobs")
    return {"jobs_in_answer": len(statuses), "bytes": len(raw)}


def per_session_json(ids: list[str]) -> dict[str, float]:
    import json

    total = 0
    jobs = 0
    for j in ids:
        raw = run_cmd(["squeue", "--json", "-j", j])
        total += len(raw)
        jobs += len(json.loads(raw).get("jobs", []))  # what each poller has to parse
    return {"jobs_in_answer": jobs / len(ids), "bytes": total}


def per_session_text(ids: list[str]) -> dict[str, float]:
    total = 0
    for j in ids:
        raw = run_cmd(
            ["squeue", "--all", "--states=all", "--noconvert", "-h", "-j", j, "-o", OOD_FORMAT]
        )
        total += len(raw)
    return {"jobs_in_answer": 1.0, "bytes": total}


def batched_text(ids: list[str]) -> dict[str, float]:
    raw = run_cmd(["squeue", "--all", "--states=all", "--noconvert", "-h", "-o", OOD_FORMAT])
    seen = {line.split("\x1f", 1)[0] for line in raw.decode(errors="replace").splitlines()}
    if not set(ids) <= seen:
        raise RuntimeError("batched text query missed held jobs")
    return {"jobs_in_answer": len(seen), "bytes": len(raw)}


MODES = {
    "batched (vizdesk)": batched,
    "batched text squeue -o (alternative)": batched_text,
    "per-session squeue --json -j": per_session_json,
    "per-session squeue -j -o (OOD)": per_session_text,
}


def bench_n(
    ctld: psutil.Process, ids: list[str], reps: int, calls: int
) -> dict[str, dict[str, float]]:
    """Medians over ``reps`` interleaved repetitions of the cost of ONE poll of all ``ids``.

    slurmctld's CPU clock ticks every 10 ms, so each repetition runs about ``calls``
    squeue invocations (that many batched polls, or enough per-session rounds) and
    divides by the number of polls.
    """
    samples: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for _ in range(reps):
        for name, fn in MODES.items():
            per_poll = 1 if name.startswith("batched") else len(ids)
            polls = max(1, calls // per_poll)
            runs = [measure(ctld, lambda fn=fn: fn(ids)) for _ in range(polls)]
            samples[name].append({k: sum(r[k] for r in runs) / polls for k in runs[0]})
    return {name: {k: median([s[k] for s in v]) for k in v[0]} for name, v in samples.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 10 only, fewer repetitions")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args()
    if not (TESTBED_DIR / "env").is_file() or shutil.which("squeue") is None:
        print("test bed not up: testbed/testbed.sh up", file=sys.stderr)
        return 2
    sizes = [10] if args.quick else [10, 50]
    reps = 2 if args.quick else 3
    calls = 40 if args.quick else 100
    meta = machine()
    meta["slurm"] = run_cmd(["squeue", "--version"]).decode().strip()
    ctld = slurmctld()
    atexit.register(cancel_held)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(130))
    started = time.monotonic()
    results: dict[str, Any] = {}
    try:
        ids = submit_held(max(sizes))
        meta["held_jobs"] = f"{ids[0]}..{ids[-1]}"
        for n in sizes:
            results[str(n)] = bench_n(ctld, ids[:n], reps, calls)
    finally:
        cancel_held()
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    meta["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    print(
        f"tracker_scaling — {meta['date']}, {meta['cores']} cores ({meta['cpu']}), "
        f"{meta['slurm']}, load avg at start {meta['loadavg_1m']}; {max(sizes)} real held jobs "
        f"of {USER} ({meta['held_jobs']}, cancelled afterwards); cost of one poll, median of "
        f"{reps} interleaved repetitions of ~{calls} squeue calls each\n"
    )
    rows = []
    for size, res in results.items():
        base = res["batched (vizdesk)"]
        for name, v in res.items():
            rows.append(
                [
                    size,
                    name,
                    v["wall_ms"],
                    v["client_cpu_ms"],
                    v["slurmctld_cpu_ms"],
                    v["jobs_in_answer"],
                    v["bytes"] / 1024,
                    ratio(v["wall_ms"], base["wall_ms"]),
                    ratio(v["client_cpu_ms"], base["client_cpu_ms"]),
                    ratio(v["slurmctld_cpu_ms"], base["slurmctld_cpu_ms"]),
                ]
            )
    print(
        table(
            [
                "N",
                "one poll of N sessions",
                "wall ms",
                "client CPU ms",
                "slurmctld CPU ms",
                "jobs per answer",
                "KiB read",
                "wall / batched",
                "client CPU / batched",
                "slurmctld CPU / batched",
            ],
            rows,
        )
    )
    print(f"\n(run took {fmt(meta['elapsed_s'])} s; load avg at end {meta['loadavg_1m_end']})")
    write_json(args.json, {"meta": meta, "results": results})
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
