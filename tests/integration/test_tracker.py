"""Tracker logic on real Redis with a scripted backend (the real-Slurm path is in tests/e2e).

Checks the two promises the peers break: one Slurm query per tick for all sessions, and
no session ended or changed while Slurm cannot be asked.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from vizdesk.config import Config
from vizdesk.contract.keys import Keys
from vizdesk.metrics import Metrics
from vizdesk.sessions.model import Session, SessionState
from vizdesk.sessions.registrations import RegistrationManager
from vizdesk.sessions.store import SessionStore
from vizdesk.slurm.base import (
    JobState,
    JobStatus,
    SlurmBackend,
    SlurmUnavailable,
    SubmitRequest,
)
from vizdesk.tracker import Tracker


class ScriptedBackend(SlurmBackend):
    name = "scripted"

    def __init__(self) -> None:
        self.jobs: dict[str, JobStatus] = {}
        self.down = False
        self.queries: list[list[str]] = []
        self.cancelled: list[str] = []

    async def submit(self, req: SubmitRequest) -> str:
        raise AssertionError("not used")

    async def info_many(self, job_ids: Collection[str]) -> dict[str, JobStatus]:
        self.queries.append(list(job_ids))
        if self.down:
            raise SlurmUnavailable("slurmctld down")
        return {j: self.jobs[j] for j in job_ids if j in self.jobs}

    async def cancel(self, job_id: str, user: str) -> None:
        self.cancelled.append(job_id)


@pytest.fixture
async def world(redis_admin):
    cfg = Config()
    keys = Keys(f"vzt-tracker-{secrets.token_hex(3)}:")
    backend = ScriptedBackend()
    metrics = Metrics()
    store = SessionStore(redis_admin, keys, 600)
    regs = RegistrationManager(redis_admin, keys, 5901, 5999)
    tracker = Tracker(cfg, backend, store, regs, metrics)
    yield cfg, keys, backend, store, tracker, redis_admin
    for key in await redis_admin.keys(keys.prefix + "*"):
        await redis_admin.delete(key)


async def add_session(store: SessionStore, job_id: str, user: str = "alice") -> Session:
    s = Session(
        id=secrets.token_hex(8),
        user=user,
        partition="viz",
        cpus=1,
        memory_gb=1,
        gpus=0,
        time_limit_minutes=10,
        geometry="800x600",
        job_id=job_id,
    )
    await store.create(s)
    return s


def running(job_id: str, user: str = "alice") -> JobStatus:
    return JobStatus(
        job_id, JobState.RUNNING, user=user, batch_host="node1", start_time=datetime.now(UTC)
    )


async def test_one_query_per_tick_for_all_sessions(world) -> None:
    _, _, backend, store, tracker, _ = world
    for i in range(25):
        await add_session(store, str(1000 + i))
        backend.jobs[str(1000 + i)] = JobStatus(
            str(1000 + i), JobState.PENDING, reason="Resources", user="alice"
        )
    await tracker.tick()
    assert len(backend.queries) == 1 and len(backend.queries[0]) == 25
    sessions = await store.get_many(await store.active_ids())
    assert {s.state for s in sessions} == {SessionState.PENDING}
    assert all(s.reason == "queued: Resources" for s in sessions)


async def test_slurm_down_changes_nothing(world) -> None:
    _, _, backend, store, tracker, _ = world
    s = await add_session(store, "2001")
    backend.jobs["2001"] = running("2001")
    await tracker.tick()
    before = await store.get(s.id)
    assert before is not None and before.state == SessionState.STARTING
    backend.down = True
    backend.jobs.clear()  # even if Slurm "forgot" it, a failed query must not end anything
    for _ in range(3):
        await tracker.tick()
    after = await store.get(s.id)
    assert after == before
    assert tracker.slurm_ok is False
    backend.down = False
    await tracker.tick()
    assert tracker.slurm_ok is True
    gone = await store.get(s.id)
    assert gone is not None and gone.state == SessionState.ENDED
    assert gone.reason == "job no longer known to Slurm"


async def test_registration_makes_ready_and_bad_port_fails(world) -> None:
    _, keys, backend, store, tracker, redis = world
    good = await add_session(store, "3001")
    bad = await add_session(store, "3002")
    backend.jobs["3001"] = running("3001")
    backend.jobs["3002"] = running("3002")
    await redis.set(
        keys.registration(good.id),
        json.dumps({"session_id": good.id, "port": 5950, "password": "x"}),
    )
    await redis.set(
        keys.registration(bad.id), json.dumps({"session_id": bad.id, "port": 22, "password": "x"})
    )
    await tracker.tick()
    g, b = await store.get(good.id), await store.get(bad.id)
    assert g is not None and g.state == SessionState.READY and g.node == "node1"
    assert b is not None and b.state == SessionState.FAILED
    assert "registration rejected" in b.reason and "22" in b.reason
    assert "3002" in backend.cancelled
    assert not await redis.exists(keys.registration(bad.id))


async def test_job_of_another_user_is_refused(world) -> None:
    _, _, backend, store, tracker, _ = world
    s = await add_session(store, "4001", user="alice")
    backend.jobs["4001"] = running("4001", user="bob")
    await tracker.tick()
    got = await store.get(s.id)
    assert got is not None and got.state == SessionState.FAILED


async def test_finished_job_outcomes(world) -> None:
    _, _, backend, store, tracker, _ = world
    cases = {
        "5001": (JobState.CANCELLED, SessionState.ENDED, "cancelled"),
        "5002": (JobState.TIMEOUT, SessionState.ENDED, "time limit"),
        "5003": (JobState.FAILED, SessionState.FAILED, "exit code 3"),
        "5004": (JobState.NODE_FAIL, SessionState.FAILED, "node failure"),
    }
    ids = {}
    for jid, (jstate, _, _) in cases.items():
        ids[jid] = (await add_session(store, jid)).id
        backend.jobs[jid] = JobStatus(jid, jstate, user="alice", exit_code=3)
    await tracker.tick()
    for jid, (_, sstate, words) in cases.items():
        s = await store.get(ids[jid])
        assert s is not None and s.state == sstate and words in s.reason, (jid, s)
    assert not await store.active_ids()


async def test_node_failure_names_the_node(world) -> None:
    _, keys, backend, store, tracker, redis = world
    s = await add_session(store, "5101")
    backend.jobs["5101"] = running("5101")
    await redis.set(
        keys.registration(s.id), json.dumps({"session_id": s.id, "port": 5962, "password": "x"})
    )
    await tracker.tick()
    assert (await store.get(s.id)).state == SessionState.READY  # type: ignore[union-attr]
    backend.jobs["5101"] = JobStatus("5101", JobState.NODE_FAIL, user="alice")
    await tracker.tick()
    final = await store.get(s.id)
    assert final is not None and final.state == SessionState.FAILED
    assert final.reason == "node failure (node1)"


async def test_requeued_ready_desktop_fails_instead_of_pending(world) -> None:
    """Slurm requeued the job of a READY desktop (its node died): the session does not go
    back to queued under the same id; it FAILED naming the node, and the job is cancelled."""
    _, keys, backend, store, tracker, redis = world
    s = await add_session(store, "5102")
    backend.jobs["5102"] = running("5102")
    await redis.set(
        keys.registration(s.id), json.dumps({"session_id": s.id, "port": 5963, "password": "x"})
    )
    await tracker.tick()
    assert (await store.get(s.id)).state == SessionState.READY  # type: ignore[union-attr]
    await redis.delete(keys.registration(s.id))
    backend.jobs["5102"] = JobStatus("5102", JobState.PENDING, user="alice", reason="BeginTime")
    await tracker.tick()
    final = await store.get(s.id)
    assert final is not None and final.state == SessionState.FAILED, final
    assert final.reason == "node failure (node1): Slurm requeued the desktop's job"
    assert backend.cancelled == ["5102"]


def backdate(field: str):
    def mutate(sess: Session) -> bool:
        setattr(sess, field, datetime(2000, 1, 1, tzinfo=UTC))
        return True

    return mutate


async def test_lost_heartbeat_leaves_ready_after_grace(world) -> None:
    _, keys, backend, store, tracker, redis = world
    s = await add_session(store, "6001")
    backend.jobs["6001"] = running("6001")
    await redis.set(
        keys.registration(s.id), json.dumps({"session_id": s.id, "port": 5960, "password": "x"})
    )
    await tracker.tick()
    assert (await store.get(s.id)).state == SessionState.READY  # type: ignore[union-attr]
    await redis.delete(keys.registration(s.id))
    await tracker.tick()
    within_grace = await store.get(s.id)
    assert within_grace is not None and within_grace.state == SessionState.READY
    assert within_grace.reg_missing_since is not None and backend.cancelled == []
    await store.update(s.id, backdate("reg_missing_since"))
    await tracker.tick()
    after = await store.get(s.id)
    assert after is not None and after.state == SessionState.STOPPING
    assert backend.cancelled == ["6001"]
    backend.jobs["6001"] = JobStatus("6001", JobState.CANCELLED, user="alice")
    await tracker.tick()
    final = await store.get(s.id)
    assert final is not None and final.state == SessionState.FAILED
    assert final.reason.startswith("desktop stopped responding (heartbeat lost"), final.reason
    if final.node:  # the reason names the node the desktop ran on
        assert final.reason.endswith(f"from {final.node})"), final.reason


async def test_registration_back_within_grace_keeps_ready(world) -> None:
    _, keys, backend, store, tracker, redis = world
    s = await add_session(store, "6101")
    backend.jobs["6101"] = running("6101")
    reg = json.dumps({"session_id": s.id, "port": 5961, "password": "x"})
    await redis.set(keys.registration(s.id), reg)
    await tracker.tick()
    await redis.delete(keys.registration(s.id))
    await tracker.tick()
    await redis.set(keys.registration(s.id), reg)  # the wrapper's next heartbeat
    await tracker.tick()
    got = await store.get(s.id)
    assert got is not None and got.state == SessionState.READY
    assert got.reg_missing_since is None and backend.cancelled == []


async def test_job_completing_before_ready_is_a_failure(world) -> None:
    _, _, backend, store, tracker, _ = world
    s = await add_session(store, "6201")
    backend.jobs["6201"] = JobStatus("6201", JobState.COMPLETED, user="alice", exit_code=0)
    await tracker.tick()
    got = await store.get(s.id)
    assert got is not None and got.state == SessionState.FAILED
    assert got.reason == "job ended before the desktop was ready"


async def test_acl_users_restored_after_redis_restart(world) -> None:
    _, keys, backend, store, tracker, redis = world
    from vizdesk.sessions.registrations import password_hash

    s = await add_session(store, "6301")
    backend.jobs["6301"] = running("6301")
    user, password = await tracker.registrations.create_credentials(s.id)

    def keep_hash(sess: Session) -> bool:
        sess.acl_hash = password_hash(password)
        return True

    await store.update(s.id, keep_hash)
    await tracker.tick()  # first tick: remembers Redis's run id
    await redis.execute_command("ACL", "DELUSER", user)  # what a Redis restart does
    tracker._redis_run_id = "a-previous-run"  # ...and the run id changes
    await tracker.tick()
    assert user in await redis.execute_command("ACL", "USERS")
    kw = redis.connection_pool.connection_kwargs
    client = aioredis.Redis(host=kw["host"], port=kw["port"], username=user, password=password)
    try:
        assert await client.set(keys.registration(s.id), "{}")
    finally:
        await client.aclose()
    await tracker.registrations.delete_credentials(s.id)


async def test_registration_write_wakes_the_tracker(redis_admin) -> None:
    """A job's registration SET reaches the tracker through a keyspace notification."""
    import asyncio

    from vizdesk.api.events import EventHub, enable_registration_notifications

    keys = Keys(f"vzt-notify-{secrets.token_hex(3)}:")
    assert await enable_registration_notifications(redis_admin)
    woken = asyncio.Event()
    hub = EventHub(
        redis_admin,
        keys.events_channel,
        registration_pattern=f"__keyspace@0__:{keys.registration('*')}",
        on_registration=woken.set,
    )
    hub.start()
    try:
        await asyncio.sleep(0.3)  # subscribed
        await redis_admin.set(keys.registration("0123456789abcdef"), "{}", ex=5)
        await asyncio.wait_for(woken.wait(), timeout=5)
        woken.clear()
        await redis_admin.set(keys.session("0123456789abcdef"), "{}", ex=5)  # not a registration
        await asyncio.sleep(0.3)
        assert not woken.is_set()
    finally:
        await hub.stop()
        await redis_admin.delete(
            keys.registration("0123456789abcdef"), keys.session("0123456789abcdef")
        )


