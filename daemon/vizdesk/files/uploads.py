"""Upload records (tus sessions) in Redis: created within the user's quota, written by one
request at a time, claimed once by a job, swept when they expire.

The bytes live in the user's staging directory (``uploads.dir``), one file per upload
named by its id, always handled by the user-file helper as the user; this module keeps
only the records: ``upload:<id>`` (JSON), the user's index ``user:<u>:uploads`` and the
expiry sorted set ``uploads:expiry``. Every change is published on the events channel as
``{"type": "upload", "user": U, "upload": <public view>}``.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from ..contract.keys import Keys
from ..core.errors import VizdeskError
from ..core.store import atomic_update, strs

UPLOAD_ID_BYTES = 16  # 32 hex digits
UPLOADING, COMPLETE, USED = "uploading", "complete", "used"
LOCK_SECONDS = 30.0  # a PATCH renews it; a daemon that dies frees it within this long


def valid_id(uid: str) -> bool:
    return len(uid) == 2 * UPLOAD_ID_BYTES and all(c in "0123456789abcdef" for c in uid)


def new_upload_id() -> str:
    return secrets.token_hex(UPLOAD_ID_BYTES)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass(kw_only=True)
class Upload:
    """One upload: ``length`` bytes declared, ``offset`` received so far, staged as
    ``root``/``rel`` (``rel`` is the id). ``state``: uploading → complete → used (claimed
    by a job, whose directory the file then moves to)."""

    id: str
    user: str
    filename: str
    length: int
    root: str
    rel: str
    offset: int = 0
    slot: str | None = None
    template: str | None = None
    state: str = UPLOADING
    created_at: float = 0.0
    updated_at: float = 0.0
    expires_at: float = 0.0
    used_at: float | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Upload:
        doc = json.loads(raw)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})

    @property
    def complete(self) -> bool:
        return self.offset >= self.length

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "filename": self.filename,
            "slot": self.slot,
            "template": self.template,
            "length": self.length,
            "offset": self.offset,
            "state": self.state,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "expires_at": _iso(self.expires_at),
            "url": f"/api/v1/uploads/{self.id}",
        }


class UploadError(VizdeskError):
    """Refusals of the upload store (quota, size, not found, busy, not claimable)."""


def not_found(field: str | None = None) -> UploadError:
    return UploadError(404, "not_found", "no such upload", field=field)


# Count the user's live (not yet used) uploads and the bytes they declared; store the new
# one only if both stay within the limits. One script: parallel creations cannot all pass.
# KEYS: record, user index, expiry zset. ARGV: max count, quota bytes, id, record JSON,
# record key prefix, expiry score. Returns {0|1 (count)|2 (bytes), count, bytes}.
CREATE_WITHIN_QUOTA = """
local count, total = 0, 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local raw = redis.call('GET', ARGV[5] .. id)
  if raw then
    local ok, doc = pcall(cjson.decode, raw)
    if ok and type(doc) == 'table' and doc['state'] ~= 'used' then
      count = count + 1
      total = total + (tonumber(doc['length']) or 0)
    end
  else
    redis.call('SREM', KEYS[2], id)
  end
end
local new = cjson.decode(ARGV[4])
if count + 1 > tonumber(ARGV[1]) then return {1, count, tostring(total)} end
if total + tonumber(new['length']) > tonumber(ARGV[2]) then
  return {2, count, tostring(total)}
