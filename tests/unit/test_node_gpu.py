"""GPU detection with pynvml, using a fake pynvml module (no GPU on the test bed)."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace
from typing import Any

import pytest

from vizdesk.node.gpu import allowed_gpus, detect_gpus

GiB = 1 << 30


class NVMLError(Exception):
    pass


def fake_pynvml(
    devices: list[dict[str, Any]], init_error: bool = False, bytes_names: bool = False
) -> types.ModuleType:
    """A stand-in for nvidia-ml-py's ``pynvml`` with the calls the wrapper uses."""
    mod = types.ModuleType("pynvml")
    state = {"init": 0, "shutdown": 0}

    def nvmlInit() -> None:
        if init_error:
            raise NVMLError("NVML Shared Library Not Found")
        state["init"] += 1

    def nvmlShutdown() -> None:
        state["shutdown"] += 1

    def handle(i: int) -> dict[str, Any]:
        dev = devices[i]
        if dev.get("denied"):
            raise NVMLError("Insufficient Permissions")
        return dev

    def name(h: dict[str, Any]) -> str | bytes:
        return h["name"].encode() if bytes_names else h["name"]

    mod.NVMLError = NVMLError  # type: ignore[attr-defined]
    mod.nvmlInit = nvmlInit  # type: ignore[attr-defined]
    mod.nvmlShutdown = nvmlShutdown  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(devices)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = name  # type: ignore[attr-defined]
    mod.nvmlDeviceGetUUID = lambda h: h["uuid"]  # type: ignore[attr-defined]
    mod.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(  # type: ignore[attr-defined]
        total=h["total"], used=h["used"], free=h["total"] - h["used"]
    )
    mod.nvmlDeviceGetUtilizationRates = lambda h: SimpleNamespace(  # type: ignore[attr-defined]
        gpu=h["util"], memory=0
    )
    mod.state = state  # type: ignore[attr-defined]
    return mod


TWO_GPUS = [
    {"name": "NVIDIA A40", "uuid": "GPU-aaaa", "total": 48 * GiB, "used": 1 * GiB, "util": 7},
    {"name": "NVIDIA A40", "uuid": "GPU-bbbb", "total": 48 * GiB, "used": 2 * GiB, "util": 0},
]


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    mod = fake_pynvml(TWO_GPUS)
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    return mod


def test_reports_all_gpus_outside_slurm(two_gpus: types.ModuleType) -> None:
    gpus = detect_gpus({})
    assert [g.to_json() for g in gpus] == [
        {
            "index": 0,
            "name": "NVIDIA A40",
            "uuid": "GPU-aaaa",
            "memory_total": 48 * GiB,
            "memory_used": 1 * GiB,
            "utilization": 7,
        },
        {
            "index": 1,
            "name": "NVIDIA A40",
            "uuid": "GPU-bbbb",
            "memory_total": 48 * GiB,
            "memory_used": 2 * GiB,
            "utilization": 0,
        },
    ]
    assert two_gpus.state == {"init": 1, "shutdown": 1}  # type: ignore[attr-defined]


def test_only_the_jobs_gpus(two_gpus: types.ModuleType) -> None:
    assert [g.index for g in detect_gpus({"SLURM_JOB_ID": "5", "SLURM_JOB_GPUS": "1"})] == [1]
    by_uuid = detect_gpus({"SLURM_JOB_ID": "5", "CUDA_VISIBLE_DEVICES": "GPU-aaaa"})
    assert [g.uuid for g in by_uuid] == ["GPU-aaaa"]


def test_slurm_job_without_gpus_gets_none(two_gpus: types.ModuleType) -> None:
    assert detect_gpus({"SLURM_JOB_ID": "5"}) == []
    assert detect_gpus({"SLURM_JOB_ID": "5", "CUDA_VISIBLE_DEVICES": ""}) == []
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}) == []


def test_bytes_names_and_denied_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [{"denied": True}, dict(TWO_GPUS[1])]
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(devices, bytes_names=True))
    gpus = detect_gpus({})
    assert [(g.index, g.name) for g in gpus] == [(1, "NVIDIA A40")]


def test_no_driver_means_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(TWO_GPUS, init_error=True))
    assert detect_gpus({}) == []


def test_no_pynvml_means_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    assert detect_gpus({}) == []


def test_real_pynvml_without_gpu_degrades() -> None:
    # The installed nvidia-ml-py, on a machine without an NVIDIA driver: no error.
    gpus = detect_gpus({})
    assert isinstance(gpus, list)


def test_allowed_gpus_parsing() -> None:
    assert allowed_gpus({"SLURM_JOB_GPUS": "0,2"}) == ({0, 2}, None, False)
    assert allowed_gpus({"CUDA_VISIBLE_DEVICES": "0"}) == (None, None, False)
    assert allowed_gpus({}) == (None, None, False)
