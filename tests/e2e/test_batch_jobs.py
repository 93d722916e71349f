"""Batch jobs on the real test bed: API → sbatch as alice → the fixed launcher → output file
→ tracker → state, exit code and output visible through the API.

Covers: a template job completes (exit code 0, output content); a non-zero exit is FAILED
with its code; hostile parameter values arrive verbatim (no shell evaluation anywhere);
DELETE of a running job → CANCELLED with no process left; bob cannot see alice's jobs;
bad requests and an invalid template are 400s naming the field; and the tracker's ONE
squeue call per tick covers sessions and jobs together.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
import pytest_asyncio

from tests.conftest import REPO, Daemon, start_daemon, stop_daemon, wait_for_state
from tests.e2e.test_session_lifecycle import create as create_session
from tests.e2e.test_session_lifecycle import job_state, squeue_job

pytestmark = pytest.mark.e2e

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}


async def submit(http: aiohttp.ClientSession, daemon: Daemon, body: dict[str, Any],
                 user: str = "alice") -> dict[str, Any]:
    async with http.post(f"{daemon.url}/api/v1/jobs", json=body,
                         headers=daemon.headers(user)) as r:
        data = await r.json()
        assert r.status == 201, data
    assert data["user"] == user and data["job_id"] and data["state"] in ("QUEUED", "RUNNING")
    return data  # type: ignore[no-any-return]


async def get_job(http: aiohttp.ClientSession, daemon: Daemon, jid: str,
                  user: str = "alice") -> dict[str, Any]:
    async with http.get(f"{daemon.url}/api/v1/jobs/{jid}", headers=daemon.headers(user)) as r:
        assert r.status == 200, await r.text()
        return await r.json()  # type: ignore[no-any-return]


async def wait_job(http: aiohttp.ClientSession, daemon: Daemon, jid: str, states: set[str],
                   timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = await get_job(http, daemon, jid)
        if body["state"] in states:
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {jid} not in {states} after {timeout}s: {body}")


async def output_of(http: aiohttp.ClientSession, daemon: Daemon, jid: str,
                    user: str = "alice") -> tuple[int, str]:
    async with http.get(f"{daemon.url}/api/v1/jobs/{jid}/output",
                        headers=daemon.headers(user)) as r:
        return r.status, await r.text()


def job_processes(jid: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("VIZDESK_JOB_ID") == jid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture
def outputs() -> Iterator[list[str]]:
    """Output files to remove after the test (they land in the job's own directory in
    alice's home, which goes too)."""
    paths: list[str] = []
    yield paths
    for p in paths:
        Path(p).unlink(missing_ok=True)
        parent = Path(p).parent
        if parent.parent.name == "vizdesk-jobs" and re.fullmatch("[0-9a-f]{16}", parent.name):
            shutil.rmtree(parent, ignore_errors=True)


async def test_template_job_completes_with_output(http, daemon, testbed, outputs) -> None:
    job = await submit(http, daemon, {"template": "hello",
                                      "parameters": {"message": "hello from vizdesk",
                                                     "count": 3}})
    outputs.append(job["output_path"])
    assert job["template"] == "hello" and job["partition"] == "batch"
    workdir = f"/home/alice/vizdesk-jobs/{job['id']}"
    assert job["workdir"] == workdir
    assert job["output_path"] == f"{workdir}/vizdesk-job-{job['id']}.out"
    done = await wait_job(http, daemon, job["id"], FINAL)
    st = Path(workdir).stat()  # made by alice herself, for her only
    assert (Path(workdir).owner(), st.st_mode & 0o777) == ("alice", 0o700)
    assert done["runtime_seconds"] is not None and done["runtime_seconds"] >= 0
    assert done["state"] == "COMPLETED", done
    assert done["exit_code"] == 0
    assert done["node"] == testbed.node
    assert done["started_at"] and done["ended_at"]
    out = Path(done["output_path"])
    assert out.read_text() == "hello from vizdesk\n" * 3
    assert out.owner() == "alice"  # written by the job, running as alice
    status, text = await output_of(http, daemon, job["id"])
    assert (status, text) == (200, "hello from vizdesk\n" * 3)
    # Slurm ran it as alice, under vizdesk's job name.
    sq = squeue_job(done["job_id"])
    if sq is not None:  # still in squeue's memory of finished jobs
        assert sq.get("user_name") == "alice"
        assert sq.get("name") == f"vizdesk-job-{job['id']}"
    async with http.get(f"{daemon.url}/api/v1/jobs", headers=daemon.headers("alice")) as r:
        assert job["id"] in {j["id"] for j in (await r.json())["jobs"]}


async def test_output_endpoint_refuses_a_swapped_in_symlink(http, daemon, outputs) -> None:
    """The daemon (root) reads a file in alice's home: alice must not make it read another."""
    job = await submit(http, daemon, {"template": "hello", "parameters": {"message": "mine"}})
    outputs.append(job["output_path"])
    await wait_job(http, daemon, job["id"], FINAL)
    assert await output_of(http, daemon, job["id"]) == (200, "mine\n")
    subprocess.run(["runuser", "-u", "alice", "--", "ln", "-sfn", "/etc/shadow",
                    job["output_path"]], check=True)
    status, text = await output_of(http, daemon, job["id"])
    assert status == 403 and "root:" not in text
    assert json.loads(text)["error"]["code"] == "forbidden"
    Path(job["output_path"]).unlink()
    status, text = await output_of(http, daemon, job["id"])
    assert status == 404 and json.loads(text)["error"]["code"] == "no_output"


async def test_nonzero_exit_is_failed_with_its_code(http, daemon, outputs) -> None:
    job = await submit(http, daemon, {"template": "hello",
                                      "parameters": {"message": "bye", "exit_code": 3}})
    outputs.append(job["output_path"])
    done = await wait_job(http, daemon, job["id"], FINAL)
    assert done["state"] == "FAILED", done
    assert done["exit_code"] == 3 and "exit code 3" in done["reason"]
    assert Path(done["output_path"]).read_text() == "bye\n"


async def test_hostile_parameters_arrive_verbatim(http, daemon, outputs) -> None:
    marker = Path(f"/tmp/vizdesk-e2e-pwned-{secrets.token_hex(4)}")
    hostile = (
        f"$(touch {marker}) `touch {marker}` ; touch {marker} && id | cat\n"
        f"'quoted' \"double\" \\back ${{HOME}} $VIZDESK_JOB_ID * -n --output=/etc/x\n"
        "%j %u \t tab é ∑"
    )
    # Through a whole argv element ("{message}" → $1 of a bash -c script).
    job = await submit(http, daemon, {"template": "hello",
                                      "parameters": {"message": hostile, "count": 2}})
    outputs.append(job["output_path"])
    # Through $VIZDESK_PARAMS_JSON read by a Python script.
    py = await submit(http, daemon, {"template": "python-script",
                                     "parameters": {"label": hostile, "n": 4,
                                                    "method": "squares", "verbose": True}})
    outputs.append(py["output_path"])
    done = await wait_job(http, daemon, job["id"], FINAL)
    assert done["state"] == "COMPLETED", done
    assert Path(done["output_path"]).read_text() == (hostile + "\n") * 2
    done = await wait_job(http, daemon, py["id"], FINAL)
    assert done["state"] == "COMPLETED", done
    text = Path(done["output_path"]).read_text()
    assert text.startswith(f"label: {hostile}\n")
    assert "squares of 1..4 = 30\n" in text
    params = json.loads(text.split("parameters: ", 1)[1])
    assert params["label"] == hostile
    assert not marker.exists(), "a parameter value was evaluated by a shell"


async def test_delete_running_job_cancels_it(http, daemon, outputs) -> None:
    job = await submit(http, daemon, {"template": "python-script",
                                      "parameters": {"sleep_seconds": 300, "label": "long"}})
    outputs.append(job["output_path"])
    running = await wait_job(http, daemon, job["id"], {"RUNNING", *FINAL})
    assert running["state"] == "RUNNING", running
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not job_processes(job["id"]):
        await asyncio.sleep(0.2)
    procs = job_processes(job["id"])
    assert procs and {p.username() for p in procs} == {"alice"}
    async with http.delete(f"{daemon.url}/api/v1/jobs/{job['id']}",
                           headers=daemon.headers("alice")) as r:
        assert r.status == 202
        assert (await r.json())["state"] in ("CANCELLING", "CANCELLED")
    done = await wait_job(http, daemon, job["id"], FINAL, timeout=20)
    assert done["state"] == "CANCELLED", done
    assert done["ended_at"]
    sq = squeue_job(done["job_id"])
    assert sq is None or job_state(sq) == "CANCELLED", sq
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and job_processes(job["id"]):
        await asyncio.sleep(0.2)
    assert not job_processes(job["id"])
    # Cancelling again is harmless.
    async with http.delete(f"{daemon.url}/api/v1/jobs/{job['id']}",
                           headers=daemon.headers("alice")) as r:
        assert r.status == 202 and (await r.json())["state"] == "CANCELLED"


async def test_bob_cannot_see_alices_job(http, daemon, outputs) -> None:
    job = await submit(http, daemon, {"template": "python-script",
                                      "parameters": {"sleep_seconds": 30}})
    outputs.append(job["output_path"])
    try:
        bob = daemon.headers("bob")
        base = f"{daemon.url}/api/v1/jobs/{job['id']}"
        for method, url in (("GET", base), ("DELETE", base), ("GET", base + "/output")):
            async with http.request(method, url, headers=bob) as r:
                assert r.status == 404, (method, url, await r.text())
                assert (await r.json())["error"]["code"] == "not_found"
        async with http.get(f"{daemon.url}/api/v1/jobs", headers=bob) as r:
            assert job["id"] not in {j["id"] for j in (await r.json())["jobs"]}
        async with http.get(f"{daemon.url}/api/v1/jobs?all=true", headers=bob) as r:
            assert r.status == 403
        # bob's DELETE did nothing: alice's job still runs.
        assert (await get_job(http, daemon, job["id"]))["state"] in ("QUEUED", "RUNNING")
    finally:
        async with http.delete(f"{daemon.url}/api/v1/jobs/{job['id']}",
                               headers=daemon.headers("alice")):
            pass
    await wait_job(http, daemon, job["id"], FINAL, timeout=20)


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({}, "image", None),
        ({"template": "nosuch"}, "template", "unknown_template"),
        ({"template": "../../etc/passwd"}, "template", None),
        ({"template": "hello"}, "parameters.message", "missing_parameter"),
        ({"template": "hello", "parameters": {"message": "x", "count": "3"}},
         "parameters.count", "invalid_parameter"),
        ({"template": "hello", "parameters": {"message": "x", "count": 101}},
         "parameters.count", "invalid_parameter"),
        ({"template": "hello", "parameters": {"message": "x", "evil": "$(id)"}},
         "parameters.evil", "unknown_parameter"),
        ({"template": "hello", "parameters": {"message": "x" * 1001}},
         "parameters.message", "invalid_parameter"),
        ({"template": "python-script", "parameters": {"method": "cubes"}},
         "parameters.method", "invalid_parameter"),
        ({"template": "python-script", "parameters": {"verbose": "yes"}},
         "parameters.verbose", "invalid_parameter"),
        ({"template": "hello", "parameters": {"message": "x"}, "cpus": 3}, "cpus", None),
        ({"template": "hello", "parameters": {"message": "x"}, "partition": "nosuch"},
         "partition", None),
        ({"template": "hello", "parameters": {"message": "x"}, "command": ["id"]},
         "command", None),
        ({"image": "nosuch", "command": ["id"]}, "image", "unknown_image"),
        ({"image": "x", "command": "id; rm -rf /"}, "command", None),
    ],
)
async def test_bad_job_requests_are_400_naming_the_field(http, daemon, body, field,
                                                         code) -> None:
    before = await _alice_job_count(http, daemon)
    async with http.post(f"{daemon.url}/api/v1/jobs", json=body,
                         headers=daemon.headers("alice")) as r:
        assert r.status == 400, await r.text()
        err = (await r.json())["error"]
    assert err.get("field") == field, err
    if code:
        assert err["code"] == code, err
    assert await _alice_job_count(http, daemon) == before


