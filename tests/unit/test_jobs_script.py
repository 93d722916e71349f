"""The batch launcher: one fixed text that never contains a request value, and that runs
hostile argv elements and parameter values verbatim (no shell evaluation), on the host or
through ``apptainer exec|run --cleanenv --no-eval``."""

from __future__ import annotations

import os
import random
import shutil
import stat
import string
import subprocess
import tempfile
from pathlib import Path

import pytest

from vizdesk.jobs.script import BATCH_SCRIPT, SCRIPT_NAME, install_script, job_environment

HOSTILE = [
    "$(id)",
    "`id`",
    ";rm -rf /tmp/vizdesk-should-not-exist",
    "a\nb\n",
    "'\"\\",
    "${HOME}",
    "$VIZDESK_IMAGE",
    "*",
    "-n",
    "--",
    "",
    "é\t∑",
    "x; echo pwned > /tmp/vizdesk-pwned",
    "$(touch /tmp/vizdesk-pwned)",
    "VIZDESK_ARGC=0",
]


def fuzz_values(n: int = 200) -> list[str]:
    rng = random.Random(4)
    alphabet = string.printable + "$`;|&()<>{}[]*?!~#'\"\\\n\t é"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def env_for(argv: list[str], params: dict[str, str] | None = None, **kw: object) -> dict[str, str]:
    params = params or {}
    opts: dict[str, object] = {
        "image_path": None,
        "mode": "exec",
        "app": None,
        "gpus": 0,
        "apptainer": "apptainer",
        "binds": [],
    }
    opts.update(kw)
    return job_environment(
        job_id="0123456789abcdef",
        argv=argv,
        params=params,
        values={k.removeprefix("VIZDESK_PARAM_").lower(): v for k, v in params.items()},
        **opts,  # type: ignore[arg-type]
    )


@pytest.fixture
def script(tmp_path: Path) -> str:
    return install_script(str(tmp_path / "scripts"))


def run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        ["/bin/bash", script],
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env},
        capture_output=True,
        timeout=30,
        check=False,
    )
    # Decode without newline translation: a "\r" in a value must come back as "\r".
    return subprocess.CompletedProcess(
        res.args, res.returncode, res.stdout.decode(), res.stderr.decode()
    )


def test_script_file_is_the_fixed_text(script: str) -> None:
    assert Path(script).read_text() == BATCH_SCRIPT
    assert Path(script).name == SCRIPT_NAME
    assert install_script(str(Path(script).parent)) == script  # idempotent
    # Whatever the request, its values travel in the environment only.
    token = "Zq7" * 4
    env = env_for([f"$(id){token}"], {"VIZDESK_PARAM_X": f"`id`{token}"}, image_path="/x.sif")
    assert token not in BATCH_SCRIPT
    assert sum(token in v for v in env.values()) == 3  # argv, the param, the JSON


def test_install_script_permissions_and_refusals(tmp_path: Path) -> None:
    path = Path(install_script(str(tmp_path / "d")))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    # A tampered copy is replaced.
    path.write_text("#!/bin/bash\necho evil\n")
    assert Path(install_script(str(tmp_path / "d"))).read_text() == BATCH_SCRIPT
    # A directory others may write to is refused (it could be raced).
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(RuntimeError, match="writable by nobody else"):
        install_script(str(open_dir))
    if os.geteuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        os.chown(foreign, 1, 1)
        with pytest.raises(RuntimeError, match="owned by uid"):
            install_script(str(foreign))


def test_environment_layout() -> None:
    env = env_for(["a", "b c"], {"VIZDESK_PARAM_MSG": "$(id)"})
    assert env["VIZDESK_ARGC"] == "2"
    assert (env["VIZDESK_ARGV_0"], env["VIZDESK_ARGV_1"]) == ("a", "b c")
    assert env["VIZDESK_PARAM_MSG"] == "$(id)"
    assert env["VIZDESK_PARAMS_JSON"] == '{"msg":"$(id)"}'
    assert env["VIZDESK_PARAM_NAMES"] == "VIZDESK_PARAM_MSG"
    assert "VIZDESK_IMAGE" not in env
    env = env_for(["a"], image_path="/i.sif", mode="run", app="x", gpus=2, binds=["/a:/b"])
    assert (env["VIZDESK_IMAGE"], env["VIZDESK_MODE"], env["VIZDESK_APP"]) == ("/i.sif", "run", "x")
    assert (env["VIZDESK_GPUS"], env["VIZDESK_APPTAINER_BINDS"]) == ("2", "/a:/b")


def test_host_run_is_verbatim(script: str, tmp_path: Path) -> None:
    marker = Path("/tmp/vizdesk-pwned")
    marker.unlink(missing_ok=True)
    values = [*HOSTILE, *fuzz_values(50)]
    res = run(script, env_for(["printf", "[%s]\\n", *values]))
    assert res.returncode == 0, res.stderr
    assert res.stdout == "".join(f"[{v}]\n" for v in values)
    assert not marker.exists()


def test_params_reach_the_command_verbatim(script: str) -> None:
    params = {f"VIZDESK_PARAM_P{i}": v for i, v in enumerate(HOSTILE)}
    code = (
        'import json, os; print(json.dumps([os.environ[f"VIZDESK_PARAM_P{i}"] for i in range(%d)]))'
    )
    res = run(script, env_for(["python3", "-c", code % len(HOSTILE)], params))
    assert res.returncode == 0, res.stderr
    import json

    assert json.loads(res.stdout) == HOSTILE


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_status_is_the_commands(script: str, code: int) -> None:
    res = run(script, env_for(["/bin/bash", "-c", f"exit {code}"]))
    assert res.returncode == code


