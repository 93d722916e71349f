"""The job environment contract: what the daemon puts into a session job's environment.

The daemon writes these variables into the job's environment (never onto a command
line) with :func:`session_job_env`; the node parses and validates them into a
:class:`JobEnv` with :func:`parse_job_env`. Nothing here is
taken from the user directly, but the values are still checked because they end up in
argv lists and file names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..config import ConfigError, host_port
from .keys import SESSION_ID_RE

#: WIDTHxHEIGHT, 2 to 5 digits each. The one definition: the API applies its own range
#: (320x200 up to the configured maximum) on top; the node accepts what any head sends.
GEOMETRY_RE = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")

ENV_SESSION_ID = "VIZDESK_SESSION_ID"
ENV_CONFIG = "VIZDESK_CONFIG"
ENV_REDIS_URL = "VIZDESK_REDIS_URL"
ENV_REDIS_USERNAME = "VIZDESK_REDIS_USERNAME"
ENV_REDIS_PASSWORD = "VIZDESK_REDIS_PASSWORD"  # noqa: S105 - a variable name, not a secret
ENV_REG_KEY = "VIZDESK_REG_KEY"
ENV_GEOMETRY = "VIZDESK_GEOMETRY"
ENV_IMAGE = "VIZDESK_IMAGE"
ENV_REG_TTL = "VIZDESK_REG_TTL"
ENV_SESSION_TAG = "VIZDESK_SESSION_TAG"
ENV_COMMAND = "VIZDESK_COMMAND"
ENV_REDIS_SENTINELS = "VIZDESK_REDIS_SENTINELS"  # "h:p,h:p": the primary comes from them
ENV_REDIS_SENTINEL_MASTER = "VIZDESK_REDIS_SENTINEL_MASTER"

#: Variables never passed on to the VNC server or the desktop session.
PRIVATE_VARS = frozenset(
    {
        ENV_SESSION_ID,
        ENV_CONFIG,
        ENV_REDIS_URL,
        ENV_REDIS_USERNAME,
        ENV_REDIS_PASSWORD,
        ENV_REG_KEY,
        ENV_GEOMETRY,
        ENV_IMAGE,
        ENV_REG_TTL,
        ENV_REDIS_SENTINELS,
        ENV_REDIS_SENTINEL_MASTER,
        "VIZDESK_REDIS_PASSWORD_DAEMON",
        "VIZDESK_JWT_SECRET",
        ENV_COMMAND,
    }
)


def session_job_env(
    *,
    session_id: str,
    redis_url: str,
    redis_username: str,
    redis_password: str,
    reg_key: str,
    reg_ttl: int,
    geometry: str,
    command: str,
    config_path: str | None,
    image: str | None,
    sentinels: Sequence[str] = (),
    sentinel_master: str = "",
) -> dict[str, str]:
    """What the daemon puts into a session job's environment (never on a command line)."""
    env = {
        ENV_SESSION_ID: session_id,
        ENV_REDIS_URL: redis_url,
        ENV_REDIS_USERNAME: redis_username,
        ENV_REDIS_PASSWORD: redis_password,
        ENV_REG_KEY: reg_key,
        ENV_REG_TTL: str(reg_ttl),
        ENV_GEOMETRY: geometry,
        ENV_COMMAND: command,
    }
    if config_path:
        env[ENV_CONFIG] = config_path
    if image:
        env[ENV_IMAGE] = image
    if sentinels:
        env[ENV_REDIS_SENTINELS] = ",".join(sentinels)
        env[ENV_REDIS_SENTINEL_MASTER] = sentinel_master
    return env


class JobEnvError(ValueError):
    """A missing or malformed variable in the job environment."""


@dataclass(frozen=True)
class JobEnv:
    """The parsed job environment, as the node uses it."""

    session_id: str
    redis_url: str
    redis_username: str
    redis_password: str = field(repr=False)
    reg_key: str
    width: int
    height: int
    reg_ttl: int
    image: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()  # () = redis_url directly
    sentinel_master: str = ""

    @property
    def geometry(self) -> str:
        return f"{self.width}x{self.height}"

    def redis_location(self) -> str:
        """host:port/db of the Redis URL (or the Sentinels and master), without any
        credentials (for logs)."""
        parts = urlsplit(self.redis_url)
        if self.sentinels:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel {hosts} master {self.sentinel_master}{parts.path or ''}"
        host = parts.hostname or "?"
        port = parts.port or 6379
        return f"{host}:{port}{parts.path or ''}"


def _require(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise JobEnvError(f"{name} is not set in the job environment")
    return value


def parse_job_env(env: Mapping[str, str]) -> JobEnv:
    """Validate the daemon-provided job environment."""
    sid = _require(env, ENV_SESSION_ID)
    if not SESSION_ID_RE.match(sid):
        raise JobEnvError(f"{ENV_SESSION_ID} must be 16 lowercase hex characters")

    url = _require(env, ENV_REDIS_URL)
    scheme = urlsplit(url).scheme
    if scheme not in {"redis", "rediss", "unix"}:
        raise JobEnvError(f"{ENV_REDIS_URL} must be a redis://, rediss:// or unix:// URL")

    geometry = _require(env, ENV_GEOMETRY)
    m = GEOMETRY_RE.match(geometry)
    if not m:
        raise JobEnvError(f"{ENV_GEOMETRY} must look like 1280x800")
    width, height = int(m.group(1)), int(m.group(2))

    ttl_raw = _require(env, ENV_REG_TTL)
    try:
        ttl = int(ttl_raw)
    except ValueError:
        raise JobEnvError(f"{ENV_REG_TTL} must be an integer number of seconds") from None
    if ttl < 2:
        raise JobEnvError(f"{ENV_REG_TTL} must be at least 2 seconds")

    image = env.get(ENV_IMAGE) or None
    if image is not None and (not image.startswith("/") or not image.endswith(".sif")):
        raise JobEnvError(f"{ENV_IMAGE} must be an absolute path to a .sif file")

    reg_key = _require(env, ENV_REG_KEY)
    if not reg_key.endswith(sid):
        raise JobEnvError(f"{ENV_REG_KEY} does not belong to session {sid}")

    sentinels: tuple[tuple[str, int], ...] = ()
    master = ""
    if env.get(ENV_REDIS_SENTINELS):
        try:
            sentinels = tuple(
                host_port(h.strip(), ENV_REDIS_SENTINELS)
                for h in env[ENV_REDIS_SENTINELS].split(",")
            )
        except ConfigError as exc:
            raise JobEnvError(str(exc)) from None
        master = _require(env, ENV_REDIS_SENTINEL_MASTER)
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", master):
            raise JobEnvError(f"{ENV_REDIS_SENTINEL_MASTER} must be a plain name")

    return JobEnv(
        session_id=sid,
        redis_url=url,
        redis_username=_require(env, ENV_REDIS_USERNAME),
        redis_password=_require(env, ENV_REDIS_PASSWORD),
        reg_key=reg_key,
        width=width,
        height=height,
        reg_ttl=ttl,
        image=image,
        sentinels=sentinels,
        sentinel_master=master,
    )


def child_environ(env: Mapping[str, str], session_id: str) -> dict[str, str]:
    """The environment for processes the wrapper starts: no credentials, plus the tag."""
    out = {k: v for k, v in env.items() if k not in PRIVATE_VARS}
    out[ENV_SESSION_TAG] = session_id
    return out
