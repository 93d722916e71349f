"""How long the HA failure modes take, run by run: the fault tests of tests/ha (real
HAProxy, Redis + Sentinel x3, three replicas, real Slurm and Xvnc) several times in a row,
each printing its figures (``HA-FIGURE {...}`` lines), reported as median and maximum.

    testbed/testbed.sh up && testbed/ha.sh up
    python bench/ha_failover.py [--runs 5] [--json FILE]

Compared to what the design promises (no peer runs this path): a new tracker leader
within one lease time (4 s here), a killed replica's websocket back through another one
within 3 s, new sessions within the Sentinel failover time + 5 s, no typing gap a user
would notice in a rolling restart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_run() -> list[dict[str, object]]:
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s",
         "tests/ha/test_failover.py"],
        cwd=REPO, env={**os.environ, "VIZDESK_HA_TIER": "1"}, capture_output=True, text=True,
    )  # fmt: skip
    if res.returncode != 0:
        sys.exit(f"the HA fault tests failed:\n{res.stdout[-4000:]}")
    # pytest's progress dots share the line: the figure is whatever follows the marker
    return [json.loads(line.split("HA-FIGURE ", 1)[1]) for line in res.stdout.splitlines()
            if "HA-FIGURE " in line]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    figures: dict[str, list[float]] = defaultdict(list)
    for n in range(args.runs):
        for fig in one_run():
            test = fig.pop("test")
            for k, v in fig.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    figures[f"{test}.{k}"].append(float(v))
        print(f"run {n + 1}/{args.runs} done", file=sys.stderr)
    print(f"{'figure':48} {'median':>8} {'max':>8}  (n={args.runs})")
    for name, values in sorted(figures.items()):
        print(f"{name:48} {statistics.median(values):8.3f} {max(values):8.3f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
