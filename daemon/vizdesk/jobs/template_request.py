"""The bodies of the template library's write endpoints, typed; nothing resolved.

| body | of |
| --- | --- |
| ``{name, definition, visibility?, groups?}`` | ``POST /api/v1/job-templates`` |
| ``{definition, visibility?, groups?}`` | ``PUT /api/v1/job-templates/~owner/name`` |
| ``{name, visibility?, groups?}`` | ``POST .../clone`` |

Contract: an unknown key or a wrong type is a 400 naming the field; the definition is
only checked to be an object here (the library parses it strictly, naming
``definition.<key path>``); sharing is checked against the caller by the library's
:func:`~.template_library.check_sharing`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.validate import NAME_RULE, ValidationError, reject_unknown, require_object
from .template_library import check_sharing
from .template_refs import is_template_name

if TYPE_CHECKING:
    from ..auth.types import Identity

CREATE_FIELDS = frozenset({"name", "definition", "visibility", "groups"})
UPDATE_FIELDS = frozenset({"definition", "visibility", "groups"})
CLONE_FIELDS = frozenset({"name", "visibility", "groups"})


@dataclass(frozen=True)
class TemplateWrite:
    """A checked body: ``visibility``/``groups`` None on an update that keeps them."""

    name: str | None
    definition: dict[str, Any] | None
    visibility: str | None
    groups: list[str] | None


def _name(body: dict[str, Any]) -> str:
    name = body.get("name")
    if name is None:
        raise ValidationError("name", "name is required")
    if not is_template_name(name):
        raise ValidationError("name", f"name must be {NAME_RULE}")
    assert isinstance(name, str)
    return name


def _definition(body: dict[str, Any]) -> dict[str, Any]:
    definition = body.get("definition")
    if definition is None:
        raise ValidationError("definition", "definition is required (a template object)")
    if not isinstance(definition, dict):
        raise ValidationError("definition", "definition must be an object (a template)")
    return definition


def _sharing(
    identity: Identity, body: dict[str, Any], *, keep: bool
) -> tuple[str | None, list[str] | None]:
    if keep and body.get("visibility") is None:
        if body.get("groups") is not None:
            raise ValidationError("groups", "groups need visibility groups")
        return None, None
    return check_sharing(identity, body.get("visibility", "private"), body.get("groups"))


def validate_template_create(body: Any, identity: Identity) -> TemplateWrite:
    body = require_object(body)
    reject_unknown(body, CREATE_FIELDS)
    name, definition = _name(body), _definition(body)
    visibility, groups = _sharing(identity, body, keep=False)
    return TemplateWrite(name, definition, visibility, groups)


def validate_template_update(body: Any, identity: Identity) -> TemplateWrite:
    body = require_object(body)
    reject_unknown(body, UPDATE_FIELDS)
    definition = _definition(body)
    visibility, groups = _sharing(identity, body, keep=True)
    return TemplateWrite(None, definition, visibility, groups)


def validate_template_clone(body: Any, identity: Identity) -> TemplateWrite:
    body = require_object(body)
    reject_unknown(body, CLONE_FIELDS)
    name = _name(body)
    visibility, groups = _sharing(identity, body, keep=False)
    return TemplateWrite(name, None, visibility, groups)
