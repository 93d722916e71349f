"""POST /api/v1/jobs bodies: typed and named errors, template resolution, image catalog,
resources within the template's maxima, and what is handed to Slurm (fixed script, values
only in the environment)."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from vizdesk.auth.types import AuthError, Identity
from vizdesk.config import Config, SlurmConfig
from vizdesk.core.validate import ValidationError
from vizdesk.jobs.manager import JobManager, JobSubmitError
from vizdesk.jobs.model import BatchJob, BatchJobState
from vizdesk.jobs.request import validate_job_request
from vizdesk.jobs.script import BATCH_SCRIPT
from vizdesk.slurm.base import JobStatus, SlurmBackend, SlurmRejected, SubmitRequest
from vizdesk.slurm.cli import SlurmCliBackend

ALICE = Identity(user="alice", groups=("users",), uid=1001, home="/home/alice")

TEMPLATE = {
    "description": "t",
    "partition": "batch",
    "command": ["printf", "%s\n", "{message}"],
    "resources": {"cpus": {"default": 1, "max": 2}, "gpus": {"default": 0, "max": 1}},
    "parameters": {"message": {"type": "string", "required": True}},
}


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    c = Config()
    c.slurm.partitions = ["viz", "batch"]
    c.slurm.default_partition = "viz"
    c.jobs.templates_dir = str(tmp_path / "templates")
    c.jobs.script_dir = str(tmp_path / "scripts")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "t.yaml").write_text(yaml.safe_dump(TEMPLATE))
    imaged = {**TEMPLATE, "image": "compute", "app": "solver"}
    (tmp_path / "templates" / "img.yaml").write_text(yaml.safe_dump(imaged))
    only = {**TEMPLATE, "groups": ["physics"]}
    (tmp_path / "templates" / "physics.yaml").write_text(yaml.safe_dump(only))
    return c


@dataclass
class Image:
    path: Path
    kind: str = "compute"
    apps: list[str] = field(default_factory=lambda: ["solver"])


class Catalog:
    def __init__(self) -> None:
        self.images = {"compute": Image(Path("/srv/images/compute.sif"))}

    async def resolve(self, ref: str) -> Image | None:
        return self.images.get(ref)


class MemoryStore:
    """Enough of JobStore for the manager's create path (no Redis in unit tests)."""

    def __init__(self) -> None:
        self.jobs: dict[str, BatchJob] = {}

    async def create(self, job: BatchJob) -> None:
        self.jobs[job.id] = BatchJob.from_json(job.to_json())

    async def update(self, jid: str, mutate: Callable[[BatchJob], bool]) -> BatchJob | None:
        job = self.jobs.get(jid)
        if job is None:
            return None
        mutate(job)
        return BatchJob.from_json(job.to_json())


class RecordingBackend(SlurmBackend):
    name = "recording"

    def __init__(self) -> None:
        self.submits: list[SubmitRequest] = []
        self.reject = False

    async def submit(self, req: SubmitRequest) -> str:
        self.submits.append(req)
        if self.reject:
            raise SlurmRejected("Invalid partition name specified")
        return str(1000 + len(self.submits))

    async def info_many(self, job_ids: Collection[str]) -> dict[str, JobStatus]:
        return {}

    async def cancel(self, job_id: str, user: str) -> None:
        pass


def manager(cfg: Config, backend: SlurmBackend | None = None) -> JobManager:
    return JobManager(
        cfg,
        backend or RecordingBackend(),
        MemoryStore(),
        make_dir=record_dir,  # type: ignore[arg-type]
    )


MADE_DIRS: list[tuple[str, str]] = []


async def record_dir(prefix: Sequence[str], user: str, path: str) -> None:
    """Unit tests only: the real ``make_job_dir`` (mkdir as the user) runs in tests/e2e."""
    MADE_DIRS.append((user, path))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], None),
        ({"nope": 1}, "nope"),
        ({}, "image"),  # neither template nor image
        ({"template": "../x"}, "template"),
        ({"template": 5}, "template"),
        ({"template": "t", "image": "compute"}, "image"),
        ({"template": "t", "command": ["x"]}, "command"),
        ({"template": "t", "mode": "run"}, "mode"),
        ({"template": "t", "app": "a"}, "app"),
        ({"template": "t", "parameters": "x"}, "parameters"),
        ({"template": "t", "cpus": 0}, "cpus"),
        ({"template": "t", "cpus": "2"}, "cpus"),
        ({"template": "t", "memory_gb": True}, "memory_gb"),
        ({"template": "t", "gpus": -1}, "gpus"),
        ({"template": "t", "time_limit_minutes": 10**9}, "time_limit_minutes"),
        ({"template": "t", "partition": "a b"}, "partition"),
        ({"image": "compute", "parameters": {}}, "parameters"),
        ({"image": "compute"}, "command"),
        ({"image": "compute", "command": "echo hi"}, "command"),
        ({"image": "compute", "command": []}, "command"),
        ({"image": "compute", "command": ["echo", 1]}, "command"),
        ({"image": "compute", "command": ["a\x00"]}, "command"),
        ({"image": "compute", "command": ["x"] * 300}, "command"),
        ({"image": "compute", "command": ["x" * 70000]}, "command"),
        ({"image": "compute", "command": ["x"], "mode": "shell"}, "mode"),
        ({"image": "", "command": ["x"]}, "image"),
        ({"image": "compute", "command": ["x"], "app": "a;b"}, "app"),
        ({"command": ["x"], "app": "a"}, "image"),
    ],
)
def test_invalid_bodies_name_the_field(cfg: Config, body: Any, field: str | None) -> None:
    with pytest.raises(ValidationError) as err:
        validate_job_request(body, cfg)
    assert err.value.field == field


