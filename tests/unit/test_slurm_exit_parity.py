"""Every backend reports the same (exit code, signal) for the same finished job.

pyslurm gives only what its ``_get_exit_code`` makes of the wait status (a signal, or the
exit status minus 128 when it is 128 or more). The CLI parsers see the whole status in
three shapes (22.05's raw int in JSON and text, 23.02+'s ``<exit>:<signal>`` text and
26.05's exit_code object), and must answer what pyslurm answers. ``pyslurm_view`` below
restates pyslurm 25.11's helper (pyslurm/utils/helpers.pyx) as the reference; the 25.11
tier's parity test compares the real pyslurm with the real CLI on the same jobs.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from vizdesk.slurm.base import reported_exit
from vizdesk.slurm.pyslurm_backend import job_status_from_pyslurm
from vizdesk.slurm.squeue_json import job_status_from_json
from vizdesk.slurm.squeue_text import FIELDS, job_status_from_fields


def pyslurm_view(status: int) -> tuple[int, int]:
    """pyslurm 25.11's ``_get_exit_code``: (exit state, signal)."""
    if os.WIFSIGNALED(status):
        return 0, os.WTERMSIG(status)
    code = os.WEXITSTATUS(status)
    return (code - 128 if code >= 128 else code), 0


def text_fields(exit_value: str) -> list[str]:
    values = {
        "jobid": "77",
        "statecompact": "CANCELLED",
        "reason": "None",
        "username": "alice",
        "partition": "viz",
        "batchhost": "node1",
        "nodelist": "node1",
        "exit_code": exit_value,
        "submittime": "1700000000",
        "starttime": "1700000005",
        "endtime": "1700000100",
        "name": "vizdesk-77",
    }
    assert len(values) == len(FIELDS)
    return list(values.values())


# (wait status, what every backend must report)
CASES = [
    (0, (0, None)),
    (3 << 8, (3, None)),
    (143 << 8, (15, None)),  # a shell that trapped SIGTERM and exited 128 + 15
    (255 << 8, (127, None)),
    (128 << 8, (0, None)),
    (9, (None, 9)),  # killed by SIGKILL
    (15, (None, 15)),
]


@pytest.mark.parametrize(("status", "expected"), CASES)
def test_every_mapper_reports_what_pyslurm_reports(
    status: int, expected: tuple[int | None, int | None]
) -> None:
    code, sig = pyslurm_view(status)
    py = job_status_from_pyslurm(
        SimpleNamespace(
            id=77,
            state="CANCELLED",
            state_reason="None",
            user_name="alice",
            name="x",
            partition="viz",
            batch_host="node1",
            allocated_nodes="node1",
            exit_code=code,
            exit_code_signal=sig,
            submit_time=1700000000,
            start_time=1700000005,
            end_time=1700000100,
        )
    )
    raw_json = job_status_from_json({"job_id": 77, "job_state": "CANCELLED", "exit_code": status})
    signalled = os.WIFSIGNALED(status)
    obj_json = job_status_from_json(
        {
            "job_id": 77,
            "job_state": ["CANCELLED"],
            "exit_code": {
                "status": ["SIGNALED" if signalled else ("SUCCESS" if status == 0 else "ERROR")],
                "return_code": {"set": True, "infinite": False, "number": os.WEXITSTATUS(status)},
                "signal": {
                    "id": {
                        "set": signalled,
                        "infinite": False,
                        "number": os.WTERMSIG(status) if signalled else 0,
                    },
                    "name": "",
                },
            },
        }
    )
    text_2205 = job_status_from_fields(text_fields(str(status)))
    text_new = job_status_from_fields(
        text_fields(f"{os.WEXITSTATUS(status)}:{os.WTERMSIG(status) if signalled else 0}")
    )
    got = {
        name: (st.exit_code, st.signal) if st is not None else None
        for name, st in {
            "pyslurm": py,
            "json 22.05": raw_json,
            "json 26.05": obj_json,
            "text 22.05": text_2205,
            "text 23.02+": text_new,
        }.items()
    }
    assert got == dict.fromkeys(got, expected)


def test_the_rule_itself() -> None:
    assert reported_exit(None, None) == (None, None)
    assert reported_exit(143, None) == (15, None)
    assert reported_exit(0, 15) == (None, 15)
    assert reported_exit(127, 0) == (127, None)
