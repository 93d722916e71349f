"""Slurm through its command-line clients: ``sbatch --parsable``, ``squeue``, ``scancel``.

* Only ``asyncio.create_subprocess_exec`` (never a shell), each call with a timeout; on
  timeout the whole process group is killed.
* ``sbatch`` and ``scancel`` run as the job's user through ``slurm.submit_prefix`` (e.g.
  ``runuser -u {user} --``; with ``sudo`` the VIZDESK_* variables must be allowed through,
  e.g. ``sudo -n --preserve-env=VIZDESK_SESSION_ID,... -u {user}``). The batch script is
  read by the daemon and sent on sbatch's stdin, so ``script_args`` are not supported:
  parameters travel in the environment. The environment of every command is built from
  scratch (PATH, LANG, the user's HOME/USER/LOGNAME/SHELL, SLURM_CONF if set, and the
  request's variables), never inherited from the daemon.
* One ``squeue`` per :meth:`info_many`, as the daemon's own user. By default
  (``slurm.squeue_query: text``) it asks for the tracked ids only,
  ``squeue --noheader --all --states=all --jobs=<ids> --Format=...`` with separators
  (:mod:`.squeue_text`): 22.05's ``--json`` ignores every filter, the text form honours
  ``--jobs`` on every version, so the answer (and the parsing) follows the tracked jobs.
  ``--states=all`` keeps finished jobs in the answer on 23.02+; a lone id Slurm has
  forgotten makes squeue fail with "Invalid job id specified", read as "not known".
  ``squeue_query: json`` keeps the former ``squeue --json --all --states=all`` of every
  job, filtered in Python.
* Errors: timeouts, "Unable to contact slurm controller", munge/authentication failures
  and commands that cannot be executed raise :class:`SlurmUnavailable`; sbatch's own
  refusals raise :class:`SlurmRejected` with Slurm's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from ..config import SlurmConfig
from .base import (
    JobStatus,
    OnCall,
    SlurmBackend,
    SlurmError,
    SlurmRejected,
    SlurmUnavailable,
    StartEstimate,
    SubmitRequest,
)
from .squeue_json import parse_squeue_json
from .squeue_text import TIME_ENV, parse_squeue_text, squeue_text_argv
from .validate import (
    JOB_UMASK,
    base_env,
    check_job_id,
    check_request,
    check_user_name,
    lookup_account,
    read_script,
    user_env,
)

log = structlog.get_logger("vizdesk.slurm")


_UNAVAILABLE_MARKERS = (
    "unable to contact slurm controller",
    "unable to establish controller",
    "slurm_load_jobs error: socket timed out",
    "socket timed out",
    "zero bytes were transmitted or received",
    "connection refused",
    "communication connection failure",
    "communication send failure",
    "communication receive failure",
    "communications connection",
    "munge",
    "authentication failure",
    "protocol authentication error",
    "invalid authentication credential",
    "slurm temporarily unavailable",
    "standby mode",
    "slurmctld not responding",
    "failed to execute",
    "command not found",
)
_CANCEL_DONE_MARKERS = (
    "invalid job id specified",
    "already completing or completed",
    "job/step already completing",
    "job has already finished",
)
_BIG_OUTPUT = 256 * 1024  # parse squeue output larger than this off the event loop
_UNKNOWN_JOB = "invalid job id specified"
_ID_RE = re.compile(r"[1-9][0-9]{0,11}")
#: More tracked ids than this are not put on squeue's command line (ARG_MAX); the query
#: then lists every job and the ids are filtered here.
MAX_FILTER_IDS = 20000
#: Tracked jobs of at most this many users are asked about per user (server-side filter).
PER_USER_QUERIES_MAX = 4
_USER_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


@dataclass(frozen=True)
class _Result:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def err_text(self) -> str:
        return self.stderr.decode(errors="replace").strip()


def looks_unavailable(text: str) -> bool:
    """True when a Slurm client's message says the controller could not be reached."""
    low = text.lower()
    return any(marker in low for marker in _UNAVAILABLE_MARKERS)


def rejection_message(stderr: str) -> str:
    """Slurm's own words from ``sbatch: error: ...`` lines, final reason first."""
    errors = [
        line.split("error:", 1)[1].strip()
        for line in stderr.splitlines()
        if "error:" in line and line.split("error:", 1)[1].strip()
    ]
    final = ""
    details: list[str] = []
    for msg in errors:
        if msg.startswith("Batch job submission failed:"):
            final = msg.removeprefix("Batch job submission failed:").strip()
        else:
            details.append(msg)
    if not final:
        final, details = (details[-1], details[:-1]) if details else (stderr.strip(), [])
    text = f"{final} ({'; '.join(details)})" if details else final
    return text[:500] or "sbatch refused the job"


