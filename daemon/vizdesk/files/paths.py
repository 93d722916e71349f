"""Directories of a user from configured templates (``{home}``, ``{user}``)."""

from __future__ import annotations

import asyncio
import os
import pwd

from .errors import HelperFailed


def expand(template: str, user: str, home: str) -> str:
    """``template`` with ``{user}`` and ``{home}`` replaced, normalised; must be absolute."""
    path = os.path.normpath(template.replace("{home}", home).replace("{user}", user))
    if not os.path.isabs(path):
        raise HelperFailed(f"{template!r} does not expand to an absolute path")
    return path


def home_of(user: str) -> str:
    """The user's home directory (blocking: NSS may ask LDAP)."""
    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        raise HelperFailed(f"no local account {user!r}") from None


async def user_dir(template: str, user: str) -> str:
    """``template`` expanded for ``user`` (the NSS lookup off the event loop)."""
    home = await asyncio.to_thread(home_of, user) if "{home}" in template else ""
    return expand(template, user, home)
