"""The registration JSON (contract fields, no extra secrets) and its Redis writer."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from vizdesk.contract.registration import FIELDS, Registration
from vizdesk.node.gpu import GpuInfo
from vizdesk.node.guardian import DONE, handoff_line, run
from vizdesk.node.registration import Registrar

SID = "0123456789abcdef"


def make_reg(**over: Any) -> Registration:
    kw: dict[str, Any] = {
        "session_id": SID,
        "port": 5907,
        "display": 3,
        "password": "Ab3dE6gH",
        "pid": 4242,
        "vnc_pid": 4243,
        "host": "node01",
        "vnc": "tigervnc",
        "started_at": "2026-01-01T00:00:00.000+00:00",
    }
    kw.update(over)
    return Registration(**kw)


def test_json_has_exactly_the_contract_fields() -> None:
    gpu = GpuInfo(0, "NVIDIA A40", "GPU-aaaa", 48 << 30, 1 << 30, 5)
    doc = json.loads(make_reg(gpus=[gpu], image="/images/viz.sif").to_json())
    assert set(doc) == set(FIELDS)
    assert doc["session_id"] == SID and doc["port"] == 5907 and doc["display"] == 3
    assert doc["pid"] == 4242 and doc["vnc_pid"] == 4243 and doc["vnc"] == "tigervnc"
    assert doc["image"] == "/images/viz.sif"
    assert doc["gpus"] == [
        {
            "index": 0,
            "name": "NVIDIA A40",
            "uuid": "GPU-aaaa",
            "memory_total": 48 << 30,
            "memory_used": 1 << 30,
            "utilization": 5,
        }
    ]
    assert doc["heartbeat_at"]  # filled in when not set


def test_no_secret_but_the_vnc_password() -> None:
    doc = json.loads(make_reg().to_json())
    assert doc["image"] is None and doc["gpus"] == []
    secrets_like = {k for k in doc if any(w in k for w in ("pass", "secret", "token", "key"))}
    assert secrets_like == {"password"}
    assert "redis" not in json.dumps(doc).lower()


def test_password_is_redacted_for_logs() -> None:
    reg = make_reg()
    assert reg.for_log()["password"] == "***"
    assert "Ab3dE6gH" not in json.dumps(reg.for_log())
    assert "Ab3dE6gH" not in repr(reg)


class FakeRedis:
    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.data: dict[str, tuple[str, int | None]] = {}
        self.closed = False

    async def set(self, key: str, value: str, ex: int | None = None) -> bool:
        if self.fail:
            self.fail -= 1
            raise RedisConnectionError("Connection refused")
        self.data[key] = (value, ex)
        return True

    async def delete(self, key: str) -> int:
        if self.fail:
            self.fail -= 1
            raise RedisConnectionError("Connection refused")
        return 1 if self.data.pop(key, None) else 0

    async def aclose(self) -> None:
        self.closed = True


async def test_registrar_sets_with_ttl_and_deletes() -> None:
    fake = FakeRedis()
    r = Registrar("redis://x", "u", "p", f"vizdesk:reg:{SID}", 30, client=fake)  # type: ignore[arg-type]
    assert await r.put("{}")
    assert fake.data[f"vizdesk:reg:{SID}"] == ("{}", 30)
    assert await r.delete()
    assert fake.data == {}
    await r.close()
    assert fake.closed


async def test_registrar_survives_redis_outage() -> None:
    fake = FakeRedis(fail=2)
    r = Registrar("redis://x", "u", "p", "k", 30, client=fake)  # type: ignore[arg-type]
    assert not await r.put("a")
    assert not await r.put("b")
    assert r.failures == 2
    assert await r.put("c")
    assert r.failures == 0 and fake.data["k"] == ("c", 30)


def test_guardian_does_nothing_after_clean_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[dict[str, Any]] = []
    monkeypatch.setattr("vizdesk.node.guardian.cleanup", called.append)
    line = handoff_line(
        url="redis://h",
        username="u",
        password="p",
        key="k",
        session_id=SID,
        grace=1.0,
        private_dir="/tmp/vizdesk-x",
    )
    assert run(io.BytesIO(line + DONE + b"\n")) == 0
    assert called == []


def test_guardian_cleans_up_when_the_wrapper_vanishes(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[dict[str, Any]] = []
    monkeypatch.setattr("vizdesk.node.guardian.cleanup", called.append)
    line = handoff_line(
        url="redis://h",
        username="u",
        password="p",
        key="k",
        session_id=SID,
        grace=1.0,
        private_dir="/tmp/vizdesk-x",
    )
    assert run(io.BytesIO(line)) == 0  # EOF without "done"
    assert called and called[0]["key"] == "k" and called[0]["session_id"] == SID
