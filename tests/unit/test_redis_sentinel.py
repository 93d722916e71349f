"""Reaching Redis through Sentinel: the config keys, the job-environment contract that
hands the Sentinels to the node, and the clients built from them (the failover itself is
tested for real in tests/ha)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.unit.test_node_jobenv import good_env
from vizdesk.config import Config, ConfigError, host_port
from vizdesk.contract.jobenv import (
    ENV_REDIS_SENTINEL_MASTER,
    ENV_REDIS_SENTINELS,
    JobEnvError,
    child_environ,
    parse_job_env,
    session_job_env,
)
from vizdesk.contract.redisconn import BlockingSentinelConnectionPool, connect, db_of
from vizdesk.node.guardian import _client


def test_host_port_forms() -> None:
    assert host_port("h:26379", "k") == ("h", 26379)
    assert host_port("[::1]:6379", "k") == ("::1", 6379)
    for bad in ("h", ":1", "h:x", "h:0", "h:70000"):
        with pytest.raises(ConfigError, match="k"):
            host_port(bad, "k")


def test_sentinel_keys_are_checked() -> None:
    cfg = Config()
    cfg.redis.sentinel_hosts = ["a:26379", "b"]
    with pytest.raises(ConfigError, match=r"redis\.sentinel_hosts"):
        cfg.validate()
    cfg.redis.sentinel_hosts = ["a:26379"]
    cfg.redis.node_sentinel_hosts = ["nope"]
    with pytest.raises(ConfigError, match=r"redis\.node_sentinel_hosts"):
        cfg.validate()
    cfg.redis.node_sentinel_hosts = []
    cfg.validate()
    assert cfg.redis.node_sentinels() == ["a:26379"]  # defaults to the daemon's
    cfg.tracker.lease_seconds = 0.5
    with pytest.raises(ConfigError, match=r"tracker\.lease_seconds"):
        cfg.validate()


def test_replica_name_defaults_to_host_and_port() -> None:
    cfg = Config()
    cfg.server.port = 8481
    assert cfg.replica_name.endswith(":8481")
    cfg.tracker.replica_name = "r1"
    assert cfg.replica_name == "r1"


def job_env(**extra: Any) -> dict[str, str]:
    return session_job_env(
        session_id="0123456789abcdef", redis_url="redis://head:6379/3", redis_username="u",
        redis_password="p", reg_key="vizdesk:reg:0123456789abcdef", reg_ttl=15,
        geometry="800x600", command="vizdesk", config_path=None, image=None, **extra,
    )  # fmt: skip


def test_the_job_gets_the_sentinels_and_keeps_them_private() -> None:
    env = job_env(sentinels=["s1:26379", "s2:26379"], sentinel_master="vizdesk")
    job = parse_job_env(env)
    assert job.sentinels == (("s1", 26379), ("s2", 26379))
    assert job.sentinel_master == "vizdesk"
    assert "sentinel s1:26379,s2:26379" in job.redis_location()
    kept = child_environ(env, job.session_id)
    assert ENV_REDIS_SENTINELS not in kept and ENV_REDIS_SENTINEL_MASTER not in kept
    assert parse_job_env(job_env()).sentinels == ()  # no Sentinel: the URL, as before


@pytest.mark.parametrize(
    ("name", "value"),
    [(ENV_REDIS_SENTINELS, "s1:26379,bad"), (ENV_REDIS_SENTINEL_MASTER, "a b; rm")],
)
def test_bad_sentinel_variables_are_refused(name: str, value: str) -> None:
    env = good_env(**{ENV_REDIS_SENTINELS: "s1:26379", ENV_REDIS_SENTINEL_MASTER: "vizdesk"})
    env[name] = value
    with pytest.raises(JobEnvError, match=name):
        parse_job_env(env)


async def test_clients_follow_the_sentinels_with_the_urls_db() -> None:
    assert db_of("redis://h:1/5") == 5 and db_of("redis://h:1") == 0
    direct = connect("redis://h:1/2", blocking=True, max_connections=7)
    assert isinstance(direct.connection_pool, aioredis.BlockingConnectionPool)
    assert direct.connection_pool.max_connections == 7
    via = connect("redis://h:1/2", sentinels=[("s", 26379)], master="m", blocking=True,
                  max_connections=9, pool_timeout=2.0, password="pw")  # fmt: skip
    pool = via.connection_pool
    assert isinstance(pool, BlockingSentinelConnectionPool)
    assert pool.service_name == "m" and pool.max_connections == 9 and pool.timeout == 2.0
    assert pool.connection_kwargs["db"] == 2 and pool.connection_kwargs["password"] == "pw"
    await direct.aclose()
    await via.aclose()


def test_the_guardian_follows_the_handed_over_sentinels() -> None:
    doc = {"url": "redis://h:1/4", "username": "u", "password": "p",
           "sentinels": ["s:26379"], "sentinel_master": "m"}  # fmt: skip
    client = _client(doc)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["db"] == 4 and kwargs["username"] == "u"
    assert type(client.connection_pool).__name__ == "SentinelConnectionPool"
    assert _client(doc | {"sentinels": []}).connection_pool.connection_kwargs["host"] == "h"
