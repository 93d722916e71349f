"""The job environment contract of the compute-node wrapper."""

from __future__ import annotations

import pytest

from vizdesk.contract.jobenv import ENV_SESSION_TAG, JobEnvError, child_environ, parse_job_env

SID = "0123456789abcdef"


def good_env(**over: str) -> dict[str, str]:
    env = {
        "VIZDESK_SESSION_ID": SID,
        "VIZDESK_CONFIG": "/etc/vizdesk/vizdesk.yaml",
        "VIZDESK_REDIS_URL": "redis://head:6379/0",
        "VIZDESK_REDIS_USERNAME": f"vizdesk-s-{SID}",
        "VIZDESK_REDIS_PASSWORD": "s3cret-redis",
        "VIZDESK_REG_KEY": f"vizdesk:reg:{SID}",
        "VIZDESK_GEOMETRY": "1280x800",
        "VIZDESK_REG_TTL": "30",
        "HOME": "/home/alice",
    }
    env.update(over)
    return env


def test_parses_the_contract() -> None:
    job = parse_job_env(good_env(VIZDESK_IMAGE="/images/viz.sif"))
    assert job.session_id == SID
    assert (job.width, job.height, job.geometry) == (1280, 800, "1280x800")
    assert job.reg_ttl == 30
    assert job.image == "/images/viz.sif"
    assert job.redis_location() == "head:6379/0"
    assert "s3cret-redis" not in repr(job)


def test_image_is_optional() -> None:
    assert parse_job_env(good_env(VIZDESK_IMAGE="")).image is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VIZDESK_SESSION_ID", "../../etc"),
        ("VIZDESK_SESSION_ID", "0123456789ABCDEF"),
        ("VIZDESK_GEOMETRY", "1920x1080;id"),
        ("VIZDESK_GEOMETRY", "0x0"),
        ("VIZDESK_REG_TTL", "ten"),
        ("VIZDESK_REG_TTL", "1"),
        ("VIZDESK_IMAGE", "relative.sif"),
        ("VIZDESK_IMAGE", "/images/viz.img"),
        ("VIZDESK_REDIS_URL", "http://head:6379"),
        ("VIZDESK_REG_KEY", "vizdesk:reg:ffffffffffffffff"),
        ("VIZDESK_REDIS_PASSWORD", ""),
    ],
)
def test_rejects_bad_values(name: str, value: str) -> None:
    with pytest.raises(JobEnvError):
        parse_job_env(good_env(**{name: value}))


def test_missing_variable_is_named() -> None:
    env = good_env()
    del env["VIZDESK_REDIS_USERNAME"]
    with pytest.raises(JobEnvError, match="VIZDESK_REDIS_USERNAME"):
        parse_job_env(env)


def test_child_environment_has_tag_and_no_credentials() -> None:
    env = child_environ(good_env(VIZDESK_COMMAND="/opt/vizdesk/bin/vizdesk"), SID)
    assert env[ENV_SESSION_TAG] == SID
    assert env["HOME"] == "/home/alice"
    assert not [k for k in env if k.startswith("VIZDESK_") and k != ENV_SESSION_TAG]
    assert "s3cret-redis" not in env.values()
