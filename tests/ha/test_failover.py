"""Fault tests of more than one head node: real HAProxy, Redis + Sentinel x3, three
replicas, real Slurm and Xvnc. What dies is killed for real (SIGKILL, SIGSTOP); every
test puts the bed back as it found it. Figures are printed (bench/ha_failover.py collects
them), never asserted on beyond the bounds the design promises (one lease time)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from typing import Any

import aiohttp

from tests.ha.conftest import (
    HaBed,
    api,
    carrier,
    create_desktop,
    delete_all,
    key_event,
    leader,
    metric,
    open_vnc,
    readyz,
    single_writer,
    update_request,
    wait_ready,
)

LEASE = 4.0


def report(name: str, **figures: Any) -> None:
    print(f"HA-FIGURE {json.dumps({'test': name, **figures})}")


async def all_ready(http: aiohttp.ClientSession, ha: HaBed, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bodies = [await readyz(http, ha, i) for i in (1, 2, 3)]
        if all(b and b.get("status") == "ok" for b in bodies) and await leader(http, ha):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"replicas not all ready: {bodies}")


async def leader_other_than(http: aiohttp.ClientSession, ha: HaBed, old: int, within: float) -> int:
    """The replica that leads once ``old`` no longer does (fails after ``within`` s)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        new = await leader(http, ha)
        if new not in (None, old):
            return new
        await asyncio.sleep(0.1)
    raise AssertionError(f"no leader other than replica{old} after {within} s")


async def frame_answer(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> None:
    """Ask for a full update and wait until the server's answer starts."""
    await ws.send_bytes(update_request(incremental=False))
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.BINARY, msg
            if msg.data:
                return


async def open_events(
    http: aiohttp.ClientSession, ha: HaBed, user: str = "alice"
) -> aiohttp.ClientResponse:
    r = await http.get(
        ha.url + "/api/v1/events",
        headers=ha.headers(user),
        timeout=aiohttp.ClientTimeout(total=None),
    )
    assert r.status == 200
    async with asyncio.timeout(10):
        await r.content.readuntil(b"event: status")
    return r


async def test_one_leader_and_every_replica_names_it(
    http: aiohttp.ClientSession, ha: HaBed
) -> None:
    await all_ready(http, ha)
    bodies = [await readyz(http, ha, i) for i in (1, 2, 3)]
    assert bodies[0] and bodies[1] and bodies[2]
    leaders = [i for i, b in enumerate(bodies, 1) if b and b["is_leader"]]
    assert len(leaders) == 1, bodies
    assert {b["tracker_leader"] for b in bodies if b} == {f"replica{leaders[0]}"}
    gauges = [await metric(http, ha, i, "vizdesk_tracker_leader") for i in (1, 2, 3)]
    assert gauges == [1.0 if i == leaders[0] else 0.0 for i in (1, 2, 3)]
    since = time.time()
    await asyncio.sleep(3)
    calls = ha.squeue_calls(since)
    assert calls and {n for _, n in calls} == {f"replica{leaders[0]}"}, calls


async def test_kill_the_replica_carrying_a_desktop_and_a_stream(
    http: aiohttp.ClientSession, ha: HaBed
) -> None:
    await all_ready(http, ha)
    sid = await create_desktop(http, ha)
    try:
        await wait_ready(http, ha, sid)
        ws = await open_vnc(http, ha, sid)
        await frame_answer(ws)
        (victim,) = await carrier(http, ha, "vizdesk_proxy_connections_open")
        # the events stream through HAProxy until it lands on the same replica
        events = None
        for _ in range(9):
            r = await open_events(http, ha)
            if victim in await carrier(http, ha, "vizdesk_event_streams_open"):
                events = r
                break
            r.close()
        assert events is not None, "no events stream landed on the websocket's replica"
        was_leader = await leader(http, ha) == victim
        t0 = time.time()
        ha.kill9(f"replica-{victim}")
        # the client notices and comes back through HAProxy with a fresh ticket
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await ws.receive()
        ws2 = await open_vnc(http, ha, sid)
        await frame_answer(ws2)
        reconnect = time.time() - t0
        r2 = await open_events(http, ha)
        stream = time.time() - t0
        assert reconnect < 3.0 and stream < 3.0, (reconnect, stream)
        status, body = await api(http, ha, "GET", f"/api/v1/sessions/{sid}")
        assert status == 200 and body["state"] == "READY", body
        await leader_other_than(http, ha, victim, LEASE * 1.5 + 2)
        await asyncio.sleep(2)
        calls = ha.squeue_calls(t0 - 5)
        assert single_writer(calls), calls
        assert f"replica{victim}" not in {n for t, n in calls if t > t0}
        report("replica_kill", reconnect_s=round(reconnect, 3), stream_s=round(stream, 3),
               was_leader=was_leader)  # fmt: skip
        await ws2.close()
        r2.close()
        events.close()
    finally:
        ha.ha("start-replica", str(victim) if "victim" in locals() else "1")
        await delete_all(http, ha, [sid])


async def test_kill_the_leader_a_new_one_within_a_lease(
    http: aiohttp.ClientSession, ha: HaBed
) -> None:
    await all_ready(http, ha)
    old = await leader(http, ha)
    assert old is not None
    t0 = time.time()
    ha.kill9(f"replica-{old}")
    try:
        new = await leader_other_than(http, ha, old, LEASE * 2)
        await asyncio.sleep(1.5)
        after = [(t, n) for t, n in ha.squeue_calls(t0) if n != f"replica{old}"]
        assert after, "the new leader never asked Slurm"
        gap = after[0][0] - t0
        assert gap <= LEASE * 1.5, gap  # within one lease (plus the followers' try step)
        assert single_writer(ha.squeue_calls(t0 - 5))
        assert await metric(http, ha, new, "vizdesk_tracker_leader_changes_total") >= 1
        report("leader_kill", next_tick_s=round(gap, 3))
    finally:
        ha.ha("start-replica", str(old))


async def test_a_paused_leader_is_fenced_and_steps_down(
    http: aiohttp.ClientSession, ha: HaBed
) -> None:
    await all_ready(http, ha)
    old = await leader(http, ha)
    assert old is not None
    pid = ha.pid(f"replica-{old}")
    assert pid is not None
    slow = ha.env["VIZDESK_HA_DIR"] + f"/slow-squeue-{old}"
    fenced_before = await metric(http, ha, old, "vizdesk_tracker_fenced_out_total")
    open(slow, "w").close()  # its next squeue hangs inside the tick
    try:
        mark = time.time()
        while not ha.squeue_calls(mark):
            await asyncio.sleep(0.05)
        os.kill(pid, signal.SIGSTOP)  # paused mid-tick, lease not renewed
        t0 = time.time()
        new = await leader_other_than(http, ha, old, LEASE * 2.5)
        await asyncio.sleep(1.2)
        taken = [t for t, n in ha.squeue_calls(t0) if n == f"replica{new}"]
        assert taken, "the new leader never asked Slurm"
        took_over = taken[0] - t0  # the new leader's first query after the pause
        os.unlink(slow)  # its squeue answers now
        await asyncio.sleep(0.3)
        resumed = time.time()
        os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            body = await readyz(http, ha, old)
            if body and not body["is_leader"]:
                break
            await asyncio.sleep(0.1)
        assert body and not body["is_leader"] and body["tracker_leader"] == f"replica{new}", body
        await asyncio.sleep(2)
        assert await metric(http, ha, old, "vizdesk_tracker_fenced_out_total") > fenced_before
        assert await metric(http, ha, old, "vizdesk_tracker_leader") == 0
        later = [n for t, n in ha.squeue_calls(resumed) if n == f"replica{old}"]
        assert later == [], "the deposed leader asked Slurm again"
        async with ha.primary() as r:
            status = json.loads(await r.get(ha.env["HA_PREFIX"] + "tracker:status") or "{}")
        assert status.get("replica") == f"replica{new}", status
        report("paused_leader", next_leader_s=round(took_over, 3))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(slow)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)


