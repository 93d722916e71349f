"""``squeue --Format`` with separators: the filtered, cheap form of the tracker's query.

Why text and not JSON: Slurm 22.05's ``squeue --json`` ignores every filter and prints
every job slurmctld remembers (~3 kB each), so a tick cost what the cluster remembers,
not what vizdesk tracks. The delimited text form honours ``--jobs`` on every version
(22.05 through 26.05), is ~20x smaller per job and needs no JSON decoding.

The query (:func:`squeue_text_argv`)::

    squeue --noheader --all --states=all --jobs=<ids> --Format=<field>:0<US>,...,Name:0<RS>

with ``SLURM_TIME_FORMAT=%s`` in the environment so times come as epoch seconds.
Every field is printed in full (width 0) and followed by the unit separator ``\\x1f``;
the record ends with the record separator ``\\x1e`` then squeue's newline, so a job name
with a separator or a newline in it cannot shift the fields (the name is the last field
and takes the rest of the record). Which fields, and what their values look like:

* ``JobID`` (``%A``: the job's own numeric id; array tasks are their own jobs);
* ``State`` (``%T``: ``job_state_string()``: one word, a flag winning over the base
  state: ``COMPLETING``, ``CONFIGURING``, ``REQUEUED``...; folded by
  :func:`~vizdesk.slurm.squeue_json.state_from_names` like the JSON's);
* ``Reason`` (the state description when Slurm has one, else the reason code's name;
  ``None`` means none);
* ``UserName``, ``Partition``, ``BatchHost``, ``NodeList`` (``(null)`` or empty before the
  job runs);
* ``exit_code`` (23.02+: ``<exit>:<signal>``; 22.05: the raw ``wait()`` status, 768 =
  exit 3; empty when Slurm has none);
* ``SubmitTime``, ``StartTime``, ``EndTime`` (epoch seconds, ``0``/``N/A``/``Unknown``
  when unset; a pending job's start/end are Slurm's expectations, as in the JSON);
* ``Name`` (last).

Captured outputs of Slurm 22.05 and 26.05 are in ``tests/fixtures/slurm/squeue-*-text*``.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime

import structlog

from .base import JobState, JobStatus, SlurmError, reported_exit
from .squeue_json import _exit_info as raw_exit_info
from .squeue_json import state_from_names

log = structlog.get_logger("vizdesk.slurm")

FIELD_SEP = "\x1f"
RECORD_SEP = "\x1e"
FIELDS = (
    "JobID",
    "State",
    "Reason",
    "UserName",
    "Partition",
    "BatchHost",
    "NodeList",
    "exit_code",
    "SubmitTime",
    "StartTime",
    "EndTime",
    "Name",
)
#: The environment squeue needs for epoch times (added to the minimal command env).
TIME_ENV = {"SLURM_TIME_FORMAT": "%s"}
_UNSET = frozenset({"", "N/A", "NONE", "(NULL)", "UNKNOWN", "0"})


def format_option() -> str:
    """``--Format=`` value: every field full width, unit separator after each one, the
    record separator after the last."""
    parts = [f"{name}:0{FIELD_SEP}" for name in FIELDS[:-1]]
    parts.append(f"{FIELDS[-1]}:0{RECORD_SEP}")
    return "--Format=" + ",".join(parts)


def squeue_text_argv(squeue: str, job_ids: Collection[str]) -> list[str]:
    """The argv of one filtered query (ids already validated as digits)."""
    argv = [squeue, "--noheader", "--all", "--states=all"]
    if job_ids:
        argv.append("--jobs=" + ",".join(job_ids))
    argv.append(format_option())
    return argv


def _time(value: str) -> datetime | None:
    v = value.strip()
    if v.upper() in _UNSET or not v.isdigit():
        return None
    n = int(v)
    if n <= 0 or n >= 0xFFFFFFFE:
        return None
    try:
        return datetime.fromtimestamp(n, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _host(value: str) -> str:
    v = value.strip()
    return "" if v.upper() in ("(NULL)", "N/A", "NONE") else v


def _exit_info(value: str) -> tuple[int | None, int | None]:
    """(exit code, signal): 23.02+ print ``<exit>:<signal>``, 22.05 the raw ``wait()``
    status (768 = exit 3, 9 = killed by SIGKILL)."""
    v = value.strip()
    if v.isdigit():
        return raw_exit_info(int(v))
    code, _, sig = v.partition(":")
    if not (code.isdigit() and sig.isdigit()):
        return None, None
    if int(sig):
        return None, int(sig)
    return int(code), None


def job_status_from_fields(fields: list[str]) -> JobStatus | None:
    """One record's fields (in :data:`FIELDS` order) → :class:`JobStatus`."""
    if len(fields) != len(FIELDS):
        return None
    (jid, state_s, reason, user, partition, batch_host, nodes, exit_s, submit, start, end,
     name) = fields  # fmt: skip
    jid = jid.strip()
    if not jid.isdigit() or int(jid) <= 0:
        return None
    state, configuring = state_from_names([state_s])
    reason = reason.strip()
    if reason == "None":
        reason = ""
    if configuring and not reason:
        reason = "Configuring"
    batch_host, nodes = _host(batch_host), _host(nodes)
    exit_code, signal = reported_exit(*_exit_info(exit_s)) if state.is_finished else (None, None)
    started = state not in (JobState.PENDING, JobState.UNKNOWN) and bool(batch_host or nodes)
    return JobStatus(
        job_id=str(int(jid)),
        state=state,
        reason=reason,
        user=user.strip(),
        name=name,
        partition=partition.strip(),
        batch_host=batch_host,
        nodes=nodes,
        exit_code=exit_code,
        signal=signal,
        submit_time=_time(submit),
        start_time=_time(start) if started else None,
        end_time=_time(end) if state.is_finished else None,
        expected_start=_time(start) if state == JobState.PENDING else None,
        expected_end=_time(end) if state.is_running else None,
    )


def parse_squeue_text(data: str | bytes) -> dict[str, JobStatus]:
    """Raw stdout of :func:`squeue_text_argv` → ``{job_id: JobStatus}``.

    Raises :class:`SlurmError` when the output is not in that form at all (a squeue that
    does not know a field prints it differently); records it cannot read are skipped.
    """
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    out: dict[str, JobStatus] = {}
    bad = 0
    for raw in text.split(RECORD_SEP):
        record = raw.lstrip("\n")
        if not record.strip():
            continue
        fields = record.split(FIELD_SEP, len(FIELDS) - 1)
        status = job_status_from_fields(fields)
        if status is None:
            bad += 1
            continue
        out[status.job_id] = status
    if bad and not out:
        raise SlurmError(f"squeue --Format output not understood: {text[:200]!r}")
    if bad:
        log.warning("slurm.squeue_text_skipped", records=bad)
    return out