def test_host_commands_need_configuration(cfg: Config) -> None:
    with pytest.raises(ValidationError):
        validate_job_request({"command": ["echo"]}, cfg)
    cfg.jobs.allow_host_commands = True
    req = validate_job_request({"command": ["echo", "$(id)"]}, cfg)
    assert req.command == ("echo", "$(id)") and req.image is None
    with pytest.raises(ValidationError) as err:
        validate_job_request({"command": ["echo"], "mode": "run"}, cfg)
    assert err.value.field == "mode"


async def test_resolve_template(cfg: Config) -> None:
    m = manager(cfg)
    spec = await m.resolve(
        ALICE,
        validate_job_request({"template": "t", "parameters": {"message": "$(id)"}, "cpus": 2}, cfg),
        None,
    )
    assert spec.argv == ("printf", "%s\n", "$(id)")
    assert (spec.partition, spec.cpus, spec.gpus, spec.template) == ("batch", 2, 0, "t")
    assert spec.env == {"VIZDESK_PARAM_MESSAGE": "$(id)"}
    assert spec.image is None and spec.image_path is None


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"template": "nope"}, "template", "unknown_template"),
        ({"template": "t"}, "parameters.message", "missing_parameter"),
        (
            {"template": "t", "parameters": {"message": "x", "y": 1}},
            "parameters.y",
            "unknown_parameter",
        ),
        ({"template": "t", "parameters": {"message": "x"}, "cpus": 3}, "cpus", "invalid_field"),
        ({"template": "t", "parameters": {"message": "x"}, "gpus": 2}, "gpus", "invalid_field"),
        (
            {"template": "t", "parameters": {"message": "x"}, "partition": "other"},
            "partition",
            "invalid_field",
        ),
        ({"template": "img", "parameters": {"message": "x"}}, "template", "unknown_image"),
        ({"image": "nope", "command": ["x"]}, "image", "unknown_image"),
    ],
)
async def test_resolve_errors(cfg: Config, body: dict[str, Any], field: str, code: str) -> None:
    with pytest.raises(ValidationError) as err:
        await manager(cfg).resolve(ALICE, validate_job_request(body, cfg), None)
    assert (err.value.field, err.value.code) == (field, code)


async def test_resolve_with_catalog(cfg: Config) -> None:
    m = manager(cfg)
    spec = await m.resolve(
        ALICE,
        validate_job_request({"template": "img", "parameters": {"message": "m"}}, cfg),
        Catalog(),
    )
    assert (spec.image, spec.image_path, spec.app) == (
        "compute",
        "/srv/images/compute.sif",
        "solver",
    )
    spec = await m.resolve(
        ALICE,
        validate_job_request({"image": "compute", "mode": "run", "partition": "viz"}, cfg),
        Catalog(),
    )
    assert (spec.mode, spec.argv, spec.partition) == ("run", (), "viz")
    with pytest.raises(ValidationError) as err:
        await m.resolve(
            ALICE,
            validate_job_request({"image": "compute", "command": ["x"], "app": "other"}, cfg),
            Catalog(),
        )
    assert (err.value.field, err.value.code) == ("app", "unknown_app")
    # Without a catalog, an image ref is unknown (unless seeded in sessions.images).
    with pytest.raises(ValidationError) as err:
        await m.resolve(
            ALICE, validate_job_request({"image": "compute", "command": ["x"]}, cfg), None
        )
    assert err.value.code == "unknown_image"


async def test_group_restricted_template(cfg: Config) -> None:
    body = validate_job_request({"template": "physics", "parameters": {"message": "x"}}, cfg)
    with pytest.raises(AuthError) as err:
        await manager(cfg).resolve(ALICE, body, None)
    assert (err.value.status, err.value.field) == (403, "template")
    physicist = Identity(user="alice", groups=("physics",), home="/home/alice")
    assert (await manager(cfg).resolve(physicist, body, None)).template == "physics"


HOSTILE = ["$(id)", "`id`", ";rm -rf /", "a\nb", "'\"\\", "${HOME}", "--output=/etc/x", "%j"]


