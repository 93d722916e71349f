"""The Slurm CLI backend: argv and environment building, stdin script, error mapping.

Slurm's commands are replaced by small fake executables (no services needed) that record
their argv, environment and stdin and answer like the real ones.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from vizdesk.config import SlurmConfig
from vizdesk.slurm import cli as cli_mod
from vizdesk.slurm import validate
from vizdesk.slurm.base import (
    JobState,
    SlurmError,
    SlurmRejected,
    SlurmUnavailable,
    SubmitRequest,
)
from vizdesk.slurm.cli import SlurmCliBackend, parse_parsable, rejection_message
from vizdesk.slurm.validate import Account, InvalidSubmission

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
ALICE = Account("alice", 1001, 1001, "/home/alice", "/bin/bash")

FAKE = """#!{python}
import json, os, sys, time
rec = {{"argv": sys.argv, "env": dict(os.environ), "stdin": sys.stdin.read()}}
with open({log!r}, "a") as fh:
    fh.write(json.dumps(rec) + "\\n")
mode = open({mode!r}).read() if os.path.exists({mode!r}) else "ok"
if mode.startswith("sleep"):
    open({pidfile!r}, "w").write(str(os.getpid()))
    time.sleep(60)
if mode.startswith("file:"):
    sys.stdout.write(open(mode[5:]).read())
    sys.exit(0)
if mode.startswith("fail:"):
    code, _, text = mode[5:].partition(":")
    sys.stderr.write(text)
    sys.exit(int(code))
