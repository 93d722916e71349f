"""The template library's endpoints: list and search, read one (any kept version), its
history, and users' own templates: create, update (a new version), delete, clone.

| method and path | what |
| --- | --- |
| ``GET /api/v1/job-templates`` | ``?category=&tag=&q=&source=admin|user|all`` the templates the caller may use |
| ``POST /api/v1/job-templates`` | ``{name, definition, visibility?, groups?}`` → 201 a user template, version 1 |
| ``GET /api/v1/job-templates/{name}`` | an admin template |
| ``GET /api/v1/job-templates/~{owner}/{name}`` | a user template (``?version=N``) |
| ``GET .../versions`` | its history: version, author, created_at |
| ``PUT /api/v1/job-templates/~{owner}/{name}`` | ``{definition, visibility?, groups?}`` → 200 a new version (owner only) |
| ``DELETE /api/v1/job-templates/~{owner}/{name}`` | → 204 (owner only) |
| ``POST .../clone`` | ``{name, visibility?, groups?}`` → 201 a new user template of the caller |

Admin templates are read-only: PUT/DELETE on one → 403 ``read_only_template``. A user
template the caller may not see is a 404, exactly like one that does not exist.
"""  # noqa: E501

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..auth.policy import ask
from ..auth.types import AuthError, Identity
from ..core.validate import ValidationError, reject_unknown, require_object
from ..jobs.request import files_field
from ..jobs.template_library import matches
from ..jobs.template_refs import TemplateRef, parse_ref
from ..jobs.template_request import (
    validate_template_clone,
    validate_template_create,
    validate_template_update,
)
from ..jobs.templates import Template, validate_parameters
from . import base
from .audit import audit, denied_on_error
from .context import Context
from .errors import ApiError

routes = web.RouteTableDef()

SOURCES = ("all", "admin", "user")
MAX_QUERY_CHARS = 200
MAX_VERSION = 2**31 - 1
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)  # a YAML file's dates are text in JSON


def not_found() -> ApiError:
    return ApiError(404, "not_found", "no such template")


def ref_of(request: web.Request) -> TemplateRef:
    """The template reference in the path; a malformed one does not exist (404)."""
    owner = request.match_info.get("owner")
    name = request.match_info["name"]
    try:
        return parse_ref(f"~{owner}/{name}" if owner is not None else name)
    except ValidationError:
        raise not_found() from None


def hidden_as_404(handler: Handler) -> Handler:
    """A template the caller may not see (or that does not exist) → 404, never 400."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ValidationError as exc:
            if exc.code == "unknown_template":
                raise not_found() from None
            raise

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def offered(c: Context, identity: Identity, tmpl: Template) -> bool:
    """Admin templates are listed only if their defaults are within the caller's policy
    (as before the library existed); the caller's own and shared ones always are."""
    if tmpl.source != "admin":
        return True
    partition = tmpl.partition or c.cfg.slurm.default_partition
    try:
        c.policy.check_job(identity, active_jobs=0, **ask(partition, tmpl.image, tmpl.defaults()))
    except AuthError:
        return False
    return True


def _query_text(request: web.Request, name: str) -> str:
    value = request.query.get(name, "")
    if len(value) > MAX_QUERY_CHARS:
        raise ValidationError(name, f"{name} must be at most {MAX_QUERY_CHARS} characters")
    return value


@routes.get("/api/v1/job-templates")
async def list_templates(request: web.Request) -> web.Response:
    c, identity = base.caller(request)
    source = request.query.get("source", "all")
    if source not in SOURCES:
        raise ValidationError("source", f"source must be one of {list(SOURCES)}")
    category, tag, q = (_query_text(request, k) for k in ("category", "tag", "q"))
    out = [
        t.to_public(identity.user)
        for t in await c.jobs.library.list_for(identity, source)
        if matches(t, category=category, tag=tag, q=q) and offered(c, identity, t)
    ]
    return web.json_response({"templates": out}, dumps=_dumps)


async def _rate(c: Context, identity: Identity) -> None:
    await c.ratelimiter.hit(identity.user, "template_write")


@routes.post("/api/v1/job-templates")
async def create_template(request: web.Request) -> web.Response:
    c, identity = base.caller(request)
    with denied_on_error(request, "template.create"):
        req = validate_template_create(await base.read_json(request), identity)
        await _rate(c, identity)
        assert req.name is not None and req.visibility is not None
        tmpl = await c.jobs.library.create(
            identity,
            req.name,
            req.definition,
            visibility=req.visibility,
            groups=req.groups or [],
        )
    audit(request, "template.create", "ok", template=tmpl.ref, version=tmpl.version)
    return web.json_response(tmpl.to_public(identity.user), status=201, dumps=_dumps)


