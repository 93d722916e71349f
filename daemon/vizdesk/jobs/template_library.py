"""The template library: admin templates (YAML files, read-only) and users' own templates
(Redis, versioned), behind ONE way to find a template for a caller.

Contract:

- :meth:`TemplateLibrary.resolve` turns a reference (``name`` or ``~owner/name``, and an
  optional version) into a :class:`~.templates.Template` for a caller. A user template
  the caller may not see (:func:`~.template_refs.may_see`) raises exactly the same
  :class:`UnknownTemplate` as one that does not exist: nobody learns another user's
  private template exists.
- Every definition a user stores goes through :func:`parse_user_definition` (the strict
  parser of admin templates, plus the user-template rules) BEFORE it reaches the store;
  errors are 400s naming ``definition.<key path>``.
- Admin templates are never written through here: changing one is :class:`ReadOnlyTemplate`.
- The resolved template carries ``version`` (admin: the declared one or a content hash;
  user: the integer as text) so a job records what it ran.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog

from ..core.errors import VizdeskError
from ..core.store import LimitReached
from ..core.validate import NAME_RULE, ValidationError
from .template_refs import TemplateRef, is_template_name, may_see, parse_ref
from .templates import MAX_TEMPLATE_BYTES, Template, TemplateError, TemplateRegistry, parse_template
from .user_templates import TemplateExists, UserTemplateMeta, UserTemplateStore

if TYPE_CHECKING:
    from ..auth.types import Identity
    from ..config import Config

log = structlog.get_logger("vizdesk.jobs.library")

# Keys of a YAML template that a user template does not carry: who may use it is its
# visibility/groups (``groups`` would be an admin-style restriction), and its version is
# the store's counter.
NOT_IN_USER_TEMPLATES = {
    "groups": "a user template is shared through visibility/groups, not 'groups'",
    "version": "a user template's version is assigned by the store (1, 2, 3 ...)",
}
CACHE_SIZE = 1024


class UnknownTemplate(ValidationError):
    """No such template — or one the caller may not see (indistinguishable on purpose)."""

    def __init__(self, ref: str, field: str = "template") -> None:
        super().__init__(field, f"unknown template {ref[:100]!r}", "unknown_template")


class ReadOnlyTemplate(VizdeskError):
    """An admin template: changed on disk by the site's admins, never through the API."""

    def __init__(self, name: str) -> None:
        super().__init__(
            403,
            "read_only_template",
            f"template {name!r} is an admin template (read-only); clone it to change it",
            field="template",
        )


def parse_user_definition(cfg: Config, name: str, definition: Any) -> Template:
    """A user's definition parsed strictly; a 400 naming ``definition.<key path>``."""
    try:
        if not isinstance(definition, dict):
            raise TemplateError(name, "(top level)", "must be a mapping")
        for key, why in NOT_IN_USER_TEMPLATES.items():
            if key in definition:
                raise TemplateError(name, key, why)
        # A user template without an image would run its command directly on the node.
        # Ad-hoc jobs may do that only where allow_host_commands says so, and a shared
        # template runs as whoever LAUNCHES it (not as its author), so without this rule
        # any user could hand others host commands dressed up as a template.
        if definition.get("image") is None and not cfg.jobs.allow_host_commands:
            raise TemplateError(
                name, "image", "a user template needs an image (host commands are not allowed)"
            )
        tmpl = parse_template(name, definition, cfg)
    except TemplateError as exc:
        where = "definition" if exc.field.startswith("(") else f"definition.{exc.field}"
        raise ValidationError(where, exc.message, "invalid_template") from None
    return tmpl


def check_sharing(identity: Identity, visibility: Any, groups: Any) -> tuple[str, list[str]]:
    """``visibility`` (private | groups) and the groups to share with: only groups the
    owner is a member of; ``groups`` visibility needs at least one."""
    if visibility not in ("private", "groups"):
        raise ValidationError("visibility", "visibility must be private or groups")
    if groups is None:
        groups = []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValidationError("groups", "groups must be a list of group names")
    if len(groups) > 32:
        raise ValidationError("groups", "at most 32 groups")
    if visibility == "private" and groups:
        raise ValidationError("groups", "groups need visibility groups")
    if visibility == "groups" and not groups:
        raise ValidationError("groups", "visibility groups needs at least one group")
    for g in groups:
        if g not in identity.groups:
            raise ValidationError("groups", f"you are not a member of group {g[:64]!r}")
    return visibility, list(dict.fromkeys(groups))


def matches(tmpl: Template, *, category: str = "", tag: str = "", q: str = "") -> bool:
    """The library's filters: category and tag (exact, case-insensitive) and a search
    text found in the name, display name, description or a tag (case-insensitive)."""
    if category and tmpl.category.casefold() != category.casefold():
        return False
    if tag and tag.casefold() not in (t.casefold() for t in tmpl.tags):
        return False
    if q:
        needle = q.casefold()
        hay = [tmpl.name, tmpl.display_name, tmpl.description, *tmpl.tags]
        if not any(needle in h.casefold() for h in hay):
            return False
    return True


