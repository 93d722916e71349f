"""The container test tier: Apptainer 1.4 + Slurm 26.05 in a Debian sid root.

``testbed/sid/sidroot.sh up`` builds (or reuses: cached by the hash of its recipe under
/var/lib/vizdesk-sid) a Debian sid root with Apptainer, Slurm 26.05, munge and Redis,
starts them in their own mount + pid namespace, and ``sidroot.sh images`` builds (or
reuses: cached by the definition's hash) containers/vnc.def with ``VNC=tigervnc`` and
containers/compute.def. The tests run commands inside with ``sidroot.sh run``.

The tier is skipped, with the reason, only when Debian sid cannot be bootstrapped here
(not root, no namespaces, or the Debian mirror unreachable). Any other failure fails.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator

import pytest

from tests.container.sid import SCRIPT, STATE, Sid, read_env, record_timing, script


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "container: needs the Debian sid root with Apptainer + Slurm 26.05"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.container)


def _impossible() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the container tier needs Linux"
    if os.geteuid() != 0:
        return "the container tier needs root (debootstrap, unshare, pivot_root)"
    for tool in ("unshare", "nsenter", "pivot_root"):
        if shutil.which(tool) is None:
            return f"the container tier needs {tool} (util-linux)"
    return None


@pytest.fixture(scope="session")
def sid() -> Iterator[Sid]:
    """The running sid root with both images built."""
    reason = _impossible()
    if reason:
        pytest.skip(reason)
    t0 = time.monotonic()
    res = script("up")
    if res.returncode != 0:
        if "debootstrap of sid failed" in res.stderr or "debootstrap is missing" in res.stderr:
            pytest.skip(
                "cannot debootstrap Debian sid on this machine (mirror unreachable or "
                f"debootstrap unavailable): {res.stderr.strip()[-800:]}"
            )
        pytest.fail(f"sidroot.sh up failed:\n{res.stderr[-3000:]}")
    record_timing("sidroot up (root build or reuse + services)", time.monotonic() - t0)
    t0 = time.monotonic()
    res = script("images")
    if res.returncode != 0:
        pytest.fail(f"sidroot.sh images failed:\n{res.stderr[-3000:]}")
    record_timing("sidroot images (build or reuse)", time.monotonic() - t0)
    print(script("timings").stdout)
    env = read_env(STATE / "run" / "env")
    yield Sid(env)
    # the namespace stays up (the next run reuses it); only our leftovers are removed
    Sid(env).run("bash", "-c", "scancel --user=alice; scancel --user=bob; true", check=False)


@pytest.fixture(scope="session")
def sid_venv(sid: Sid) -> Sid:
    """The sid root with /opt/vizdesk-venv (sid's Python, vizdesk from this checkout)."""
    t0 = time.monotonic()
    res = script("venv")
    if res.returncode != 0:
        pytest.fail(f"sidroot.sh venv failed:\n{res.stderr[-3000:]}")
    record_timing("sidroot venv (pip install of this checkout)", time.monotonic() - t0)
    return sid


__all__ = ["SCRIPT", "sid", "sid_venv"]
