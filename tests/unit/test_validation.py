"""Request validation: every bad field is named, defaults come from config."""

import pytest

from vizdesk.config import Config
from vizdesk.core.validate import ValidationError
from vizdesk.sessions.request import validate_session_request


@pytest.fixture
def cfg() -> Config:
    c = Config()
    c.slurm.partitions = ["viz", "batch"]
    c.slurm.default_partition = "viz"
    return c


def test_defaults(cfg: Config) -> None:
    req = validate_session_request({}, cfg)
    assert (req.partition, req.cpus, req.geometry, req.image) == ("viz", 1, "1280x800", None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"nope": 1}, "nope"),
        ({"cpus": 0}, "cpus"),
        ({"cpus": 1.5}, "cpus"),
        ({"memory_gb": None, "gpus": -1}, "gpus"),
        ({"geometry": "1920x1080;id"}, "geometry"),
        ({"geometry": "10x10"}, "geometry"),
        ({"geometry": "99999x1080"}, "geometry"),
        ({"geometry": 1920}, "geometry"),
        ({"partition": "viz\n#SBATCH --uid=0"}, "partition"),
        ({"partition": "gpu"}, "partition"),
        ({"image": "/etc/passwd"}, "image"),
        ({"image": ""}, "image"),
        ({"time_limit_minutes": 10**9}, "time_limit_minutes"),
    ],
)
def test_rejections_name_the_field(cfg: Config, body: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_session_request(body, cfg)
    assert err.value.field == field


def test_non_object_body(cfg: Config) -> None:
    with pytest.raises(ValidationError) as err:
        validate_session_request(["x"], cfg)
    assert err.value.field is None
