"""NVIDIA GPU detection and statistics with pynvml (nvidia-ml-py).

Degrades to "no GPU" (``[]``) when pynvml cannot be imported, the driver library is
missing, no device is visible, or anything else fails: a desktop without a GPU is a
normal case, never an error.

Inside a Slurm job only the GPUs allocated to the job are reported: ``SLURM_JOB_GPUS``
(node-global indices, what NVML numbers too) or UUIDs in ``CUDA_VISIBLE_DEVICES``
select them; a Slurm job with neither variable has no GPU allocated, so GPUs that the
node has but the job did not ask for are not used (no ``--nv``, no VirtualGL).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import structlog

log = structlog.get_logger("vizdesk.node.gpu")


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    memory_total: int  # bytes
    memory_used: int  # bytes
    utilization: int  # percent, -1 when the driver does not report it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _import_pynvml() -> ModuleType | None:
    try:
        return importlib.import_module("pynvml")
    except Exception:  # ImportError, or a broken installation
        return None


def allowed_gpus(env: Mapping[str, str]) -> tuple[set[int] | None, set[str] | None, bool]:
    """(indices, uuids, none_allocated) as selected by the Slurm job environment."""
    job_gpus = env.get("SLURM_JOB_GPUS", "").strip()
    if job_gpus:
        indices = {int(p) for p in job_gpus.split(",") if p.strip().isdigit()}
        return indices, None, False
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        items = [p.strip() for p in cvd.split(",") if p.strip()]
        if not items or items == ["NoDevFiles"] or items == ["-1"]:
            return None, None, True
        uuids = {p for p in items if p.startswith(("GPU-", "MIG-"))}
        return None, (uuids or None), False
    if env.get("SLURM_JOB_ID"):
        return None, None, True
    return None, None, False


def _device_info(nvml: Any, index: int) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        util = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:
        util = -1
    return GpuInfo(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        memory_total=int(mem.total),
        memory_used=int(mem.used),
        utilization=util,
    )


def detect_gpus(env: Mapping[str, str], nvml: ModuleType | None = None) -> list[GpuInfo]:
    """The GPUs this job may use, with current memory use and utilisation ([] if none).

    Blocking (NVML calls): run it in a thread from asyncio code.
    """
    indices, uuids, none_allocated = allowed_gpus(env)
    if none_allocated:
        return []
    mod: Any = nvml if nvml is not None else _import_pynvml()
    if mod is None:
        return []
    try:
        mod.nvmlInit()
    except Exception as exc:
        log.debug("nvml_unavailable", error=str(exc))
        return []
    gpus: list[GpuInfo] = []
    try:
        count = int(mod.nvmlDeviceGetCount())
        for i in range(count):
            if indices is not None and i not in indices:
                continue
            try:
                info = _device_info(mod, i)
            except Exception as exc:  # e.g. NO_PERMISSION for a GPU of another job
                log.debug("nvml_device_skipped", index=i, error=str(exc))
                continue
            if uuids is not None and info.uuid not in uuids:
                continue
            gpus.append(info)
    except Exception as exc:
        log.warning("nvml_query_failed", error=str(exc))
        return []
    finally:
        try:
            mod.nvmlShutdown()
        except Exception:  # noqa: S110 - nothing useful to do if shutdown fails
            pass
    return gpus
