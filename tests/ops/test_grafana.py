"""Grafana dashboard and Prometheus alert rules: loadable, valid PromQL, real metrics only."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO, ensure_tool

GRAFANA = REPO / "grafana"
DASHBOARD = GRAFANA / "vizdesk-dashboard.json"
ALERTS = GRAFANA / "vizdesk-alerts.yml"

# The metrics the daemon exports (issue 6 / the lead's list), by type.
COUNTERS = {
    "vnc_sessions_created_total",
    "vnc_sessions_failed_total",
    "vizdesk_proxy_bytes_total",
    "vizdesk_slurm_errors_total",
    "vizdesk_redis_errors_total",
}
GAUGES = {
    "vnc_sessions_active",
    "vizdesk_proxy_connections_open",
    "vizdesk_jobs",
    "vizdesk_session_cpu_percent",
    "vizdesk_session_memory_bytes",
    "vizdesk_session_gpu_utilization_percent",
    "vizdesk_session_gpu_memory_bytes",
}
HISTOGRAMS = {
    "vnc_session_start_seconds",
    "vizdesk_slurm_call_seconds",
    "vizdesk_http_request_seconds",
}
ALLOWED = COUNTERS | GAUGES | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
PROMQL_WORDS = {
    "sum",
    "avg",
    "max",
    "min",
    "count",
    "topk",
    "bottomk",
    "by",
    "without",
    "rate",
    "increase",
    "irate",
    "histogram_quantile",
    "vector",
    "or",
    "and",
    "unless",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "label_values",
    "offset",
    "bool",
    "abs",
    "clamp_min",
    "clamp_max",
    "delta",
    "deriv",
    "time",
    "scalar",
    "sort_desc",
}
IDENT_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _exprs() -> list[str]:
    return [t["expr"] for p in _panels() for t in p["targets"]]


def _template_queries() -> list[str]:
    return [v["query"]["query"] for v in _dashboard()["templating"]["list"] if v["type"] == "query"]


def metric_names(expr: str) -> set[str]:
    """Identifiers of a PromQL expression that are metric names.

    Strips strings, label matchers/groupings, durations and Grafana variables first;
    what remains that is not a PromQL keyword or function is a metric name.
    """
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors
    e = re.sub(r"\$\w+", "", e)  # Grafana variables
    e = re.sub(r"label_values\(([^,()]*),\s*\w+\)", r"\1", e)  # label_values(m, label)
    return {w for w in IDENT_RE.findall(e) if w not in PROMQL_WORDS and not w.isdigit()}


def test_metric_name_extraction() -> None:
    assert metric_names(
        "histogram_quantile(0.9, sum by (le, op) (rate(vizdesk_slurm_call_seconds_bucket"
        '{job=~"$job", op="submit"}[$__rate_interval])))'
    ) == {"vizdesk_slurm_call_seconds_bucket"}
    assert metric_names("sum(rate(a_total[5m])) / sum(b) or vector(0)") == {"a_total", "b"}
    assert metric_names('label_values(m{job=~"$job"}, instance)') == {"m"}


def test_dashboard_is_current_with_its_generator() -> None:
    res = subprocess.run(
        [sys.executable, str(GRAFANA / "build_dashboard.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr


def test_dashboard_structure_is_loadable() -> None:
    d = _dashboard()
    assert 36 <= d["schemaVersion"] <= 41
    assert d["uid"] and d["title"] == "vizdesk"
    assert d["id"] is None  # importable into any Grafana
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]
    assert d["__inputs"][0]["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not area & cells, f"panel {p['title']!r} overlaps another"
        cells |= area
    for p in _panels():
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def test_dashboard_has_the_panels_admins_need() -> None:
    titles = " | ".join(p["title"] for p in _panels()).lower()
    for needle in (
        "active sessions by state",
        "session creations",
        "start time",
        "failed sessions by reason",
        "proxy traffic",
        "open proxy connections",
        "slurm call latency",
        "slurm errors",
        "gpu utilisation per node",
        "gpu utilisation per session",
        "http p95",
    ):
        assert needle in titles, needle
    exprs = "\n".join(_exprs())
    for q in ("0.5", "0.9", "0.99"):
        assert (
            f"histogram_quantile({q}, sum by (le) (rate(vnc_session_start_seconds_bucket" in exprs
        )


def test_every_expression_uses_only_exported_metrics() -> None:
    used: set[str] = set()
    for expr in _exprs() + _template_queries():
        names = metric_names(expr)
        assert names, expr
        assert names <= ALLOWED, f"unknown metric(s) {names - ALLOWED} in {expr}"
        used |= names
    # ... and every exported metric is on the dashboard somewhere.
    bases = {
        re.sub(r"_(bucket|sum|count)$", "", n)
        if re.sub(r"_(bucket|sum|count)$", "", n) in HISTOGRAMS
        else n
        for n in used
    }
    assert bases == COUNTERS | GAUGES | HISTOGRAMS


def test_the_daemon_exports_the_dashboards_metrics() -> None:
    """Cross-check with the daemon's real registry: a renamed metric breaks this test."""
    metrics_mod = pytest.importorskip("vizdesk.metrics")
    text = metrics_mod.Metrics().render().decode()  # families without samples keep # TYPE
    exposed = set(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    by_name = {n: t for n, t in exposed}
    for name in GAUGES:
        assert by_name.get(name) == "gauge", name
    for name in HISTOGRAMS:
        assert by_name.get(name) == "histogram", name
    for name in COUNTERS:
        base = name.removesuffix("_total")
        assert by_name.get(base) == "counter" or by_name.get(name) == "counter", name


def _promql_for_promtool(expr: str) -> str:
    e = expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
    return re.sub(r"\$\w+", ".*", e)


def test_every_expression_is_valid_promql(tmp_path: Path) -> None:
    promtool = ensure_tool("promtool")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"vizdesk:dashboard_expr_{i}", "expr": _promql_for_promtool(e)}
                    for i, e in enumerate(_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    res = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_alert_rules_check_and_pass_their_unit_tests() -> None:
    promtool = ensure_tool("promtool")
    res = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run(
        [promtool, "test", "rules", "vizdesk-alerts.test.yml"],
        cwd=GRAFANA,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_alert_rules_use_only_exported_metrics() -> None:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names <= ALLOWED | {"up"}, (rule["alert"], names - ALLOWED)
