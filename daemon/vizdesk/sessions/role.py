"""What every role of the desktop stack is built from (spawner, tracking, tracker)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..metrics import Metrics
from ..slurm.base import SlurmBackend
from .registrations import RegistrationManager
from .store import SessionStore


@dataclass(eq=False)
class SessionRole:
    """The parts a desktop role works with: configuration, the scheduler, the session
    store, the registrations (ACL users) and the metrics."""

    cfg: Config
    backend: SlurmBackend
    store: SessionStore
    registrations: RegistrationManager
    metrics: Metrics
