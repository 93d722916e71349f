"""Users' own job templates in Redis, with an immutable version history.

One hash per template (:meth:`~vizdesk.contract.keys.Keys.user_template`): field ``meta``
(JSON of :class:`UserTemplateMeta`: sharing and the list of kept versions) and one field
``v:<n>`` per kept version holding the definition (the same mapping a YAML template file
holds) exactly as it was stored. A set per owner indexes the names, a set per group the
``owner/name`` of templates shared with it.

Contract: versions are 1, 2, 3 … and never change once written; ``update`` appends one
and drops the oldest beyond ``keep`` (never the current one); ``create`` enforces the
per-owner limit atomically (one Lua script counts and stores). The store checks nothing
about the definition itself: the library parses it with the strict template parser
BEFORE it calls the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from ..contract.jsonsafe import loads_bounded
from ..contract.keys import Keys
from ..core.records import iso, utcnow
from ..core.store import LimitReached, strs

# KEYS: the template hash, the owner's index, then the group sets it is shared with.
# ARGV: limit, name, meta JSON, definition JSON, "owner/name".
# Returns -1 when stored, -2 when the name is taken, else the owner's count (at the limit).
CREATE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -2 end
local n = redis.call('SCARD', KEYS[2])
if n >= tonumber(ARGV[1]) then return n end
redis.call('HSET', KEYS[1], 'meta', ARGV[3], 'v:1', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[2])
for i = 3, #KEYS do redis.call('SADD', KEYS[i], ARGV[5]) end
return -1
"""


class TemplateExists(Exception):
    """The owner already has a template of that name."""


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@dataclass(frozen=True)
class VersionInfo:
    """One entry of a template's history."""

    version: int
    author: str
    created_at: str  # ISO-8601 UTC

    def to_public(self) -> dict[str, Any]:
        return {"version": self.version, "author": self.author, "created_at": self.created_at}


@dataclass
class UserTemplateMeta:
    """Everything about a user template except its definitions."""

    owner: str
    name: str
    visibility: str  # private | groups
    groups: list[str]  # shared with (visibility groups)
    created_at: str
    updated_at: str
    versions: list[VersionInfo] = field(default_factory=list)  # oldest first
    cloned_from: str | None = None  # "ref@version" of the template it was cloned from

    @property
    def current(self) -> int:
        return self.versions[-1].version

    @property
    def ref(self) -> str:
        return f"~{self.owner}/{self.name}"

    def has_version(self, version: int) -> bool:
        return any(v.version == version for v in self.versions)

    def to_json(self) -> str:
        return json.dumps(
            {
                "owner": self.owner,
                "name": self.name,
                "visibility": self.visibility,
                "groups": self.groups,
                "created_at": self.created_at,
                "updated_at": self.updated_at,
                "versions": [v.to_public() for v in self.versions],
                "cloned_from": self.cloned_from,
            }
        )

    @classmethod
    def from_json(cls, raw: Any) -> UserTemplateMeta:
        doc = loads_bounded(_text(raw))
        return cls(
            owner=doc["owner"],
            name=doc["name"],
            visibility=doc["visibility"],
            groups=list(doc.get("groups") or []),
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
            versions=[VersionInfo(**v) for v in doc["versions"]],
            cloned_from=doc.get("cloned_from"),
        )


def _now() -> str:
    stamp = iso(utcnow())
    assert stamp is not None
    return stamp