end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[3])
return {0, count, tostring(total)}
"""
RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class UploadStore:
    """The upload records of every user.

    Contract: :meth:`create` refuses (413) beyond ``max_uploads`` live uploads or
    ``quota_bytes`` declared bytes per user, atomically; :meth:`get_owned` answers the same
    404 for an unknown id and another user's; :meth:`lock` lets one request at a time write
    or remove an upload; :meth:`claim` hands complete uploads to one job, once.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        max_file_bytes: int,
        quota_bytes: int,
        max_uploads: int,
        expire_seconds: float,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.max_file_bytes = max_file_bytes
        self.quota_bytes = quota_bytes
        self.max_uploads = max_uploads
        self.expire_seconds = expire_seconds

    # -- records ---------------------------------------------------------------------------

    async def create(
        self,
        user: str,
        filename: str,
        length: int,
        root: str,
        *,
        slot: str | None = None,
        template: str | None = None,
    ) -> Upload:
        """A new upload record (no bytes yet): 413 ``file_too_large``, ``quota_exceeded``
        or ``too_many_uploads`` (field ``Upload-Length``) before anything is stored."""
        if length > self.max_file_bytes:
            raise UploadError(
                413,
                "file_too_large",
                f"Upload-Length {length} is over the largest upload, {self.max_file_bytes} bytes",
                field="Upload-Length",
            )
        now = time.time()
        uid = new_upload_id()
        upload = Upload(
            id=uid,
            user=user,
            filename=filename,
            length=length,
            root=root,
            rel=uid,
            slot=slot,
            template=template,
            state=COMPLETE if length == 0 else UPLOADING,
            created_at=now,
            updated_at=now,
            expires_at=now + self.expire_seconds,
        )
        verdict, count, total = await self.redis.eval(
            CREATE_WITHIN_QUOTA,
            3,
            self.keys.upload(uid),
            self.keys.user_uploads(user),
            self.keys.uploads_expiry,
            self.max_uploads,
            self.quota_bytes,
            uid,
            upload.to_json(),
            self.keys.upload(""),
            upload.expires_at,
        )
        if int(verdict) == 1:
            raise UploadError(
                413,
                "too_many_uploads",
                f"{int(count)} uploads in progress or unused: at most {self.max_uploads}",
                field="Upload-Length",
            )
        if int(verdict) == 2:
            used = int(strs([total])[0])
            raise UploadError(
                413,
                "quota_exceeded",
                f"{used} bytes of {self.quota_bytes} in use by uploads: {length} more do not fit",
                field="Upload-Length",
            )
        await self.publish(upload)
        return upload

    async def get(self, uid: str) -> Upload | None:
        if not valid_id(uid):
            return None
        raw = await self.redis.get(self.keys.upload(uid))
        return Upload.from_json(raw) if raw else None

    async def get_owned(self, user: str, uid: str, field: str | None = None) -> Upload:
        """The caller's upload ``uid``; 404 for an unknown id and for another user's alike."""
        upload = await self.get(uid)
        if upload is None or upload.user != user:
            raise not_found(field)
        return upload

    async def list_user(self, user: str) -> list[Upload]:
        ids = strs(await self.redis.smembers(self.keys.user_uploads(user)))
        if not ids:
            return []
        raws = await self.redis.mget([self.keys.upload(i) for i in ids])
        found = [Upload.from_json(r) for r in raws if r]
        return sorted(found, key=lambda u: u.created_at)

    async def update(self, uid: str, **changes: Any) -> Upload | None:
        """Set fields of one upload (WATCH/MULTI), refresh its expiry, publish it; the
        upload as stored (None if there is none)."""

        def mutate(upload: Upload) -> bool:
            for name, value in changes.items():
                setattr(upload, name, value)
            upload.updated_at = time.time()
            if upload.state == UPLOADING and upload.complete:
                upload.state = COMPLETE
            upload.expires_at = upload.updated_at + self.expire_seconds
            return True

        def save(pipe: Any, upload: Upload) -> None:
            pipe.set(self.keys.upload(uid), upload.to_json())
            pipe.zadd(self.keys.uploads_expiry, {uid: upload.expires_at})
            pipe.publish(self.keys.events_channel, self.event(upload))

        return await atomic_update(
            self.redis, self.keys.upload(uid), Upload.from_json, mutate, save
        )

    async def forget(self, upload: Upload) -> None:
        """Drop the record (its file is gone or moved)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.upload(upload.id))
            pipe.srem(self.keys.user_uploads(upload.user), upload.id)
            pipe.zrem(self.keys.uploads_expiry, upload.id)
            await pipe.execute()

    async def expired(self, now: float | None = None, limit: int = 100) -> list[str]:
        """Ids whose expiry has passed (oldest first)."""
        got = await self.redis.zrangebyscore(
            self.keys.uploads_expiry, "-inf", now or time.time(), start=0, num=limit
        )
        return strs(got)

    # -- events ----------------------------------------------------------------------------

    def event(self, upload: Upload, state: str | None = None) -> str:
        view = upload.to_public()
        if state is not None:
            view["state"] = state
        return json.dumps({"type": "upload", "user": upload.user, "upload": view})

    async def publish(self, upload: Upload, state: str | None = None) -> None:
        await self.redis.publish(self.keys.events_channel, self.event(upload, state))

    # -- one writer at a time ----------------------------------------------------------------

    async def lock(self, uid: str) -> str | None:
        """A token for the upload's lock, or None when another request holds it."""
        token = secrets.token_hex(8)
        ok = await self.redis.set(
            self.keys.upload_lock(uid), token, nx=True, px=int(LOCK_SECONDS * 1000)
        )
        return token if ok else None

    async def renew(self, uid: str, token: str) -> bool:
        got = await self.redis.eval(
            RENEW_LOCK, 1, self.keys.upload_lock(uid), token, int(LOCK_SECONDS * 1000)
        )
        return bool(int(got))

    async def unlock(self, uid: str, token: str) -> None:
        await self.redis.eval(RELEASE_LOCK, 1, self.keys.upload_lock(uid), token)

    async def locked(self, uid: str) -> bool:
        return bool(await self.redis.exists(self.keys.upload_lock(uid)))

    # -- for job submission ------------------------------------------------------------------

    async def claim(
        self, user: str, upload_ids: Iterable[str], field: str = "files"
    ) -> list[Upload]:
        """Mark the user's complete uploads ``upload_ids`` as used, all or none (atomic):
        one upload feeds one job. 404 (``field``) for an unknown id or another user's, 409
        ``upload_incomplete`` / ``upload_used`` otherwise. The uploads, in the given order.

        Then move each file into the job directory as the user::

            await files.move(user, u.root, u.rel, job.workdir, u.filename)

        and :meth:`forget` it (or :meth:`release` it if the job is not submitted).
        """
        ids = list(dict.fromkeys(upload_ids))
        if not all(valid_id(i) for i in ids):
            raise not_found(field)
        keys = [self.keys.upload(i) for i in ids]
        if not keys:
            return []
        for _ in range(20):
            pipe: Any
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(*keys)
                    raws = [await pipe.get(k) for k in keys]
                    uploads = [Upload.from_json(r) if r else None for r in raws]
                    for uid, up in zip(ids, uploads, strict=True):
                        if up is None or up.user != user:
                            await pipe.unwatch()
                            raise UploadError(
                                404, "not_found", f"no such upload {uid}", field=field
                            )
                        if up.state == USED:
                            await pipe.unwatch()
                            raise UploadError(
                                409,
                                "upload_used",
                                f"upload {uid} is used by a job already",
                                field=field,
                            )
                        if up.state != COMPLETE or not up.complete:
                            await pipe.unwatch()
                            raise UploadError(
                                409,
                                "upload_incomplete",
                                f"upload {uid} is not complete",
                                field=field,
                            )
                    now = time.time()
                    done: list[Upload] = []
                    pipe.multi()
                    for key, up in zip(keys, uploads, strict=True):
                        assert up is not None
                        up.state, up.used_at, up.updated_at = USED, now, now
                        pipe.set(key, up.to_json())
                        pipe.publish(self.keys.events_channel, self.event(up))
                        done.append(up)
                    await pipe.execute()
                    return done
                except WatchError:
                    continue
        raise RuntimeError("uploads: too much contention")

    async def release(self, user: str, upload_ids: Iterable[str]) -> None:
        """Undo :meth:`claim` for uploads whose files were not moved (submission failed)."""
        for uid in upload_ids:
            up = await self.get(uid)
            if up is not None and up.user == user and up.state == USED:
                await self.update(uid, state=COMPLETE, used_at=None)
