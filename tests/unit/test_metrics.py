"""The daemon's Prometheus metrics: no user or session id on /metrics, and usage series
that vanish with what they describe (issue 17, items 4 and 6)."""

from __future__ import annotations

import re

from vizdesk.metrics import Metrics, session_label

SID = "0123456789abcdef"


def series(m: Metrics, name: str) -> list[str]:
    text = m.render().decode()
    return re.findall(rf"^{name}\{{[^}}]*\}}", text, re.M)


def test_session_label_is_a_short_one_way_hash() -> None:
    label = session_label(SID)
    assert re.fullmatch(r"[0-9a-f]{12}", label)
    assert SID not in label and label == session_label(SID) != session_label("f" * 16)


def test_usage_labels_carry_neither_user_nor_session_id() -> None:
    m = Metrics()
    m.set_session_usage(SID, "node1", 12.5, 1 << 20, {"0": (50.0, 1 << 30)})
    text = m.render().decode()
    assert SID not in text and "user=" not in text
    labels = f'node="node1",session="{session_label(SID)}"'
    assert f"vizdesk_session_cpu_percent{{{labels}}} 12.5" in text


def test_a_gpu_that_leaves_the_registration_leaves_metrics() -> None:
    m = Metrics()
    m.set_session_usage(SID, "node1", 1, 1, {str(i): (1.0, 1) for i in range(5)})
    assert len(series(m, "vizdesk_session_gpu_utilization_percent")) == 5
    m.set_session_usage(SID, "node1", 1, 1, {"0": (1.0, 1)})
    assert [s for s in series(m, "vizdesk_session_gpu_memory_bytes") if 'gpu="0"' in s]
    assert len(series(m, "vizdesk_session_gpu_utilization_percent")) == 1
    assert len(series(m, "vizdesk_session_gpu_memory_bytes")) == 1


def test_a_new_node_label_replaces_the_old_series() -> None:
    m = Metrics()
    m.set_session_usage(SID, "node1", 1, 1, {"0": (1.0, 1)})
    m.set_session_usage(SID, "node2", 1, 1, {})
    assert series(m, "vizdesk_session_cpu_percent") == [
        f'vizdesk_session_cpu_percent{{node="node2",session="{session_label(SID)}"}}'
    ]
    assert series(m, "vizdesk_session_gpu_utilization_percent") == []


def test_an_ended_session_leaves_no_series() -> None:
    m = Metrics()
    other = "f" * 16
    m.set_session_usage(SID, "node1", 1, 1, {"0": (1.0, 1), "1": (1.0, 1)})
    m.set_session_usage(other, "node1", 1, 1, {"0": (1.0, 1)})
    m.forget_session(SID)
    m.forget_session(SID)  # twice is harmless
    assert len(series(m, "vizdesk_session_cpu_percent")) == 1
    assert len(series(m, "vizdesk_session_gpu_memory_bytes")) == 1
    m.keep_sessions(set())  # none live any more (a path that missed on_finished)
    for name in (
        "vizdesk_session_cpu_percent",
        "vizdesk_session_memory_bytes",
        "vizdesk_session_gpu_utilization_percent",
        "vizdesk_session_gpu_memory_bytes",
    ):
        assert series(m, name) == [], name
