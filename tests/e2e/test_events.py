"""The events stream pushes each state change of the caller's sessions, and only theirs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.e2e.test_session_lifecycle import create

pytestmark = pytest.mark.e2e


async def read_events(resp: Any, sink: list[tuple[str, dict[str, Any]]]) -> None:
    event = "message"
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            sink.append((event, json.loads(line[6:])))


async def test_events_stream_follows_a_session(http, daemon) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    bob_seen: list[tuple[str, dict[str, Any]]] = []
    async with (
        http.get(f"{daemon.url}/api/v1/events", headers=daemon.headers("alice")) as r,
        http.get(f"{daemon.url}/api/v1/events", headers=daemon.headers("bob")) as rb,
    ):
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        reader = asyncio.create_task(read_events(r, seen))
        bob_reader = asyncio.create_task(read_events(rb, bob_seen))
        sid = (await create(http, daemon))["id"]
        for _ in range(150):
            states = [d["state"] for e, d in seen if e == "session" and d["id"] == sid]
            if "READY" in states:
                break
            await asyncio.sleep(0.1)
        async with http.delete(
            f"{daemon.url}/api/v1/sessions/{sid}", headers=daemon.headers("alice")
        ):
            pass
        for _ in range(150):
            states = [d["state"] for e, d in seen if e == "session" and d["id"] == sid]
            if "ENDED" in states:
                break
            await asyncio.sleep(0.1)
        reader.cancel()
        bob_reader.cancel()
    assert ("status", {"slurm": "ok"}) in seen
    assert states[0] == "PENDING" and "READY" in states and states[-1] == "ENDED"
    order = ["PENDING", "STARTING", "READY", "STOPPING", "ENDED"]
    ranks = [order.index(s) for s in states]
    assert ranks == sorted(ranks), states
    assert not [d for e, d in bob_seen if e == "session" and d.get("id") == sid]
    assert all("password" not in json.dumps(d) for _, d in seen)


async def test_job_end_is_an_event_with_state_exit_code_and_runtime(http, daemon) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    bob_seen: list[tuple[str, dict[str, Any]]] = []
    async with (
        http.get(f"{daemon.url}/api/v1/events", headers=daemon.headers("alice")) as r,
        http.get(f"{daemon.url}/api/v1/events", headers=daemon.headers("bob")) as rb,
    ):
        reader = asyncio.create_task(read_events(r, seen))
        bob_reader = asyncio.create_task(read_events(rb, bob_seen))
        body = {"template": "hello", "parameters": {"message": "evt", "exit_code": 3}}
        async with http.post(
            f"{daemon.url}/api/v1/jobs", json=body, headers=daemon.headers("alice")
        ) as resp:
            job = await resp.json()
            assert resp.status == 201, job
        final: dict[str, Any] = {}
        for _ in range(600):
            ends = [d for e, d in seen if e == "job" and d["id"] == job["id"] and d["ended_at"]]
            if ends:
                final = ends[-1]
                break
            await asyncio.sleep(0.1)
        reader.cancel()
        bob_reader.cancel()
    assert final, seen
    assert final["state"] == "FAILED" and final["exit_code"] == 3
    assert final["runtime_seconds"] is not None and final["runtime_seconds"] >= 0
    assert not [d for e, d in bob_seen if e == "job" and d.get("id") == job["id"]]
