"""The delimited ``squeue --Format`` parser on real captures of Slurm 22.05 and 26.05
(testbed/capture-text-fixtures.sh), and the CLI backend's filtered query around it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from vizdesk.slurm.base import JobState, SlurmError
from vizdesk.slurm.squeue_json import job_status_from_json
from vizdesk.slurm.squeue_text import (
    FIELD_SEP,
    FIELDS,
    RECORD_SEP,
    format_option,
    parse_squeue_text,
    squeue_text_argv,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
VERSIONS = [v for v in ("22.05", "26.05") if (FIX / f"squeue-{v}-text-states.txt").exists()]


def ids(version: str) -> dict[str, str]:
    out = {}
    for line in (FIX / f"squeue-{version}-text-ids.txt").read_text().split("\n"):
        if not line:
            continue
        k, _, v = line.partition("=")
        out[k] = v
    return out


def test_both_versions_are_captured() -> None:
    assert VERSIONS == ["22.05", "26.05"]


@pytest.mark.parametrize("version", VERSIONS)
def test_states_of_a_real_capture(version: str) -> None:
    kinds = ids(version)
    assert kinds["slurm"].startswith("slurm") and version in kinds["slurm"]
    got = parse_squeue_text((FIX / f"squeue-{version}-text-states.txt").read_bytes())
    assert kinds["unknown"] not in got  # the filter keeps the known ids only
    assert len(got) == 9
    run = got[kinds["running"]]
    assert (run.state, run.user, run.reason, run.exit_code) == (JobState.RUNNING, "alice", "", None)
    assert run.batch_host and run.nodes and run.start_time and run.expected_end
    assert run.end_time is None and run.submit_time is not None
    begin = got[kinds["pending_begintime"]]
    assert (begin.state, begin.reason, begin.batch_host, begin.start_time) == (
        JobState.PENDING,
        "BeginTime",
        "",
        None,
    )
    assert begin.expected_start is not None and begin.expected_start > begin.submit_time  # type: ignore[operator]
    held = got[kinds["pending_held"]]
    assert (held.state, held.reason, held.expected_start) == (JobState.PENDING, "JobHeldUser", None)
    done = got[kinds["completed"]]
    assert (done.state, done.exit_code, done.signal) == (JobState.COMPLETED, 0, None)
    assert done.end_time is not None and done.start_time is not None
    failed = got[kinds["failed_exit3"]]
    assert (failed.state, failed.exit_code, failed.reason) == (
        JobState.FAILED,
        3,
        "NonZeroExitCode",
    )
    killed = got[kinds["failed_signal9"]]
    assert (killed.state, killed.exit_code, killed.signal) == (JobState.FAILED, None, 9)
    cancelled = got[kinds["cancelled_running"]]
    assert cancelled.state is JobState.CANCELLED and cancelled.start_time is not None
    never_ran = got[kinds["cancelled_pending"]]
    assert never_ran.state is JobState.CANCELLED and never_ran.start_time is None
    assert never_ran.batch_host == ""
    odd = got[kinds["odd_name"]]
    assert odd.name == f"vizdesk fx, odd|name{FIELD_SEP}with separator"
    assert odd.state is JobState.PENDING


@pytest.mark.parametrize("version", VERSIONS)
def test_a_lone_unknown_id_is_an_error_exit(version: str) -> None:
    text = (FIX / f"squeue-{version}-text-unknown.txt").read_text()
    out, _, err = text.partition("--- stderr (exit ")
    assert out == "" and err.startswith("1)") and "Invalid job id specified" in err


@pytest.mark.parametrize("version", VERSIONS)
def test_the_capture_used_todays_format(version: str) -> None:
    fmt = ids(version)["format"]
    assert fmt.replace(FIELD_SEP, "").replace(RECORD_SEP, "") == format_option().replace(
        FIELD_SEP, ""
    ).replace(RECORD_SEP, "")


def test_argv() -> None:
    argv = squeue_text_argv("squeue", ["5", "7"])
    assert argv[:5] == ["squeue", "--noheader", "--all", "--states=all", "--jobs=5,7"]
    assert argv[5].startswith("--Format=JobID:0\x1f,") and argv[5].endswith("Name:0\x1e")
    assert argv[5].count(",") == len(FIELDS) - 1


def test_odd_records() -> None:
    good = FIELD_SEP.join(
        ["12", "COMPLETING", "None", "bob", "viz", "n1", "n1", "", "10", "20", "30", "x"]
    )
    requeued = FIELD_SEP.join(
        ["13", "REQUEUED", "BeginTime", "bob", "viz", "(null)", "", "0:0", "10", "N/A", "N/A", "y"]
    )
    short = FIELD_SEP.join(["14", "RUNNING"])
    got = parse_squeue_text(f"{good}{RECORD_SEP}\n{requeued}{RECORD_SEP}\n{short}{RECORD_SEP}\n")
    assert got["12"].state is JobState.COMPLETING and got["12"].start_time is not None
    assert got["13"].state is JobState.PENDING and got["13"].batch_host == ""
    assert "14" not in got
    assert parse_squeue_text("") == {} and parse_squeue_text("\n") == {}
    with pytest.raises(SlurmError):
        parse_squeue_text('{"jobs": []}')


def _record(jid: str, state: str, host: str, submit: str, start: str, end: str) -> str:
    return FIELD_SEP.join(
        [jid, state, "None", "alice", "viz", host, host, "0:0", submit, start, end, "j"]
    )


def _epoch(n: int) -> datetime:
    return datetime.fromtimestamp(n, tz=UTC)


def test_end_time_and_expectations_as_the_json_parser_reads_them() -> None:
    """EndTime of a running job is its expected end (start plus time limit), StartTime of a
    pending one its expected start; both read exactly as squeue --json's end_time and
    start_time are (the parity of the CLI backend's two queries and of pyslurm)."""
    t0 = 1796306527
    rows = {
        "1": ("RUNNING", "n1", t0, t0 + 5, t0 + 1805),
        "2": ("COMPLETING", "n1", t0, t0 + 5, t0 + 60),
        "3": ("PENDING", "(null)", t0, t0 + 3600, t0 + 5400),  # backfill estimate
        "4": ("PENDING", "(null)", t0, 0, 0),  # no estimate (held)
        "5": ("COMPLETED", "n1", t0, t0 + 5, t0 + 65),
        "6": ("TIMEOUT", "n1", t0, t0 + 5, t0 + 65),
    }
    text = "".join(
        _record(jid, st, host, str(sub), str(start) if start else "N/A", str(end) if end else "N/A")
        + RECORD_SEP
        + "\n"
        for jid, (st, host, sub, start, end) in rows.items()
    )
    got = parse_squeue_text(text)
    run = got["1"]
    assert (run.start_time, run.expected_end, run.end_time) == (
        _epoch(t0 + 5),
        _epoch(t0 + 1805),
        None,
    )
    assert got["2"].expected_end == _epoch(t0 + 60) and got["2"].end_time is None
    est = got["3"]
    assert (est.expected_start, est.expected_end, est.start_time) == (_epoch(t0 + 3600), None, None)
    assert (got["4"].expected_start, got["4"].expected_end) == (None, None)
    for jid in ("5", "6"):
        assert (got[jid].end_time, got[jid].expected_end) == (_epoch(t0 + 65), None)
    for jid, (st, host, sub, start, end) in rows.items():
        host = "" if host == "(null)" else host
        as_json = job_status_from_json(
            {
                "job_id": int(jid),
                "job_state": st,
                "state_reason": "None",
                "user_name": "alice",
                "name": "j",
                "partition": "viz",
                "batch_host": host,
                "nodes": host,
                "exit_code": 0,
                "submit_time": sub,
                "start_time": start,
                "end_time": end,
            }
        )
        assert as_json is not None
        assert (as_json.expected_start, as_json.expected_end, as_json.end_time) == (
            got[jid].expected_start,
            got[jid].expected_end,
            got[jid].end_time,
        ), jid


def test_epoch_end_times_of_the_real_captures() -> None:
    """The captured running job's EndTime is 30 min after its start (its time limit)."""
    for version in VERSIONS:
        kinds = ids(version)
        got = parse_squeue_text((FIX / f"squeue-{version}-text-states.txt").read_bytes())
        run = got[kinds["running"]]
        assert run.start_time is not None and run.expected_end is not None
        assert (run.expected_end - run.start_time).total_seconds() % 60 == 0, version
        assert run.expected_end > run.start_time