async def test_kill_the_redis_primary(http: aiohttp.ClientSession, ha: HaBed) -> None:
    await all_ready(http, ha)
    sid = await create_desktop(http, ha)
    new_sid = None
    try:
        await wait_ready(http, ha, sid)
        ws = await open_vnc(http, ha, sid)
        await frame_answer(ws)
        old_port = await ha.primary_port()
        index = ha.redis_index(old_port)
        acl = f"vizdesk-s-{sid}"
        reg_key = f"{ha.env['HA_PREFIX']}reg:{sid}"
        t0 = time.time()
        ha.kill9(f"redis-{index}")
        failed_over = None
        while time.time() - t0 < 30:
            with contextlib.suppress(Exception):
                if await ha.primary_port() != old_port:
                    failed_over = time.time()
                    break
            await asyncio.sleep(0.1)
        assert failed_over, "Sentinel did not fail over in 30 s"
        created = None
        while time.time() - failed_over < 15:
            with contextlib.suppress(Exception):
                status, body = await api(http, ha, "POST", "/api/v1/sessions",
                                         json={"geometry": "800x600"})  # fmt: skip
                if status == 201:
                    created, new_sid = time.time(), body["id"]
                    break
            await asyncio.sleep(0.2)
        assert created and created - failed_over <= 5.0, "no session could be created"
        # the open desktop stays READY, its websocket alive, and a new one connects
        await frame_answer(ws)
        status, body = await api(http, ha, "GET", f"/api/v1/sessions/{sid}")
        assert status == 200 and body["state"] == "READY", body
        new_port = await ha.primary_port()
        primary = ha.redis_at(new_port)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if await primary.execute_command("ACL", "GETUSER", acl):
                    break
                await asyncio.sleep(0.2)
            assert await primary.execute_command("ACL", "GETUSER", acl), "ACL user not back"
            acl_back = time.time() - failed_over
            # the node's heartbeat writes through Sentinel to the new primary again
            first = await primary.ttl(reg_key)
            deadline = time.monotonic() + 20
            refreshed = False
            while time.monotonic() < deadline and not refreshed:
                await asyncio.sleep(0.3)
                refreshed = await primary.ttl(reg_key) > first
            assert refreshed, "the registration was not refreshed on the new primary"
        finally:
            await primary.aclose()
        ws2 = await open_vnc(http, ha, sid)
        await frame_answer(ws2)
        await wait_ready(http, ha, str(new_sid))
        report("redis_primary_kill", failover_s=round(failed_over - t0, 3),
               writable_after_failover_s=round(created - failed_over, 3),
               acl_back_after_failover_s=round(acl_back, 3))  # fmt: skip
        await ws.close()
        await ws2.close()
    finally:
        ha.ha("start-redis", str(index) if "index" in locals() else "1")
        async with asyncio.timeout(40):
            while True:
                back = ha.redis_at(old_port if "old_port" in locals() else 0)
                try:
                    role = await back.execute_command("ROLE")
                    if role[0] == "slave" and role[3] == "connected":
                        break
                except Exception:
                    pass
                finally:
                    await back.aclose()
                await asyncio.sleep(0.5)
        await delete_all(http, ha, [sid] + ([str(new_sid)] if new_sid else []))


