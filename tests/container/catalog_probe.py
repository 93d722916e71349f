"""Run inside the sid root (sid's Python, vizdesk from this checkout): the image catalog
against the real `apptainer` and the root's Redis. Prints one JSON document.

usage: catalog_probe.py KEY_PREFIX EXTRA_DIR
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import redis.asyncio as aioredis

from vizdesk.config import Config, ImagesConfig, RedisConfig
from vizdesk.contract.keys import Keys
from vizdesk.images.catalog import ImageCatalog


def env() -> dict[str, str]:
    out = {}
    for line in Path("/etc/vizdesk-sid/env").read_text().splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


async def main(prefix: str, extra: str) -> None:
    e = env()
    counter = Path(extra) / "inspect-calls.log"
    wrapper = Path(extra) / "apptainer-counting"
    # counts the real apptainer's inspect calls
    wrapper.write_text(f'#!/bin/sh\necho "$@" >>{counter}\nexec apptainer "$@"\n')
    wrapper.chmod(0o755)
    cfg = Config(
        redis=RedisConfig(url=e["SID_REDIS_URL"], password_file=e["SID_REDIS_PASSWORD_FILE"]),
        images=ImagesConfig(dirs=[e["SID_IMAGES_DIR"], extra], apptainer=str(wrapper)),
    )
    redis = aioredis.Redis.from_url(
        cfg.redis.url, password=cfg.redis.password(), decode_responses=True
    )
    keys = Keys(prefix)
    cat = ImageCatalog(cfg, redis, keys)

    def calls() -> int:
        return len(counter.read_text().splitlines()) if counter.exists() else 0

    out: dict[str, object] = {}
    first = await cat.list()
    out["first"] = [i.to_admin() for i in first]
    out["calls_after_first"] = calls()
    await cat.list()
    out["calls_after_second"] = calls()
    # a new image appears (a copy of compute.sif), then its mtime changes, then it goes
    copy = Path(extra) / "copy.sif"
    copy.write_bytes(Path(e["SID_IMAGES_DIR"], "compute.sif").read_bytes())
    out["with_copy"] = [i.to_public() | {"path": i.path} for i in await cat.list()]
    out["calls_after_copy"] = calls()
    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    await cat.list()
    out["calls_after_touch"] = calls()
    copy.unlink()
    out["after_delete"] = [i.path for i in await cat.list()]
    out["redis_fields"] = sorted(await redis.hkeys(keys.image_catalog))
    out["redis_ttl"] = await redis.ttl(keys.image_catalog)
    vnc = next(i for i in first if i.kind == "viz")
    out["resolve_id"] = getattr(await cat.resolve(vnc.id), "path", None)
    out["resolve_name"] = getattr(await cat.resolve(vnc.name), "path", None)
    out["resolve_path"] = getattr(await cat.resolve(vnc.path), "path", None)
    await redis.delete(keys.image_catalog)
    await redis.aclose()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
