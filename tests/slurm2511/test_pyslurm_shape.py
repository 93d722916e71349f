"""The fake pyslurm of tests/unit/test_slurm_pyslurm.py has the REAL pyslurm 25.11.2's shape.

Compared here with the real module built against Slurm 25.11 and real objects loaded from
the live 25.11 controller: attribute names and value types of ``Job`` (running, pending,
failed), the attributes of ``JobSubmitDescription`` the backend sets (the real one refuses
unknown names), ``RPCError``'s fields and the errno of an unknown job id, ``slurm_init``'s
and ``Jobs.load``'s parameters, and that ``Job(id).cancel()`` never raises.
"""

from __future__ import annotations

import importlib.util
import inspect
import pwd
import sys
import time
from types import ModuleType
from typing import Any

import pytest

from tests.slurm2511.conftest import Slurm2511
from tests.unit.test_slurm_pyslurm import FAKE_PYSLURM, job
from vizdesk.slurm.pyslurm_backend import import_pyslurm

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def real(slurm2511: Slurm2511) -> ModuleType:
    return import_pyslurm(slurm2511.conf)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    path = tmp_path_factory.mktemp("fake") / "pyslurm_fake.py"
    path.write_text(FAKE_PYSLURM)
    spec = importlib.util.spec_from_file_location("pyslurm_fake", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["pyslurm_fake"] = mod
    spec.loader.exec_module(mod)
    return mod


def submit(real: ModuleType, s: Slurm2511, name: str, body: str, **extra: Any) -> int:
    pw = pwd.getpwnam("alice")
    desc = real.JobSubmitDescription(
        name=f"shape-{name}", script=f"#!/bin/sh\n{body}\n", partitions=s.partition,
        time_limit=5, memory_per_node=50, working_directory="/tmp",
        standard_output="/dev/null", environment={"PATH": "/usr/bin:/bin"},
        user_id=pw.pw_uid, group_id=pw.pw_gid, **extra,
    )
    jid = desc.submit()
    assert type(jid) is int
    return jid


def types_of(obj: Any, names: list[str]) -> dict[str, str]:
    return {n: type(getattr(obj, n)).__name__ for n in names}


def test_submit_description_attributes_exist(real: ModuleType, fake: ModuleType) -> None:
    real_attrs = {a for a in dir(real.JobSubmitDescription) if not a.startswith("_")}
    assert fake.SUBMIT_ATTRS <= real_attrs, fake.SUBMIT_ATTRS - real_attrs
    for mod in (real, fake):  # both refuse a name that does not exist
        with pytest.raises(AttributeError):
            mod.JobSubmitDescription(constraint="x")  # the real name is "constraints"


def test_job_shape_on_the_live_controller(
    real: ModuleType, fake: ModuleType, slurm2511: Slurm2511
) -> None:
    names = list(vars(job(1, "RUNNING")))
    real_attrs = set(dir(real.Job))
    assert set(names) <= real_attrs, set(names) - real_attrs
    run = submit(real, slurm2511, "run", "sleep 60")
    held = submit(real, slurm2511, "held", "sleep 60", priority=0)
    failed = submit(real, slurm2511, "f3", "exit 3")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r, f = real.Job.load(run), real.Job.load(failed)
            if r.state == "RUNNING" and f.state == "FAILED":
                break
            time.sleep(0.3)
        r, h, f = real.Job.load(run), real.Job.load(held), real.Job.load(failed)
        assert (r.state, r.state_reason) == ("RUNNING", "None")  # the literal string
        assert types_of(r, names) == types_of(job(1, "RUNNING"), names)
        pending = job(2, "PENDING", state_reason="JobHeldUser", batch_host=None,
                      allocated_nodes=None, start_time=None, end_time=None)
        assert (h.state, h.state_reason, h.batch_host) == ("PENDING", "JobHeldUser", None)
        assert types_of(h, names) == types_of(pending, names)
        assert (f.state, f.exit_code, f.exit_code_signal) == ("FAILED", 3, 0)
        assert types_of(f, names) == types_of(job(3, "FAILED", exit_code=3), names)
        loaded = real.Jobs.load()
        assert run in loaded.keys() and loaded[run].id == run  # keyed by int id
        assert {j.id for j in loaded.values()} >= {run, held, failed}
    finally:
        for jid in (run, held, failed):
            real.Job(jid).cancel()


def test_errors_and_cancel(real: ModuleType, fake: ModuleType) -> None:
    for mod in (real, fake):
        assert issubclass(mod.RPCError, Exception)
        assert {"errno", "msg"} <= set(vars(mod.RPCError(errno=2017)))
        with pytest.raises(mod.RPCError) as info:
            mod.Job.load(987654)
        assert info.value.errno == 2017
        assert mod.Job(987654).cancel() is None  # unknown id: no error
    assert real.RPCError(errno=2017).msg == "Invalid job id specified"


def test_signatures(real: ModuleType, fake: ModuleType) -> None:
    assert list(inspect.signature(real.slurm_init).parameters) == list(
        inspect.signature(fake.slurm_init).parameters
    ) == ["config_path"]
    real_load = inspect.signature(real.Jobs.load).parameters
    fake_load = inspect.signature(fake.Jobs.load).parameters
    assert set(fake_load) <= set(real_load), (list(real_load), list(fake_load))
    assert not hasattr(real.JobSubmitDescription, "test_only")  # no start estimates


def test_no_env_is_refused(real: ModuleType, slurm2511: Slurm2511) -> None:
    """Why the backend always passes the job's environment: {} becomes "ALL" and fails."""
    with pytest.raises(real.RPCError) as info:
        submit_env(real, slurm2511, {})
    assert info.value.errno == 2019


def submit_env(real: ModuleType, s: Slurm2511, env: dict[str, str]) -> int:
    pw = pwd.getpwnam("alice")
    return int(real.JobSubmitDescription(
        name="shape-noenv", script="#!/bin/sh\ntrue\n", partitions=s.partition, time_limit=1,
        memory_per_node=10, working_directory="/tmp", standard_output="/dev/null",
        environment=env, user_id=pw.pw_uid, group_id=pw.pw_gid,
    ).submit())

