"""Group policy: most permissive of the caller's groups plus "*", 403 naming the limit."""

from __future__ import annotations

from typing import Any

import pytest

from vizdesk.auth.policy import Policy
from vizdesk.auth.types import AuthError, Identity
from vizdesk.config import GroupPolicy, PolicyConfig

POLICY = PolicyConfig(
    groups={
        "*": GroupPolicy(
            partitions=["viz"],
            images=["xfce", "paraview-*"],
            max_gpus=0,
            max_cpus=4,
            max_memory_gb=8,
            max_time_limit_minutes=120,
            max_sessions=1,
            max_jobs=5,
        ),
        "gpu": GroupPolicy(
            partitions=["viz", "gpu*"],
            images=["cuda"],
            max_gpus=2,
            max_cpus=2,
            max_memory_gb=64,
            max_time_limit_minutes=60,
            max_sessions=3,
            max_jobs=2,
        ),
        "admins": GroupPolicy(
            partitions=["*"],
            images=["*"],
            max_gpus=8,
            max_cpus=64,
            max_memory_gb=512,
            max_time_limit_minutes=10080,
            max_sessions=10,
            max_jobs=100,
        ),
    }
)

OK: dict[str, Any] = dict(
    partition="viz", image="xfce", cpus=1, memory_gb=2, gpus=0, time_limit_minutes=60
)


def who(*groups: str) -> Identity:
    return Identity(user="alice", groups=groups, uid=2000)


def violation(fn: Any, field: str | None, needle: str, **kw: Any) -> None:
    with pytest.raises(AuthError) as ei:
        fn(**kw)
    e = ei.value
    assert (e.status, e.code, e.field) == (403, "policy_violation", field)
    assert needle in e.message


def test_effective_is_most_permissive() -> None:
    p = Policy(POLICY).effective(who("gpu"))
    assert set(p.partitions) == {"viz", "gpu*"}
    assert set(p.images) == {"xfce", "paraview-*", "cuda"}
    assert (p.max_gpus, p.max_cpus, p.max_memory_gb, p.max_time_limit_minutes) == (2, 4, 64, 120)
    assert (p.max_sessions, p.max_jobs) == (3, 5)
    both = Policy(POLICY).effective(who("admins", "gpu"))  # order of groups does not matter
    assert both.partitions == ["*"] and (both.max_gpus, both.max_sessions) == (8, 10)
    assert Policy(POLICY).effective(who("unknown-group")) == Policy(POLICY).effective(who())


def test_session_allowed() -> None:
    pol = Policy(POLICY)
    pol.check_session(who(), **OK, active_sessions=0)
    pol.check_session(who(), **{**OK, "image": "paraview-5.12"}, active_sessions=0)
    pol.check_session(who(), **{**OK, "image": None}, active_sessions=0)
    pol.check_session(who("gpu"), **{**OK, "partition": "gpu-a100", "gpus": 2}, active_sessions=2)
    pol.check_session(
        who("admins"), **{**OK, "partition": "", "gpus": 8, "cpus": 64}, active_sessions=9
    )


@pytest.mark.parametrize(
    ("change", "field", "needle"),
    [
        ({"partition": "batch"}, "partition", "partition 'batch'"),
        ({"partition": ""}, "partition", "default partition"),
        ({"image": "cuda"}, "image", "image 'cuda'"),
        ({"image": "../../etc/x.sif"}, "image", "allowed images"),
        ({"cpus": 5}, "cpus", "max_cpus (4)"),
        ({"memory_gb": 9}, "memory_gb", "max_memory_gb (8)"),
        ({"gpus": 1}, "gpus", "max_gpus (0)"),
        ({"time_limit_minutes": 121}, "time_limit_minutes", "max_time_limit_minutes (120)"),
    ],
)
def test_session_violations(change: dict[str, Any], field: str, needle: str) -> None:
    violation(
        Policy(POLICY).check_session,
        field,
        needle,
        identity=who(),
        **{**OK, **change},
        active_sessions=0,
    )