async def test_template_maxima_and_listing(http, daemon) -> None:
    body = {"template": "python-script", "time_limit_minutes": 121}
    async with http.post(f"{daemon.url}/api/v1/jobs", json=body,
                         headers=daemon.headers("alice")) as r:
        assert r.status == 400  # over the template's own maximum (120)
        assert (await r.json())["error"]["field"] == "time_limit_minutes"
    async with http.get(f"{daemon.url}/api/v1/job-templates",
                        headers=daemon.headers("alice")) as r:
        templates = {t["name"]: t for t in (await r.json())["templates"]}
    assert {"hello", "python-script"} <= set(templates)
    hello = templates["hello"]
    assert {p["name"]: p["type"] for p in hello["parameters"]} == {
        "message": "string", "count": "int", "exit_code": "int"}
    assert hello["resources"]["cpus"] == {"default": 1, "max": 2}
    assert "command" not in hello and "script" not in templates["python-script"]


async def _alice_job_count(http: aiohttp.ClientSession, daemon: Daemon) -> int:
    async with http.get(f"{daemon.url}/api/v1/jobs", headers=daemon.headers("alice")) as r:
        return len((await r.json())["jobs"])


# --------------------------------------------------------------------- one query per tick

INVALID_TEMPLATE = """\
description: broken on purpose
command: [echo, "{n}"]
parameters:
  n: {type: list}
"""


