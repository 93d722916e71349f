#!/usr/bin/env python3
"""Generates grafana/vizdesk-dashboard.json (run it after editing; a test checks they match).

The dashboard is written as data here rather than edited by hand so that panel ids and
grid positions stay consistent. Import the JSON in Grafana (Dashboards > New > Import);
the Prometheus data source is the input/variable DS_PROMETHEUS, so it also works as a
provisioned file. Only metrics the daemon exports are used (tests/ops/test_grafana.py).

    python3 grafana/build_dashboard.py            # rewrite the JSON
    python3 grafana/build_dashboard.py --check    # exit 1 if the JSON is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "vizdesk-dashboard.json"
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
SEL = 'job=~"$job", instance=~"$instance"'
NODE_SEL = f'{SEL}, node=~"$node"'
RATE = "$__rate_interval"


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    return t


def timeseries(
    title: str,
    targets: list[dict[str, Any]],
    unit: str = "short",
    description: str = "",
    stack: bool = False,
    draw: str = "line",
    overrides: list[dict[str, Any]] | None = None,
    thresholds: list[dict[str, Any]] | None = None,
    min_zero: bool = True,
) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "drawStyle": draw,
        "lineWidth": 1,
        "fillOpacity": 20 if stack or draw == "bars" else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "axisPlacement": "auto",
    }
    if thresholds:
        custom["thresholdsStyle"] = {"mode": "line+area"}
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": custom,
        "color": {"mode": "palette-classic"},
        "thresholds": {
            "mode": "absolute",
            "steps": thresholds or [{"color": "green", "value": None}],
        },
    }
    if min_zero:
        defaults["min"] = 0
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    targets: list[dict[str, Any]],
    unit: str = "short",
    description: str = "",
    steps: list[dict[str, Any]] | None = None,
    decimals: int | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": {"mode": "absolute", "steps": steps or [{"color": "green", "value": None}]},
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
    }


def table(title: str, targets: list[dict[str, Any]], description: str = "") -> dict[str, Any]:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": {"custom": {"align": "auto"}}, "overrides": []},
        "options": {"showHeader": True, "sortBy": [{"displayName": "Value", "desc": True}]},
        "transformations": [
            {"id": "labelsToFields", "options": {"mode": "columns"}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}}},
        ],
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def quantiles(
    metric: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.9, 0.99)
) -> list[dict[str, Any]]:
    group = f"le, {by}" if by else "le"
    out = []
    for i, q in enumerate(qs):
        legend = f"p{round(q * 100)}" + (f" {{{{{by}}}}}" if by else "")
        out.append(
            target(
                f"histogram_quantile({q}, sum by ({group}) "
                f"(rate({metric}_bucket{{{SEL}}}[{RATE}])))",
                legend,
                chr(ord("A") + i),
            )
        )
    return out


LAYOUT: list[tuple[dict[str, Any], int, int]] = []  # (panel, width, height), filled below


def add(panel: dict[str, Any], w: int = 12, h: int = 8) -> None:
    LAYOUT.append((panel, w, h))


def build() -> dict[str, Any]:
    LAYOUT.clear()
    # ------------------------------------------------------------------ overview
    add(row("Overview"), 24, 1)
    add(
        stat(
            "Desktops ready",
            [
                target(
                    f'sum(vnc_sessions_active{{{SEL}, state="READY"}}) or vector(0)',
                    "READY",
                    instant=True,
                )
            ],
            description="Sessions in state READY (a user can connect).",
        ),
        4,
        4,
    )
    add(
        stat(
            "Desktops queued or starting",
            [
                target(
                    f'sum(vnc_sessions_active{{{SEL}, state=~"PENDING|STARTING"}}) or vector(0)',
                    "waiting",
                    instant=True,
                )
            ],
            description="PENDING (queued in Slurm) + STARTING (job running, desktop not yet "
            "registered).",
            steps=[{"color": "green", "value": None}, {"color": "orange", "value": 10}],
        ),
        4,
        4,
    )
    add(
        stat(
            "Creation success (range)",
            [
                target(
                    f"1 - (sum(increase(vnc_sessions_failed_total{{{SEL}}}[$__range]))"
                    " or vector(0))"
                    f" / sum(increase(vnc_sessions_created_total{{{SEL}}}[$__range]))",
                    "success",
                    instant=True,
                )
            ],
            unit="percentunit",
            decimals=1,
            description="Share of the sessions created in the time range that did not FAIL. "
            "Site target: > 95 %.",
            steps=[
                {"color": "red", "value": None},
                {"color": "orange", "value": 0.95},
                {"color": "green", "value": 0.99},
            ],
        ),
        4,
        4,
    )
    add(
        stat(
            "Start time p90 (range)",
            [
                target(
                    f"histogram_quantile(0.9, sum by (le) "
                    f"(increase(vnc_session_start_seconds_bucket{{{SEL}}}[$__range])))",
                    "p90",
                    instant=True,
                )
            ],
            unit="s",
            decimals=1,
            description="Submit to READY, 90th percentile over the time range. Site target: "
            "< 30 s on an idle cluster.",
            steps=[
                {"color": "green", "value": None},
                {"color": "orange", "value": 15},
                {"color": "red", "value": 30},
            ],
        ),
        4,
        4,
    )
    add(
        stat(
            "API p95 (5m)",
            [
                target(
                    f"histogram_quantile(0.95, sum by (le) "
                    f"(rate(vizdesk_http_request_seconds_bucket{{{SEL}}}[5m])))",
                    "p95",
                    instant=True,
                )
            ],
            unit="s",
            decimals=3,
            description="HTTP latency, 95th percentile. Target: < 500 ms.",
            steps=[
                {"color": "green", "value": None},
                {"color": "orange", "value": 0.25},
                {"color": "red", "value": 0.5},
            ],
        ),
        4,
        4,
    )
    add(
        stat(
            "Open desktop connections",
            [
                target(
                    f"sum(vizdesk_proxy_connections_open{{{SEL}}}) or vector(0)",
                    "open",
                    instant=True,
                )
            ],
            description="Websocket-to-VNC connections the proxy holds now.",
        ),
        4,
        4,
    )

    # ------------------------------------------------------------------ sessions
    add(row("Sessions"), 24, 1)
    add(
        timeseries(
            "Active sessions by state",
            [target(f"sum by (state) (vnc_sessions_active{{{SEL}}})", "{{state}}")],
            stack=True,
            description="Sessions not yet ENDED/FAILED, by state (PENDING, STARTING, READY, "
            "STOPPING).",
        )
    )
    add(
        timeseries(
            "Session creations",
            [
                target(
                    f"sum(rate(vnc_sessions_created_total{{{SEL}}}[{RATE}])) * 60", "created / min"
                )
            ],
            unit="short",
            description="Sessions submitted to Slurm per minute.",
        )
    )
    add(
        timeseries(
            "Session start time (submit to READY)",
            quantiles("vnc_session_start_seconds"),
            unit="s",
            description="Percentiles of vnc_session_start_seconds: Slurm queue and "
            "start, desktop start-up, registration.",
            thresholds=[{"color": "transparent", "value": None}, {"color": "red", "value": 30}],
        )
    )
    add(
        timeseries(
            "Failed sessions by reason",
            [
                target(
                    f"sum by (reason) (increase(vnc_sessions_failed_total{{{SEL}}}[{RATE}]))",
                    "{{reason}}",
                )
            ],
            draw="bars",
            stack=True,
            description="Sessions that ended in FAILED, by reason. What each reason means and "
            "what to do: docs/troubleshooting.md.",
        )
    )

    # ------------------------------------------------------------------ proxy
    add(row("Websocket proxy"), 24, 1)
    add(
        timeseries(
            "Proxy traffic",
            [
                target(
                    f"sum by (direction) (rate(vizdesk_proxy_bytes_total{{{SEL}}}[{RATE}]))",
                    "{{direction}}",
                )
            ],
            unit="Bps",
            min_zero=False,
            description="Bytes per second through the proxy: down = desktop to browser (shown "
            "positive), up = browser to desktop (shown negative).",
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "up"},
                    "properties": [{"id": "custom.transform", "value": "negative-Y"}],
                }
            ],
        )
    )
    add(
        timeseries(
            "Open proxy connections",
            [
                target(
                    f"sum by (instance) (vizdesk_proxy_connections_open{{{SEL}}})", "{{instance}}"
                )
            ],
            description="Websocket-to-VNC connections held open, per daemon.",
        )
    )

    # ------------------------------------------------------------------ slurm, redis
    add(row("Slurm and Redis"), 24, 1)
    add(
        timeseries(
            "Slurm call latency by operation (p50, p95)",
            quantiles("vizdesk_slurm_call_seconds", by="op", qs=(0.5, 0.95)),
            unit="s",
            description="Latency of submit / query / cancel calls to Slurm. The tracker makes "
            "one query per tick for all sessions.",
        ),
        8,
    )
    add(
        timeseries(
            "Slurm errors by operation",
            [target(f"sum by (op) (rate(vizdesk_slurm_errors_total{{{SEL}}}[{RATE}]))", "{{op}}")],
            unit="reqps",
            description="Failed Slurm calls per second. While queries fail the "
            "daemon keeps every session as it is and /readyz reports "
            "degraded.",
        ),
        8,
    )
    add(
        timeseries(
            "Redis errors",
            [target(f"sum(rate(vizdesk_redis_errors_total{{{SEL}}}[{RATE}]))", "errors / s")],
            unit="reqps",
            description="Redis errors per second (connection, auth, ACL).",
        ),
        8,
    )
    add(
        timeseries(
            "Batch jobs by state",
            [target(f"sum by (state) (vizdesk_jobs{{{SEL}}})", "{{state}}")],
            stack=True,
            description="Batch jobs submitted through vizdesk, by state.",
        ),
        24,
        7,
    )

    # ------------------------------------------------------------------ http
    add(row("HTTP API"), 24, 1)
    add(
        timeseries(
            "HTTP p95 latency by route",
            [
                target(
                    f"histogram_quantile(0.95, sum by (le, route) "
                    f"(rate(vizdesk_http_request_seconds_bucket{{{SEL}}}[{RATE}])))",
                    "{{route}}",
                )
            ],
            unit="s",
            description="95th percentile per route. Target: < 500 ms (we aim for < 50 ms).",
            thresholds=[{"color": "transparent", "value": None}, {"color": "red", "value": 0.5}],
        )
    )
    add(
        timeseries(
            "HTTP requests by status",
            [
                target(
                    f"sum by (status) (rate(vizdesk_http_request_seconds_count{{{SEL}}}[{RATE}]))",
                    "{{status}}",
                )
            ],
            unit="reqps",
            stack=True,
            description="Requests per second by HTTP status (401/403: auth and policy, 429: "
            "rate limit).",
        )
    )

    # ------------------------------------------------------------------ gpu and resources
    add(row("GPU and resources of the desktops"), 24, 1)
    add(
        timeseries(
            "GPU utilisation per node",
            [
                target(
                    f"avg by (node) (max by (node, gpu) "
                    f"(vizdesk_session_gpu_utilization_percent{{{NODE_SEL}}}))",
                    "{{node}}",
                )
            ],
            unit="percent",
            description="Mean utilisation of the GPUs in use by desktops, per "
            "node (a GPU shared by sessions is counted once).",
        )
    )
    add(
        timeseries(
            "GPU utilisation per session",
            [
                target(
                    f"max by (session, node) "
                    f"(vizdesk_session_gpu_utilization_percent{{{NODE_SEL}}})",
                    "{{session}} ({{node}})",
                )
            ],
            unit="percent",
            description="Utilisation of the GPU(s) each desktop uses, from its heartbeat.",
        )
    )
    add(
        timeseries(
            "GPU memory per node",
            [
                target(
                    f"sum by (node) (max by (node, gpu) "
                    f"(vizdesk_session_gpu_memory_bytes{{{NODE_SEL}}}))",
                    "{{node}}",
                )
            ],
            unit="bytes",
            description="GPU memory in use on the GPUs desktops use, per node.",
        )
    )
    add(
        timeseries(
            "GPU memory per session",
            [
                target(
                    "sum by (session, node) "
                    f"(vizdesk_session_gpu_memory_bytes{{{NODE_SEL}}})",
                    "{{session}} ({{node}})",
                )
            ],
            unit="bytes",
            description="GPU memory on each desktop's GPU(s).",
        )
    )
    add(
        timeseries(
            "CPU per session (top 10)",
            [
                target(
                    f"topk(10, vizdesk_session_cpu_percent{{{NODE_SEL}}})",
                    "{{session}} ({{node}})",
                )
            ],
            unit="percent",
            description="CPU use of each desktop's processes (100 = one core).",
        )
    )
    add(
        timeseries(
            "Memory per session (top 10)",
            [
                target(
                    f"topk(10, vizdesk_session_memory_bytes{{{NODE_SEL}}})",
                    "{{session}} ({{node}})",
                )
            ],
            unit="bytes",
            description="Resident memory of each desktop's processes.",
        )
    )
    add(
        table(
            "Desktops per node",
            [
                target(
                    f"count by (node) (vizdesk_session_cpu_percent{{{NODE_SEL}}})",
                    "",
                    instant=True,
                )
            ],
            description="Running desktops that sent a heartbeat, by node (per-session "
            "series carry a hash of the session id, never the user).",
        ),
        24,
        8,
    )

    panels: list[dict[str, Any]] = []
    x = y = row_h = 0
    for pid, (panel, w, h) in enumerate(LAYOUT, start=1):
        if x + w > 24 or panel["type"] == "row":
            x, y, row_h = 0, y + row_h, 0
        panel = {"id": pid, "gridPos": {"h": h, "w": w, "x": x, "y": y}, **panel}
        panels.append(panel)
        x += w
        row_h = max(row_h, h)
        if panel["type"] == "row":
            x, y, row_h = 0, y + h, 0

    def query_var(name: str, label: str, query: str, include_all: bool = True) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "definition": query,
            "query": {"query": query, "refId": f"{name}-var"},
            "refresh": 2,
            "includeAll": include_all,
            "allValue": ".*",
            "multi": True,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "hide": 0,
        }

    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "description": "The Prometheus that scrapes vizdesk's /metrics",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
            {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
            {"type": "panel", "id": "table", "name": "Table", "version": ""},
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": "vizdesk: GPU remote desktops on Slurm - sessions, start times, "
        "failures, proxy, Slurm, Redis, HTTP and GPU use.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["vizdesk", "slurm", "vnc"],
        "templating": {
            "list": [
                {
                    "name": "DS_PROMETHEUS",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                    "options": [],
                    "refresh": 1,
                    "regex": "",
                },
                query_var("job", "Job", "label_values(vnc_sessions_active, job)"),
                query_var(
                    "instance", "Daemon", 'label_values(vnc_sessions_active{job=~"$job"}, instance)'
                ),
                query_var("node", "Node", "label_values(vizdesk_session_cpu_percent, node)"),
            ]
        },
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": "vizdesk",
        "uid": "vizdesk-overview",
        "version": 1,
        "weekStart": "",
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python3 {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