def test_gpu_group_limits() -> None:
    pol = Policy(POLICY)
    violation(
        pol.check_session,
        "gpus",
        "max_gpus (2)",
        identity=who("gpu"),
        **{**OK, "gpus": 3},
        active_sessions=0,
    )
    violation(
        pol.check_session,
        "partition",
        "partition",
        identity=who("gpu"),
        **{**OK, "partition": "batch"},
        active_sessions=0,
    )


def test_concurrent_sessions() -> None:
    pol = Policy(POLICY)
    violation(pol.check_session, None, "max_sessions is 1", identity=who(), **OK, active_sessions=1)
    pol.check_session(who("gpu"), **OK, active_sessions=2)
    violation(
        pol.check_session, None, "max_sessions is 3", identity=who("gpu"), **OK, active_sessions=3
    )


def test_jobs() -> None:
    pol = Policy(POLICY)
    pol.check_job(who(), **OK, active_jobs=4)
    violation(pol.check_job, None, "max_jobs is 5", identity=who(), **OK, active_jobs=5)
    violation(
        pol.check_job, "cpus", "max_cpus", identity=who(), **{**OK, "cpus": 99}, active_jobs=0
    )


def test_no_matching_entry_allows_nothing() -> None:
    pol = Policy(PolicyConfig(groups={"staff": GroupPolicy()}))
    violation(
        pol.check_session,
        None,
        "no policy entry",
        identity=who("students"),
        **OK,
        active_sessions=0,
    )
    violation(pol.check_job, None, "no policy entry", identity=who(), **OK, active_jobs=0)
    pol.check_session(who("staff"), **OK, active_sessions=0)
    nothing = pol.effective(who())
    assert nothing.partitions == [] and nothing.max_sessions == 0


def test_default_config_policy() -> None:
    pol = Policy(PolicyConfig())  # "*" with defaults: no GPUs, 2 sessions
    pol.check_session(who(), **OK, active_sessions=1)
    violation(
        pol.check_session,
        "gpus",
        "max_gpus",
        identity=who(),
        **{**OK, "gpus": 1},
        active_sessions=0,
    )


def _shape(**kw: Any) -> Any:
    from types import SimpleNamespace

    base: dict[str, Any] = dict(nodes=1, ntasks=1, account="", qos="", gpu_type="")
    base.update(kw)
    return SimpleNamespace(**base)


def test_batch_shape_against_group_policy() -> None:
    policy = Policy(
        PolicyConfig(
            groups={
                "*": GroupPolicy(max_nodes=1, max_tasks=4, gpu_types=["t4"]),
                "cae": GroupPolicy(
                    max_nodes=4, max_tasks=256, accounts=["cae-*"], qos=["long"], gpu_types=[]
                ),
            }
        )
    )
    policy.check_batch(who(), _shape(ntasks=4, gpu_type="t4"))
    violation(policy.check_batch, "nodes", "max_nodes (1)", identity=who(), shape=_shape(nodes=2))
    violation(policy.check_batch, "ntasks", "max_tasks (4)", identity=who(), shape=_shape(ntasks=5))
    violation(
        policy.check_batch, "account", "'cae-1'", identity=who(), shape=_shape(account="cae-1")
    )
    violation(policy.check_batch, "qos", "'long'", identity=who(), shape=_shape(qos="long"))
    violation(
        policy.check_batch, "gpu_type", "'a100'", identity=who(), shape=_shape(gpu_type="a100")
    )
    # Members of cae get the union of both entries.
    policy.check_batch(who("cae"), _shape(nodes=4, ntasks=256, account="cae-1", qos="long"))
    policy.check_batch(who("cae"), _shape(gpu_type="t4"))
    violation(
        policy.check_batch, "account", "'other'", identity=who("cae"), shape=_shape(account="other")
    )
