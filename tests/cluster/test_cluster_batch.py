"""Batch jobs on the cluster: a template job runs on a compute node as alice; the shipped
mpi-hello template's srun launcher spreads its ranks over 2 nodes; Slurm's requeue flag
follows the template (never for the shipped ones, yes for a template that asks).

The cluster has no Apptainer, so the MPI run uses the shipped template without its
``image`` line (same command, same launcher, same resources): what is tested here is
the launcher across nodes, the image side is tests/container's.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.cluster.conftest import Cluster
from tests.conftest import REPO, Daemon, start_daemon, stop_daemon
from tests.conftest import Testbed as _Testbed
from tests.e2e.test_batch_jobs import output_of, submit, wait_job

pytestmark = pytest.mark.e2e

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}


@pytest.fixture(scope="module")
def batch_daemon(testbed: _Testbed) -> Iterator[Daemon]:
    tdir = testbed.dir / "tests" / f"templates-{secrets.token_hex(3)}"
    tdir.mkdir(parents=True, mode=0o755)
    hello = yaml.safe_load((REPO / "templates" / "hello.yaml").read_text())
    (tdir / "hello.yaml").write_text(yaml.safe_dump(hello))
    requeue = {**hello, "name": "hello-requeue", "requeue": True}
    (tdir / "hello-requeue.yaml").write_text(yaml.safe_dump(requeue))
    mpi = yaml.safe_load((REPO / "templates" / "mpi-hello.yaml").read_text())
    assert mpi["launcher"] == "srun" and mpi["resources"]["nodes"]["max"] >= 2
    mpi.pop("image")
    (tdir / "mpi-hello.yaml").write_text(yaml.safe_dump(mpi))
    for p in [tdir, *tdir.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    d = start_daemon(testbed, "batch", {"jobs": {"templates_dir": str(tdir)},
                                        "policy": {"groups": {"*": {"max_nodes": 2}}}})
    yield d
    stop_daemon(d)
    for p in tdir.iterdir():
        p.unlink()
    tdir.rmdir()


def requeue_flag(job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return next(w for w in out.split() if w.startswith("Requeue="))


async def test_template_job_runs_on_a_node_as_alice(
    http: aiohttp.ClientSession, batch_daemon: Daemon, cluster: Cluster
) -> None:
    d = batch_daemon
    job = await submit(http, d, {"template": "hello",
                                 "parameters": {"message": "hi from a node", "count": 2}})
    assert requeue_flag(job["job_id"]) == "Requeue=0"
    done = await wait_job(http, d, job["id"], FINAL)
    assert done["state"] == "COMPLETED" and done["exit_code"] == 0, done
    assert done["node"] in cluster.nodes
    out = Path(done["output_path"])
    assert out.read_text() == "hi from a node\n" * 2 and out.owner() == "alice"
    assert await output_of(http, d, job["id"]) == (200, "hi from a node\n" * 2)


async def test_mpi_hello_spreads_ranks_over_two_nodes(
    http: aiohttp.ClientSession, batch_daemon: Daemon, cluster: Cluster
) -> None:
    d = batch_daemon
    job = await submit(http, d, {"template": "mpi-hello", "nodes": 2, "ntasks": 2})
    assert requeue_flag(job["job_id"]) == "Requeue=0"
    done = await wait_job(http, d, job["id"], FINAL, timeout=90)
    status, text = await output_of(http, d, job["id"])
    assert status == 200, text
    assert done["state"] == "COMPLETED", (done, text)
    lines = sorted(line for line in text.splitlines() if line.startswith("hello from rank"))
    assert len(lines) == 2, text
    hosts = {line.split(" on ")[1].split(" (")[0] for line in lines}
    ranks = {line.split()[3] for line in lines}
    assert ranks == {"0", "1"} and len(hosts) == 2 and hosts <= set(cluster.nodes), text


async def test_requeue_follows_the_template(
    http: aiohttp.ClientSession, batch_daemon: Daemon
) -> None:
    d = batch_daemon
    job: dict[str, Any] = await submit(http, d, {"template": "hello-requeue",
                                                 "parameters": {"message": "x", "count": 1}})
    assert requeue_flag(job["job_id"]) == "Requeue=1"
    done = await wait_job(http, d, job["id"], FINAL)
    assert done["state"] == "COMPLETED", done