sys.stdout.write({default_out!r})
"""


class Fakes:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def make(self, name: str, default_out: str = "") -> str:
        path = self.tmp / name
        path.write_text(
            FAKE.format(
                python=sys.executable,
                log=str(self.tmp / f"{name}.log"),
                mode=str(self.tmp / f"{name}.mode"),
                pidfile=str(self.tmp / f"{name}.pid"),
                default_out=default_out,
            )
        )
        path.chmod(0o755)
        return str(path)

    def mode(self, name: str, mode: str) -> None:
        (self.tmp / f"{name}.mode").write_text(mode)

    def calls(self, name: str) -> list[dict[str, Any]]:
        log = self.tmp / f"{name}.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    monkeypatch.setattr(cli_mod, "lookup_account", lambda user, min_uid: ALICE)
    return Fakes(tmp_path)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    p = tmp_path / "job.sbatch"
    p.write_text("#!/bin/sh\necho hello from $VIZDESK_SESSION_ID\n")
    p.chmod(0o600)  # only the daemon can read it: it travels on stdin
    return p


def backend(fakes: Fakes, **over: Any) -> SlurmCliBackend:
    cfg = SlurmConfig(
        submit_prefix=["/usr/bin/env", "VZ_AS={user}"],
        sbatch=fakes.make("sbatch", "4242;cluster\n"),
        squeue=fakes.make("squeue"),
        scancel=fakes.make("scancel"),
        command_timeout_seconds=10,
    )
    for k, v in over.items():
        setattr(cfg, k, v)
    return SlurmCliBackend(cfg, min_uid=1000)


def request(script_path: Path, **over: Any) -> SubmitRequest:
    fields: dict[str, Any] = {
        "user": "alice",
        "script": str(script_path),
        "job_name": "vizdesk-abc123",
        "cpus": 2,
        "memory_mb": 2048,
        "time_limit_minutes": 60,
        "gpus": 0,
        "partition": "viz",
        "workdir": "/home/alice",
        "output": "/var/log/vizdesk/vizdesk-abc123-%j.out",
        "env": {"VIZDESK_SESSION_ID": "abc123", "VIZDESK_REDIS_PASSWORD": "pw"},
    }
    fields.update(over)
    return SubmitRequest(**fields)


def test_submit_argv_is_exact(fakes: Fakes, script: Path) -> None:
    b = backend(fakes, extra_sbatch_args=["--no-requeue"])
    argv = b.submit_argv(request(script, gpus=2))
    assert argv == [
        "/usr/bin/env",
        "VZ_AS=alice",
        b.cfg.sbatch,
        "--parsable",
        "--job-name=vizdesk-abc123",
        "--cpus-per-task=2",
        "--mem=2048M",
        "--time=60",
        "--partition=viz",
        "--gres=gpu:2",
        "--chdir=/home/alice",
        "--output=/var/log/vizdesk/vizdesk-abc123-%j.out",
        "--export=ALL",
        "--no-requeue",
    ]
    assert str(script) not in argv  # the script goes on stdin
    minimal = b.submit_argv(request(script, partition="", output=""))
    assert not any(a.startswith(("--partition", "--gres", "--output")) for a in minimal)


async def test_submit_sends_script_on_stdin_with_minimal_env(
    fakes: Fakes, script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIZDESK_JWT_SECRET", "daemon-secret")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/test.conf")
    b = backend(fakes)
    assert await b.submit(request(script)) == "4242"
    (call,) = fakes.calls("sbatch")
    assert call["stdin"] == script.read_text()
    assert call["argv"][0] == b.cfg.sbatch and call["argv"][-1] == "--export=ALL"
    env = call["env"]
    env.pop("VZ_AS")  # set by the fake prefix (`env VZ_AS=alice`)
    env.pop("LC_CTYPE", None)  # some Pythons add it on start-up
    assert env == {
        "PATH": validate.SAFE_PATH,
        "LANG": "C.UTF-8",
        "HOME": "/home/alice",
        "USER": "alice",
        "LOGNAME": "alice",
        "SHELL": "/bin/bash",
        "SLURM_UMASK": "0077",  # the job's files are the user's alone
        "SLURM_CONF": "/etc/slurm/test.conf",
        "VIZDESK_SESSION_ID": "abc123",
        "VIZDESK_REDIS_PASSWORD": "pw",
    }
    assert "daemon-secret" not in json.dumps(call["argv"])


@pytest.mark.parametrize(
    "over",
    [
        {"user": "root;id"},
        {"user": "-alice"},
        {"job_name": "x y"},
        {"job_name": "--wrap=id"},
        {"partition": "viz batch"},
        {"partition": "viz;id"},
        {"cpus": 0},
        {"cpus": True},
        {"memory_mb": -1},
        {"time_limit_minutes": 0},
        {"gpus": -1},
        {"workdir": "relative"},
        {"workdir": "/tmp\nx"},
        {"output": "out.log"},
        {"script": "job.sbatch"},
        {"script_args": ("a",)},
        {"env": {"SBATCH_EXPORT": "NONE"}},
        {"env": {"SLURM_CONF": "/x"}},
        {"env": {"LD_PRELOAD": "/x.so"}},
        {"env": {"PATH": "/evil"}},
        {"env": {"A B": "1"}},
        {"env": {"OK": "nul\x00byte"}},
    ],
)
async def test_invalid_fields_never_reach_sbatch(
    fakes: Fakes, script: Path, over: dict[str, Any]
) -> None:
    b = backend(fakes)
    with pytest.raises(InvalidSubmission) as info:
        await b.submit(request(script, **over))
    assert isinstance(info.value, SlurmRejected) and isinstance(info.value, ValueError)
    assert fakes.calls("sbatch") == []


async def test_refuses_root_and_low_uids_with_real_accounts(script: Path) -> None:
    for user in ("root", "daemon", "no-such-user-vz"):
        with pytest.raises(InvalidSubmission):
            validate.lookup_account(user, 1000)
    # nobody (65534) is above min_uid on Debian; a min_uid above it refuses it too.
    with pytest.raises(InvalidSubmission):
        validate.lookup_account("nobody", 70000)


async def test_unreadable_or_bogus_script_is_a_server_error(fakes: Fakes, tmp_path: Path) -> None:
    b = backend(fakes)
    bogus = tmp_path / "bogus.sh"
    bogus.write_text("no shebang\n")
    for path in (tmp_path / "missing.sh", bogus):
        with pytest.raises(SlurmError) as info:
            await b.submit(request(path))
        assert not isinstance(info.value, SlurmRejected)
    assert fakes.calls("sbatch") == []


async def test_rejection_carries_slurms_message(fakes: Fakes, script: Path) -> None:
    b = backend(fakes)
    fakes.mode(
        "sbatch",
        "fail:1:sbatch: error: invalid partition specified: nope\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
    )
    with pytest.raises(SlurmRejected) as info:
        await b.submit(request(script, partition="nope"))
    assert str(info.value) == "Invalid partition name specified (invalid partition specified: nope)"
    assert not isinstance(info.value, SlurmUnavailable)


@pytest.mark.parametrize(
    "stderr",
    [
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
        "(connect failure)\n",
        'sbatch: error: Munge encode failed: Failed to access "/run/munge/munge.socket.2"\n'
        "sbatch: error: Batch job submission failed: Protocol authentication error\n",
        "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n",
    ],
)
async def test_unreachable_controller_is_unavailable(
    fakes: Fakes, script: Path, stderr: str
) -> None:
    b = backend(fakes)
    fakes.mode("sbatch", f"fail:1:{stderr}")
    with pytest.raises(SlurmUnavailable):
        await b.submit(request(script))


async def test_prefix_that_cannot_exec_is_unavailable(fakes: Fakes, script: Path) -> None:
    b = backend(fakes, sbatch="/nonexistent/sbatch")
    with pytest.raises(SlurmUnavailable):  # `env` exits 127
        await b.submit(request(script))
    b = backend(fakes, submit_prefix=["/nonexistent/runuser", "-u", "{user}", "--"])
    with pytest.raises(SlurmUnavailable):
        await b.submit(request(script))


async def test_timeout_kills_the_command(fakes: Fakes, script: Path) -> None:
    b = backend(fakes, command_timeout_seconds=1.0)
    fakes.mode("sbatch", "sleep")
    with pytest.raises(SlurmUnavailable, match="did not answer"):
        await b.submit(request(script))
    pid = int((fakes.tmp / "sbatch.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_unparsable_sbatch_output(fakes: Fakes, script: Path) -> None:
    b = backend(fakes)
    fakes.mode("sbatch", "file:/dev/null")
    with pytest.raises(SlurmError):
        await b.submit(request(script))


def test_parse_parsable() -> None:
    assert parse_parsable(b"17\n") == "17"
    assert parse_parsable(b"sbatch: warning: x\n18;cluster\n") == "18"
    for bad in (b"", b"abc\n", b"1 2\n"):
        with pytest.raises(SlurmError):
            parse_parsable(bad)


def test_rejection_message_without_final_line() -> None:
    assert rejection_message("sbatch: error: invalid user\n") == "invalid user"
    assert rejection_message("") == "sbatch refused the job"


async def test_info_many_is_one_squeue_call_filtered_in_python(fakes: Fakes) -> None:
    b = backend(fakes, squeue_query="json")
    fakes.mode("squeue", f"file:{FIX / 'squeue-26.05-all.json'}")
    got = await b.info_many(["9", "10", "12", "999999"])
    assert set(got) == {"9", "10", "12"}
    assert got["9"].state is JobState.RUNNING and got["12"].exit_code == 3
    (call,) = fakes.calls("squeue")
    assert call["argv"][1:] == ["--json", "--all", "--states=all"]
    assert set(call["env"]) - {"LC_CTYPE"} == {"PATH", "LANG"} | (
        {"SLURM_CONF"} if os.environ.get("SLURM_CONF") else set()
    )
    assert await b.info("12") == got["12"]
    assert await b.info("999999") is None


async def test_info_many_large_output(fakes: Fakes, tmp_path: Path) -> None:
    doc = json.loads((FIX / "squeue-26.05-all.json").read_text())
    template = doc["jobs"][8]
    doc["jobs"] = [dict(template, job_id=i) for i in range(1, 301)]
    big = tmp_path / "big.json"
    big.write_text(json.dumps(doc))
    assert big.stat().st_size > cli_mod._BIG_OUTPUT
    b = backend(fakes, squeue_query="json")
    fakes.mode("squeue", f"file:{big}")
    got = await b.info_many([str(i) for i in range(1, 400)])
    assert len(got) == 300


@pytest.mark.parametrize(
    ("mode", "exc"),
    [
        (f"file:{FIX / 'squeue-22.05-unreachable.json'}", SlurmUnavailable),
        ("fail:1:slurm_load_jobs error: Unable to contact slurm controller\n", SlurmUnavailable),
        ("fail:2:squeue: error: something else\n", SlurmUnavailable),
        ("fail:1:" + (FIX / "squeue-26.05-unreachable.stderr").read_text(), SlurmUnavailable),
        (f"file:{FIX / 'squeue-26.05-ids.txt'}", SlurmError),
    ],
)
async def test_info_many_failures(fakes: Fakes, mode: str, exc: type[Exception]) -> None:
    b = backend(fakes, squeue_query="json")
    fakes.mode("squeue", mode)
    with pytest.raises(exc):
        await b.info_many(["1"])
    assert await b.ping() is False


async def test_ping_ok(fakes: Fakes) -> None:
    b = backend(fakes)
    fakes.mode("squeue", f"file:{FIX / 'squeue-22.05-all.json'}")
    assert await b.ping() is True


async def test_cancel_runs_scancel_as_the_user(fakes: Fakes) -> None:
    b = backend(fakes)
    await b.cancel("77", "alice")
    (call,) = fakes.calls("scancel")
    assert call["argv"][1:] == ["77"]
    assert call["env"]["VZ_AS"] == "alice" and call["env"]["USER"] == "alice"


@pytest.mark.parametrize(
    "stderr",
    [
        "scancel: error: Kill job error on job id 77: Invalid job id specified\n",
        "scancel: error: Kill job error on job id 77: Job/step already completing or completed\n",
    ],
)
async def test_cancel_of_gone_job_is_fine(fakes: Fakes, stderr: str) -> None:
    b = backend(fakes)
    fakes.mode("scancel", f"fail:1:{stderr}")
    await b.cancel("77", "alice")


@pytest.mark.parametrize(
    ("stderr", "exc"),
    [
        ("scancel: error: Kill job error on job id 77: Access/permission denied\n", SlurmRejected),
        (
            "scancel: error: Unable to contact slurm controller (connect failure)\n",
            SlurmUnavailable,
        ),
        ("scancel: error: weird\n", SlurmError),
    ],
)
async def test_cancel_failures(fakes: Fakes, stderr: str, exc: type[Exception]) -> None:
    b = backend(fakes)
    fakes.mode("scancel", f"fail:1:{stderr}")
    with pytest.raises(exc):
        await b.cancel("77", "alice")


@pytest.mark.parametrize("job_id", ["", "0", "12;id", "-1", "1 2", "abc"])
async def test_cancel_refuses_bad_ids(fakes: Fakes, job_id: str) -> None:
    b = backend(fakes)
    with pytest.raises(InvalidSubmission):
        await b.cancel(job_id, "alice")
    assert fakes.calls("scancel") == []


async def test_on_call_hook_sees_every_call(fakes: Fakes, script: Path) -> None:
    seen: list[tuple[str, bool]] = []
    b = backend(fakes, squeue_query="json")
    b.on_call = lambda op, seconds, ok: seen.append((op, ok)) if seconds >= 0 else None
    fakes.mode("squeue", f"file:{FIX / 'squeue-22.05-all.json'}")
    await b.submit(request(script))
    await b.info_many(["1"])
    await b.cancel("1", "alice")
    fakes.mode("squeue", "fail:1:Unable to contact slurm controller\n")
    with pytest.raises(SlurmUnavailable):
        await b.info_many(["1"])
    assert seen == [("submit", True), ("info_many", True), ("cancel", True), ("info_many", False)]

    def broken(op: str, seconds: float, ok: bool) -> None:
        raise RuntimeError("metrics down")

    b.on_call = broken
    assert await b.submit(request(script)) == "4242"  # a broken hook never breaks Slurm calls


def test_prefix_substitution_and_requirement(fakes: Fakes) -> None:
    b = backend(fakes, submit_prefix=["sudo", "-n", "--user={user}", "--"])
    assert b.prefix_for("alice") == ["sudo", "-n", "--user=alice", "--"]
    with pytest.raises(InvalidSubmission):
        b.prefix_for("alice bob")
    with pytest.raises(ValueError):
        SlurmCliBackend(SlurmConfig(submit_prefix=["runuser", "--"]))


async def test_text_query_asks_for_the_tracked_ids_only(fakes: Fakes) -> None:
    b = backend(fakes)  # slurm.squeue_query: text (the default)
    fakes.mode("squeue", f"file:{FIX / 'squeue-26.05-text-states.txt'}")
    kinds = dict(
        line.split("=", 1)
        for line in (FIX / "squeue-26.05-text-ids.txt").read_text().split("\n")
        if line
    )
    asked = [kinds["running"], kinds["failed_exit3"], "999999", "not-an-id"]
    got = await b.info_many(asked)
    assert set(got) == {kinds["running"], kinds["failed_exit3"]}  # what was asked, known
    (call,) = fakes.calls("squeue")
    ordered = sorted([kinds["running"], kinds["failed_exit3"], "999999"], key=int)
    assert call["argv"][1:5] == [
        "--noheader",
        "--all",
        "--states=all",
        "--jobs=" + ",".join(ordered),
    ]
    assert call["argv"][5].startswith("--Format=JobID:0")
    assert call["env"]["SLURM_TIME_FORMAT"] == "%s"


async def test_text_query_of_one_forgotten_id_is_no_job(fakes: Fakes) -> None:
    b = backend(fakes)
    fakes.mode("squeue", "fail:1:slurm_load_jobs error: Invalid job id specified\n")
    assert await b.info_many(["77"]) == {}
    with pytest.raises(SlurmUnavailable):  # with two ids the same answer is not "unknown"
        await b.info_many(["77", "78"])
    fakes.mode("squeue", "fail:1:slurm_load_jobs error: Unable to contact slurm controller\n")
    with pytest.raises(SlurmUnavailable):
        await b.info_many(["77"])
    assert await b.ping() is False


async def test_text_ping_asks_for_the_daemons_own_jobs(fakes: Fakes) -> None:
    b = backend(fakes)
    assert await b.ping() is True
    (call,) = fakes.calls("squeue")
    assert call["argv"][1:] == ["--noheader", "--me", "--format=%A"]
    assert await b.info_many([]) == {}


async def test_tracker_query_per_owner(fakes: Fakes) -> None:
    """Few owners: one ``squeue --user=<u>`` each (slurmctld filters); ids missing from
    those answers are asked about by id once more; many owners: one --jobs query."""
    b = backend(fakes)
    fakes.mode("squeue", f"file:{FIX / 'squeue-26.05-text-states.txt'}")
    kinds = dict(
        line.split("=", 1)
        for line in (FIX / "squeue-26.05-text-ids.txt").read_text().split("\n")
        if line
    )
    owners = {kinds["running"]: "alice", kinds["completed"]: "alice", "999999": "bob"}
    got = await b.info_owned(owners)
    assert set(got) == {kinds["running"], kinds["completed"]}
    argvs = [c["argv"][1:] for c in fakes.calls("squeue")]
    assert argvs[0][-1] == "--user=alice" and argvs[1][-1] == "--user=bob"
    assert argvs[2][3] == "--jobs=999999"  # bob's answer lacked it: asked by id
    many = {str(i): f"user{i}" for i in range(1, 8)}
    await b.info_owned(many)
    assert fakes.calls("squeue")[-1]["argv"][4].startswith("--jobs=1,2,")