def parse_parsable(stdout: bytes) -> str:
    """``sbatch --parsable`` output ``jobid[;cluster]`` → the job id."""
    lines = [ln.strip() for ln in stdout.decode(errors="replace").splitlines() if ln.strip()]
    if lines:
        job_id = lines[-1].split(";", 1)[0].strip()
        if job_id.isdigit():
            return job_id
    raise SlurmError(f"unexpected sbatch --parsable output: {stdout[:200]!r}")


_TEST_ONLY_RE = re.compile(
    r"Job (?P<job>\d+) to start at (?P<start>\S+) using (?P<procs>\d+) processors? "
    r"on nodes? (?P<nodes>\S+)(?: in partition (?P<partition>\S+))?"
)


def sbatch_options(req: SubmitRequest) -> list[str]:
    """The sbatch options of ``req`` (what a dry run shows; call check_request first)."""
    opts = [
        f"--job-name={req.job_name}",
        f"--cpus-per-task={req.cpus}",
        f"--mem={req.memory_mb}M",
        f"--time={req.time_limit_minutes}",
    ]
    if req.partition:
        opts.append(f"--partition={req.partition}")
    if req.nodes != 1:
        opts.append(f"--nodes={req.nodes}")
    if req.ntasks != 1:
        opts.append(f"--ntasks={req.ntasks}")
    if req.ntasks_per_node is not None:
        opts.append(f"--ntasks-per-node={req.ntasks_per_node}")
    if req.gpus > 0:
        gpu = f"gpu:{req.gpu_type}:{req.gpus}" if req.gpu_type else f"gpu:{req.gpus}"
        opts.append(f"--gres={gpu}")
    if req.constraint:
        opts.append(f"--constraint={req.constraint}")
    if req.account:
        opts.append(f"--account={req.account}")
    if req.qos:
        opts.append(f"--qos={req.qos}")
    if req.mail_type:
        opts.append(f"--mail-type={req.mail_type}")
    if req.requeue is not None:
        opts.append("--requeue" if req.requeue else "--no-requeue")
    opts.append(f"--chdir={req.workdir}")
    if req.output:
        opts.append(f"--output={req.output}")
    opts.append("--export=ALL")
    return opts


def parse_test_only(stderr: str) -> StartEstimate:
    """``sbatch --test-only``'s sentence → a :class:`StartEstimate` (start in local time)."""
    for line in reversed(stderr.splitlines()):
        m = _TEST_ONLY_RE.search(line)
        if not m:
            continue
        start: datetime | None
        try:
            start = datetime.fromisoformat(m["start"]).astimezone(UTC)
        except ValueError:
            start = None
        return StartEstimate(
            start_time=start,
            processors=int(m["procs"]),
            nodes=m["nodes"],
            partition=m["partition"] or "",
            message=line.split("sbatch:", 1)[-1].strip()[:300],
        )
    raise SlurmError(f"unexpected sbatch --test-only output: {stderr[-300:]!r}")