async def test_submission_carries_values_only_in_the_environment(cfg: Config) -> None:
    backend = RecordingBackend()
    m = manager(cfg, backend)
    cli = SlurmCliBackend(SlurmConfig())
    for value in HOSTILE:
        marked = f"{value}{secrets.token_hex(4)}"
        spec = await m.resolve(
            ALICE,
            validate_job_request({"template": "t", "parameters": {"message": marked}}, cfg),
            None,
        )
        job = await m.create(ALICE, spec)
        req = backend.submits[-1]
        script_text = Path(req.script).read_text()
        assert script_text == BATCH_SCRIPT  # the same fixed text for every job
        assert marked not in script_text
        assert not any(marked in a for a in cli.submit_argv(req))  # never on sbatch's argv
        assert req.env["VIZDESK_ARGV_2"] == marked
        assert req.env["VIZDESK_PARAM_MESSAGE"] == marked
        assert json.loads(req.env["VIZDESK_PARAMS_JSON"]) == {"message": marked}
        workdir = f"/home/alice/vizdesk-jobs/{job.id}"
        assert req.user == "alice" and req.workdir == workdir == job.workdir
        assert MADE_DIRS[-1] == ("alice", workdir)
        assert req.output == f"{workdir}/vizdesk-job-{job.id}.out" == job.output_path
        assert req.env["VIZDESK_JOB_DIR"] == workdir
        assert job.job_id == str(1000 + len(backend.submits))
        assert job.state == BatchJobState.QUEUED and job.reason == "queued in Slurm"


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a directory owned by another uid")
async def test_output_dir_and_rejection(cfg: Config, tmp_path: Path) -> None:
    cfg.jobs.output_dir = f"{tmp_path}/scratch/{{user}}/out"
    backend = RecordingBackend()
    m = manager(cfg, backend)
    spec = await m.resolve(
        ALICE, validate_job_request({"template": "t", "parameters": {"message": "x"}}, cfg), None
    )
    job = await m.create(ALICE, spec)
    out_dir = tmp_path / "scratch" / "alice" / "out"
    assert job.output_path == f"{out_dir}/vizdesk-job-{job.id}.out"
    # the user's own directory: created for them, 0700, nobody else may write into it
    st = out_dir.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (ALICE.uid, 0o700)
    backend.reject = True
    with pytest.raises(JobSubmitError) as err:
        await m.create(ALICE, spec)
    assert err.value.status == 400 and err.value.code == "slurm_rejected"
    assert err.value.job.state == BatchJobState.FAILED
    assert "Invalid partition" in err.value.job.reason


def test_read_tail_is_safe(tmp_path: Path) -> None:
    import os

    from vizdesk.jobs.output import read_tail

    me = os.geteuid()
    out = tmp_path / "job.out"
    out.write_bytes(b"0123456789")
    assert read_tail(str(out), me, 4) == (b"6789", 10)
    assert read_tail(str(out), me, 100) == (b"0123456789", 10)
    # Not the job user's file → refused (a hard link to someone else's file, say).
    with pytest.raises(PermissionError):
        read_tail(str(out), me + 1, 4)
    # A symlink (e.g. to /etc/shadow) is never followed.
    link = tmp_path / "link.out"
    link.symlink_to(out)
    with pytest.raises(OSError):
        read_tail(str(link), me, 4)
    # A directory or a FIFO is not a regular file.
    with pytest.raises(PermissionError):
        read_tail(str(tmp_path), me, 4)
    fifo = tmp_path / "fifo.out"
    os.mkfifo(fifo)
    with pytest.raises(PermissionError):
        read_tail(str(fifo), me, 4)


async def test_template_run_options_reach_the_submission(cfg: Config, tmp_path: Path) -> None:
    mpi = {
        **TEMPLATE,
        "launcher": "srun",
        "notify": "email",
        "requeue": True,
        "constraint": "avx512",
        "resources": {"ntasks": {"default": 2, "max": 8}, "nodes": {"default": 1, "max": 2}},
    }
    (tmp_path / "templates" / "mpi.yaml").write_text(yaml.safe_dump(mpi))
    backend = RecordingBackend()
    m = manager(cfg, backend)
    spec = await m.resolve(ALICE, validate_job_request(
        {"template": "mpi", "parameters": {"message": "x"}, "ntasks": 4, "nodes": 2}, cfg), None)
    job = await m.create(ALICE, spec)
    req = backend.submits[-1]
    assert (req.ntasks, req.nodes, req.ntasks_per_node) == (4, 2, None)
    assert (req.mail_type, req.requeue, req.constraint) == ("END,FAIL", True, "avx512")
    assert req.env["VIZDESK_LAUNCHER"] == "srun"
    assert (job.ntasks, job.nodes, job.template_version) == (4, 2, spec.template_version)
    plain = await m.resolve(ALICE, validate_job_request(
        {"template": "t", "parameters": {"message": "x"}, "constraint": "gpu&ib"}, cfg), None)
    await m.create(ALICE, plain)
    req = backend.submits[-1]
    assert (req.ntasks, req.nodes, req.mail_type, req.requeue) == (1, 1, "", False)
    assert req.constraint == "gpu&ib" and "VIZDESK_LAUNCHER" not in req.env
    with pytest.raises(ValidationError) as ei:
        await m.resolve(ALICE, validate_job_request(
            {"template": "mpi", "parameters": {"message": "x"}, "ntasks": 9}, cfg), None)
    assert ei.value.field == "ntasks"
