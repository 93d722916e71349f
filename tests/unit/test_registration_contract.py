"""parse_registration and parse_failure: what a job writes is bounded before it is used
(issue 17, items 4 and 5: a registration's data reaches /metrics and the event loop)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vizdesk.contract.registration import (
    MAX_GPUS,
    MAX_VALUE_BYTES,
    GpuUsage,
    NodeReportedFailure,
    RegistrationRejected,
    failure_json,
    parse_failure,
    parse_registration,
)

SID = "0123456789abcdef"


def gpu(index: Any, **over: Any) -> dict[str, Any]:
    g = {
        "index": index,
        "name": "NVIDIA A40",
        "uuid": "GPU-aaaa",
        "memory_total": 48 << 30,
        "memory_used": 1 << 30,
        "utilization": 5,
    }
    g.update(over)
    return g


def reg(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "session_id": SID,
        "port": 5907,
        "display": 3,
        "password": "Ab3dE6gH",
        "pid": 4242,
        "vnc_pid": 4243,
        "host": "node01",
        "vnc": "tigervnc",
        "gpus": [gpu(0), gpu(1, utilization=-1)],
        "cpu_percent": 123.4,
        "memory_bytes": 512 << 20,
        "started_at": "2026-01-01T00:00:00.000+00:00",
        "heartbeat_at": "2026-01-01T00:00:05.000+00:00",
        "image": "/images/viz.sif",
    }
    doc.update(over)
    return doc


def parse(doc: Any) -> Any:
    raw = doc if isinstance(doc, (str, bytes)) else json.dumps(doc)
    return parse_registration(SID, raw, 5901, 5999)


def test_a_real_registration_is_taken_with_typed_fields() -> None:
    r = parse(reg())
    assert (r.port, r.display, r.pid, r.vnc_pid, r.host, r.vnc) == (
        5907,
        3,
        4242,
        4243,
        "node01",
        "tigervnc",
    )
    assert r.cpu_percent == 123.4 and r.memory_bytes == 512 << 20
    assert r.image == "/images/viz.sif"
    assert r.gpus == [
        GpuUsage(0, "NVIDIA A40", "GPU-aaaa", 48 << 30, 1 << 30, 5),
        GpuUsage(1, "NVIDIA A40", "GPU-aaaa", 48 << 30, 1 << 30, -1),
    ]


def test_a_minimal_registration_is_enough() -> None:
    r = parse({"session_id": SID, "port": 5950, "password": "x"})
    assert r.port == 5950 and r.display is None and r.gpus == [] and r.cpu_percent == 0
    assert r.image is None and r.vnc == ""


def test_unknown_keys_are_ignored() -> None:
    assert parse(reg(extra={"a": 1})).port == 5907


@pytest.mark.parametrize(
    ("over", "words"),
    [
        (
            {"gpus": [{"index": 1000 + i, "utilization": 1} for i in range(500)]},
            "gpus has 500 entries, at most 16",
        ),
        ({"gpus": [gpu(i) for i in range(MAX_GPUS + 1)]}, "at most 16"),
        ({"gpus": {"0": gpu(0)}}, "gpus is not a list"),
        ({"gpus": ["x"]}, "gpus[0] is not an object"),
        ({"gpus": [gpu(64)]}, "gpus[0].index is not an integer 0-63"),
        ({"gpus": [gpu(-1)]}, "index"),
        ({"gpus": [gpu("0")]}, "index"),
        ({"gpus": [gpu(True)]}, "index"),
        ({"gpus": [gpu(1.0)]}, "index"),
        ({"gpus": [gpu('0"} evil{x="')]}, "index"),
        ({"gpus": [{"name": "no index"}]}, "gpus[0].index is missing"),
        ({"gpus": [gpu(3), gpu(3)]}, "gpus[1].index 3 is repeated"),
        ({"gpus": [gpu(0, utilization=101)]}, "utilization"),
        ({"gpus": [gpu(0, memory_used=-5)]}, "memory_used"),
        ({"gpus": [gpu(0, memory_used=1.5)]}, "memory_used"),
        ({"gpus": [gpu(0, name="n" * 257)]}, "name"),
        ({"gpus": [gpu(0, uuid=["x"])]}, "uuid"),
        ({"cpu_percent": -1}, "cpu_percent"),
        ({"cpu_percent": 1e300}, "cpu_percent"),
        ({"cpu_percent": "12"}, "cpu_percent"),
        ({"memory_bytes": 1 << 61}, "memory_bytes"),
        ({"memory_bytes": False}, "memory_bytes"),
        ({"pid": -3}, "pid"),
        ({"vnc_pid": 1 << 40}, "vnc_pid"),
        ({"display": "3"}, "display"),
        ({"display": 70000}, "display"),
        ({"vnc": "realvnc"}, "vnc is not one of tigervnc, turbovnc"),
        ({"vnc": 1}, "vnc"),
        ({"image": "i" * 4097}, "image"),
        ({"image": 3}, "image"),
        ({"host": "h" * 256}, "host"),
        ({"started_at": "t" * 65}, "started_at"),
        ({"heartbeat_at": {}}, "heartbeat_at"),
        ({"password": "p" * 129}, "password"),
        ({"port": 22}, "registered port 22 outside 5901-5999"),
        ({"port": "5907"}, "port is not an integer"),
        ({"session_id": "f" * 16}, "another session"),
    ],
)
def test_out_of_bounds_fields_are_rejected(over: dict[str, Any], words: str) -> None:
    with pytest.raises(RegistrationRejected) as err:
        parse(reg(**over))
    assert words in str(err.value)
    assert "evil" not in str(err.value)  # the value is never echoed


def test_the_boundaries_themselves_pass() -> None:
    r = parse(
        reg(
            gpus=[gpu(63 - i) for i in range(MAX_GPUS)],
            image="i" * 4096,
            host="h" * 255,
            cpu_percent=0,
            memory_bytes=0,
        )
    )
    assert len(r.gpus) == 16 and r.gpus[0].index == 63


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_rejected(constant: str) -> None:
    raw = json.dumps(reg()).replace('"cpu_percent": 123.4', f'"cpu_percent": {constant}')
    assert constant in raw
    with pytest.raises(RegistrationRejected):
        parse(raw)


def test_a_value_over_the_size_bound_is_rejected_unparsed() -> None:
    raw = json.dumps(reg(pad="x" * MAX_VALUE_BYTES))
    with pytest.raises(RegistrationRejected) as err:
        parse(raw)
    assert f"value of {len(raw)} bytes exceeds {MAX_VALUE_BYTES}" in str(err.value)
    with pytest.raises(RegistrationRejected):
        parse(raw.encode())


@pytest.mark.parametrize("raw", ["[" * 60000, '{"a":' * 20000 + "1" + "}" * 20000])
def test_deep_nesting_is_rejected_not_a_recursion_error(raw: str) -> None:
    with pytest.raises(RegistrationRejected):
        parse(raw)
    assert parse_failure(SID, raw) is None


def test_huge_integer_is_rejected() -> None:
    with pytest.raises(RegistrationRejected):
        parse(f'{{"session_id": "{SID}", "port": {"9" * 5000}}}')


def test_failure_record_still_works_and_is_bounded() -> None:
    raw = failure_json(SID, "no VNC server\n" + "x" * 5000)
    assert parse_failure(SID, raw) == "no VNC server " + "x" * (500 - 14)
    with pytest.raises(NodeReportedFailure) as err:
        parse(raw)
    assert err.value.error.startswith("no VNC server")
    assert parse_failure("f" * 16, raw) is None
    big = json.dumps({"session_id": SID, "error": "e" * MAX_VALUE_BYTES})
    assert parse_failure(SID, big) is None