class Typist:
    """Types through one desktop as noVNC would, reconnecting (fresh ticket, backoff)
    whenever the websocket closes; records close codes and the longest typing gap."""

    def __init__(self, http: aiohttp.ClientSession, ha: HaBed, sid: str) -> None:
        self.http, self.ha, self.sid = http, ha, sid
        self.keys = 0
        self.reconnects = 0
        self.codes: list[int | None] = []
        self.longest_gap = 0.0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        last = time.monotonic()
        while not self.stop.is_set():
            try:
                ws = await open_vnc(self.http, self.ha, self.sid)
            except Exception:
                await asyncio.sleep(0.25)
                continue
            reader = asyncio.create_task(self._drain(ws))
            try:
                while not self.stop.is_set() and not ws.closed and not reader.done():
                    await ws.send_bytes(key_event(True) + key_event(False) + update_request())
                    now = time.monotonic()
                    self.longest_gap = max(self.longest_gap, now - last)
                    last = now
                    self.keys += 1
                    await asyncio.sleep(0.05)
            except (ConnectionResetError, aiohttp.ClientError):
                pass
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader, 5)
            if self.stop.is_set():
                await ws.close()
                return
            self.codes.append(ws.close_code)
            self.reconnects += 1

    @staticmethod
    async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await ws.receive()
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return


async def test_rolling_restart_with_five_desktops_and_a_typist(
    http: aiohttp.ClientSession, ha: HaBed
) -> None:
    await all_ready(http, ha)
    sids = [await create_desktop(http, ha) for _ in range(5)]
    try:
        for sid in sids:
            await wait_ready(http, ha, sid, timeout=150)
        typist = Typist(http, ha, sids[0])
        task = asyncio.create_task(typist.run())
        await asyncio.sleep(2)
        for i in (1, 2, 3):
            await asyncio.to_thread(ha.ha, "restart-replica", str(i))
            await all_ready(http, ha)
            await asyncio.sleep(1.5)
        typed_before_end = typist.keys
        await asyncio.sleep(2)
        typist.stop.set()
        await asyncio.wait_for(task, 15)
        assert typist.keys > typed_before_end, "typing did not resume after the last restart"
        assert typist.reconnects >= 1
        assert set(typist.codes) <= {1012}, typist.codes  # graceful: "service restart"
        for sid in sids:
            status, body = await api(http, ha, "GET", f"/api/v1/sessions/{sid}")
            assert status == 200 and body["state"] == "READY", body
        ws = await open_vnc(http, ha, sids[-1])
        await frame_answer(ws)
        await ws.close()
        report("rolling_restart", reconnects=typist.reconnects, keys=typist.keys,
               longest_gap_s=round(typist.longest_gap, 3), sessions_lost=0)  # fmt: skip
    finally:
        await delete_all(http, ha, sids)


async def test_stream_and_socket_read_like_a_browser_after_sigterm(
    http: aiohttp.ClientSession, ha: HaBed
) -> None:
    """One replica stopped gracefully: its websocket closes with 1012, its events stream
    ends (EOF) at once, not after HAProxy's or the daemon's timeouts."""
    await all_ready(http, ha)
    sid = await create_desktop(http, ha)
    try:
        await wait_ready(http, ha, sid)
        base = ha.replica_url(2)
        ws = await open_vnc(http, ha, sid, base=base)
        r = await http.get(
            base + "/api/v1/events", headers=ha.headers(), timeout=aiohttp.ClientTimeout(total=None)
        )
        async with asyncio.timeout(10):
            await r.content.readuntil(b"event: status")
        pid = ha.pid("replica-2")
        assert pid
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        async with asyncio.timeout(8):
            while await r.content.read(4096):
                pass
            msg = await ws.receive()
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
        assert ws.close_code == 1012, ws.close_code
        report("sigterm", closed_s=round(time.monotonic() - t0, 3))
    finally:
        deadline = time.monotonic() + 20
        while ha.pid("replica-2") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # it finishes its shutdown first
        ha.ha("start-replica", "2")
        await delete_all(http, ha, [sid])
