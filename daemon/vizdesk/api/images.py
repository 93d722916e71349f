"""Image catalog endpoint: the Apptainer images the caller's group policy allows."""

from __future__ import annotations

from aiohttp import web

from .base import identity_of
from .context import ctx


async def list_images(request: web.Request) -> web.Response:
    c = ctx(request)
    identity = identity_of(request)
    if c.images is None:
        return web.json_response({"images": []})
    refresh = identity.is_admin and request.query.get("refresh", "").lower() in ("1", "true")
    allowed = []
    for image in await c.images.list(refresh=refresh):
        if not c.policy.image_allowed(identity, image.name):
            continue
        allowed.append(image.to_admin() if identity.is_admin else image.to_public())
    kind = request.query.get("kind")
    if kind:
        allowed = [i for i in allowed if i["kind"] == kind]
    return web.json_response({"images": allowed})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/images", list_images)