def test_leading_dash_command_is_not_an_option(script: str) -> None:
    res = run(script, env_for(["-c", "x"]))
    assert res.returncode == 127  # "-c: not found", not bash's exec option


@pytest.mark.parametrize(
    "env",
    [
        {"VIZDESK_ARGC": "1"},  # element missing
        {"VIZDESK_ARGC": "1; id"},
        {"VIZDESK_ARGC": "0"},  # nothing to run
        {
            "VIZDESK_ARGC": "1",
            "VIZDESK_ARGV_0": "x",
            "VIZDESK_IMAGE": "/i",
            "VIZDESK_MODE": "shell",
        },
    ],
)
def test_malformed_environment_fails_closed(script: str, env: dict[str, str]) -> None:
    res = run(script, env)
    assert res.returncode == 125
    assert res.stderr.startswith("vizdesk:")


FAKE_APPTAINER = """#!/bin/bash
printf 'ARG<%s>\\n' "$@"
for v in "${!APPTAINERENV_@}"; do printf 'ENV<%s=%s>\\n' "$v" "${!v}"; done
"""


@pytest.fixture
def fake_apptainer(tmp_path: Path) -> str:
    path = tmp_path / "apptainer"
    path.write_text(FAKE_APPTAINER)
    path.chmod(0o755)
    return str(path)


def test_container_exec_argv_and_environment(
    script: str, fake_apptainer: str, tmp_path: Path
) -> None:
    params = {"VIZDESK_PARAM_MSG": "$(id)", "VIZDESK_PARAM_N": "3"}
    env = env_for(
        ["python3", "-c", "$(id)"],
        params,
        image_path="/images/a b.sif",
        mode="exec",
        app="solver",
        gpus=1,
        apptainer=fake_apptainer,
        binds=[f"{tmp_path}:/data", "/does/not/exist:/x"],
    )
    res = run(script, env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    args = [ln[4:-1] for ln in lines if ln.startswith("ARG<")]
    assert args == [
        "exec",
        "--cleanenv",
        "--no-eval",
        "--nv",
        "--app",
        "solver",
        "--bind",
        f"{tmp_path}:/data",
        "/images/a b.sif",
        "python3",
        "-c",
        "$(id)",
    ]
    envs = {
        ln[4:-1].split("=", 1)[0]: ln[4:-1].split("=", 1)[1]
        for ln in lines
        if ln.startswith("ENV<")
    }
    assert envs["APPTAINERENV_VIZDESK_PARAM_MSG"] == "$(id)"
    assert envs["APPTAINERENV_VIZDESK_PARAM_N"] == "3"
    assert envs["APPTAINERENV_VIZDESK_JOB_ID"] == "0123456789abcdef"
    assert "APPTAINERENV_VIZDESK_PARAMS_JSON" in envs
    assert "skipped" in res.stderr  # the missing bind source


def test_container_run_mode_without_command(script: str, fake_apptainer: str) -> None:
    res = run(script, env_for([], image_path="/i.sif", mode="run", apptainer=fake_apptainer))
    assert res.returncode == 0, res.stderr
    args = [ln[4:-1] for ln in res.stdout.splitlines() if ln.startswith("ARG<")]
    assert args == ["run", "--cleanenv", "--no-eval", "/i.sif"]
    res = run(script, env_for([], image_path="/i.sif", mode="exec", apptainer=fake_apptainer))
    assert res.returncode == 125  # exec needs a command


def user_may_open_fuse(prefix: list[str]) -> bool:
    cmd = [*prefix, "/bin/bash", "-c", "[[ -r /dev/fuse && -w /dev/fuse ]]"]
    return subprocess.run(cmd, check=False).returncode == 0


@pytest.mark.parametrize("setting", ["always", "never", "auto"])
def test_container_unsquash_where_fuse_is_not_usable(
    script: str, fake_apptainer: str, setting: str
) -> None:
    """auto: --unsquash exactly when the job's user cannot open /dev/fuse read-write (run
    as nobody when we are root, as a job would run; this machine's device decides)."""
    here = Path(tempfile.mkdtemp(prefix="vizdesk-launcher-", dir="/tmp"))  # nobody may read
    here.chmod(0o755)
    for src in (script, fake_apptainer):
        shutil.copy(src, here / Path(src).name)
        (here / Path(src).name).chmod(0o755)
    apptainer = str(here / Path(fake_apptainer).name)
    env = env_for(["true"], image_path="/i.sif", mode="exec", apptainer=apptainer)
    env["VIZDESK_APPTAINER_UNSQUASH"] = setting
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if os.geteuid() != 0:
        prefix = []
    res = subprocess.run(
        [*prefix, "/bin/bash", str(here / Path(script).name)],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    shutil.rmtree(here)
    assert res.returncode == 0, res.stderr
    args = [ln[4:-1] for ln in res.stdout.splitlines() if ln.startswith("ARG<")]
    want = {"always": True, "never": False, "auto": not user_may_open_fuse(prefix)}[setting]
    assert ("--unsquash" in args) is want, args
    assert ("extracting the image" in res.stderr) is (want and setting == "auto")


def test_environment_carries_the_unsquash_setting() -> None:
    env = env_for(["true"], image_path="/i.sif", unsquash="never")
    assert env["VIZDESK_APPTAINER_UNSQUASH"] == "never"
    assert "VIZDESK_APPTAINER_UNSQUASH" not in env_for(["true"])  # no image, no Apptainer