BIG_TEMPLATE = """\
description: generous maxima (the group policy must still bound them)
partition: batch
resources: {cpus: {default: 1, max: 64}, memory_gb: {default: 1, max: 64}}
command: [/bin/true]
"""


@pytest_asyncio.fixture(scope="module")
async def slow_daemon(testbed) -> AsyncIterator[Daemon]:
    """A daemon whose tracker ticks only when poked (poll interval of an hour)."""
    tdir = testbed.dir / "tests" / f"templates-{secrets.token_hex(3)}"
    tdir.mkdir(parents=True)
    for name in ("hello.yaml", "python-script.yaml"):
        shutil.copy(REPO / "templates" / name, tdir / name)
    (tdir / "broken.yaml").write_text(INVALID_TEMPLATE)
    (tdir / "big.yaml").write_text(BIG_TEMPLATE)
    d = start_daemon(testbed, "jobs-slow", {"slurm": {"poll_interval_seconds": 3600},
                                            "redis": {"keyspace_notifications": False},
                                            "jobs": {"templates_dir": str(tdir)}})
    yield d
    stop_daemon(d)
    shutil.rmtree(tdir, ignore_errors=True)


async def squeue_calls(http: aiohttp.ClientSession, daemon: Daemon) -> int:
    async with http.get(f"{daemon.url}/metrics") as r:
        text = await r.text()
    m = re.search(r'^vizdesk_slurm_call_seconds_count\{op="info_many"\} (\S+)$', text, re.M)
    return int(float(m.group(1))) if m else 0


