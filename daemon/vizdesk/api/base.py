"""What every handler shares: the caller's identity, the JSON body, the record in the
path the caller may see, and the list / delete handlers of sessions and jobs alike."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from ..auth.types import Identity
from ..contract.keys import SESSION_ID_RE
from ..core.records import SlurmRecord
from ..core.store import BadCursor, Cursor, RecordStore
from ..core.validate import ValidationError, parse_json_body
from .audit import audit
from .context import Context, ctx
from .errors import ApiError

R = TypeVar("R", bound=SlurmRecord[Any])

RECORD_ID_RE = SESSION_ID_RE  # 16 lowercase hex digits: session and job ids alike


def caller(request: web.Request) -> tuple[Context, Identity]:
    """The daemon's context and the authenticated caller of ``request``."""
    return ctx(request), identity_of(request)


def identity_of(request: web.Request) -> Identity:
    """The caller the middleware authenticated; a 401 (never a KeyError, never a 500) if
    it did not, e.g. for a handler reached by a path the middleware took as public."""
    identity: Identity | None = request.get("identity")
    if identity is None:
        raise ApiError(
            401,
            "missing_token",
            "an Authorization: Bearer <JWT> header is required",
            headers={"WWW-Authenticate": 'Bearer realm="vizdesk"'},
        )
    return identity


def query_int(request: web.Request, name: str, lo: int, hi: int) -> int | None:
    """Query parameter ``name`` as an integer within ``lo``..``hi`` (None when absent).

    Only ASCII digits count (``str.isdigit`` is true for "²", which ``int`` refuses; ``int``
    itself takes "+1", " 1", "1_0" and other scripts' digits): anything else is a 400
    naming the parameter. At most as many digits as ``hi`` has, so never a huge int
    (``lo`` >= 0: no signs).
    """
    raw = request.query.get(name)
    if raw is None:
        return None
    value = int(raw) if re.fullmatch(f"[0-9]{{1,{len(str(hi))}}}", raw) else None
    if value is None or not lo <= value <= hi:
        raise ValidationError(name, f"{name} must be an integer between {lo} and {hi}")
    return value


def query_bool(request: web.Request, name: str) -> bool:
    """Query parameter ``name`` as a boolean: true/1 or false/0 (absent: false)."""
    raw = request.query.get(name)
    if raw is None:
        return False
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise ValidationError(name, f"{name} must be true or false")


async def read_json(request: web.Request) -> Any:
    """The body as JSON: 413 when too large, 415/400 when not JSON, 400 (field ``body``)
    when nested deeper than :data:`~vizdesk.contract.jsonsafe.MAX_JSON_DEPTH`."""
    if request.content_type not in ("application/json", "application/octet-stream", ""):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = await request.read()  # raises 413 over client_max_size
    if not raw.strip():
        return {}
    return parse_json_body(raw)  # 400 when not JSON or nested too deep


async def owned_record(
    request: web.Request, identity: Identity, store: RecordStore[R], what: str
) -> R:
    """The ``what`` (session, job) in the path if the caller may see it; otherwise 404
    (never 403: another user's record does not exist for the caller)."""
    rid = request.match_info["id"]
    if not RECORD_ID_RE.fullmatch(rid):
        raise ApiError(404, "not_found", f"no such {what}")
    record = await store.get(rid)
    if record is None or (record.user != identity.user and not identity.is_admin):
        raise ApiError(404, "not_found", f"no such {what}")
    return record


async def list_records(request: web.Request, store: RecordStore[R], plural: str) -> web.Response:
    """The caller's records (admins: ``?all=true``), optionally ``?state=`` filtered."""
    identity = identity_of(request)
    want_all = request.query.get("all", "").lower() in ("1", "true", "yes")
    if want_all and not identity.is_admin:
        raise ApiError(403, "forbidden", f"only admins may list all {plural}", field="all")
    state = (request.query.get("state") or "").upper()
    if "limit" in request.query or "cursor" in request.query:
        limit = page_limit(request.query.get("limit"))
        after = None
        if "cursor" in request.query:
            try:
                after = Cursor.decode(request.query["cursor"])
            except BadCursor as exc:
                raise ApiError(400, "invalid_field", str(exc), field="cursor") from None
        page, nxt = await store.page(None if want_all else identity.user, limit, after, state=state)
        return web.json_response(
            {plural: [r.to_public() for r in page], "next_cursor": nxt.encode() if nxt else None}
        )
    found = await (store.list_all() if want_all else store.list_user(identity.user))
    if state:
        found = [r for r in found if r.state.value == state]
    return web.json_response({plural: [r.to_public() for r in found]})


#: Page sizes of the list endpoints (``?limit=``); without limit and cursor a list
#: answers every record at once, oldest first (the portal's and older clients' form).
DEFAULT_PAGE_LIMIT = 50
MAX_PAGE_LIMIT = 500


def page_limit(raw: str | None) -> int:
    """``?limit=`` → 1..MAX_PAGE_LIMIT (absent: DEFAULT_PAGE_LIMIT); else a 400."""
    if raw is None or raw == "":
        return DEFAULT_PAGE_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_LIMIT:
        raise ApiError(
            400,
            "invalid_field",
            f"limit must be an integer from 1 to {MAX_PAGE_LIMIT}",
            field="limit",
        )
    return int(raw)


async def get_record(request: web.Request, store: RecordStore[R], what: str) -> web.Response:
    record = await owned_record(request, identity_of(request), store, what)
    return web.json_response(record.to_public())


async def delete_record(
    request: web.Request,
    store: RecordStore[R],
    what: str,
    stop: Callable[[R, str], Awaitable[R]],
    **audit_fields: Callable[[R], Any],
) -> web.Response:
    """Stop the record in the path (``by`` "user" or "admin NAME") → 202, audited."""
    identity = identity_of(request)
    try:
        record = await owned_record(request, identity, store, what)
    except ApiError:
        audit(request, f"{what}.delete", "denied", **{what: request.match_info["id"][:32]})
        raise
    by = "admin " + identity.user if record.user != identity.user else "user"
    updated = await stop(record, by)
    ctx(request).tracker.poke()
    extra = {k: f(record) for k, f in audit_fields.items()}
    audit(request, f"{what}.delete", "ok", **{what: record.id}, owner=record.user, **extra)
    return web.json_response(updated.to_public(), status=202)
