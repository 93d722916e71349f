"""Redis key layout, in one place: every module builds its keys here."""

from __future__ import annotations

import re

SESSION_ID_RE = re.compile(r"^[a-f0-9]{16}$")


def notice_key(registration_key: str) -> str:
    """The notice key that goes with a registration key (``<prefix>reg:<sid>`` →
    ``<prefix>notice:<sid>``): the node knows only its registration key."""
    head, sep, sid = registration_key.rpartition("reg:")
    if not sep:
        raise ValueError(f"not a registration key: {registration_key!r}")
    return f"{head}notice:{sid}"


class Keys:
    """Key names under a configurable prefix (default ``vizdesk:``)."""

    def __init__(self, prefix: str = "vizdesk:") -> None:
        self.prefix = prefix

    def session(self, sid: str) -> str:
        """JSON of one session object (the API's view plus internal fields)."""
        return f"{self.prefix}session:{sid}"

    def user_sessions(self, user: str) -> str:
        """Set of a user's session ids."""
        return f"{self.prefix}user:{user}:sessions"

    def user_sessions_by_time(self, user: str) -> str:
        """Sorted set of a user's session ids, scored by creation time (pages)."""
        return f"{self.prefix}user:{user}:sessions:bytime"

    @property
    def all_sessions(self) -> str:
        """Sorted set of every session id, scored by creation time."""
        return f"{self.prefix}sessions:all"

    @property
    def active_sessions(self) -> str:
        """Set of ids of sessions not yet ENDED/FAILED (what the tracker polls)."""
        return f"{self.prefix}sessions:active"

    def registration(self, sid: str) -> str:
        """The compute node's registration (JSON, with TTL), written by the job only."""
        return f"{self.prefix}reg:{sid}"

    def notice(self, sid: str) -> str:
        """A text for the desktop itself (JSON ``{at, kind, text}``), written by the daemon
        on idle / walltime warnings, read by the node (its ACL user may only read it)."""
        return notice_key(self.registration(sid))

    def ticket(self, digest: str) -> str:
        """A websocket ticket, stored under the SHA-256 of the ticket."""
        return f"{self.prefix}ticket:{digest}"

    def revoked(self, jti: str) -> str:
        """Deny-list entry for a revoked token id (TTL = the token's remaining life)."""
        return f"{self.prefix}revoked:{jti}"

    def rate(self, user: str, action: str) -> str:
        """Sliding-window rate-limit log of one user's action."""
        return f"{self.prefix}rate:{action}:{user}"

    def streams(self, user: str) -> str:
        """Sorted set of a user's open event streams (member: stream id, score: lease end
        in ms), shared by every daemon replica."""
        return f"{self.prefix}streams:{user}"

    @property
    def events_channel(self) -> str:
        """Pub/sub channel of session state changes."""
        return f"{self.prefix}events"

    def job(self, jid: str) -> str:
        """JSON of one batch job object."""
        return f"{self.prefix}job:{jid}"

    def user_jobs(self, user: str) -> str:
        return f"{self.prefix}user:{user}:jobs"

    def user_jobs_by_time(self, user: str) -> str:
        """Sorted set of a user's batch job ids, scored by creation time (pages)."""
        return f"{self.prefix}user:{user}:jobs:bytime"

    @property
    def all_jobs(self) -> str:
        """Sorted set of every batch job id, scored by creation time (admins' list)."""
        return f"{self.prefix}jobs:all"

    @property
    def active_jobs(self) -> str:
        return f"{self.prefix}jobs:active"

    def user_template(self, owner: str, name: str) -> str:
        """Hash of one user template: ``meta`` (JSON: sharing, version list) and one
        ``v:<n>`` field per kept version (JSON of its definition)."""
        return f"{self.prefix}utmpl:{owner}:{name}"

    def user_templates(self, owner: str) -> str:
        """Set of the names of a user's templates."""
        return f"{self.prefix}user:{owner}:templates"

    def group_templates(self, group: str) -> str:
        """Set of ``owner/name`` of the user templates shared with a group."""
        return f"{self.prefix}group:{group}:templates"

    def upload(self, uid: str) -> str:
        """JSON of one upload (tus) record."""
        return f"{self.prefix}upload:{uid}"

    def user_uploads(self, user: str) -> str:
        """Set of a user's upload ids."""
        return f"{self.prefix}user:{user}:uploads"

    @property
    def uploads_expiry(self) -> str:
        """Sorted set of upload ids scored by expiry time (epoch seconds): the sweeper's."""
        return f"{self.prefix}uploads:expiry"

    def upload_lock(self, uid: str) -> str:
        """Lock of one upload while a request writes or removes it (token, with a TTL)."""
        return f"{self.prefix}upload-lock:{uid}"

    def share(self, share_id: str) -> str:
        """JSON of one share link of a desktop (kept until a while after it expires)."""
        return f"{self.prefix}share:{share_id}"

    def session_shares(self, sid: str) -> str:
        """Set of the share link ids of one desktop."""
        return f"{self.prefix}session:{sid}:shares"

    def viewers(self, sid: str) -> str:
        """Hash of the open proxy connections to one desktop, every replica's (field:
        connection id, value: JSON {user, scope, share_id, since, seen})."""
        return f"{self.prefix}viewers:{sid}"

    def activity(self, sid: str) -> str:
        """Epoch seconds of the last input the proxy passed to a desktop (or of the
        last connect/disconnect/keep): the idle clock."""
        return f"{self.prefix}activity:{sid}"

    @property
    def tracker_lease(self) -> str:
        """The tracker leader lease: ``<replica> <fence>`` of the replica that runs the
        tracker, with a TTL of ``tracker.lease_seconds`` (renewed while it lives)."""
        return f"{self.prefix}tracker:lease"

    @property
    def tracker_fence(self) -> str:
        """Counter: one more fencing token each time a replica takes the lease."""
        return f"{self.prefix}tracker:fence"

    @property
    def tracker_status(self) -> str:
        """JSON the leader writes after each tick (its name, Slurm reachable, tick time):
        every replica's /readyz reads it."""
        return f"{self.prefix}tracker:status"

    @property
    def image_catalog(self) -> str:
        return f"{self.prefix}images"

    @staticmethod
    def acl_user(sid: str) -> str:
        """Name of the per-session Redis ACL user that may write only its registration."""
        return f"vizdesk-s-{sid}"
