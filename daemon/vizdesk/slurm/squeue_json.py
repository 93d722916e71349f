"""Tolerant parser of ``squeue --json`` output, Slurm 22.05 through 26.05.

What the shapes look like (and where that knowledge comes from):

* Slurm 22.05 (``openapi/v0.0.38``, captured on our test bed:
  ``tests/fixtures/slurm/squeue-22.05-*.json``): ``job_state`` is one string such as
  ``"RUNNING"`` or ``"COMPLETING"`` (Slurm's ``job_state_string()``, where a flag wins over
  the base state); times are plain epoch integers (0 = unset; a pending job carries its
  *expected* start/end); ``exit_code`` is the raw ``wait()`` status (768 = exit 3, 15 =
  killed by SIGTERM). When slurmctld cannot be reached squeue still exits 0 and prints
  ``"errors": [{"error": "Unspecified error", "source": "slurm_load_jobs", ...}]`` with an
  empty ``jobs`` list -- which must never be read as "no jobs".
* Slurm 23.02+ (``data_parser/v0.0.39`` ... ``v0.0.45``): ``job_state`` is a list, base state
  first then flags (``["PENDING", "REQUEUED"]``, ``["CANCELLED", "COMPLETING"]``); times and
  counters are ``{"set": bool, "infinite": bool, "number": int}``; ``exit_code`` is
  ``{"status": ["SIGNALED"], "return_code": {set,infinite,number},
  "signal": {"id": {set,infinite,number}, "name": "TERM"}}``. Sources: real 26.05 captures
  (``tests/fixtures/slurm/squeue-26.05-*.json``, data_parser v0.0.45), and the slurmrestd
  ``/slurm/v0.0.4x/jobs`` responses recorded by Slurm-web for Slurm 23.11 (v0.0.40),
  25.05 and 25.11 (v0.0.41-v0.0.44) in ``rackslab/Slurm-web`` ``tests/assets/slurmrestd/``
  (same data_parser plugin as ``squeue --json``); older 23.02 releases used a plain integer
  ``return_code`` and a string ``status``, which this parser also accepts.

Decisions: a state list containing a finished base state (COMPLETED, CANCELLED, FAILED...)
together with the COMPLETING flag is *finished*; a lone COMPLETING (or RUNNING+COMPLETING)
is :attr:`JobState.COMPLETING`. Requeue flags (REQUEUED, REQUEUE_HOLD, SPECIAL_EXIT...) mean
the job will run again: PENDING. CONFIGURING (nodes booting, script not started) is
PENDING with reason ``Configuring``. ``start_time`` is only reported once the job has
started and ``end_time``/``exit_code``/``signal`` only once it has finished (Slurm reports
estimates or zeros before that); the estimates are kept apart: ``expected_start`` of a
pending job (Slurm's backfill estimate, 0/unset when it has none) and ``expected_end`` of a
running one (start plus time limit, updated by ``scontrol update TimeLimit``). Fields
with an unexpected shape are skipped, never fatal;
a document that is not a squeue JSON object raises :class:`SlurmError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from .base import JobState, JobStatus, SlurmError, SlurmUnavailable, reported_exit

log = structlog.get_logger("vizdesk.slurm")

_BASE_STATES: dict[str, JobState] = {
    s.value: s for s in JobState if s not in (JobState.UNKNOWN, JobState.COMPLETING)
}
# Flags meaning "this job goes back to the queue" (it is not finished even if the base
# state says so while the requeue is in progress).
_REQUEUE_FLAGS = frozenset(
    {"REQUEUED", "REQUEUE", "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT", "RESV_DEL_HOLD"}
)
_CONFIGURING_FLAGS = frozenset({"CONFIGURING", "POWER_UP_NODE"})
_COMPLETING_FLAGS = frozenset({"COMPLETING", "STAGE_OUT"})
# Slurm sentinel values (NO_VAL, INFINITE for 32 bit; raw exit codes use NO_VAL).
_NO_VAL32 = 0xFFFFFFFE
_INFINITE32 = 0xFFFFFFFF


def state_from_names(names: Iterable[str]) -> tuple[JobState, bool]:
    """Fold Slurm state names (base state and flags) into one :class:`JobState`.

    Returns the state and whether the job is configuring (booting nodes).
    Accepts 22.05's single string (as a one-element iterable) and newer state lists.
    """
    upper = [n.strip().upper() for n in names if isinstance(n, str) and n.strip()]
    flags = set(upper)
    base = next((_BASE_STATES[n] for n in upper if n in _BASE_STATES), None)
    if flags & _REQUEUE_FLAGS:
        return JobState.PENDING, False
    if base is not None and base.is_finished:
        return base, False
    if flags & _COMPLETING_FLAGS:
        return JobState.COMPLETING, False
    if flags & _CONFIGURING_FLAGS and base in (None, JobState.RUNNING, JobState.PENDING):
        return JobState.PENDING, True
    if base is not None:
        return base, False
    if "STOPPED" in flags:
        return JobState.SUSPENDED, False
    if "REVOKED" in flags:
        return JobState.CANCELLED, False
    return JobState.UNKNOWN, False


def _number(value: Any) -> int | None:
    """An int from a plain number or a ``{set, infinite, number}`` object (None if unset)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        if value.get("infinite") is True or value.get("set") is False:
            return None
        return _number(value.get("number"))
    return None


