"""sbatch options of batch jobs (nodes, tasks, constraint, GPU type, account, QOS, mail,
requeue) and the parser of ``sbatch --test-only`` on captured 22.05 output."""

from __future__ import annotations

from pathlib import Path

import pytest

from vizdesk.config import SlurmConfig
from vizdesk.slurm.base import SlurmError, SubmitRequest
from vizdesk.slurm.cli import SlurmCliBackend, parse_test_only, rejection_message, sbatch_options
from vizdesk.slurm.validate import InvalidSubmission, check_request

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


def req(**kw: object) -> SubmitRequest:
    base: dict[str, object] = dict(
        user="alice", script="/opt/s.sh", job_name="vizdesk-job-1", cpus=2, memory_mb=1024,
        time_limit_minutes=10, partition="batch", workdir="/home/alice/vizdesk-jobs/1",
    )  # fmt: skip
    base.update(kw)
    return SubmitRequest(**base)  # type: ignore[arg-type]


def test_defaults_add_nothing_new() -> None:
    opts = sbatch_options(req())
    assert not any(o.startswith(("--nodes", "--ntasks", "--constraint", "--account")) for o in opts)
    assert "--chdir=/home/alice/vizdesk-jobs/1" in opts
    assert opts[-1] == "--export=ALL"


def test_every_batch_option_reaches_sbatch() -> None:
    r = req(
        nodes=2, ntasks=4, ntasks_per_node=2, constraint="avx512&ib", gpus=2, gpu_type="a100",
        account="proj1", qos="long", mail_type="END,FAIL", requeue=False,
    )  # fmt: skip
    check_request(r)
    opts = sbatch_options(r)
    for expected in (
        "--nodes=2", "--ntasks=4", "--ntasks-per-node=2", "--constraint=avx512&ib",
        "--gres=gpu:a100:2", "--account=proj1", "--qos=long", "--mail-type=END,FAIL",
        "--no-requeue",
    ):  # fmt: skip
        assert expected in opts
    assert "--requeue" in sbatch_options(req(requeue=True))
    argv = SlurmCliBackend(SlurmConfig()).submit_argv(r, test_only=True)
    assert argv[:5] == ["runuser", "-u", "alice", "--", "sbatch"]
    assert "--test-only" in argv and "--parsable" not in argv


@pytest.mark.parametrize(
    "bad",
    [
        {"nodes": 0},
        {"ntasks": True},
        {"ntasks_per_node": -1},
        {"constraint": "a;rm -rf /"},
        {"constraint": "-x"},
        {"gpu_type": "a100 --x"},
        {"account": "a b"},
        {"qos": "$(id)"},
        {"mail_type": "END,ALL_OF_THEM"},
    ],
)
def test_check_request_refuses_bad_batch_fields(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidSubmission):
        check_request(req(**bad))


def test_parse_test_only_22_05() -> None:
    text = (FIXTURES / "sbatch-test-only-22.05.txt").read_text()
    est = parse_test_only(text)
    assert est.start_time is not None
    assert est.processors == 2
    assert est.nodes == "vm"
    assert est.partition == "batch"
    assert est.message.startswith("Job ") and "to start at" in est.message


def test_parse_test_only_refusal_and_garbage() -> None:
    text = (FIXTURES / "sbatch-test-only-22.05-rejected.txt").read_text()
    assert "invalid partition" in rejection_message(text)
    with pytest.raises(SlurmError):
        parse_test_only(text)
    with pytest.raises(SlurmError):
        parse_test_only("")
