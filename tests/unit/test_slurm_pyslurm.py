"""The pyslurm backend against a fake ``pyslurm`` package (pyslurm only builds for 25.11).

The fake, written to a temporary directory and imported for real, mimics the parts of
pyslurm 25.11.2's API the backend uses: ``slurm_init``, ``JobSubmitDescription(**kw)
.submit()``, ``Jobs.load().values()``, ``Job.load(id)``, ``Job(id).cancel()`` and
``RPCError(errno, msg)``. Also covers ``make_backend``'s choice of backend.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from vizdesk.config import SlurmConfig
from vizdesk.slurm import make_backend, validate
from vizdesk.slurm import pyslurm_backend as pb
from vizdesk.slurm.base import JobState, SlurmError, SlurmRejected, SlurmUnavailable, SubmitRequest
from vizdesk.slurm.cli import SlurmCliBackend
from vizdesk.slurm.pyslurm_backend import PyslurmBackend, job_status_from_pyslurm
from vizdesk.slurm.validate import Account, InvalidSubmission

ALICE = Account("alice", 1001, 1002, "/home/alice", "/bin/bash")
T0 = 1795304000

FAKE_PYSLURM = textwrap.dedent(
    '''
    """Fake pyslurm (tests only)."""
    import os

    IMPORT_ENV = os.environ.get("PYSLURM_DISABLE_AUTO_INIT")
    INIT_CALLS = []
    SUBMITTED = []
    JOBS = {}
    CANCELLED = []
    RAISE = {}
    LOADED = []


    class PyslurmError(Exception):
        pass


    class RPCError(PyslurmError):
        def __init__(self, errno=-1, msg=None):
            self.errno = errno
            self.msg = msg or f"slurm error {errno}"  # the real one: slurm_strerror(errno)
            super().__init__(self.msg)


    def slurm_init(config_path=None):
        INIT_CALLS.append(config_path)


    # The real JobSubmitDescription is a cdef class: an unknown attribute is an
    # AttributeError, never silently kept. These are real attribute names (checked against
    # pyslurm 25.11.2 by tests/slurm2511/test_pyslurm_shape.py).
    SUBMIT_ATTRS = frozenset({
        "name", "cpus_per_task", "memory_per_node", "time_limit", "working_directory",
        "environment", "script", "user_id", "group_id", "partitions", "gres_per_node",
        "standard_output", "nodes", "ntasks", "ntasks_per_node", "constraints", "account",
        "qos", "mail_types", "is_requeueable", "priority",
    })


    class JobSubmitDescription:
        def __init__(self, **kwargs):
            for k, v in kwargs.items():
                setattr(self, k, v)

        def __setattr__(self, key, value):
            if key not in SUBMIT_ATTRS:
                raise AttributeError(
                    f"'pyslurm.core.job.submission.JobSubmitDescription' object has no "
                    f"attribute '{key}'"
                )
            object.__setattr__(self, key, value)

        def submit(self):
            if "submit" in RAISE:
                raise RAISE["submit"]
            if not getattr(self, "environment", None):
                # pyslurm exports "ALL" for an empty environment; slurmctld refused that here.
                raise RPCError(2019, "I/O error writing script/environment to file")
            SUBMITTED.append(dict(vars(self)))
            return 4242


    class Job:
        def __init__(self, job_id):
            self.id = job_id

        @staticmethod
        def load(job_id):
            LOADED.append(job_id)
            if "load" in RAISE:
                raise RAISE["load"]
            if job_id not in JOBS:
                raise RPCError(2017, "Invalid job id specified")
            return JOBS[job_id]

        def cancel(self):
            # The real one never raises: it ignores Slurm's answer (unknown id, finished
            # job, and even an unreachable controller are all silent).
            CANCELLED.append(self.id)


    class Jobs(dict):  # the real one: a MultiClusterMap keyed by int job id
        @staticmethod
        def load(preload_passwd_info=False, frozen=False):
            LOADED.append("all")
            if "load" in RAISE:
                raise RAISE["load"]
            jobs = Jobs()
            jobs.update(JOBS)
            return jobs
    '''
)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    pkg = tmp_path / "fakepkgs" / "pyslurm"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_PYSLURM)
    monkeypatch.delenv("PYSLURM_DISABLE_AUTO_INIT", raising=False)
    monkeypatch.delenv("SLURM_CONF", raising=False)
    monkeypatch.delitem(sys.modules, "pyslurm", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "fakepkgs"))
    monkeypatch.setattr(pb, "lookup_account", lambda user, min_uid: ALICE)
    yield None
    sys.modules.pop("pyslurm", None)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    p = tmp_path / "job.sbatch"
    p.write_text("#!/bin/sh\nexec vizdesk node vnc\n")
    return p


def mod() -> Any:
    return sys.modules["pyslurm"]


def job(jid: int, state: str, **over: Any) -> SimpleNamespace:
    fields: dict[str, Any] = {
        "id": jid,
        "state": state,
        "state_reason": "None",
        "user_name": "alice",
        "user_id": 1001,
        "name": f"vizdesk-{jid}",
        "partition": "viz",
        "batch_host": "node1",
        "allocated_nodes": "node1",
        "exit_code": 0,
        "exit_code_signal": 0,
        "submit_time": T0,
        "start_time": T0 + 5,
        "end_time": T0 + 3600,
    }
    fields.update(over)
    return SimpleNamespace(**fields)


def request(script: Path, **over: Any) -> SubmitRequest:
    fields: dict[str, Any] = {
        "user": "alice",
        "script": str(script),
        "job_name": "vizdesk-s1",
        "cpus": 2,
        "memory_mb": 2048,
        "time_limit_minutes": 60,
        "gpus": 2,
        "partition": "viz",
        "workdir": "/home/alice",
        "output": "/var/log/vizdesk/s1-%j.out",
        "env": {"VIZDESK_SESSION_ID": "s1"},
    }
    fields.update(over)
    return SubmitRequest(**fields)


def test_import_disables_auto_init_and_inits_once(fake: None) -> None:
    pb.import_pyslurm()
    pb.import_pyslurm()
    assert mod().IMPORT_ENV == "1"
    assert mod().INIT_CALLS == [None]


def test_init_gets_the_configured_slurm_conf(
    fake: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\n")
    monkeypatch.setenv("PYSLURM_DISABLE_AUTO_INIT", "")  # empty would not disable it
    pb.import_pyslurm(str(conf))
    assert mod().IMPORT_ENV == "1" and mod().INIT_CALLS == [str(conf)]


def test_init_falls_back_to_slurm_conf_env(
    fake: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", "/etc/site/slurm.conf")
    pb.import_pyslurm()
    assert mod().INIT_CALLS == ["/etc/site/slurm.conf"]


async def test_submit_maps_the_request(
    fake: None, script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIZDESK_JWT_SECRET", "daemon-secret")
    monkeypatch.delenv("SLURM_CONF", raising=False)
    b = PyslurmBackend(SlurmConfig(), min_uid=1000, isolated=False)
    assert await b.submit(request(script)) == "4242"
    (desc,) = mod().SUBMITTED
    assert desc == {
        "name": "vizdesk-s1",
        "cpus_per_task": 2,
        "memory_per_node": 2048,
        "time_limit": 60,
        "working_directory": "/home/alice",
        "environment": {
            "PATH": validate.SAFE_PATH,
            "LANG": "C.UTF-8",
            "HOME": "/home/alice",
            "USER": "alice",
            "LOGNAME": "alice",
            "SHELL": "/bin/bash",
            "SLURM_UMASK": "0077",  # the job's files are the user's alone
            "VIZDESK_SESSION_ID": "s1",
        },
        "script": script.read_text(),
        "user_id": 1001,
        "group_id": 1002,
        "partitions": "viz",
        "gres_per_node": "gpu:2",
        "standard_output": "/var/log/vizdesk/s1-%j.out",
    }
    await b.submit(request(script, gpus=0, partition="", output=""))
    assert not {"partitions", "gres_per_node", "standard_output"} & set(mod().SUBMITTED[1])


async def test_submit_validates_before_pyslurm(fake: None, script: Path) -> None:
    b = PyslurmBackend(SlurmConfig(), isolated=False)
    for over in ({"job_name": "a b"}, {"script_args": ("x",)}, {"env": {"SBATCH_X": "1"}}):
        with pytest.raises(InvalidSubmission):
            await b.submit(request(script, **over))
    assert "pyslurm" not in sys.modules or mod().SUBMITTED == []


@pytest.mark.parametrize(
    ("errno", "exc"),
    [
        (2000, SlurmRejected),  # ESLURM_INVALID_PARTITION_NAME
        (2051, SlurmRejected),  # ESLURM_INVALID_TIME_LIMIT
        (1001, SlurmUnavailable),  # SLURM_COMMUNICATIONS_CONNECTION_ERROR
        (1800, SlurmUnavailable),  # SLURMCTLD_COMMUNICATIONS_CONNECTION_ERROR
        (5004, SlurmUnavailable),  # SLURM_PROTOCOL_SOCKET_IMPL_TIMEOUT
        (6000, SlurmUnavailable),  # ESLURM_AUTH_CRED_INVALID (munge)
        (111, SlurmUnavailable),  # ECONNREFUSED
    ],
)
async def test_submit_errors(fake: None, script: Path, errno: int, exc: type[Exception]) -> None:
    b = PyslurmBackend(SlurmConfig(), isolated=False)
    b.module.RAISE["submit"] = b.module.RPCError(errno, f"message {errno}")
    with pytest.raises(exc) as info:
        await b.submit(request(script))
    if exc is SlurmRejected:
        assert str(info.value) == f"message {errno}"
        assert not isinstance(info.value, SlurmUnavailable)


@pytest.mark.parametrize("kind", ["value_error", "impersonation_refused"])
async def test_submit_errors_that_are_not_the_users_fault(
    fake: None, script: Path, kind: str
) -> None:
    b = PyslurmBackend(SlurmConfig(), isolated=False)
    b.module.RAISE["submit"] = (
        ValueError("Batch script contains DOS line breaks")
        if kind == "value_error"
        else b.module.RPCError(2010, "Invalid user id")
    )
    with pytest.raises(SlurmError) as info:
        await b.submit(request(script))
    assert not isinstance(info.value, SlurmRejected)


async def test_info_many_maps_states(fake: None) -> None:
    b = PyslurmBackend(SlurmConfig(), isolated=False)
    b.module.JOBS.update(
        {
            1: job(1, "RUNNING"),
            2: job(
                2,
                "PENDING",
                state_reason="BeginTime",
                batch_host=None,  # as pyslurm 25.11 reports a pending job
                allocated_nodes=None,
                start_time=None,
                end_time=None,
            ),
            3: job(3, "COMPLETED"),
            4: job(4, "FAILED", state_reason="NonZeroExitCode", exit_code=3),
            5: job(5, "CANCELLED", exit_code=0, exit_code_signal=15),
            6: job(6, "COMPLETING"),
            7: job(7, "CONFIGURING", state_reason="None"),
            8: job(8, "RUNNING", user_name=None, submit_time=None),
            9: job(9, "RUNNING"),
        }
    )
    got = await b.info_many([str(i) for i in range(1, 9)] + ["999"])
    assert set(got) == {str(i) for i in range(1, 9)}  # 9 not asked for, 999 unknown
    assert got["1"].state is JobState.RUNNING and got["1"].batch_host == "node1"
    assert got["1"].end_time is None and got["1"].exit_code is None
    assert got["1"].start_time is not None and got["1"].user == "alice"
    assert (got["2"].state, got["2"].reason, got["2"].start_time) == (
        JobState.PENDING,
        "BeginTime",
        None,
    )
    assert (got["3"].state, got["3"].exit_code, got["3"].signal) == (JobState.COMPLETED, 0, None)
    assert got["3"].end_time is not None
    assert (got["4"].exit_code, got["4"].reason) == (3, "NonZeroExitCode")
    assert (got["5"].state, got["5"].exit_code, got["5"].signal) == (JobState.CANCELLED, None, 15)
    assert got["6"].state is JobState.COMPLETING
    assert (got["7"].state, got["7"].reason) == (JobState.PENDING, "Configuring")
    assert (got["8"].user, got["8"].submit_time) == ("", None)


async def test_info_many_per_id_below_the_threshold(fake: None) -> None:
    from vizdesk.slurm import pyslurm_backend as mod

    b = PyslurmBackend(SlurmConfig(), isolated=False)
    b.module.JOBS.update({i: job(i, "RUNNING") for i in range(1, 200)})
    got = await b.info_many(["3", "5", "999", "x"])
    assert set(got) == {"3", "5"}
    assert b.module.LOADED == [3, 5, 999]  # one slurm_load_job per id, none of all jobs
    b.module.LOADED.clear()
    many = [str(i) for i in range(1, mod.PER_ID_LOAD_MAX + 2)]
    assert set(await b.info_many(many)) == set(many)
    assert b.module.LOADED == ["all"]


def test_expectations_as_the_squeue_parsers_read_them() -> None:
    """A running job's end_time is its expected end, a pending one's start_time its
    expected start (same fields as squeue's JSON and --Format text, for the parity)."""
    run = job_status_from_pyslurm(job(1, "RUNNING"))
    assert run is not None
    assert (run.expected_end, run.end_time, run.expected_start) == (
        datetime.fromtimestamp(T0 + 3600, tz=UTC),
        None,
        None,
    )
    pend = job_status_from_pyslurm(
        job(2, "PENDING", batch_host=None, allocated_nodes=None, start_time=T0 + 600)
    )
    assert pend is not None
    assert (pend.expected_start, pend.start_time, pend.expected_end) == (
        datetime.fromtimestamp(T0 + 600, tz=UTC),
        None,
        None,
    )
    held = job_status_from_pyslurm(job(3, "PENDING", start_time=None, end_time=None))
    assert held is not None and (held.expected_start, held.expected_end) == (None, None)
    done = job_status_from_pyslurm(job(4, "COMPLETED"))
    assert done is not None and (done.end_time, done.expected_end) == (
        datetime.fromtimestamp(T0 + 3600, tz=UTC),
        None,
    )


def test_mapping_tolerates_broken_attributes() -> None:
    class Weird:
        id = 12
        state = "RUNNING"

        @property
        def batch_host(self) -> str:
            raise RuntimeError("libslurm says no")

    st = job_status_from_pyslurm(Weird())
    assert st is not None and (st.state, st.batch_host, st.name) == (JobState.RUNNING, "", "")
    assert job_status_from_pyslurm(SimpleNamespace(id=None)) is None


async def test_info_many_rpc_error_is_unavailable(fake: None) -> None:
    b = PyslurmBackend(SlurmConfig(), isolated=False)
    b.module.RAISE["load"] = b.module.RPCError(1800, "Unable to contact slurm controller")
    with pytest.raises(SlurmUnavailable):
        await b.info_many(["1"])
    assert await b.ping() is False


async def test_cancel_checks_the_owner(fake: None) -> None:
    b = PyslurmBackend(SlurmConfig(), isolated=False)
    b.module.JOBS.update(
        {7: job(7, "RUNNING"), 8: job(8, "RUNNING", user_name="bob", user_id=1003)}
    )
    await b.cancel("7", "alice")
    assert b.module.CANCELLED == [7]
    with pytest.raises(SlurmRejected):
        await b.cancel("8", "alice")
    await b.cancel("999", "alice")  # unknown (errno 2017): already gone, fine
    assert b.module.CANCELLED == [7]
    with pytest.raises(InvalidSubmission):
        await b.cancel("7;id", "alice")


@pytest.mark.parametrize(("errno", "exc"), [(1800, SlurmUnavailable), (2002, SlurmError)])
async def test_cancel_errors(fake: None, errno: int, exc: type[Exception]) -> None:
    """``Job(id).cancel()`` never raises: the owner check's ``Job.load`` is what can fail."""
    b = PyslurmBackend(SlurmConfig(), isolated=False)
    b.module.JOBS[7] = job(7, "RUNNING")
    orig = b.module.Job.load

    def failing(jid: int) -> Any:
        raise b.module.RPCError(errno)

    b.module.Job.load = staticmethod(failing)
    try:
        with pytest.raises(exc):
            await b.cancel("7", "alice")
    finally:
        b.module.Job.load = orig
    assert b.module.CANCELLED == []


async def test_submit_always_passes_an_environment(fake: None, script: Path) -> None:
    b = PyslurmBackend(SlurmConfig(), isolated=False)
    await b.submit(request(script, env={}))
    assert mod().SUBMITTED[0]["environment"]["PATH"] == validate.SAFE_PATH


async def test_submit_maps_the_batch_fields(fake: None, script: Path) -> None:
    b = PyslurmBackend(SlurmConfig(), isolated=False)
    await b.submit(
        request(
            script,
            nodes=2,
            ntasks=4,
            ntasks_per_node=2,
            constraint="viz&a100",
            gpu_type="a100",
            account="proj1",
            qos="interactive",
            mail_type="END,FAIL",
            requeue=False,
        )
    )
    d = mod().SUBMITTED[0]
    assert (d["nodes"], d["ntasks"], d["ntasks_per_node"]) == (2, 4, 2)
    assert (d["constraints"], d["gres_per_node"]) == ("viz&a100", "gpu:a100:2")
    assert (d["account"], d["qos"], d["mail_types"], d["is_requeueable"]) == (
        "proj1",
        "interactive",
        "END,FAIL",
        False,
    )


async def test_on_call_hook(fake: None, script: Path) -> None:
    seen: list[tuple[str, bool]] = []
    b = PyslurmBackend(
        SlurmConfig(), on_call=lambda op, s, ok: seen.append((op, ok)), isolated=False
    )
    b.module.JOBS[1] = job(1, "RUNNING")
    await b.submit(request(script))
    await b.info_many(["1"])
    await b.cancel("1", "alice")
    b.module.RAISE["load"] = b.module.RPCError(1001)
    with pytest.raises(SlurmUnavailable):
        await b.info_many(["1"])
    assert seen == [("submit", True), ("info_many", True), ("cancel", True), ("info_many", False)]


def test_make_backend_auto_prefers_pyslurm(fake: None) -> None:
    assert isinstance(make_backend(SlurmConfig(backend="auto"), 1000), PyslurmBackend)
    assert isinstance(make_backend(SlurmConfig(backend="pyslurm"), 1000), PyslurmBackend)
    assert isinstance(make_backend(SlurmConfig(backend="cli"), 1000), SlurmCliBackend)


def test_make_backend_auto_falls_back_to_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyslurm", None)  # makes `import pyslurm` fail
    b = make_backend(SlurmConfig(backend="auto"), 1234)
    assert isinstance(b, SlurmCliBackend) and b.min_uid == 1234
    with pytest.raises(ImportError):
        make_backend(SlurmConfig(backend="pyslurm"), 1000)
    with pytest.raises(ValueError):
        make_backend(SlurmConfig(backend="slurmrestd"), 1000)


def test_unavailable_errno_ranges() -> None:
    assert pb.is_unavailable_errno(1001) and pb.is_unavailable_errno(2027)
    assert not pb.is_unavailable_errno(2017) and not pb.is_unavailable_errno(None)
    assert not pb.is_unavailable_errno(-1)


def test_module_is_a_module(fake: None) -> None:
    assert isinstance(pb.import_pyslurm(), ModuleType)


def test_auto_refuses_pyslurm_without_a_readable_slurm_conf(fake: None, tmp_path: Path) -> None:
    """libslurm ends the process on an unreadable slurm.conf: auto never gets that far."""
    missing = str(tmp_path / "nope" / "slurm.conf")
    assert pb.pyslurm_available(missing) is False
    b = make_backend(SlurmConfig(backend="auto", conf_path=missing), 1000)
    assert isinstance(b, SlurmCliBackend)
    assert "pyslurm" not in sys.modules or not mod().INIT_CALLS