async def test_registration_of_a_job_not_running_is_dropped(world) -> None:
    _, keys, backend, store, tracker, redis = world
    s = await add_session(store, "7001")
    backend.jobs["7001"] = JobStatus("7001", JobState.PENDING, reason="Priority", user="alice")
    await redis.set(
        keys.registration(s.id), json.dumps({"session_id": s.id, "port": 5970, "password": "x"})
    )
    await tracker.tick()
    got = await store.get(s.id)
    assert got is not None and got.state == SessionState.PENDING
    assert not await redis.exists(keys.registration(s.id))


async def test_stop_reason_names_who_stopped(world) -> None:
    cfg, _, backend, store, tracker, _ = world
    from vizdesk.sessions.spawner import Spawner

    spawner = Spawner(cfg, backend, store, tracker.registrations, tracker.metrics)
    mine = await add_session(store, "8001")
    theirs = await add_session(store, "8002")
    await spawner.stop(mine, by="user")
    await spawner.stop(theirs, by="admin carol")
    assert backend.cancelled == ["8001", "8002"]
    for jid in ("8001", "8002"):
        backend.jobs[jid] = JobStatus(jid, JobState.CANCELLED, user="alice")
    await tracker.tick()
    a, b = await store.get(mine.id), await store.get(theirs.id)
    assert a is not None and a.state == SessionState.ENDED and a.reason == "stopped by user"
    assert b is not None and b.state == SessionState.ENDED
    assert b.reason == "stopped by admin carol"


