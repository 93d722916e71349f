"""Run inside the sid root as root: vizdesk's Slurm-CLI backend against Slurm 26.05.

Submits two jobs as alice (one sleeps in compute.sif, one exits 3), queries both with one
batched call, cancels the first (bob may not, alice may) and prints one JSON document.

usage: slurm_probe.py PARTITION
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from vizdesk.config import SlurmConfig
from vizdesk.slurm import make_backend
from vizdesk.slurm.base import JobStatus, SlurmBackend, SlurmError, SubmitRequest


def view(st: JobStatus | None) -> dict[str, Any] | None:
    if st is None:
        return None
    return {
        "state": st.state.value,
        "user": st.user,
        "batch_host": st.batch_host,
        "exit_code": st.exit_code,
        "reason": st.reason,
    }


async def wait(
    backend: SlurmBackend, ids: list[str], done: Any, timeout: float = 60
) -> dict[str, JobStatus]:
    deadline = time.monotonic() + timeout
    got: dict[str, JobStatus] = {}
    while time.monotonic() < deadline:
        got = await backend.info_many(ids)
        if done(got):
            return got
        await asyncio.sleep(0.3)
    raise SystemExit(f"timeout waiting for jobs {ids}: {got}")


async def main(partition: str) -> None:
    backend = make_backend(SlurmConfig(backend="cli"), min_uid=1000)
    tag = secrets.token_hex(3)
    scripts = {}
    for name, body in (
        (
            "sleep",
            "exec apptainer exec --cleanenv $(test -r /dev/fuse -a -w /dev/fuse || echo --unsquash)"
            " /srv/vizdesk/images/compute.sif sleep 300",
        ),
        ("fail", 'echo "VZC=$VZC"; exit 3'),
    ):
        p = Path(f"/tmp/vzc-probe-{tag}-{name}.sh")
        p.write_text(f"#!/bin/bash\n{body}\n")
        p.chmod(0o644)
        scripts[name] = str(p)

    def req(name: str) -> SubmitRequest:
        return SubmitRequest(
            user="alice",
            script=scripts[name],
            job_name=f"vzc-cli-{name}",
            cpus=1,
            memory_mb=128,
            time_limit_minutes=5,
            partition=partition,
            workdir="/tmp",
            output="/dev/null",
            env={"VZC": tag},
        )

    sleeper = await backend.submit(req("sleep"))
    failer = await backend.submit(req("fail"))
    got = await wait(
        backend,
        [sleeper, failer],
        lambda g: (
            g.get(sleeper) is not None
            and g[sleeper].state.value == "RUNNING"
            and g.get(failer) is not None
            and g[failer].state.is_finished
        ),
    )
    out: dict[str, Any] = {"running": view(got[sleeper]), "done": view(got[failer])}
    try:
        await backend.cancel(sleeper, "bob")
        out["bob_cancel"] = "allowed"
    except SlurmError as exc:
        out["bob_cancel"] = type(exc).__name__
    await backend.cancel(sleeper, "alice")
    got = await wait(
        backend, [sleeper], lambda g: g.get(sleeper) is not None and g[sleeper].state.is_finished
    )
    out["after_cancel"] = view(got[sleeper])
    out["unknown"] = view(await backend.info("999999"))
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