class TemplateLibrary:
    """Role: find, list, create, update, delete and clone templates for a caller (see the
    module's contract). ``store`` None: admin templates only."""

    def __init__(
        self, cfg: Config, registry: TemplateRegistry, store: UserTemplateStore | None
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.store = store
        self._parsed: dict[tuple[str, str, int], Template] = {}

    @property
    def user_templates(self) -> bool:
        """Whether users may keep their own templates here."""
        return self.store is not None and self.cfg.jobs.user_templates

    # ------------------------------------------------------------ read

    async def resolve(
        self,
        identity: Identity,
        ref: str | TemplateRef,
        version: int | None = None,
        *,
        field: str = "template",
    ) -> Template:
        """The template ``ref`` names, as ``identity`` may see it (see the module)."""
        parsed = ref if isinstance(ref, TemplateRef) else parse_ref(ref, field)
        if parsed.owner is None:
            tmpl = await self.registry.get(parsed.name)
            if version is not None and str(version) != tmpl.version:
                raise ValidationError(
                    "template_version",
                    f"admin template {tmpl.name!r} has only its current version {tmpl.version!r}",
                    "unknown_template_version",
                )
            return tmpl
        meta = await self._visible_meta(identity, parsed, field)
        wanted = meta.current if version is None else version
        if not meta.has_version(wanted):
            raise ValidationError(
                "template_version",
                f"template {meta.ref!r} has no version {wanted} (kept: "
                f"{[v.version for v in meta.versions]})",
                "unknown_template_version",
            )
        return await self._user_template(meta, wanted, field)

    def visible(self, identity: Identity, tmpl: Template) -> bool:
        """Whether the caller may see ``tmpl`` in the library (admin templates restricted
        to groups are hidden from others; a resolved user template is visible)."""
        return tmpl.source == "user" or tmpl.usable_by(identity.groups)

    async def list_for(self, identity: Identity, source: str = "all") -> list[Template]:
        """The admin templates the caller's groups may use, the caller's own and those
        shared with the caller's groups (invalid ones are logged and left out)."""
        out: list[Template] = []
        if source in ("all", "admin"):
            out += [t for t in await self.registry.all() if t.usable_by(identity.groups)]
        if source in ("all", "user") and self.store is not None and self.user_templates:
            metas = await self.store.list_owner(identity.user)
            seen = {m.ref for m in metas}
            metas += [m for m in await self.store.list_shared(identity.groups) if m.ref not in seen]
            for meta in metas:
                if not may_see(
                    meta.owner, meta.visibility, meta.groups, identity.user, identity.groups
                ):
                    continue
                try:
                    out.append(await self._user_template(meta, meta.current, "template"))
                except ValidationError:
                    continue
        return out

    async def history(self, identity: Identity, ref: str | TemplateRef) -> list[dict[str, Any]]:
        """The versions of a template: user templates their kept history, admin templates
        their one current version."""
        parsed = ref if isinstance(ref, TemplateRef) else parse_ref(ref)
        if parsed.owner is None:
            tmpl = await self.registry.get(parsed.name)
            if not self.visible(identity, tmpl):
                raise UnknownTemplate(str(parsed))
            return [{"version": tmpl.version, "author": None, "created_at": None}]
        meta = await self._visible_meta(identity, parsed, "template")
        return [v.to_public() for v in meta.versions]

    async def _visible_meta(
        self, identity: Identity, ref: TemplateRef, field: str
    ) -> UserTemplateMeta:
        assert ref.owner is not None
        meta = None
        if self.store is not None and self.user_templates:  # off: as if there were none
            meta = await self.store.get(ref.owner, ref.name)
        if meta is None or not may_see(
            meta.owner, meta.visibility, meta.groups, identity.user, identity.groups
        ):
            raise UnknownTemplate(str(ref), field)
        return meta

    async def _user_template(self, meta: UserTemplateMeta, version: int, field: str) -> Template:
        key = (meta.owner, meta.name, version)
        base = self._parsed.get(key)
        if base is None:
            assert self.store is not None
            definition = await self.store.definition(meta.owner, meta.name, version)
            if definition is None:
                raise UnknownTemplate(meta.ref, field)
            try:
                base = parse_user_definition(self.cfg, meta.name, definition)
            except ValidationError as exc:  # valid when stored; the site's config changed
                log.warning(
                    "user_template.invalid",
                    template=meta.ref,
                    version=version,
                    error=exc.message,
                    field=exc.field,
                )
                raise ValidationError(
                    field,
                    f"template {meta.ref!r} version {version} is no longer valid: "
                    f"{exc.field}: {exc.message}",
                    "invalid_template",
                ) from None
            if len(self._parsed) >= CACHE_SIZE:
                self._parsed.clear()
            self._parsed[key] = base  # versions never change: safe to keep
        return dataclasses.replace(
            base,
            source="user",
            owner=meta.owner,
            visibility=meta.visibility,
            shared_with=tuple(meta.groups),
            version=str(version),
            cloned_from=meta.cloned_from,
        )

    # ------------------------------------------------------------ write

    def _writable_store(self) -> UserTemplateStore:
        if self.store is None or not self.cfg.jobs.user_templates:
            raise VizdeskError(
                403, "user_templates_disabled", "this site does not keep users' own templates"
            )
        return self.store

    def _checked(self, name: str, definition: Any) -> dict[str, Any]:
        """The definition parsed strictly, as the JSON it is stored as (a YAML file's
        dates or other non-JSON scalars become text)."""
        parse_user_definition(self.cfg, name, definition)
        text = json.dumps(definition, default=str, ensure_ascii=False)
        if len(text.encode()) > MAX_TEMPLATE_BYTES:
            raise ValidationError("definition", f"larger than {MAX_TEMPLATE_BYTES} bytes")
        stored: dict[str, Any] = json.loads(text)
        parse_user_definition(self.cfg, name, stored)  # what is stored parses too
        return stored

    async def create(
        self,
        identity: Identity,
        name: str,
        definition: Any,
        *,
        visibility: str = "private",
        groups: Iterable[str] = (),
        cloned_from: str | None = None,
    ) -> Template:
        """Version 1 of a new template of the caller (409 when the name is taken, 403
        beyond ``jobs.max_user_templates``)."""
        store = self._writable_store()
        if not is_template_name(name):
            raise ValidationError("name", f"name must be {NAME_RULE}", "invalid_field")
        definition = self._checked(name, definition)
        try:
            meta = await store.create(
                identity.user,
                name,
                definition,
                visibility=visibility,
                groups=list(groups),
                author=identity.user,
                limit=self.cfg.jobs.max_user_templates,
                cloned_from=cloned_from,
            )
        except TemplateExists:
            raise VizdeskError(
                409, "template_exists", f"you already have a template {name!r}", field="name"
            ) from None
        except LimitReached as exc:
            raise VizdeskError(
                403,
                "template_limit",
                f"you have {exc.live} templates; at most {exc.limit} (jobs.max_user_templates)",
                field="name",
            ) from None
        return await self._user_template(meta, meta.current, "name")

    async def _own_meta(self, identity: Identity, ref: str | TemplateRef) -> UserTemplateMeta:
        """The caller's own user template ``ref``: admin → 403 read-only; somebody else's
        (visible or not) → the same 404-like error as a nonexistent one."""
        parsed = ref if isinstance(ref, TemplateRef) else parse_ref(ref)
        if parsed.owner is None:
            tmpl = await self.registry.get(parsed.name)  # unknown → 400 unknown_template
            if not self.visible(identity, tmpl):
                raise UnknownTemplate(str(parsed))
            raise ReadOnlyTemplate(parsed.name)
        store = self._writable_store()
        meta = await store.get(parsed.owner, parsed.name)
        if meta is None or meta.owner != identity.user:
            raise UnknownTemplate(str(parsed))
        return meta

    async def update(
        self,
        identity: Identity,
        ref: str | TemplateRef,
        definition: Any,
        *,
        visibility: str | None = None,
        groups: Iterable[str] | None = None,
    ) -> Template:
        """A new version of the caller's own template (optionally re-shared)."""
        meta = await self._own_meta(identity, ref)
        definition = self._checked(meta.name, definition)
        store = self._writable_store()
        updated = await store.update(
            meta.owner,
            meta.name,
            definition,
            visibility=visibility,
            groups=None if groups is None else list(groups),
            author=identity.user,
            keep=self.cfg.jobs.max_template_versions,
        )
        if updated is None:  # deleted meanwhile
            raise UnknownTemplate(meta.ref)
        return await self._user_template(updated, updated.current, "template")

    async def delete(self, identity: Identity, ref: str | TemplateRef) -> None:
        """Remove the caller's own template with its history."""
        meta = await self._own_meta(identity, ref)
        if not await self._writable_store().delete(meta.owner, meta.name):
            raise UnknownTemplate(meta.ref)

    async def clone(
        self,
        identity: Identity,
        ref: str | TemplateRef,
        name: str,
        *,
        version: int | None = None,
        visibility: str = "private",
        groups: Iterable[str] = (),
    ) -> Template:
        """A new template of the caller (version 1) from any template the caller may see."""
        self._writable_store()
        source = await self.resolve(identity, ref, version)
        if not self.visible(identity, source):
            raise UnknownTemplate(str(ref))
        definition = copy.deepcopy(dict(source.definition))
        for key in (*NOT_IN_USER_TEMPLATES, "name"):
            definition.pop(key, None)
        return await self.create(
            identity,
            name,
            definition,
            visibility=visibility,
            groups=groups,
            cloned_from=f"{source.ref}@{source.version}",
        )