async def test_node_failure_record_fails_the_session_with_its_reason(world) -> None:
    """The wrapper could not start the desktop and said why (written with the session's own
    ACL credentials, as `vizdesk node vnc` does): the session FAILS with that reason."""
    from vizdesk.contract.registration import failure_json
    from vizdesk.node.registration import Registrar

    _, keys, backend, store, tracker, redis_admin = world
    s = await add_session(store, "3101")
    backend.jobs["3101"] = running("3101")
    username, password = await tracker.registrations.create_credentials(s.id)
    kw = redis_admin.connection_pool.connection_kwargs
    url = f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"
    reg = Registrar(url, username, password, keys.registration(s.id), 15)
    error = "/dev/fuse (crw------- root) is not accessible to this user: tigervnc exited"
    assert await reg.put(failure_json(s.id, error + "\n" + "x" * 2000), ttl=600)
    await reg.close()
    await tracker.tick()
    got = await store.get(s.id)
    assert got is not None and got.state == SessionState.FAILED
    assert got.reason.startswith(f"desktop did not start: {error} xxx"), got.reason
    assert len(got.reason) <= len("desktop did not start: ") + 500
    assert backend.cancelled == ["3101"]


async def test_job_ending_after_a_node_failure_record_keeps_its_reason(world) -> None:
    """The job exited (code 3) before a tick saw the record: the record still explains it."""
    from vizdesk.contract.registration import failure_json

    _, keys, backend, store, tracker, redis_admin = world
    s = await add_session(store, "3102")
    await redis_admin.set(keys.registration(s.id), failure_json(s.id, "no VNC server"), ex=60)
    backend.jobs["3102"] = JobStatus("3102", JobState.FAILED, user="alice", exit_code=3)
    await tracker.tick()
    got = await store.get(s.id)
    assert got is not None and got.state == SessionState.FAILED
    assert got.reason == "desktop did not start: no VNC server"


