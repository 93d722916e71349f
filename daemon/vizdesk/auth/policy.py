"""Group policy: what a caller may ask for, from ``policy.groups`` in the config.

A caller's effective policy is the most permissive combination of the entries of each of
their groups plus the entry ``"*"`` (which applies to everybody): the union of allowed
partitions and images, the largest of each maximum. A caller matched by no entry may do
nothing. Partition and image lists hold names or shell-style patterns (``viz*``); ``"*"``
allows anything. A request outside the policy raises ``AuthError(403, "policy_violation")``
whose message names the limit and whose ``field`` names the offending request field.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Protocol, TypedDict, Unpack

from ..config import GroupPolicy, PolicyConfig
from .types import AuthError, Identity

EVERYONE = "*"


def _nothing() -> GroupPolicy:
    return GroupPolicy(
        partitions=[],
        images=[],
        max_gpus=0,
        max_cpus=0,
        max_memory_gb=0,
        max_time_limit_minutes=0,
        max_sessions=0,
        max_jobs=0,
        max_nodes=0,
        max_tasks=0,
        accounts=[],
        qos=[],
        gpu_types=[],
    )


def _union(a: list[str], b: list[str]) -> list[str]:
    if EVERYONE in a or EVERYONE in b:
        return [EVERYONE]
    return list(dict.fromkeys([*a, *b]))


def _allowed(value: str, patterns: list[str]) -> bool:
    return any(p == EVERYONE or fnmatchcase(value, p) for p in patterns)


def _deny(message: str, field: str | None) -> AuthError:
    return AuthError(403, "policy_violation", message, field=field)


class Policy:
    """Evaluates :class:`PolicyConfig` for an :class:`Identity`."""

    def __init__(self, cfg: PolicyConfig) -> None:
        self.cfg = cfg

    def matching_groups(self, identity: Identity) -> list[str]:
        """Names of the policy entries that apply to ``identity`` ("*" first)."""
        names = [EVERYONE, *identity.groups]
        return [g for g in dict.fromkeys(names) if g in self.cfg.groups]

    def effective(self, identity: Identity) -> GroupPolicy:
        """The most permissive combination of every entry that applies to ``identity``."""
        result = _nothing()
        for name in self.matching_groups(identity):
            p = self.cfg.groups[name]
            result = GroupPolicy(
                partitions=_union(result.partitions, p.partitions),
                images=_union(result.images, p.images),
                max_gpus=max(result.max_gpus, p.max_gpus),
                max_cpus=max(result.max_cpus, p.max_cpus),
                max_memory_gb=max(result.max_memory_gb, p.max_memory_gb),
                max_time_limit_minutes=max(result.max_time_limit_minutes, p.max_time_limit_minutes),
                max_sessions=max(result.max_sessions, p.max_sessions),
                max_jobs=max(result.max_jobs, p.max_jobs),
                max_nodes=max(result.max_nodes, p.max_nodes),
                max_tasks=max(result.max_tasks, p.max_tasks),
                accounts=_union(result.accounts, p.accounts),
                qos=_union(result.qos, p.qos),
                gpu_types=_union(result.gpu_types, p.gpu_types),
                max_extension_minutes=max(result.max_extension_minutes, p.max_extension_minutes),
            )
        return result

    def image_allowed(self, identity: Identity, image_name: str) -> bool:
        """Whether the caller's groups allow the catalog image called ``image_name``."""
        return bool(self.matching_groups(identity)) and _allowed(
            image_name, self.effective(identity).images
        )

    def _check_resources(
        self, identity: Identity, *, partition: str, image: str | None, **size: Unpack[Size]
    ) -> GroupPolicy:
        cpus, memory_gb = size["cpus"], size["memory_gb"]
        gpus, time_limit_minutes = size["gpus"], size["time_limit_minutes"]
        if not self.matching_groups(identity):
            raise _deny("no policy entry applies to your groups: nothing is allowed", None)
        p = self.effective(identity)
        if not _allowed(partition, p.partitions):
            what = f"partition {partition!r}" if partition else "the default partition"
            raise _deny(f"{what} is not in your allowed partitions", "partition")
        if image is not None and not _allowed(image, p.images):
            raise _deny(f"image {image!r} is not in your allowed images", "image")
        if cpus > p.max_cpus:
            raise _deny(f"cpus {cpus} exceeds your max_cpus ({p.max_cpus})", "cpus")
        if memory_gb > p.max_memory_gb:
            raise _deny(
                f"memory_gb {memory_gb} exceeds your max_memory_gb ({p.max_memory_gb})",
                "memory_gb",
            )
        if gpus > p.max_gpus:
            raise _deny(f"gpus {gpus} exceeds your max_gpus ({p.max_gpus})", "gpus")
        if time_limit_minutes > p.max_time_limit_minutes:
            raise _deny(
                f"time_limit_minutes {time_limit_minutes} exceeds your max_time_limit_minutes "
                f"({p.max_time_limit_minutes})",
                "time_limit_minutes",
            )
        return p

    def check_session(
        self, identity: Identity, *, active_sessions: int, **ask: Unpack[Ask]
    ) -> None:
        """Raise ``AuthError(403, "policy_violation")`` unless the new session is allowed.

        ``partition`` is the partition the job will really use ("" only if Slurm picks it:
        then only a policy allowing "*" passes). ``active_sessions`` counts the caller's
        sessions that are not ended, without the new one.
        """
        p = self._check_resources(identity, **ask)
        check_count(active_sessions, p.max_sessions, "session", "max_sessions")

    def check_job(self, identity: Identity, *, active_jobs: int, **ask: Unpack[Ask]) -> None:
        """Like :meth:`check_session`, for a batch job, against ``max_jobs``."""
        p = self._check_resources(identity, **ask)
        check_count(active_jobs, p.max_jobs, "job", "max_jobs")

    def check_batch(self, identity: Identity, shape: BatchShape) -> None:
        """A batch job's nodes, tasks, account, QOS and GPU type against the policy
        (403 ``policy_violation`` naming the field); the size is :meth:`check_job`'s."""
        p = self.effective(identity)
        if shape.nodes > p.max_nodes:
            raise _deny(f"nodes {shape.nodes} exceeds your max_nodes ({p.max_nodes})", "nodes")
        if shape.ntasks > p.max_tasks:
            raise _deny(f"ntasks {shape.ntasks} exceeds your max_tasks ({p.max_tasks})", "ntasks")
        for key, value, allowed in (
            ("account", shape.account, p.accounts),
            ("qos", shape.qos, p.qos),
            ("gpu_type", shape.gpu_type, p.gpu_types),
        ):
            if value and not _allowed(value, allowed):
                raise _deny(f"{key} {value!r} is not allowed for your groups", key)


