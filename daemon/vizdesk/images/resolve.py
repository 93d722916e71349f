"""Resolution of a user's image reference (catalog id or name) to a ``.sif`` path.

The one place the domain turns a reference into an image, for desktops and batch jobs
alike: the catalog when one is configured, else the named paths of ``sessions.images``.
What policy matches is the catalog *name*, whatever reference the caller sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..core.validate import ValidationError
from .catalog import ImageCatalog

IMAGE_ID_RE = re.compile(r"^[0-9a-f]{12}$")  # see catalog.image_id


async def resolve_image(
    catalog: ImageCatalog | None,
    seeds: Mapping[str, str],
    ref: str,
    *,
    field: str,
    where: str = "",
    app: str | None = None,
    app_field: str = "app",
    desktop: bool = False,
) -> tuple[str, str]:
    """(catalog name, .sif path) of ``ref``; a 400 naming ``field`` when it is unknown,
    ``app_field`` when the image has no ``app``, and for a ``desktop`` a compute image."""
    path: str | None = None
    name = ref
    apps: list[str] | None = None
    if catalog is not None:
        image = await catalog.resolve(ref)
        if image is not None:
            path, apps = str(image.path), image.apps
            if IMAGE_ID_RE.fullmatch(ref):  # found by id; otherwise ``ref`` is the name
                name = image.name
            if desktop and image.kind == "compute":
                raise ValidationError(
                    field,
                    f"image {name!r} is a compute image, not a desktop",
                    "not_a_desktop_image",
                )
    elif ref in seeds:
        path = seeds[ref]
    if path is None:
        raise ValidationError(field, f"unknown image {ref!r}{where}", "unknown_image")
    if app is not None and apps is not None and app not in apps:
        raise ValidationError(app_field, f"image {ref!r} has no app {app!r}{where}", "unknown_app")
    return name, path
