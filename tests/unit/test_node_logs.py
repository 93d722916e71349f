"""The wrapper's logs: JSON lines, and no local variables (secrets) in tracebacks."""

from __future__ import annotations

import io
import json

import structlog

from vizdesk.node.logs import setup_logging


def test_json_lines_with_context_and_no_locals_in_tracebacks() -> None:
    out = io.StringIO()
    setup_logging("info", stream=out, session_id="0123456789abcdef")
    log = structlog.get_logger("t")

    def fails() -> None:
        password = "Sup3rS3c"  # a local variable must never reach the log
        raise RuntimeError("boom " + str(len(password)))

    try:
        fails()
    except RuntimeError:
        log.exception("failed")
    log.debug("hidden")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["event"] == "failed" and doc["session_id"] == "0123456789abcdef"
    assert doc["level"] == "error" and "timestamp" in doc
    assert doc["exception"][0]["exc_type"] == "RuntimeError"
    assert "Sup3rS3c" not in lines[0]