# The ~owner routes first: ".../~alice/versions" is alice's template "versions", never the
# history of an admin template named "~alice" (no such name can exist).


async def get_template(request: web.Request) -> web.Response:
    c, identity = base.caller(request)
    ref = ref_of(request)
    version = base.query_int(request, "version", 1, MAX_VERSION)
    tmpl = await c.jobs.library.resolve(identity, ref, version, field="template")
    if not c.jobs.library.visible(identity, tmpl):
        raise not_found()
    body = tmpl.to_public(identity.user)
    body["definition"] = dict(tmpl.definition)
    return web.json_response(body, dumps=_dumps)


async def template_versions(request: web.Request) -> web.Response:
    c, identity = base.caller(request)
    ref = ref_of(request)
    versions = await c.jobs.library.history(identity, ref)
    return web.json_response({"ref": str(ref), "versions": versions})


async def update_template(request: web.Request) -> web.Response:
    c, identity = base.caller(request)
    ref = ref_of(request)
    with denied_on_error(request, "template.update"):
        req = validate_template_update(await base.read_json(request), identity)
        await _rate(c, identity)
        tmpl = await c.jobs.library.update(
            identity, ref, req.definition, visibility=req.visibility, groups=req.groups
        )
    audit(request, "template.update", "ok", template=tmpl.ref, version=tmpl.version)
    return web.json_response(tmpl.to_public(identity.user), dumps=_dumps)


async def delete_template(request: web.Request) -> web.Response:
    c, identity = base.caller(request)
    ref = ref_of(request)
    with denied_on_error(request, "template.delete"):
        await _rate(c, identity)
        await c.jobs.library.delete(identity, ref)
    audit(request, "template.delete", "ok", template=str(ref))
    return web.Response(status=204)


async def clone_template(request: web.Request) -> web.Response:
    c, identity = base.caller(request)
    ref = ref_of(request)
    version = base.query_int(request, "version", 1, MAX_VERSION)
    with denied_on_error(request, "template.clone"):
        req = validate_template_clone(await base.read_json(request), identity)
        await _rate(c, identity)
        assert req.name is not None and req.visibility is not None
        tmpl = await c.jobs.library.clone(
            identity,
            ref,
            req.name,
            version=version,
            visibility=req.visibility,
            groups=req.groups or [],
        )
    audit(request, "template.clone", "ok", template=tmpl.ref, cloned_from=tmpl.cloned_from)
    return web.json_response(tmpl.to_public(identity.user), status=201, dumps=_dumps)


VALIDATE_FIELDS = frozenset({"files", "parameters"})


async def validate_template(request: web.Request) -> web.Response:
    """A set of uploads (and parameters) checked against the template without submitting:
    per slot ``missing``, ``too_big``, ``wrong_pattern``, schema errors with their JSON
    path...; 200 with ``valid`` either way (404 for another user's upload or a template
    the caller may not see)."""
    c, identity = base.caller(request)
    ref = ref_of(request)
    version = base.query_int(request, "version", 1, MAX_VERSION)
    body = require_object(await base.read_json(request))
    reject_unknown(body, VALIDATE_FIELDS)
    wanted = files_field(body.get("files")) or {}
    tmpl = await c.jobs.library.resolve(identity, ref, version, field="template")
    if not c.jobs.library.visible(identity, tmpl) or not tmpl.usable_by(identity.groups):
        raise not_found()
    checked = await c.jobs.check_inputs(identity.user, tmpl, wanted)
    out: dict[str, Any] = {"template": tmpl.ref, "version": tmpl.version}
    out.update(checked.report.to_json())
    try:
        validate_parameters(tmpl, body.get("parameters"), c.cfg)
    except ValidationError as exc:
        out["valid"] = False
        out["parameters"] = {"ok": False, "errors": [{"field": exc.field, "message": exc.message}]}
    else:
        out["parameters"] = {"ok": True, "errors": []}
    return web.json_response(out, dumps=_dumps)


def setup_routes(app: web.Application) -> None:
    app.add_routes(routes)
    for prefix in ("/api/v1/job-templates/~{owner}/{name}", "/api/v1/job-templates/{name}"):
        app.router.add_get(prefix, hidden_as_404(get_template))
        app.router.add_put(prefix, hidden_as_404(update_template))
        app.router.add_delete(prefix, hidden_as_404(delete_template))
        app.router.add_get(prefix + "/versions", hidden_as_404(template_versions))
        app.router.add_post(prefix + "/clone", hidden_as_404(clone_template))
        app.router.add_post(prefix + "/validate", hidden_as_404(validate_template))
