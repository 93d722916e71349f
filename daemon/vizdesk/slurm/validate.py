"""Checks shared by the scheduler adapters before anything reaches Slurm.

Every string that ends up in an ``sbatch``/``scancel`` argument or a job description goes
through here: the target account (a local POSIX user with uid >= ``min_uid``, never root),
the job name, partition, paths, resources and environment names. The job's environment is
built from scratch (never the daemon's own, which may hold secrets).
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .base import SlurmError, SlurmRejected, SubmitRequest

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_SCRIPT_BYTES = 4 * 1024 * 1024  # Slurm's default max_script_size

_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")
_JOB_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,127}$")
_PARTITION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(,[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")
#: A node feature expression (``--constraint``): names joined by & | , with [] () * counts.
CONSTRAINT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.&|()\[\]*:,!-]{0,255}$")
#: ``--mail-type`` values a job may ask for.
MAIL_TYPES = frozenset({"BEGIN", "END", "FAIL", "REQUEUE", "TIME_LIMIT", "TIME_LIMIT_90"})
_JOB_ID_RE = re.compile(r"^[1-9][0-9]{0,18}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CTRL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Variables the adapter owns, and prefixes that would change what sbatch/slurm/the
# dynamic loader do (SBATCH_* are sbatch *input* options, e.g. SBATCH_EXPORT).
_RESERVED_ENV = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG"})
_RESERVED_ENV_PREFIXES = ("SBATCH_", "SLURM_", "SALLOC_", "SRUN_", "LD_", "BASH_FUNC_")
_PASSTHROUGH_ENV = ("SLURM_CONF",)  # where the Slurm clients find slurm.conf (no secret)


class InvalidSubmission(SlurmRejected, ValueError):
    """The adapter refused a request before Slurm saw it (bad field, forbidden account)."""


@dataclass(frozen=True)
class Account:
    """The local POSIX account a job runs as."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str


def check_user_name(user: str) -> str:
    if not isinstance(user, str) or not _USER_RE.fullmatch(user):
        raise InvalidSubmission("invalid user name")
    return user


def lookup_account(user: str, min_uid: int) -> Account:
    """The account for ``user``; refuses unknown users, root and uids below ``min_uid``.

    Blocking (NSS may ask LDAP/SSSD): call it through ``asyncio.to_thread``.
    """
    check_user_name(user)
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise InvalidSubmission(f"no local account {user!r}") from None
    if pw.pw_uid == 0 or pw.pw_uid < min_uid:
        raise InvalidSubmission(f"jobs may not run as {user!r} (uid {pw.pw_uid} < {min_uid})")
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir or "/", pw.pw_shell or "/bin/sh")


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID_RE.fullmatch(job_id):
        raise InvalidSubmission(f"invalid job id {job_id!r}")
    return job_id


def _check_path(value: str, what: str) -> None:
    if not value.startswith("/") or _CTRL_RE.search(value) or len(value) > 4096:
        raise InvalidSubmission(f"{what} must be an absolute path without control characters")


def check_request(req: SubmitRequest) -> None:
    """Validate every field of ``req`` that the adapters pass on to Slurm."""
    check_user_name(req.user)
    if not _JOB_NAME_RE.fullmatch(req.job_name or ""):
        raise InvalidSubmission("invalid job name")
    if req.partition and not _PARTITION_RE.fullmatch(req.partition):
        raise InvalidSubmission("invalid partition name")
    numbers: tuple[tuple[str, int, int], ...] = (
        ("cpus", req.cpus, 1),
        ("memory_mb", req.memory_mb, 1),
        ("time_limit_minutes", req.time_limit_minutes, 1),
        ("gpus", req.gpus, 0),
    )
    for name, value, low in numbers:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2**31:
            raise InvalidSubmission(f"{name} must be an integer >= {low}")
    extra: tuple[tuple[str, int, int], ...] = (("nodes", req.nodes, 1), ("ntasks", req.ntasks, 1))
    if req.ntasks_per_node is not None:
        extra += (("ntasks_per_node", req.ntasks_per_node, 1),)
    for name, value, low in extra:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2**31:
            raise InvalidSubmission(f"{name} must be an integer >= {low}")
    for name, text, pattern in (
        ("constraint", req.constraint, CONSTRAINT_RE),
        ("gpu_type", req.gpu_type, _PARTITION_RE),
        ("account", req.account, _PARTITION_RE),
        ("qos", req.qos, _PARTITION_RE),
    ):
        if text and not pattern.fullmatch(text):
            raise InvalidSubmission(f"invalid {name}")
    if req.mail_type and not set(req.mail_type.split(",")) <= MAIL_TYPES:
        raise InvalidSubmission("invalid mail_type")
    _check_path(req.script, "script")
    _check_path(req.workdir, "workdir")
    if req.output:
        _check_path(req.output, "output")
    if req.script_args:
        raise InvalidSubmission(
            "script_args are not supported (the script is sent on stdin); use env instead"
        )
    for key, env_value in req.env.items():
        if not isinstance(key, str) or not _ENV_NAME_RE.fullmatch(key):
            raise InvalidSubmission(f"invalid environment variable name {key!r}")
        if key in _RESERVED_ENV or key.startswith(_RESERVED_ENV_PREFIXES):
            raise InvalidSubmission(f"environment variable {key} is reserved")
        if not isinstance(env_value, str) or "\x00" in env_value:
            raise InvalidSubmission(f"invalid value for environment variable {key}")


def base_env(conf_path: str = "") -> dict[str, str]:
    """The minimal environment for Slurm client commands (never the daemon's own).

    ``conf_path`` (``slurm.conf_path``), when set, is the ``SLURM_CONF`` of the commands
    and jobs; otherwise the daemon's own ``SLURM_CONF`` is passed on when it has one.
    """
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}
    for key in _PASSTHROUGH_ENV:
        value = os.environ.get(key)
        if value:
            env[key] = value
    if conf_path:
        env["SLURM_CONF"] = conf_path
    return env


#: The umask of every submission: Slurm hands it to the job (SLURM_UMASK), so the job's
#: output and log files are the user's alone (0600), whatever the daemon's own umask.
JOB_UMASK = 0o077


def user_env(
    account: Account, extra: Mapping[str, str] | None = None, conf_path: str = ""
) -> dict[str, str]:
    """Minimal environment of ``account`` plus ``extra`` (the job's VIZDESK_* variables)."""
    env = base_env(conf_path)
    env.update(HOME=account.home, USER=account.name, LOGNAME=account.name, SHELL=account.shell)
    env["SLURM_UMASK"] = f"{JOB_UMASK:04o}"
    if extra:
        env.update(extra)
    return env


def read_script(path: str) -> str:
    """The batch script's text, read by the daemon (the user need not be able to read it).

    Blocking: call it through ``asyncio.to_thread``. A missing or malformed script is a
    server configuration problem, hence :class:`SlurmError`.
    """
    try:
        with Path(path).open("rb") as fh:
            data = fh.read(MAX_SCRIPT_BYTES + 1)
    except OSError as exc:
        raise SlurmError(f"cannot read batch script {path}: {exc.strerror}") from exc
    if len(data) > MAX_SCRIPT_BYTES:
        raise SlurmError(f"batch script {path} is larger than {MAX_SCRIPT_BYTES} bytes")
    if not data.startswith(b"#!") or b"\x00" in data:
        raise SlurmError(f"batch script {path} must start with '#!' and contain no NUL")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise SlurmError(f"batch script {path} is not UTF-8") from exc