def _time(value: Any) -> datetime | None:
    n = _number(value)
    if n is None or n <= 0 or n in (_NO_VAL32, _INFINITE32):
        return None
    try:
        return datetime.fromtimestamp(n, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _state_names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _exit_info(value: Any) -> tuple[int | None, int | None]:
    """(exit code, signal) from a raw wait status int (22.05) or an exit_code object."""
    if isinstance(value, bool):
        return None, None
    if isinstance(value, int):
        if value < 0 or value >= _NO_VAL32:
            return None, None
        termsig = value & 0x7F
        if termsig and termsig != 0x7F:
            return None, termsig
        return (value >> 8) & 0xFF, None
    if not isinstance(value, Mapping):
        return None, None
    status = {s.upper() for s in _state_names(value.get("status"))}
    if "PENDING" in status:
        return None, None
    raw_signal = value.get("signal")
    sig = _number(raw_signal.get("id")) if isinstance(raw_signal, Mapping) else _number(raw_signal)
    if sig is not None and sig <= 0:
        sig = None
    code = _number(value.get("return_code"))
    if "SIGNALED" in status or (sig is not None and code is None):
        return None, sig
    return code, sig


def job_status_from_json(job: Any) -> JobStatus | None:
    """One job object of ``squeue --json`` → :class:`JobStatus` (None if it has no id)."""
    if not isinstance(job, Mapping):
        return None
    job_id = _number(job.get("job_id"))
    if job_id is None:
        raw = job.get("job_id")
        if not (isinstance(raw, str) and raw.isdigit()):
            return None
        job_id = int(raw)
    if job_id <= 0:
        return None
    state, configuring = state_from_names(_state_names(job.get("job_state")))
    reason = _text(job.get("state_description")) or _text(job.get("state_reason"))
    if reason == "None":
        reason = ""
    if configuring and not reason:
        reason = "Configuring"
    exit_code, signal = (
        reported_exit(*_exit_info(job.get("exit_code"))) if state.is_finished else (None, None)
    )
    batch_host = _text(job.get("batch_host"))
    nodes = _text(job.get("nodes"))
    # A job cancelled while pending has a start time (= its end) but never ran anywhere.
    started = state not in (JobState.PENDING, JobState.UNKNOWN) and bool(batch_host or nodes)
    return JobStatus(
        job_id=str(job_id),
        state=state,
        reason=reason,
        user=_text(job.get("user_name")),
        name=_text(job.get("name")),
        partition=_text(job.get("partition")),
        batch_host=batch_host,
        nodes=nodes,
        exit_code=exit_code,
        signal=signal,
        submit_time=_time(job.get("submit_time")),
        start_time=_time(job.get("start_time")) if started else None,
        end_time=_time(job.get("end_time")) if state.is_finished else None,
        expected_start=_time(job.get("start_time")) if state == JobState.PENDING else None,
        expected_end=_time(job.get("end_time")) if state.is_running else None,
    )


def _error_text(err: Any) -> str:
    if isinstance(err, Mapping):
        parts = [_text(err.get(k)) for k in ("error", "description", "source")]
        text = "; ".join(p for p in parts if p)
        num = err.get("error_number")
        return f"{text} (error {num})" if isinstance(num, int) and text else text or str(err)
    return str(err)


def parse_squeue_document(doc: Any) -> dict[str, JobStatus]:
    """A decoded ``squeue --json`` document → ``{job_id: JobStatus}`` for every job in it.

    Raises :class:`SlurmUnavailable` when squeue reported errors and no jobs (22.05 does so,
    with exit status 0, when slurmctld is down) and :class:`SlurmError` for a document that
    is not squeue JSON at all.
    """
    if not isinstance(doc, Mapping):
        raise SlurmError("squeue --json did not return a JSON object")
    jobs = doc.get("jobs")
    if not isinstance(jobs, list):
        raise SlurmError("squeue --json output has no 'jobs' list")
    errors = doc.get("errors")
    if isinstance(errors, list) and errors:
        text = "; ".join(_error_text(e) for e in errors)
        if not jobs:
            raise SlurmUnavailable(f"squeue reported: {text}")
        log.warning("slurm.squeue_errors", errors=text)
    out: dict[str, JobStatus] = {}
    for job in jobs:
        try:
            status = job_status_from_json(job)
        except Exception:  # a shape we did not foresee must not take the tracker down
            log.debug("slurm.squeue_entry_skipped", exc_info=True)
            continue
        if status is not None:
            out[status.job_id] = status
    return out


def parse_squeue_json(data: str | bytes) -> dict[str, JobStatus]:
    """Raw ``squeue --json`` stdout → ``{job_id: JobStatus}``; see :func:`parse_squeue_document`."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SlurmError(f"squeue --json output is not JSON: {exc}") from exc
    return parse_squeue_document(doc)
