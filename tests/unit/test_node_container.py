"""Apptainer argv: clean environment, --nv only with a GPU, binds, VirtualGL in the image."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_node_gpu import TWO_GPUS, fake_pynvml
from test_node_jobenv import SID, good_env

from vizdesk.config import Config
from vizdesk.contract.jobenv import parse_job_env
from vizdesk.node import container
from vizdesk.node.gpu import detect_gpus
from vizdesk.node.password import PrivateDir
from vizdesk.node.vnc_server import ServerSpec, TigerVNCServer, TurboVNCServer
from vizdesk.node.wrapper import Wrapper

IMAGE = "/images/viz.sif"


def test_apptainer_argv_without_gpu() -> None:
    argv = container.apptainer_exec_argv("apptainer", IMAGE, ["Xvnc", ":3"], gpu=False)
    assert argv == ["apptainer", "exec", "--cleanenv", IMAGE, "Xvnc", ":3"]


def test_apptainer_argv_with_gpu_and_binds() -> None:
    argv = container.apptainer_exec_argv(
        "/usr/bin/apptainer",
        IMAGE,
        ["startxfce4"],
        gpu=True,
        binds=["/home", "/scratch:/scratch:rw"],
        private_dir="/tmp/vizdesk-x",
    )
    assert argv == [
        "/usr/bin/apptainer",
        "exec",
        "--cleanenv",
        "--nv",
        "--bind",
        "/home",
        "--bind",
        "/scratch:/scratch:rw",
        "--bind",
        "/tmp/vizdesk-x",
        IMAGE,
        "startxfce4",
    ]


def test_container_environment_passes_only_what_is_needed() -> None:
    env = container.container_environ(
        {"DISPLAY": ":3", "VIZDESK_SESSION_TAG": SID, "XAUTHORITY": "/tmp/x", "SECRET": "no"}
    )
    assert env["APPTAINERENV_DISPLAY"] == ":3"
    assert env["APPTAINERENV_VIZDESK_SESSION_TAG"] == SID
    assert env["APPTAINERENV_XAUTHORITY"] == "/tmp/x"
    assert "APPTAINERENV_SECRET" not in env


def test_existing_binds_skips_missing_sources(tmp_path: Path) -> None:
    assert container.existing_binds([str(tmp_path), f"{tmp_path}:/data", "/nonexistent/x"]) == [
        str(tmp_path),
        f"{tmp_path}:/data",
    ]


def _run_vgl_script(tmp_path: Path, vglrun: str) -> list[str]:
    argv = container.vgl_if_present_argv(vglrun, "egl", ["printf", "%s\\n", "a b", "c"])
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()


def test_vgl_script_runs_desktop_directly_without_vglrun(tmp_path: Path) -> None:
    assert _run_vgl_script(tmp_path, "/nonexistent/vglrun") == ["a b", "c"]


def test_vgl_script_uses_vglrun_when_present(tmp_path: Path) -> None:
    fake = tmp_path / "vglrun"
    fake.write_text('#!/bin/sh\necho "vglrun $1 $2"\nshift 2\nexec "$@"\n')
    fake.chmod(0o755)
    assert _run_vgl_script(tmp_path, str(fake)) == ["vglrun -d egl", "a b", "c"]


# --- the wrapper's assembly: image + GPU (fake pynvml) vs image without GPU ------------


def make_wrapper(tmp_path: Path, **node: Any) -> Wrapper:
    cfg = Config()
    cfg.node.apptainer = "/usr/bin/apptainer"
    cfg.node.apptainer_binds = [str(tmp_path), "/nonexistent-scratch"]
    cfg.node.desktop_command = ["startxfce4"]
    for k, v in node.items():
        setattr(cfg.node, k, v)
    env = good_env(VIZDESK_IMAGE=IMAGE, TMPDIR=str(tmp_path))
    w = Wrapper(cfg, parse_job_env(env), env)
    w.private = PrivateDir(env)
    return w


def server_spec(w: Wrapper, display: int) -> ServerSpec:
    assert w.private is not None
    return ServerSpec(
        port=5905,
        display=display,
        width=1280,
        height=800,
        depth=24,
        password_file=str(w.private.file("passwd")),
        xauthority=str(w.private.file("Xauthority")),
        private_dir=str(w.private.path),
        desktop=(),
    )


def test_image_with_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(TWO_GPUS))
    w = make_wrapper(tmp_path)
    gpu = bool(detect_gpus({}))
    assert gpu
    assert w.private is not None
    inner = TigerVNCServer("Xvnc").server_argv(server_spec(w, 5))
    argv, env = w._wrap(inner, {"DISPLAY": ":5", "VIZDESK_SESSION_TAG": SID}, gpu)
    assert argv[:4] == ["/usr/bin/apptainer", "exec", "--cleanenv", "--nv"]
    assert argv[argv.index(IMAGE) + 1 :] == inner
    binds = [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"]
    assert binds == [str(tmp_path), str(w.private.path)]  # the missing bind is skipped
    assert env["APPTAINERENV_VIZDESK_SESSION_TAG"] == SID
    desktop = w._desktop_command(gpu)
    assert desktop[:3] == ["/bin/sh", "-c", container.VGL_IF_PRESENT]
    assert desktop[-3:] == ["vglrun", "egl", "startxfce4"]
    w.private.cleanup()


def test_image_without_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    w = make_wrapper(tmp_path)
    gpu = bool(detect_gpus({}))
    assert not gpu
    inner = TigerVNCServer("Xvnc").server_argv(server_spec(w, 5))
    argv, _ = w._wrap(inner, {}, gpu)
    assert "--nv" not in argv and argv[:3] == ["/usr/bin/apptainer", "exec", "--cleanenv"]
    assert w._desktop_command(gpu) == ["startxfce4"]
    assert w.private is not None
    w.private.cleanup()


def test_image_with_turbovnc_and_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(TWO_GPUS[:1]))
    w = make_wrapper(tmp_path, vnc_flavor="turbovnc")
    gpu = bool(detect_gpus({}))
    server = TurboVNCServer("/opt/TurboVNC/bin/vncserver")
    s = server_spec(w, 9)
    s = ServerSpec(**{**s.__dict__, "desktop": tuple(w._desktop_command(gpu))})
    server.prepare(s)
    argv, _ = w._wrap(server.server_argv(s), {}, gpu)
    assert "--nv" in argv
    tail = argv[argv.index(IMAGE) + 1 :]
    assert tail[:3] == ["/opt/TurboVNC/bin/vncserver", ":9", "-fg"]
    script = Path(tail[tail.index("-xstartup") + 1]).read_text()
    assert "vglrun" in script and "startxfce4" in script
    assert w.private is not None
    w.private.cleanup()


def test_bare_path_is_not_wrapped(tmp_path: Path) -> None:
    cfg = Config()
    env = good_env(TMPDIR=str(tmp_path))
    w = Wrapper(cfg, parse_job_env(env), env)
    argv, env2 = w._wrap(["Xvnc", ":1"], {"A": "b"}, gpu=True)
    assert argv == ["Xvnc", ":1"] and env2 == {"A": "b"}


INSPECT = """{
  "data": {"attributes": {"labels": {
    "org.label-schema.usage.apptainer.version": "1.4.5",
    "org.vizdesk.kind": "viz",
    "org.vizdesk.vnc": "%s"
  }}},
  "type": "container"
}"""


def test_vnc_flavor_from_image_labels() -> None:
    assert container.vnc_flavor_from_inspect(INSPECT % "turbovnc") == "turbovnc"
    assert container.vnc_flavor_from_inspect((INSPECT % "tigervnc").encode()) == "tigervnc"
    assert container.vnc_flavor_from_inspect(INSPECT % "x11vnc") is None
    assert container.vnc_flavor_from_inspect('{"data": {"attributes": {"labels": {}}}}') is None
    assert container.vnc_flavor_from_inspect("not json") is None
    assert container.inspect_labels_argv("apptainer", IMAGE) == [
        "apptainer",
        "inspect",
        "--json",
        "--labels",
        IMAGE,
    ]


def test_apptainer_argv_unsquash_extracts_instead_of_fuse() -> None:
    argv = container.apptainer_exec_argv("apptainer", IMAGE, ["Xvnc"], gpu=True, unsquash=True)
    assert argv == ["apptainer", "exec", "--cleanenv", "--unsquash", "--nv", IMAGE, "Xvnc"]