async def test_oversized_registration_fails_the_session_unread(world) -> None:
    """A registration over 64 KiB is rejected by its length alone (issue 17, item 5)."""
    _, keys, backend, store, tracker, redis = world
    s = await add_session(store, "3201")
    backend.jobs["3201"] = running("3201")
    # over 64 KiB, under the 1 MB request cap of the test bed's Redis
    doc = {"session_id": s.id, "port": 5950, "password": "x", "image": "i" * (900 << 10)}
    value = json.dumps(doc)
    await redis.set(keys.registration(s.id), value)
    await tracker.tick()
    got = await store.get(s.id)
    assert got is not None and got.state == SessionState.FAILED
    assert got.reason == f"registration rejected: value of {len(value)} bytes exceeds 65536"
    assert "3201" in backend.cancelled


async def test_oversized_or_odd_values_are_never_fetched(world) -> None:
    _, keys, _, _, tracker, redis = world
    from vizdesk.contract.registration import failure_json
    from vizdesk.sessions.registrations import ValueTooLarge

    regs = tracker.registrations
    sid = "0123456789abcdef"
    assert await regs.read(sid) is None and await regs.load(sid) is None
    await redis.set(keys.registration(sid), "x" * 65536)
    assert await regs.read(sid) == "x" * 65536  # the bound itself is read
    await redis.set(keys.registration(sid), "x" * 65537)
    with pytest.raises(ValueTooLarge, match="value of 65537 bytes exceeds 65536"):
        await regs.load(sid)
    await redis.set(keys.registration(sid), failure_json(sid, "x") + " " * 70000)
    assert await regs.failure(sid) is None  # too large to be a failure record
    await redis.delete(keys.registration(sid))
    await redis.rpush(keys.registration(sid), "a")  # not a string (the ACL cannot do this)
    with pytest.raises(ValueTooLarge, match="not a string"):
        await regs.load(sid)
    await redis.delete(keys.registration(sid))


