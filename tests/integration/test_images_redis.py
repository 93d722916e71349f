"""Image catalog against real Redis: cached entries, mtime refresh, TTL, vanished files.

`apptainer` is a stand-in script printing real `apptainer inspect --all` captures
(tests/fixtures/apptainer/) and logging each call, so the tests can count inspections.
The real Apptainer is exercised by tests/container/.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
import redis.asyncio as aioredis

from vizdesk.config import Config, ImagesConfig, SessionsConfig
from vizdesk.contract.keys import Keys
from vizdesk.images.catalog import ImageCatalog, image_id

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "apptainer"


def fake_apptainer(tmp_path: Path) -> tuple[Path, Path]:
    calls = tmp_path / "calls.log"
    script = tmp_path / "apptainer"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, pathlib\n"
        f"pathlib.Path({str(calls)!r}).open('a').write(sys.argv[-1] + '\\n')\n"
        "path = sys.argv[-1]\n"
        "if 'broken' in path:\n"
        "    sys.stderr.write('FATAL:   could not open image: not a SIF\\n'); sys.exit(255)\n"
        "fx = 'inspect-all-vnc-tigervnc.json' if 'vnc' in path else 'inspect-all-compute.json'\n"
        f"sys.stdout.write(pathlib.Path({str(FIXTURES)!r}, fx).read_text())\n"
    )
    script.chmod(0o755)
    return script, calls


def calls_of(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


@pytest_asyncio.fixture
async def keys(redis_admin: aioredis.Redis) -> AsyncIterator[Keys]:
    k = Keys(f"vzt-images-{secrets.token_hex(3)}:")
    yield k
    await redis_admin.delete(k.image_catalog)


def catalog(
    tmp_path: Path,
    redis: aioredis.Redis,
    keys: Keys,
    ttl: int = 300,
    seeds: dict[str, str] | None = None,
) -> tuple[ImageCatalog, Path, Path]:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    script, calls = fake_apptainer(tmp_path)
    cfg = Config(
        images=ImagesConfig(dirs=[str(images)], apptainer=str(script), cache_ttl_seconds=ttl),
        sessions=SessionsConfig(images=seeds or {}),
    )
    return ImageCatalog(cfg, redis, keys), images, calls


async def test_entries_are_cached_in_redis_and_reused(tmp_path, redis_admin, keys) -> None:
    cat, images, calls = catalog(tmp_path, redis_admin, keys)
    (images / "vnc.sif").write_bytes(b"v")
    (images / "compute.sif").write_bytes(b"c")
    first = await cat.list()
    assert [i.kind for i in first] == ["viz", "compute"]
    assert len(calls_of(calls)) == 2

    stored = await redis_admin.hgetall(keys.image_catalog)
    assert set(stored) == {str(images / "vnc.sif"), str(images / "compute.sif")}
    entry = json.loads(stored[str(images / "vnc.sif")])
    assert entry["image"]["kind"] == "viz" and entry["size"] == 1
    assert 0 < await redis_admin.ttl(keys.image_catalog) <= 300

    # another catalog object (another daemon process) reuses the cache: no inspect at all
    other = ImageCatalog(cat.cfg, redis_admin, keys)
    assert await other.list() == first
    assert (await other.resolve("desktop-tigervnc")) == first[0]
    assert len(calls_of(calls)) == 2


async def test_changed_mtime_reinspects_only_that_file(tmp_path, redis_admin, keys) -> None:
    cat, images, calls = catalog(tmp_path, redis_admin, keys)
    (images / "vnc.sif").write_bytes(b"v")
    (images / "compute.sif").write_bytes(b"c")
    await cat.list()
    st = (images / "compute.sif").stat()
    os.utime(images / "compute.sif", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    listed = await cat.list()
    assert calls_of(calls)[2:] == [str(images / "compute.sif")]
    compute = next(i for i in listed if i.kind == "compute")
    assert compute.mtime == (st.st_mtime_ns + 5_000_000_000) / 1e9


async def test_expired_entry_is_reinspected(tmp_path, redis_admin, keys) -> None:
    cat, images, calls = catalog(tmp_path, redis_admin, keys)
    (images / "vnc.sif").write_bytes(b"v")
    await cat.list()
    # age the cached entry past its TTL (instead of sleeping)
    field = str(images / "vnc.sif")
    entry = json.loads(await redis_admin.hget(keys.image_catalog, field))
    entry["expires_at"] = entry["inspected_at"] - 1
    await redis_admin.hset(keys.image_catalog, field, json.dumps(entry))
    await cat.list()
    assert len(calls_of(calls)) == 2


async def test_refresh_reinspects_everything(tmp_path, redis_admin, keys) -> None:
    cat, images, calls = catalog(tmp_path, redis_admin, keys)
    (images / "vnc.sif").write_bytes(b"v")
    (images / "compute.sif").write_bytes(b"c")
    await cat.list()
    await cat.list(refresh=True)
    assert len(calls_of(calls)) == 4


async def test_removed_file_leaves_catalog_and_redis(tmp_path, redis_admin, keys) -> None:
    cat, images, _ = catalog(tmp_path, redis_admin, keys)
    (images / "vnc.sif").write_bytes(b"v")
    (images / "compute.sif").write_bytes(b"c")
    vnc_id = image_id(images / "vnc.sif")
    assert await cat.resolve(vnc_id) is not None
    (images / "vnc.sif").unlink()
    assert [i.kind for i in await cat.list()] == ["compute"]
    assert await cat.resolve(vnc_id) is None
    assert set(await redis_admin.hkeys(keys.image_catalog)) == {str(images / "compute.sif")}


async def test_broken_image_is_hidden_and_not_retried_until_it_changes(
    tmp_path, redis_admin, keys
) -> None:
    cat, images, calls = catalog(tmp_path, redis_admin, keys)
    (images / "broken.sif").write_bytes(b"?")
    assert await cat.list() == []
    assert await cat.list() == []
    assert len(calls_of(calls)) == 1
    entry = json.loads(await redis_admin.hget(keys.image_catalog, str(images / "broken.sif")))
    assert "not a SIF" in entry["error"]


async def test_seeded_image_outside_dirs_and_name_rules(tmp_path, redis_admin, keys) -> None:
    elsewhere = tmp_path / "site" / "paraview.sif"  # compute capture: has a name label
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"p")
    cat, _images, _ = catalog(tmp_path, redis_admin, keys, seeds={"paraview": str(elsewhere)})
    listed = await cat.list()
    assert [i.path for i in listed] == [str(elsewhere)]
    # the label org.vizdesk.name wins over the configured key
    assert listed[0].name == "compute-debian12"
    assert await cat.resolve(str(elsewhere)) is None
    assert await cat.resolve(listed[0].id) == listed[0]


async def test_same_name_resolves_to_first_configured(tmp_path, redis_admin, keys) -> None:
    cat, images, _ = catalog(tmp_path, redis_admin, keys)
    (images / "a-compute.sif").write_bytes(b"1")
    (images / "b-compute.sif").write_bytes(b"2")
    listed = await cat.list()
    assert [i.name for i in listed] == ["compute-debian12", "compute-debian12"]
    hit = await cat.resolve("compute-debian12")
    assert hit is not None and hit.path == str(images / "a-compute.sif")
    assert (await cat.resolve(listed[1].id)) == listed[1]  # ids stay unique
