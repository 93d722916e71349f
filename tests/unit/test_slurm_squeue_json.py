"""The squeue --json parser on real 22.05/26.05 captures and on synthetic newer shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vizdesk.slurm.base import JobState, SlurmError, SlurmUnavailable
from vizdesk.slurm.squeue_json import (
    job_status_from_json,
    parse_squeue_document,
    parse_squeue_json,
    state_from_names,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


def load(name: str) -> str:
    return (FIX / name).read_text()


def ids(name: str) -> dict[str, str]:
    out = {}
    for line in load(name).splitlines():
        k, _, v = line.partition("=")
        if v.strip().isdigit():
            out[k.strip()] = v.strip()
    return out


@pytest.mark.parametrize("version", ["22.05", "26.05"])
def test_real_capture_one_job_per_state(version: str) -> None:
    jobs = parse_squeue_json(load(f"squeue-{version}-all.json"))
    known = ids(f"squeue-{version}-ids.txt")

    running = jobs[known["running"]]
    assert running.state is JobState.RUNNING
    assert running.batch_host and running.nodes == running.batch_host
    assert running.user == "alice"
    assert running.start_time is not None and running.end_time is None
    assert running.exit_code is None and running.signal is None

    pending = jobs[known["pending"]]
    assert pending.state is JobState.PENDING
    assert pending.reason == "BeginTime"
    assert pending.batch_host == ""
    # Slurm reports an *expected* start for a pending job: not a start.
    assert pending.start_time is None and pending.end_time is None

    completed = jobs[known["completed"]]
    assert completed.state is JobState.COMPLETED
    assert (completed.exit_code, completed.signal) == (0, None)
    assert completed.end_time is not None and completed.reason == ""

    failed = jobs[known["failed"]]
    assert failed.state is JobState.FAILED
    assert failed.reason == "NonZeroExitCode"
    assert (failed.exit_code, failed.signal) == (3, None)

    cancelled = jobs[known["cancelled"]]
    assert cancelled.state is JobState.CANCELLED
    assert (cancelled.exit_code, cancelled.signal) == (None, 15)

    for st in jobs.values():
        assert st.submit_time is not None and st.submit_time.tzinfo is UTC
        assert st.partition in {"viz", "batch"}


def test_22_05_times_are_plain_epochs() -> None:
    doc = json.loads(load("squeue-22.05-all.json"))
    raw = next(j for j in doc["jobs"] if j["job_state"] == "FAILED")
    st = job_status_from_json(raw)
    assert st is not None
    assert st.submit_time == datetime.fromtimestamp(raw["submit_time"], tz=UTC)
    assert st.end_time == datetime.fromtimestamp(raw["end_time"], tz=UTC)
    assert raw["exit_code"] == 768  # the raw wait status that became exit code 3


def test_26_05_default_leaves_finished_jobs_out() -> None:
    # Why the CLI backend passes --states=all: without it 26.05 omits finished jobs.
    default = parse_squeue_json(load("squeue-26.05-default.json"))
    everything = parse_squeue_json(load("squeue-26.05-all.json"))
    assert {s.state for s in default.values()} <= {JobState.RUNNING, JobState.PENDING}
    assert any(s.state.is_finished for s in everything.values())


def test_cancelled_while_pending_never_started() -> None:
    jobs = parse_squeue_json(load("squeue-26.05-all.json"))
    st = jobs["2"]
    assert st.state is JobState.CANCELLED and st.reason == "BeginTime"
    assert st.start_time is None and st.end_time is not None


@pytest.mark.parametrize(
    "name", ["squeue-22.05-unreachable.json", "squeue-2605-synthetic-unreachable.json"]
)
def test_errors_without_jobs_mean_unavailable_not_empty(name: str) -> None:
    # 22.05 exits 0 in this case: reading it as "no jobs" would end every session.
    with pytest.raises(SlurmUnavailable):
        parse_squeue_json(load(name))


def test_errors_with_jobs_still_return_the_jobs() -> None:
    doc = json.loads(load("squeue-26.05-all.json"))
    doc["errors"] = [{"error": "something minor", "error_number": 9999}]
    assert len(parse_squeue_document(doc)) == len(doc["jobs"])


def test_empty_queue_is_empty() -> None:
    assert parse_squeue_document({"jobs": [], "errors": [], "warnings": []}) == {}


EXPECTED_FLAGS = {
    "101": (JobState.CANCELLED, None, 15),
    "102": (JobState.COMPLETED, 0, None),
    "103": (JobState.COMPLETING, None, None),
    "104": (JobState.COMPLETING, None, None),
    "105": (JobState.PENDING, None, None),
    "106": (JobState.PENDING, None, None),
    "107": (JobState.SUSPENDED, None, None),
    "108": (JobState.TIMEOUT, None, 15),
    "109": (JobState.OUT_OF_MEMORY, 125, None),
    "110": (JobState.NODE_FAIL, 0, None),
    "111": (JobState.PENDING, None, None),
    "112": (JobState.UNKNOWN, None, None),
    "113": (JobState.RUNNING, None, None),
    "114": (JobState.FAILED, 3, None),
}


def test_synthetic_state_flags() -> None:
    jobs = parse_squeue_json(load("squeue-2605-synthetic-flags.json"))
    got = {jid: (s.state, s.exit_code, s.signal) for jid, s in jobs.items()}
    assert got == EXPECTED_FLAGS
    assert jobs["101"].state.is_finished and jobs["102"].state.is_finished
    assert jobs["103"].state.is_running and not jobs["103"].state.is_finished
    assert jobs["105"].reason == "BeginTime" and jobs["105"].start_time is None
    assert jobs["106"].reason == "Configuring" and jobs["106"].start_time is None
    assert jobs["113"].end_time is None  # infinite
    assert jobs["114"].reason == "Job failed on node vizsid"  # state_description wins


def test_synthetic_odd_fields_are_skipped_not_fatal() -> None:
    jobs = parse_squeue_json(load("squeue-2605-synthetic-odd.json"))
    assert set(jobs) == {"201", "202", "203", "204", "205", "206", "207"}
    odd = jobs["201"]
    assert (odd.state, odd.batch_host, odd.nodes, odd.user) == (JobState.RUNNING, "", "", "")
    bare = jobs["202"]
    assert bare.state is JobState.PENDING and bare.submit_time is None and bare.name == ""
    assert jobs["203"].state is JobState.RUNNING and jobs["203"].start_time is None
    assert (jobs["204"].exit_code, jobs["204"].signal) == (0, None)
    assert (jobs["205"].exit_code, jobs["205"].signal) == (None, 9)
    assert jobs["206"].state is JobState.RUNNING
    assert (jobs["207"].exit_code, jobs["207"].signal) == (None, None)


def test_synthetic_23_11_shape() -> None:
    jobs = parse_squeue_json(load("squeue-2311-synthetic-v0040.json"))
    assert {j: s.state for j, s in jobs.items()} == {
        "509": JobState.COMPLETED,
        "510": JobState.FAILED,
        "511": JobState.RUNNING,
        "512": JobState.PENDING,
    }
    assert jobs["510"].exit_code == 1 and jobs["511"].batch_host == "cn1"
    assert jobs["512"].reason == "Priority" and jobs["512"].exit_code is None


@pytest.mark.parametrize(
    ("names", "state"),
    [
        (["RUNNING"], JobState.RUNNING),
        (["COMPLETING"], JobState.COMPLETING),
        (["FAILED", "COMPLETING"], JobState.FAILED),
        (["COMPLETED", "REQUEUED"], JobState.PENDING),  # goes back to the queue
        (["REQUEUED"], JobState.PENDING),  # 22.05 string form of a requeue
        (["CONFIGURING"], JobState.PENDING),
        (["STOPPED"], JobState.SUSPENDED),
        (["REVOKED"], JobState.CANCELLED),
        (["STAGE_OUT"], JobState.COMPLETING),
        (["running"], JobState.RUNNING),
        ([], JobState.UNKNOWN),
        (["NEW_THING"], JobState.UNKNOWN),
    ],
)
def test_state_folding(names: list[str], state: JobState) -> None:
    assert state_from_names(names)[0] is state


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0, (0, None)),
        (256, (1, None)),
        (768, (3, None)),
        (9, (None, 9)),
        (4294967294, (None, None)),
    ],
)
def test_22_05_raw_wait_status(raw: int, expected: tuple[int | None, int | None]) -> None:
    st = job_status_from_json({"job_id": 5, "job_state": "FAILED", "exit_code": raw})
    assert st is not None and (st.exit_code, st.signal) == expected


@pytest.mark.parametrize(
    "data",
    ["", "not json", "[]", '{"jobs": {}}', '{"meta": {}}', "null", b"\xff\xfe"],
)
def test_malformed_documents_raise(data: str | bytes) -> None:
    with pytest.raises(SlurmError):
        parse_squeue_json(data)


def test_rejects_job_entries_without_usable_id() -> None:
    bad: list[object] = [{"job_id": None}, {"job_id": True}, {"job_id": "12a"}, {"job_id": 0}, []]
    for raw in bad:
        assert job_status_from_json(raw) is None