async def quiet_calls(http: aiohttp.ClientSession, daemon: Daemon) -> int:
    """The squeue call count once no tick is in flight."""
    last = await squeue_calls(http, daemon)
    while True:
        await asyncio.sleep(1.0)
        now = await squeue_calls(http, daemon)
        if now == last:
            return now
        last = now


async def test_one_squeue_call_per_tick_for_sessions_and_jobs(
    http, slow_daemon, redis_admin, outputs
) -> None:
    d = slow_daemon
    session = await create_session(http, d, "alice")
    jobs = []
    for _ in range(3):
        j = await submit(http, d, {"template": "python-script",
                                   "parameters": {"sleep_seconds": 2}})
        outputs.append(j["output_path"])
        jobs.append(j)
    try:
        # Let Slurm finish the jobs and the desktop register, with no tick in between.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [job_state(sq) if (sq := squeue_job(j["job_id"])) else "GONE"
                      for j in jobs]
            registered = await redis_admin.exists(f"{d.prefix}reg:{session['id']}")
            if all(s == "COMPLETED" for s in states) and registered:
                break
            await asyncio.sleep(0.5)
        assert all(s == "COMPLETED" for s in states) and registered, (states, registered)
        before = await quiet_calls(http, d)
        stale = [await get_job(http, d, j["id"]) for j in jobs]
        assert any(s["state"] != "COMPLETED" for s in stale), "nothing left for one tick"
        # ONE poke (a new submission) → ONE tick → ONE squeue call moves everything.
        extra = await submit(http, d, {"template": "python-script",
                                       "parameters": {"sleep_seconds": 60}})
        outputs.append(extra["output_path"])
        for j in jobs:
            done = await wait_job(http, d, j["id"], FINAL, timeout=15)
            assert done["state"] == "COMPLETED" and done["exit_code"] == 0, done
        ready = await wait_for_state(http, d, session["id"], {"READY", "FAILED", "ENDED"},
                                     timeout=15)
        assert ready["state"] == "READY", ready
        assert await quiet_calls(http, d) == before + 1
    finally:
        async with http.delete(f"{d.url}/api/v1/sessions/{session['id']}",
                               headers=d.headers("alice")):
            pass
        async with http.get(f"{d.url}/api/v1/jobs", headers=d.headers("alice")) as r:
            for j in (await r.json())["jobs"]:
                if j["state"] not in FINAL:
                    async with http.delete(f"{d.url}/api/v1/jobs/{j['id']}",
                                           headers=d.headers("alice")):
                        pass


async def test_invalid_template_is_400_naming_it(http, slow_daemon) -> None:
    d = slow_daemon
    async with http.post(f"{d.url}/api/v1/jobs", json={"template": "broken"},
                         headers=d.headers("alice")) as r:
        assert r.status == 400
        err = (await r.json())["error"]
    assert (err["field"], err["code"]) == ("template", "invalid_template")
    assert "'broken'" in err["message"] and "parameters.n.type" in err["message"]
    async with http.get(f"{d.url}/api/v1/job-templates", headers=d.headers("alice")) as r:
        names = {t["name"] for t in (await r.json())["templates"]}
    assert names == {"hello", "python-script", "big"}


async def test_group_policy_bounds_job_resources(http, slow_daemon) -> None:
    d = slow_daemon
    # TEST_POLICY: everybody max_cpus 4 and max_memory_gb 8 (the template allows 64).
    for field, value in (("cpus", 5), ("memory_gb", 9)):
        async with http.post(f"{d.url}/api/v1/jobs", json={"template": "big", field: value},
                             headers=d.headers("alice")) as r:
            assert r.status == 403, await r.text()
            err = (await r.json())["error"]
        assert (err["code"], err["field"]) == ("policy_violation", field)
        assert f"max_{field}" in err["message"]
