"""How a request names a template, and who may see a user's template.

A reference is ``name`` (an admin template, a YAML file in ``jobs.templates_dir``) or
``~owner/name`` (a user's template, stored in Redis). Contract: :func:`parse_ref` accepts
exactly those two shapes (400 naming ``field`` otherwise); :func:`may_see` is THE
visibility rule of user templates: the owner, or — for ``groups`` visibility — a member of
one of the groups it is shared with. Everybody else must not learn it exists (callers
answer exactly as for a template that does not exist).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..core.validate import NAME_RE, ValidationError

OWNER_RULE = r"[A-Za-z_][A-Za-z0-9_.-]{0,31}"  # a POSIX user name (auth.accounts)
NAME_RULE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"  # core.validate.NAME_RE
TEMPLATE_REF_RE = re.compile(rf"^(?:~(?P<owner>{OWNER_RULE})/)?(?P<name>{NAME_RULE})$")
VISIBILITIES = ("private", "groups")


@dataclass(frozen=True)
class TemplateRef:
    """A parsed reference: ``owner`` None for an admin template."""

    name: str
    owner: str | None = None

    @property
    def is_user(self) -> bool:
        return self.owner is not None

    def __str__(self) -> str:
        return f"~{self.owner}/{self.name}" if self.owner is not None else self.name


def parse_ref(ref: object, field: str = "template") -> TemplateRef:
    """``name`` or ``~owner/name`` → :class:`TemplateRef`; a 400 naming ``field`` else."""
    m = TEMPLATE_REF_RE.fullmatch(ref) if isinstance(ref, str) else None
    if m is None:
        raise ValidationError(
            field, f"{field} must be a template name or ~owner/name", "invalid_template_ref"
        )
    return TemplateRef(m.group("name"), m.group("owner"))


def is_template_name(name: object) -> bool:
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def may_see(
    owner: str, visibility: str, shared_with: Iterable[str], user: str, groups: Iterable[str]
) -> bool:
    """Whether ``user`` (in ``groups``) may see and use a user template of ``owner``."""
    if user == owner:
        return True
    if visibility != "groups":
        return False
    return not set(shared_with).isdisjoint(groups)
