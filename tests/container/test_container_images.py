"""The image catalog (daemon/vizdesk/images/catalog.py) on real `apptainer inspect` output.

Set VIZDESK_UPDATE_FIXTURES=1 to rewrite tests/fixtures/apptainer/ from the images built
here (the unit tests parse those captures).
"""

from __future__ import annotations

import json
import os
import secrets

from tests.container.sid import COMPUTE_SIF, REPO, VENV_PY, VNC_SIF, Sid
from vizdesk.images.catalog import image_from_inspect, parse_inspect

FIXTURES = REPO / "tests" / "fixtures" / "apptainer"


def test_real_inspect_output_feeds_the_parser(sid: Sid) -> None:
    expected = {
        VNC_SIF: ("viz", "tigervnc", "desktop-tigervnc", ["desktop", "vnc"]),
        COMPUTE_SIF: ("compute", "", "compute-debian12", ["checksum", "env"]),
    }
    for path, (kind, vnc, name, apps) in expected.items():
        raw = sid.run("apptainer", "inspect", "--all", path, user="alice").stdout
        img = image_from_inspect(path, parse_inspect(raw), size=1, mtime=0)
        assert (img.kind, img.vnc, img.name, img.apps) == (kind, vnc, name, apps)
        assert img.description
        if os.environ.get("VIZDESK_UPDATE_FIXTURES") == "1":
            stem = "vnc-tigervnc" if path == VNC_SIF else "compute"
            (FIXTURES / f"inspect-all-{stem}.json").write_text(raw)
        # the committed capture still matches what the definitions build today
        stem = "vnc-tigervnc" if path == VNC_SIF else "compute"
        committed = parse_inspect((FIXTURES / f"inspect-all-{stem}.json").read_text())
        fresh = parse_inspect(raw)
        vizdesk_labels = {k: v for k, v in fresh["labels"].items() if k.startswith("org.vizdesk.")}
        assert {
            k: v for k, v in committed["labels"].items() if k.startswith("org.vizdesk.")
        } == vizdesk_labels
        assert sorted(committed.get("apps", {})) == sorted(fresh.get("apps", {}))


def test_catalog_inside_the_root_with_real_apptainer_and_redis(sid_venv: Sid) -> None:
    sid = sid_venv
    extra = f"/tmp/vzc-catalog-{secrets.token_hex(3)}"
    sid.run("mkdir", "-p", extra)
    prefix = f"vzc-{secrets.token_hex(3)}:"
    res = sid.run(VENV_PY, "/repo/tests/container/catalog_probe.py", prefix, extra, timeout=300)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    first = {i["path"]: i for i in out["first"]}
    assert set(first) == {VNC_SIF, COMPUTE_SIF}
    assert first[VNC_SIF]["kind"] == "viz" and first[VNC_SIF]["vnc"] == "tigervnc"
    assert first[COMPUTE_SIF]["kind"] == "compute"
    assert first[COMPUTE_SIF]["apps"] == ["checksum", "env"]
    assert first[VNC_SIF]["size"] > 50_000_000
    # inspected once each; the second listing came from Redis
    assert out["calls_after_first"] == 2
    assert out["calls_after_second"] == 2
    # a new file: one inspect; its mtime changes: one more; deleted: gone everywhere
    assert out["calls_after_copy"] == 3
    assert [i["kind"] for i in out["with_copy"]] == ["viz", "compute", "compute"]
    assert out["calls_after_touch"] == 4
    assert sorted(out["after_delete"]) == sorted([VNC_SIF, COMPUTE_SIF])
    assert out["redis_fields"] == sorted([VNC_SIF, COMPUTE_SIF])
    assert 0 < out["redis_ttl"] <= 300
    assert out["resolve_id"] == VNC_SIF
    assert out["resolve_name"] == VNC_SIF
    assert out["resolve_path"] is None
    sid.run("rm", "-rf", extra)