async def test_usage_series_follow_the_registration_and_the_session(world) -> None:
    """GPUs that leave the registration and sessions that end leave /metrics (item 4)."""
    _, keys, backend, store, tracker, redis = world
    from vizdesk.metrics import session_label

    s = await add_session(store, "3301")
    backend.jobs["3301"] = running("3301")
    doc = {"session_id": s.id, "port": 5950, "password": "x", "cpu_percent": 7.5}
    gpus = [{"index": i, "utilization": 10, "memory_used": 1} for i in range(4)]
    await redis.set(keys.registration(s.id), json.dumps({**doc, "gpus": gpus}))
    await tracker.tick()

    def text() -> str:
        return tracker.metrics.render().decode()

    label = session_label(s.id)
    assert text().count(f'session="{label}"') == 2 + 2 * 4
    assert s.id not in text() and 'user="' not in text()
    await redis.set(keys.registration(s.id), json.dumps({**doc, "gpus": gpus[:1]}))
    await tracker.tick()
    assert text().count(f'session="{label}"') == 2 + 2 * 1
    backend.jobs["3301"] = JobStatus("3301", JobState.COMPLETED, user="alice", exit_code=0)
    await tracker.tick()
    assert f'session="{label}"' not in text()


async def test_registration_acl_grants_select_only_off_db_0(world) -> None:
    _, keys, _, _, _, redis = world
    for db, granted in ((0, False), (3, True)):
        regs = RegistrationManager(redis, keys, 5901, 5999, node_db=db)
        sid = f"{db:016x}"
        user, _ = await regs.create_credentials(sid)
        try:
            lines = await redis.execute_command("ACL", "LIST")
            (rules,) = [line for line in lines if line.startswith(f"user {user} ")]
            assert ("+select" in rules) is granted, rules
        finally:
            await regs.delete_credentials(sid)
