"""Session persistence: the generic record store with the session keys (admins list from
the ``sessions:all`` index, sorted by creation time)."""

from __future__ import annotations

from collections.abc import Callable

from ..contract.keys import Keys
from ..core.store import RecordStore
from .model import Session


class SessionStore(RecordStore[Session]):
    """Sessions in Redis under ``keys.session(id)``; see :class:`RecordStore`."""

    record_type = Session
    kind = "session"

    def layout(self, keys: Keys) -> tuple[Callable[[str], str], Callable[[str], str], str]:
        return keys.session, keys.user_sessions, keys.active_sessions

    def order_layout(self, keys: Keys) -> tuple[Callable[[str], str], str]:
        return keys.user_sessions_by_time, keys.all_sessions