class UserTemplateStore:
    """Role: persistence of user templates (see the module's contract)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self.redis: Any = redis  # redis-py's pipeline/hash methods are loosely typed
        self.keys = keys
        self._create = redis.register_script(CREATE_SCRIPT)

    async def create(
        self,
        owner: str,
        name: str,
        definition: dict[str, Any],
        *,
        visibility: str,
        groups: list[str],
        author: str,
        limit: int,
        cloned_from: str | None = None,
    ) -> UserTemplateMeta:
        """Version 1 of a new template. :class:`TemplateExists` when the name is taken,
        :class:`~vizdesk.core.store.LimitReached` when ``owner`` has ``limit`` already."""
        now = _now()
        meta = UserTemplateMeta(
            owner=owner,
            name=name,
            visibility=visibility,
            groups=list(groups) if visibility == "groups" else [],
            created_at=now,
            updated_at=now,
            versions=[VersionInfo(1, author, now)],
            cloned_from=cloned_from,
        )
        result = int(
            await self._create(
                keys=[
                    self.keys.user_template(owner, name),
                    self.keys.user_templates(owner),
                    *(self.keys.group_templates(g) for g in meta.groups),
                ],
                args=[limit, name, meta.to_json(), json.dumps(definition), f"{owner}/{name}"],
            )
        )
        if result == -2:
            raise TemplateExists(f"~{owner}/{name}")
        if result >= 0:
            raise LimitReached(result, limit)
        return meta

    async def get(self, owner: str, name: str) -> UserTemplateMeta | None:
        raw = await self.redis.hget(self.keys.user_template(owner, name), "meta")
        return UserTemplateMeta.from_json(raw) if raw else None

    async def definition(self, owner: str, name: str, version: int) -> dict[str, Any] | None:
        """The stored definition of one version (None when it is not kept)."""
        key = self.keys.user_template(owner, name)
        raw = await self.redis.hget(key, f"v:{version}")
        if not raw:
            return None
        doc = loads_bounded(_text(raw))
        return doc if isinstance(doc, dict) else None

    async def update(
        self,
        owner: str,
        name: str,
        definition: dict[str, Any],
        *,
        visibility: str | None,
        groups: list[str] | None,
        author: str,
        keep: int,
    ) -> UserTemplateMeta | None:
        """Append a new version (and optionally change the sharing); None when there is no
        such template. Keeps at most ``keep`` versions (at least the new one)."""
        key = self.keys.user_template(owner, name)
        body = json.dumps(definition)
        for _ in range(20):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, "meta")
                    if not raw:
                        await pipe.unwatch()
                        return None
                    meta = UserTemplateMeta.from_json(raw)
                    old_groups = list(meta.groups)
                    if visibility is not None:
                        meta.visibility = visibility
                        meta.groups = list(groups or []) if visibility == "groups" else []
                    now = _now()
                    version = meta.current + 1
                    meta.versions.append(VersionInfo(version, author, now))
                    dropped = meta.versions[: max(0, len(meta.versions) - max(1, keep))]
                    meta.versions = meta.versions[len(dropped) :]
                    meta.updated_at = now
                    pipe.multi()
                    pipe.hset(key, mapping={"meta": meta.to_json(), f"v:{version}": body})
                    if dropped:
                        pipe.hdel(key, *(f"v:{v.version}" for v in dropped))
                    member = f"{owner}/{name}"
                    for g in set(old_groups) - set(meta.groups):
                        pipe.srem(self.keys.group_templates(g), member)
                    for g in meta.groups:
                        pipe.sadd(self.keys.group_templates(g), member)
                    await pipe.execute()
                    return meta
                except WatchError:
                    continue
        raise RuntimeError(f"{key}: too much contention")

    async def delete(self, owner: str, name: str) -> bool:
        """Remove the template and all its versions; False when there was none."""
        key = self.keys.user_template(owner, name)
        for _ in range(20):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, "meta")
                    if not raw:
                        await pipe.unwatch()
                        await self.redis.srem(self.keys.user_templates(owner), name)
                        return False
                    meta = UserTemplateMeta.from_json(raw)
                    pipe.multi()
                    pipe.delete(key)
                    pipe.srem(self.keys.user_templates(owner), name)
                    for g in meta.groups:
                        pipe.srem(self.keys.group_templates(g), f"{owner}/{name}")
                    await pipe.execute()
                    return True
                except WatchError:
                    continue
        raise RuntimeError(f"{key}: too much contention")

    async def _metas(self, pairs: list[tuple[str, str]]) -> list[UserTemplateMeta | None]:
        if not pairs:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for owner, name in pairs:
                pipe.hget(self.keys.user_template(owner, name), "meta")
            raws = await pipe.execute()
        return [UserTemplateMeta.from_json(r) if r else None for r in raws]

    async def count(self, owner: str) -> int:
        return int(await self.redis.scard(self.keys.user_templates(owner)))

    async def list_owner(self, owner: str) -> list[UserTemplateMeta]:
        """The owner's templates, by name."""
        names = sorted(strs(await self.redis.smembers(self.keys.user_templates(owner))))
        metas = await self._metas([(owner, n) for n in names])
        return [m for m in metas if m is not None]

    async def list_shared(self, groups: list[str] | tuple[str, ...]) -> list[UserTemplateMeta]:
        """The templates shared with any of ``groups`` (still shared: checked on the meta)."""
        if not groups:
            return []
        members = sorted(
            set(strs(await self.redis.sunion([self.keys.group_templates(g) for g in groups])))
        )
        pairs = [tuple(m.split("/", 1)) for m in members if "/" in m]
        metas = await self._metas([(p[0], p[1]) for p in pairs])
        wanted = set(groups)
        return [
            m
            for m in metas
            if m is not None and m.visibility == "groups" and not wanted.isdisjoint(m.groups)
        ]
