"""The pyslurm backend's child processes, with a fake ``pyslurm`` package in the child.

The real pyslurm in a child is the 25.11 tier's (``tests/slurm2511/``: its outage test
opens a desktop while slurmctld is down, which a stalled daemon cannot). Here the child
imports a fake whose job ids choose what it does: answer, refuse, hang or die.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vizdesk.config import SlurmConfig
from vizdesk.slurm import pyslurm_backend as pb
from vizdesk.slurm.base import JobState, SlurmRejected, SlurmUnavailable
from vizdesk.slurm.pyslurm_backend import PyslurmBackend
from vizdesk.slurm.validate import Account

FAKE = textwrap.dedent(
    '''
    """Fake pyslurm for the child process (tests only)."""
    import os
    import time

    class RPCError(Exception):
        def __init__(self, errno=-1, msg=None):
            self.errno, self.msg = errno, msg or f"slurm error {errno}"
            super().__init__(self.msg)

    def slurm_init(config_path=None):
        print("libslurm says hello on stdout")  # must not corrupt a frame

    class Job:
        def __init__(self, job_id):
            self.id = job_id
            self.state, self.user_name, self.user_id = "RUNNING", "alice", 1001
            self.batch_host = self.allocated_nodes = "vm"
            self.state_reason, self.name, self.partition = "None", "x", "viz"
            self.start_time = self.end_time = self.submit_time = 1795304000

        @staticmethod
        def load(job_id):
            if job_id == 11:
                time.sleep(3600)  # a controller that never answers
            if job_id == 12:
                os._exit(3)  # libslurm ending the process
            if job_id == 13:
                raise RPCError(1800, "Unable to contact slurm controller (connect failure)")
            if job_id == 14:
                j = Job(14)
                j.user_name, j.user_id = "bob", 1003
                return j
            return Job(job_id)

        def cancel(self):
            pass

    class Jobs(dict):
        @staticmethod
        def load(preload_passwd_info=False, frozen=False):
            return Jobs({1: Job(1)})
    '''
)


@pytest.fixture
async def backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[PyslurmBackend]:
    pkg = tmp_path / "fakepkgs" / "pyslurm"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path / "fakepkgs"))  # the child's PYTHONPATH
    alice = Account("alice", 1001, 1002, "/home/alice", "/bin/bash")
    monkeypatch.setattr(pb, "lookup_account", lambda user, min_uid: alice)
    b = PyslurmBackend(SlurmConfig(command_timeout_seconds=2))
    yield b
    await b.close()


def children(b: PyslurmBackend) -> set[int]:
    assert b._process is not None
    return {c.proc.pid for c in b._process._all if c.alive}


async def test_calls_run_in_a_child_and_reuse_it(backend: PyslurmBackend) -> None:
    got = await backend.info_many(["1", "2"])
    assert {k: v.state for k, v in got.items()} == {"1": JobState.RUNNING, "2": JobState.RUNNING}
    first = children(backend)
    assert len(first) == 1 and os.getpid() not in first
    assert await backend.ping()  # no ids: Jobs.load(), in the same child
    assert children(backend) == first


async def test_errors_come_back_as_the_backends_errors(backend: PyslurmBackend) -> None:
    with pytest.raises(SlurmUnavailable, match="connect failure"):
        await backend.info_many(["13"])
    with pytest.raises(SlurmRejected, match="does not belong to alice"):
        await backend.cancel("14", "alice")
    await backend.cancel("1", "alice")  # the child survived both


async def test_a_hung_call_times_out_and_its_child_is_replaced(backend: PyslurmBackend) -> None:
    await backend.info_many(["1"])
    before = children(backend)
    loop_ticks = 0

    async def ticker() -> None:
        nonlocal loop_ticks
        while True:
            await asyncio.sleep(0.05)
            loop_ticks += 1

    tick = asyncio.create_task(ticker())
    try:
        with pytest.raises(SlurmUnavailable, match="did not answer within 2 s"):
            await backend.info_many(["11"])
    finally:
        tick.cancel()
    assert loop_ticks >= 10  # the event loop ran while the child hung
    assert children(backend).isdisjoint(before)  # killed, not left behind
    assert "1" in await backend.info_many(["1"])  # a fresh child answers


async def test_a_child_that_exits_is_an_error_and_replaced(backend: PyslurmBackend) -> None:
    with pytest.raises(SlurmUnavailable, match="worker process exited"):
        await backend.info_many(["12"])
    assert "1" in await backend.info_many(["1"])


async def test_concurrent_calls_use_at_most_two_children(backend: PyslurmBackend) -> None:
    results = await asyncio.gather(*(backend.info_many([str(i)]) for i in range(1, 7)))
    assert [sorted(r) for r in results] == [[str(i)] for i in range(1, 7)]
    assert 1 <= len(children(backend)) <= 2
