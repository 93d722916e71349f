"""jobscripts/vnc.sbatch: a thin bash launcher for `vizdesk node vnc`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "jobscripts" / "vnc.sbatch"


def test_script_is_strict_bash() -> None:
    text = SCRIPT.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text
    assert not [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_execs_the_configured_command(tmp_path: Path) -> None:
    fake = tmp_path / "vizdesk"
    fake.write_text('#!/bin/sh\necho "$$|$*|$VIZDESK_SESSION_ID"\n')
    fake.chmod(0o755)
    env = {**os.environ, "VIZDESK_COMMAND": str(fake), "VIZDESK_SESSION_ID": "$(id)"}
    out = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    _pid, args, sid = out.stdout.strip().split("|")
    assert args == "node vnc"
    assert sid == "$(id)"  # passed through, never evaluated


def test_defaults_to_vizdesk_on_path(tmp_path: Path) -> None:
    fake = tmp_path / "vizdesk"
    fake.write_text('#!/bin/sh\necho "from-path $*"\nexit 3\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "VIZDESK_COMMAND"}
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    out = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "from-path node vnc"
    assert out.returncode == 3  # the wrapper's exit code is the job's