class BatchShape(Protocol):
    """What :meth:`Policy.check_batch` reads of a batch job (a ``JobSpec`` is one)."""

    @property
    def nodes(self) -> int: ...
    @property
    def ntasks(self) -> int: ...
    @property
    def account(self) -> str: ...
    @property
    def qos(self) -> str: ...
    @property
    def gpu_type(self) -> str: ...


def check_count(active: int, limit: int, what: str, key: str) -> None:
    """403 ``policy_violation`` when ``active`` live records already reach ``limit``."""
    if active >= limit:
        raise _deny(f"you already have {active} active {what}(s): {key} is {limit}", None)


class Size(TypedDict):
    """The resources of a request, as policy checks them."""

    cpus: int
    memory_gb: int
    gpus: int
    time_limit_minutes: int


class Ask(Size):
    """What a new session or job asks for (``image``: the catalog *name*)."""

    partition: str
    image: str | None


class Sized(Protocol):
    """Anything that carries the four resources (a request, a job spec)."""

    @property
    def cpus(self) -> int: ...
    @property
    def memory_gb(self) -> int: ...
    @property
    def gpus(self) -> int: ...
    @property
    def time_limit_minutes(self) -> int: ...


def ask(partition: str, image: str | None, sized: Sized) -> Ask:
    """The :class:`Ask` of a request or spec for ``partition`` and image ``image``."""
    return Ask(
        partition=partition,
        image=image,
        cpus=sized.cpus,
        memory_gb=sized.memory_gb,
        gpus=sized.gpus,
        time_limit_minutes=sized.time_limit_minutes,
    )
