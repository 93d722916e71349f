"""Who am I (identity + effective policy), logout (revoke own token), admin revocation."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from ..core.validate import reject_unknown, require_object
from .audit import audit
from .base import identity_of, read_json
from .context import ctx
from .errors import ApiError


async def me(request: web.Request) -> web.Response:
    c = ctx(request)
    identity = identity_of(request)
    policy = dataclasses.asdict(c.policy.effective(identity))
    partitions = c.cfg.slurm.partitions
    if partitions and "*" in policy["partitions"]:
        policy["partitions"] = list(partitions)
    elif partitions:
        policy["partitions"] = [p for p in policy["partitions"] if p in partitions]
    return web.json_response(
        {
            "user": identity.user,
            "groups": list(identity.groups),
            "is_admin": identity.is_admin,
            "policy": policy,
            "default_partition": c.cfg.slurm.default_partition or None,
            "defaults": {
                "cpus": c.cfg.sessions.default_cpus,
                "memory_gb": c.cfg.sessions.default_memory_gb,
                "gpus": c.cfg.sessions.default_gpus,
                "time_limit_minutes": c.cfg.sessions.default_time_limit_minutes,
                "geometry": c.cfg.sessions.default_geometry,
            },
            "uploads": {
                "max_file_bytes": c.cfg.uploads.max_file_bytes,
                "quota_bytes": c.cfg.uploads.quota_bytes,
                "expire_hours": c.cfg.uploads.expire_hours,
            },
            "token_expires_at": identity.exp,
        }
    )


async def logout(request: web.Request) -> web.Response:
    """Revoke the caller's own token (its jti) at once."""
    c = ctx(request)
    identity = identity_of(request)
    if not identity.jti:
        raise ApiError(400, "no_jti", "this token has no jti and cannot be revoked")
    await c.authenticator.revoke_jti(identity.jti, identity.exp)
    audit(request, "token.revoke", "ok", jti=identity.jti, reason="logout")
    return web.json_response({"revoked": identity.jti})


async def admin_revoke(request: web.Request) -> web.Response:
    c = ctx(request)
    identity = identity_of(request)
    if not identity.is_admin:
        audit(request, "token.revoke", "denied")
        raise ApiError(403, "forbidden", "admin only")
    body = require_object(await read_json(request))
    reject_unknown(body, frozenset({"jti", "exp"}))
    jti = body.get("jti")
    exp = body.get("exp")
    if not isinstance(jti, str) or not 0 < len(jti) <= 256:
        raise ApiError(400, "invalid_field", "jti must be a non-empty string", field="jti")
    if exp is not None and (isinstance(exp, bool) or not isinstance(exp, int)):
        raise ApiError(400, "invalid_field", "exp must be a UNIX time", field="exp")
    await c.authenticator.revoke_jti(jti, exp)
    audit(request, "token.revoke", "ok", jti=jti)
    return web.json_response({"revoked": jti})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/me", me)
    app.router.add_post("/api/v1/auth/logout", logout)
    app.router.add_post("/api/v1/admin/revoke", admin_revoke)