class SlurmCliBackend(SlurmBackend):
    """The scheduler adapter that drives Slurm's client commands."""

    name = "cli"

    def __init__(
        self, cfg: SlurmConfig, min_uid: int = 1000, on_call: OnCall | None = None
    ) -> None:
        if not any("{user}" in part for part in cfg.submit_prefix):
            raise ValueError("slurm.submit_prefix must contain '{user}'")
        self.cfg = cfg
        self.min_uid = min_uid
        self.on_call = on_call  # (op, seconds, ok): the metrics hook
        self.timeout = cfg.command_timeout_seconds

    # -- argv / environment (pure, unit-tested) ---------------------------------------
    def prefix_for(self, user: str) -> list[str]:
        check_user_name(user)
        return [part.replace("{user}", user) for part in self.cfg.submit_prefix]

    def submit_argv(self, req: SubmitRequest, *, test_only: bool = False) -> list[str]:
        """The full argv of one submission (call :func:`check_request` first)."""
        return [
            *self.prefix_for(req.user),
            self.cfg.sbatch,
            "--test-only" if test_only else "--parsable",
            *sbatch_options(req),
            *self.cfg.extra_sbatch_args,
        ]  # no script argument: sbatch reads the script from stdin

    def squeue_argv(self, job_ids: Collection[str] | None = None) -> list[str]:
        """The tracker's query: JSON of every job (``squeue_query: json``, or ``job_ids``
        None), else the delimited text form filtered to ``job_ids`` (validated digits)."""
        if job_ids is None or self.cfg.squeue_query == "json":
            return [self.cfg.squeue, "--json", "--all", "--states=all"]
        return squeue_text_argv(self.cfg.squeue, job_ids)

    def ping_argv(self) -> list[str]:
        """A query slurmctld answers cheaply: the daemon user's own jobs (none)."""
        return [self.cfg.squeue, "--noheader", "--me", "--format=%A"]

    def cancel_argv(self, job_id: str, user: str) -> list[str]:
        return [*self.prefix_for(user), self.cfg.scancel, check_job_id(job_id)]

    def extend_argv(self, job_id: str, time_limit_minutes: int) -> list[str]:
        """As the daemon itself (an operator), never as the user: users may only shorten."""
        minutes = int(time_limit_minutes)
        if minutes <= 0:
            raise ValueError("time limit must be positive")
        jid = check_job_id(job_id)
        return [self.cfg.scontrol, "update", f"JobId={jid}", f"TimeLimit={minutes}"]

    # -- operations -------------------------------------------------------------------
    async def submit(self, req: SubmitRequest) -> str:
        check_request(req)
        account = await asyncio.to_thread(lookup_account, req.user, self.min_uid)
        script = await asyncio.to_thread(read_script, req.script)
        argv = self.submit_argv(req)
        env = user_env(account, req.env, self.cfg.conf_path)
        started, ok = time.monotonic(), False
        try:
            res = await self._run(argv, env, script.encode())
            if res.returncode != 0:
                raise self._submit_error(res)
            if res.stderr.strip():
                log.debug("slurm.sbatch_stderr", stderr=res.err_text)
            job_id = parse_parsable(res.stdout)
            ok = True
            return job_id
        finally:
            self._record("submit", started, ok)

    async def test_only(self, req: SubmitRequest) -> StartEstimate:
        check_request(req)
        account = await asyncio.to_thread(lookup_account, req.user, self.min_uid)
        script = await asyncio.to_thread(read_script, req.script)
        started, ok = time.monotonic(), False
        try:
            res = await self._run(
                self.submit_argv(req, test_only=True),
                user_env(account, req.env, self.cfg.conf_path),
                script.encode(),
            )
            if res.returncode != 0:
                raise self._submit_error(res)
            estimate = parse_test_only(res.err_text)
            ok = True
            return estimate
        finally:
            self._record("test_only", started, ok)

    async def info_many(self, job_ids: Collection[str]) -> dict[str, JobStatus]:
        # ids that are not plain job ids cannot be Slurm's: left out of the query
        wanted = sorted({str(j) for j in job_ids if _ID_RE.fullmatch(str(j))}, key=int)
        text = self.cfg.squeue_query != "json"
        if text and not wanted:
            await self._ping_query()
            return {}
        filtered = text and len(wanted) <= MAX_FILTER_IDS
        argv = self.squeue_argv(wanted if filtered else None)
        if text and not filtered:
            argv = squeue_text_argv(self.cfg.squeue, ())
        env = base_env(self.cfg.conf_path)
        if text:
            env.update(TIME_ENV)
        parse = parse_squeue_text if text else parse_squeue_json
        started, ok = time.monotonic(), False
        try:
            res = await self._run(argv, env, None)
            if res.returncode != 0:
                if filtered and len(wanted) == 1 and _UNKNOWN_JOB in res.err_text.lower():
                    ok = True  # one id, forgotten by Slurm: squeue refuses it
                    return {}
                raise SlurmUnavailable(
                    f"squeue failed (exit {res.returncode}): {res.err_text[-500:]}"
                )
            if len(res.stdout) > _BIG_OUTPUT:
                statuses = await asyncio.to_thread(parse, res.stdout)
            else:
                statuses = parse(res.stdout)
            ok = True
        finally:
            self._record("info_many", started, ok)
        keep = set(wanted)
        return {jid: st for jid, st in statuses.items() if jid in keep}

    async def info_owned(self, owners: Mapping[str, str]) -> dict[str, JobStatus]:
        """Per owner when the tracked jobs belong to few users (``--user=<u>``: slurmctld
        itself packs only that user's jobs, where ``--jobs`` with more than one id makes
        every squeue unpack every job slurmctld remembers); else :meth:`info_many`.
        Ids missing from the per-user answers are asked about once more by id, so a job
        that runs as somebody else is still reported (and a forgotten one is absent)."""
        ids = [j for j in owners if _ID_RE.fullmatch(j)]
        by_user: dict[str, set[str]] = {}
        for jid in ids:
            by_user.setdefault(owners[jid], set()).add(jid)
        if (
            self.cfg.squeue_query == "json"
            or len(ids) < 2
            or len(by_user) > PER_USER_QUERIES_MAX
            or not all(_USER_RE.fullmatch(u) for u in by_user)
        ):
            return await self.info_many(ids)
        out: dict[str, JobStatus] = {}
        env = {**base_env(self.cfg.conf_path), **TIME_ENV}
        for user, wanted in sorted(by_user.items()):
            argv = [*squeue_text_argv(self.cfg.squeue, ()), f"--user={user}"]
            started, ok = time.monotonic(), False
            try:
                res = await self._run(argv, env, None)
                if res.returncode == 0:
                    statuses = parse_squeue_text(res.stdout)
                    out.update((j, st) for j, st in statuses.items() if j in wanted)
                    ok = True
                elif looks_unavailable(res.err_text):
                    raise SlurmUnavailable(f"squeue failed: {res.err_text[-500:]}")
            finally:
                self._record("info_many", started, ok)
        missing = [j for j in ids if j not in out]
        if missing:
            out.update(await self.info_many(missing))
        return out

    async def _ping_query(self) -> None:
        started, ok = time.monotonic(), False
        try:
            res = await self._run(self.ping_argv(), base_env(self.cfg.conf_path), None)
            if res.returncode != 0:
                raise SlurmUnavailable(
                    f"squeue failed (exit {res.returncode}): {res.err_text[-500:]}"
                )
            ok = True
        finally:
            self._record("info_many", started, ok)

    async def cancel(self, job_id: str, user: str) -> None:
        argv = self.cancel_argv(str(job_id), user)
        account = await asyncio.to_thread(lookup_account, user, self.min_uid)
        started, ok = time.monotonic(), False
        try:
            res = await self._run(argv, user_env(account, None, self.cfg.conf_path), None)
            text = res.err_text
            if res.returncode == 0 or any(m in text.lower() for m in _CANCEL_DONE_MARKERS):
                ok = True
                return
            if looks_unavailable(text) or res.returncode in (126, 127):
                raise SlurmUnavailable(f"scancel failed: {text[-500:]}")
            if "permission denied" in text.lower():
                raise SlurmRejected(rejection_message(text))
            raise SlurmError(f"scancel failed (exit {res.returncode}): {text[-500:]}")
        finally:
            self._record("cancel", started, ok)

    async def extend(self, job_id: str, time_limit_minutes: int) -> None:
        argv = self.extend_argv(str(job_id), time_limit_minutes)
        started, ok = time.monotonic(), False
        try:
            res = await self._run(argv, base_env(), None)
            text = res.err_text
            if res.returncode == 0:
                ok = True
                return
            if looks_unavailable(text) or res.returncode in (126, 127):
                raise SlurmUnavailable(f"scontrol failed: {text[-500:]}")
            raise SlurmRejected(rejection_message(text) or text[-300:])
        finally:
            self._record("extend", started, ok)

    # -- helpers ----------------------------------------------------------------------
    def _submit_error(self, res: _Result) -> SlurmError:
        text = res.err_text
        if looks_unavailable(text) or res.returncode in (126, 127):
            return SlurmUnavailable(f"sbatch could not reach Slurm: {text[-500:]}")
        if "sbatch: error:" in text:
            return SlurmRejected(rejection_message(text))
        return SlurmError(f"sbatch failed (exit {res.returncode}): {text[-500:]}")

    def _record(self, op: str, started: float, ok: bool) -> None:
        if self.on_call is None:
            return
        try:
            self.on_call(op, time.monotonic() - started, ok)
        except Exception:
            log.debug("slurm.on_call_failed", exc_info=True)

    async def _run(
        self, argv: Sequence[str], env: Mapping[str, str], stdin: bytes | None
    ) -> _Result:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(env),
                cwd="/",
                start_new_session=True,  # lets a timeout kill the prefix and its child
                umask=JOB_UMASK,  # sbatch passes its umask on to the job (SLURM_UMASK)
            )
        except OSError as exc:
            raise SlurmUnavailable(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), self.timeout)
        except TimeoutError:
            await self._kill(proc)
            raise SlurmUnavailable(
                f"{os.path.basename(argv[0])} did not answer within {self.timeout:g} s"
            ) from None
        except BaseException:
            await self._kill(proc)
            raise
        return _Result(proc.returncode if proc.returncode is not None else -1, out, err)

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)
