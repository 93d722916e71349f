"""Slurm through pyslurm 25.11 (the C API), for clusters whose Slurm matches pyslurm.

Written against pyslurm 25.11.2 as observed on a live Slurm 25.11.7 controller
(``tests/slurm2511/``, built by ``testbed/slurm2511.sh``; the unit tests' fake is checked
against the real objects by ``tests/slurm2511/test_pyslurm_shape.py``):

* ``PYSLURM_DISABLE_AUTO_INIT`` (any non-empty value) is set before the import, then
  ``pyslurm.slurm_init(config_path)`` runs once with ``slurm.conf_path`` or ``$SLURM_CONF``
  (None: libslurm's compiled-in default). libslurm *exits the process* on an unreadable
  slurm.conf, so ``slurm.backend: auto`` first tries import + init in a subprocess.
* submit: ``JobSubmitDescription(name=, cpus_per_task=, memory_per_node=<MiB>,
  time_limit=<minutes>, working_directory=, environment=<dict>, script=<text>,
  user_id=, group_id=)`` plus ``partitions``, ``gres_per_node`` ("gpu[:type]:N"),
  ``standard_output``, ``nodes``, ``ntasks``, ``ntasks_per_node``, ``constraints``,
  ``account``, ``qos``, ``mail_types`` ("END,FAIL"), ``is_requeueable``; ``.submit()``
  returns an int. It is a cdef class: a wrong attribute name is an AttributeError.
  ``user_id``/``group_id`` are honoured only from root or SlurmUser. The environment is
  always passed (an empty one becomes "ALL" and slurmctld answered errno 2019); pyslurm
  adds every ``SLURM_*`` variable of the daemon's own environment to it. There is no
  ``--test-only`` equivalent (no start estimates with this backend).
* info: up to ``PER_ID_LOAD_MAX`` tracked ids one ``Job.load(id)`` each (``slurm_load_job``:
  slurmctld packs only those; errno 2017 = forgotten), above it ``Jobs.load()`` (one RPC
  answering every job; a MultiClusterMap keyed by int id).
  ``Job.state`` a string ("RUNNING"), ``state_reason`` the literal "None" when there is
  none, ``batch_host``/``allocated_nodes`` None while pending, times int epoch seconds or
  None (a running job carries its *expected* end time), ``exit_code``/``exit_code_signal``
  ints (a cancelled running job: 0 and 15).
* cancel: ``Job.load(id)`` (``RPCError`` errno 2017 for an unknown id: gone already) to
  check the owner, then ``Job(id).cancel()``, which never raises (it ignores Slurm's
  answer), so existence and ownership are checked here.
* errors: ``RPCError`` with ``.errno``/``.msg``; 1800 when slurmctld is down (after about
  15 s, slurm.conf's MessageTimeout); ``slurm.extra_sbatch_args`` has no equivalent here
  and is ignored (logged once).

pyslurm does not release the GIL during an RPC, so every call runs in a child process
(:mod:`vizdesk.slurm.pyslurm_process`) with ``slurm.command_timeout_seconds``.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, TypeVar

import structlog

from ..config import SlurmConfig
from .base import (
    JobState,
    JobStatus,
    OnCall,
    SlurmBackend,
    SlurmError,
    SlurmRejected,
    SlurmUnavailable,
    SubmitRequest,
    reported_exit,
)
from .pyslurm_process import PyslurmProcess
from .squeue_json import state_from_names
from .validate import (
    check_job_id,
    check_request,
    lookup_account,
    read_script,
    user_env,
)

log = structlog.get_logger("vizdesk.slurm")

T = TypeVar("T")

ESLURM_USER_ID_MISSING = 2010  # "Invalid user id": slurmctld refused the impersonation
ESLURM_INVALID_JOB_ID = 2017
#: Up to this many tracked ids, one ``Job.load(id)`` each (slurmctld packs only those);
#: above it one ``Jobs.load()`` of every job (one RPC, cost follows the cluster's jobs).
PER_ID_LOAD_MAX = 50
ESLURM_ALREADY_DONE = 2021
_UNAVAILABLE_ERRNO = frozenset({2027, 2131})  # in standby mode / use backup controller
_UNAVAILABLE_RANGES = (
    range(1, 1000),  # plain errno values (ECONNREFUSED, ETIMEDOUT...)
    range(1000, 1100),  # SLURM_COMMUNICATIONS_* and protocol/authentication errors
    range(1800, 1900),  # SLURMCTLD_COMMUNICATIONS_*
    range(5000, 5100),  # socket errors, SLURM_PROTOCOL_SOCKET_IMPL_TIMEOUT
    range(6000, 6100),  # ESLURM_AUTH_* (munge)
)

_import_lock = threading.Lock()
_INIT_MARK = "_vizdesk_slurm_initialised"
#: How long ``auto`` lets its probe subprocess import and initialise pyslurm.
PROBE_TIMEOUT_SECONDS = 30.0
_PROBE = (
    "import os, sys\n"
    "os.environ['PYSLURM_DISABLE_AUTO_INIT'] = '1'\n"
    "import pyslurm\n"
    "pyslurm.slurm_init(sys.argv[1] or None)\n"
)


def _disable_auto_init() -> None:
    # pyslurm 25.11 skips its import-time slurm_init() for any non-empty value ("0" too);
    # an empty value would not.
    if not os.environ.get("PYSLURM_DISABLE_AUTO_INIT"):
        os.environ["PYSLURM_DISABLE_AUTO_INIT"] = "1"


def conf_path_of(conf_path: str = "") -> str:
    """The slurm.conf pyslurm is initialised with: ``slurm.conf_path``, else SLURM_CONF."""
    return conf_path or os.environ.get("SLURM_CONF", "")


def import_pyslurm(conf_path: str = "") -> ModuleType:
    """Import pyslurm without its auto-init, then ``slurm_init(<slurm.conf>)`` once.

    libslurm exits the process when it cannot read its configuration: callers that must
    survive a broken Slurm set-up check with :func:`pyslurm_available` first.
    """
    _disable_auto_init()
    with _import_lock:
        mod = importlib.import_module("pyslurm")
        if not getattr(mod, _INIT_MARK, False):
            init = getattr(mod, "slurm_init", None)
            if callable(init):
                init(conf_path_of(conf_path) or None)
            setattr(mod, _INIT_MARK, True)
    return mod


def pyslurm_available(conf_path: str = "") -> bool:
    """True when pyslurm imports and ``slurm_init`` succeeds (``slurm.backend: auto``).

    Both are tried in a subprocess first: a libslurm built for another Slurm version fails
    to load, and ``slurm_init`` on an unreadable slurm.conf ends the whole process.
    """
    _disable_auto_init()
    with _import_lock:
        mod = sys.modules.get("pyslurm")
        if mod is not None and getattr(mod, _INIT_MARK, False):
            return True
    if importlib.util.find_spec("pyslurm") is None:
        return False
    path = conf_path_of(conf_path)
    if path and not os.access(path, os.R_OK):
        return False
    try:
        res = subprocess.run(
            [sys.executable, "-c", _PROBE, path],
            capture_output=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            check=False,
            # The probe imports pyslurm from where this process would.
            env={
                **os.environ,
                "PYSLURM_DISABLE_AUTO_INIT": "1",
                "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            },
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    if res.returncode != 0:
        log.info("slurm.pyslurm_unavailable", stderr=res.stderr.decode(errors="replace")[-300:])
        return False
    try:
        import_pyslurm(conf_path)
    except (Exception, SystemExit):
        return False
    return True


def _errno(exc: BaseException) -> int | None:
    value = getattr(exc, "errno", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _message(exc: BaseException) -> str:
    msg = getattr(exc, "msg", None)
    return str(msg) if msg else str(exc)


def is_unavailable_errno(errno: int | None) -> bool:
    if errno is None:
        return False
    return errno in _UNAVAILABLE_ERRNO or any(errno in r for r in _UNAVAILABLE_RANGES)


def _attr(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name)
    except Exception:  # pyslurm properties compute values and may raise
        return None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _dt(value: Any) -> datetime | None:
    n = _int(value)
    if n is None or n <= 0:
        return None
    try:
        return datetime.fromtimestamp(n, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def job_status_from_pyslurm(job: Any) -> JobStatus | None:
    """Map a ``pyslurm.Job`` to :class:`JobStatus` (same rules as the squeue JSON parser)."""
    job_id = _int(_attr(job, "id"))
    if job_id is None or job_id <= 0:
        return None
    state, configuring = state_from_names([_str(_attr(job, "state"))])
    reason = _str(_attr(job, "state_reason"))
    if reason == "None":
        reason = ""
    if configuring and not reason:
        reason = "Configuring"
    batch_host = _str(_attr(job, "batch_host"))
    nodes = _str(_attr(job, "allocated_nodes"))
    exit_code: int | None = None
    signal: int | None = None
    if state.is_finished:
        exit_code, signal = reported_exit(
            _int(_attr(job, "exit_code")), _int(_attr(job, "exit_code_signal"))
        )
    started = state not in (JobState.PENDING, JobState.UNKNOWN) and bool(batch_host or nodes)
    user = _attr(job, "user_name")
    return JobStatus(
        job_id=str(job_id),
        state=state,
        reason=reason,
        user=str(user) if user is not None else "",
        name=_str(_attr(job, "name")),
        partition=_str(_attr(job, "partition")),
        batch_host=batch_host,
        nodes=nodes,
        exit_code=exit_code,
        signal=signal,
        submit_time=_dt(_attr(job, "submit_time")),
        start_time=_dt(_attr(job, "start_time")) if started else None,
        end_time=_dt(_attr(job, "end_time")) if state.is_finished else None,
        # Slurm's expectations, as the squeue parsers read them: a pending job's start_time
        # is its backfill estimate, a running one's end_time start plus time limit.
        expected_start=_dt(_attr(job, "start_time")) if state == JobState.PENDING else None,
        expected_end=_dt(_attr(job, "end_time")) if state.is_running else None,
    )


def rpc_error_class(mod: ModuleType) -> type[BaseException]:
    cls = getattr(mod, "RPCError", None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else Exception


def submit_description(
    mod: ModuleType, req: SubmitRequest, uid: int, gid: int, script: str, env: dict[str, str]
) -> Any:
    """The ``JobSubmitDescription`` for ``req`` (call :func:`check_request` first)."""
    desc = mod.JobSubmitDescription(
        name=req.job_name,
        cpus_per_task=req.cpus,
        memory_per_node=req.memory_mb,
        time_limit=req.time_limit_minutes,
        working_directory=req.workdir,
        environment=env,
        script=script,
        user_id=uid,
        group_id=gid,
    )
    if req.partition:
        desc.partitions = req.partition
    if req.gpus > 0:
        gres = f"gpu:{req.gpu_type}:{req.gpus}" if req.gpu_type else f"gpu:{req.gpus}"
        desc.gres_per_node = gres
    if req.output:
        desc.standard_output = req.output
    # Attribute names of pyslurm 25.11's JobSubmitDescription.
    if req.nodes != 1:
        desc.nodes = req.nodes
    if req.ntasks != 1:
        desc.ntasks = req.ntasks
    if req.ntasks_per_node is not None:
        desc.ntasks_per_node = req.ntasks_per_node
    for attr, value in (
        ("constraints", req.constraint),
        ("account", req.account),
        ("qos", req.qos),
        ("mail_types", req.mail_type),
    ):
        if value:
            setattr(desc, attr, value)
    if req.requeue is not None:
        desc.is_requeueable = req.requeue
    return desc


# -- the blocking calls: plain arguments in, plain values out (they run in a child) ------
def op_submit(
    mod: ModuleType, req: SubmitRequest, uid: int, gid: int, script: str, env: dict[str, str]
) -> str:
    return str(int(submit_description(mod, req, uid, gid, script, env).submit()))


def op_info_many(mod: ModuleType, job_ids: list[str]) -> dict[str, JobStatus]:
    wanted = {j for j in job_ids if j.isdigit() and int(j) > 0}
    out: dict[str, JobStatus] = {}
    if 0 < len(wanted) <= PER_ID_LOAD_MAX:
        # slurm_load_job per id: slurmctld packs only the tracked jobs
        rpc_error = rpc_error_class(mod)
        for jid in sorted(wanted, key=int):
            try:
                job = mod.Job.load(int(jid))
            except rpc_error as exc:
                if _errno(exc) == ESLURM_INVALID_JOB_ID:
                    continue  # forgotten by Slurm
                raise
            status = job_status_from_pyslurm(job)
            if status is not None:
                out[status.job_id] = status
        return out
    for job in mod.Jobs.load().values():  # also SlurmBackend.ping's RPC (no ids)
        if str(_attr(job, "id")) not in wanted:
            continue
        status = job_status_from_pyslurm(job)
        if status is not None:
            out[status.job_id] = status
    return out


def op_cancel(mod: ModuleType, jid: int, uid: int, name: str) -> None:
    rpc_error = rpc_error_class(mod)
    try:
        job = mod.Job.load(jid)
    except rpc_error as exc:
        if _errno(exc) in (ESLURM_INVALID_JOB_ID, ESLURM_ALREADY_DONE):
            return
        raise
    owner_uid = _int(_attr(job, "user_id"))
    owner = _attr(job, "user_name")
    if owner_uid != uid and owner != name:
        raise SlurmRejected(f"job {jid} does not belong to {name}")
    try:
        mod.Job(jid).cancel()
    except rpc_error as exc:
        if _errno(exc) not in (ESLURM_INVALID_JOB_ID, ESLURM_ALREADY_DONE):
            raise


#: What the child process can be asked to run (the mapping is the protocol).
OPS: dict[str, Callable[..., Any]] = {
    "submit": op_submit,
    "info_many": op_info_many,
    "cancel": op_cancel,
}


class PyslurmBackend(SlurmBackend):
    """The scheduler adapter on top of pyslurm.

    ``isolated`` (the default) runs every pyslurm call in a child process
    (:class:`~vizdesk.slurm.pyslurm_process.PyslurmProcess`): libslurm holds the GIL for
    a whole RPC, so a call in a thread would stall the daemon while slurmctld is down.
    ``isolated=False`` calls pyslurm in a worker thread of this process (unit tests with a
    fake pyslurm module; the same ``OPS`` functions run either way).
    """

    name = "pyslurm"

    def __init__(
        self,
        cfg: SlurmConfig,
        min_uid: int = 1000,
        on_call: OnCall | None = None,
        *,
        isolated: bool = True,
    ) -> None:
        self.cfg = cfg
        self.min_uid = min_uid
        self.on_call = on_call
        self.timeout = cfg.command_timeout_seconds
        self._mod: ModuleType | None = None
        self._process = (
            PyslurmProcess(conf_path_of(cfg.conf_path), self.timeout) if isolated else None
        )
        if cfg.extra_sbatch_args:
            log.warning("slurm.extra_sbatch_args_ignored", backend="pyslurm")

    @property
    def module(self) -> ModuleType:
        if self._mod is None:
            self._mod = import_pyslurm(self.cfg.conf_path)
        return self._mod

    def submit_description(
        self, req: SubmitRequest, uid: int, gid: int, script: str, env: dict[str, str]
    ) -> Any:
        """The ``JobSubmitDescription`` for ``req`` (in this process)."""
        return submit_description(self.module, req, uid, gid, script, env)

    async def submit(self, req: SubmitRequest) -> str:
        check_request(req)
        account = await asyncio.to_thread(lookup_account, req.user, self.min_uid)
        script = await asyncio.to_thread(read_script, req.script)
        env = user_env(account, req.env, self.cfg.conf_path)
        args = (req, account.uid, account.gid, script, env)
        result: str = await self._call("submit", args, self._submit_error)
        return result

    async def info_many(self, job_ids: Collection[str]) -> dict[str, JobStatus]:
        def error(exc: Exception) -> SlurmError:
            return SlurmUnavailable(f"loading jobs failed: {_message(exc)}")

        wanted = sorted({str(j) for j in job_ids})
        result: dict[str, JobStatus] = await self._call("info_many", (wanted,), error)
        return result

    async def cancel(self, job_id: str, user: str) -> None:
        jid = int(check_job_id(str(job_id)))
        account = await asyncio.to_thread(lookup_account, user, self.min_uid)

        def error(exc: Exception) -> SlurmError:
            if is_unavailable_errno(_errno(exc)):
                return SlurmUnavailable(f"cancel failed: {_message(exc)}")
            return SlurmError(f"cancel failed: {_message(exc)}")

        await self._call("cancel", (jid, account.uid, account.name), error)

    async def close(self) -> None:
        """Ends the child processes (a later call starts new ones)."""
        if self._process is not None:
            await self._process.close()

    # -- helpers ----------------------------------------------------------------------
    @staticmethod
    def _submit_error(exc: Exception) -> SlurmError:
        errno = _errno(exc)
        if is_unavailable_errno(errno):
            return SlurmUnavailable(f"submission failed: {_message(exc)}")
        if isinstance(exc, ValueError):  # pyslurm's own checks of the description
            return SlurmError(f"pyslurm refused the job description: {exc}")
        if errno == ESLURM_USER_ID_MISSING:  # a server problem, not the user's
            return SlurmError(
                f"slurmctld refused to run the job as the user ({_message(exc)}): the daemon "
                "must run as root or SlurmUser to use the pyslurm backend"
            )
        if errno is not None:
            return SlurmRejected(_message(exc))
        return SlurmError(f"submission failed: {_message(exc)}")

    async def _call(
        self, op: str, args: tuple[Any, ...], error: Callable[[Exception], SlurmError]
    ) -> Any:
        started, ok = time.monotonic(), False
        try:
            if self._process is not None:
                result = await self._process.call(op, args)
            else:
                work = OPS[op]
                mod = self.module
                result = await asyncio.wait_for(asyncio.to_thread(work, mod, *args), self.timeout)
            ok = True
            return result
        except TimeoutError:
            raise SlurmUnavailable(
                f"pyslurm {op} did not answer within {self.timeout:g} s"
            ) from None
        except SlurmError:
            raise
        except Exception as exc:
            raise error(exc) from exc
        finally:
            if self.on_call is not None:
                try:
                    self.on_call(op, time.monotonic() - started, ok)
                except Exception:
                    log.debug("slurm.on_call_failed", exc_info=True)
