"""Scheduler adapters: the Slurm CLI backend and the pyslurm backend behind one interface."""

from __future__ import annotations

from ..config import SlurmConfig
from .base import SlurmBackend


def make_backend(slurm_cfg: SlurmConfig, min_uid: int = 1000) -> SlurmBackend:
    """The adapter ``slurm.backend`` asks for.

    ``cli`` and ``pyslurm`` are explicit; ``auto`` takes pyslurm when ``import pyslurm``
    (with ``PYSLURM_DISABLE_AUTO_INIT=1``) and ``pyslurm.slurm_init(slurm.conf_path or
    $SLURM_CONF)`` work, else the Slurm command-line clients.
    Jobs never run as root or as a uid below ``min_uid``.
    """
    from .cli import SlurmCliBackend
    from .pyslurm_backend import PyslurmBackend, import_pyslurm, pyslurm_available

    choice = slurm_cfg.backend
    if choice == "cli":
        return SlurmCliBackend(slurm_cfg, min_uid)
    if choice == "pyslurm":
        import_pyslurm(slurm_cfg.conf_path)  # fail at start-up, not on the first request
        return PyslurmBackend(slurm_cfg, min_uid)
    if choice == "auto":
        if pyslurm_available(slurm_cfg.conf_path):
            return PyslurmBackend(slurm_cfg, min_uid)
        return SlurmCliBackend(slurm_cfg, min_uid)
    raise ValueError(f"slurm.backend: unknown backend {choice!r} (auto, cli or pyslurm)")


__all__ = ["SlurmBackend", "make_backend"]
