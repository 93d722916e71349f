"""Image catalog: parsing of real `apptainer inspect` output, classification, references."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from vizdesk.config import Config, ImagesConfig
from vizdesk.contract.keys import Keys
from vizdesk.images.catalog import (
    Image,
    ImageCatalog,
    InspectError,
    classify,
    image_from_inspect,
    image_id,
    parse_inspect,
    valid_ref,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "apptainer"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# ---------------------------------------------------------------- real captures (1.4.5)


def test_parse_real_inspect_all_of_compute_image() -> None:
    attrs = parse_inspect(fixture("inspect-all-compute.json"))
    assert attrs["labels"]["org.vizdesk.kind"] == "compute"
    assert set(attrs["apps"]) == {"checksum", "env"}
    img = image_from_inspect("/srv/images/compute.sif", attrs, size=10, mtime=1.5)
    assert img.kind == "compute"
    assert img.vnc == ""
    assert img.name == "compute-debian12"
    assert img.apps == ["checksum", "env"]
    assert img.description.startswith("Debian 12 minimal")
    assert img.id == image_id("/srv/images/compute.sif")
    assert img.size == 10 and img.mtime == 1.5


def test_parse_real_inspect_all_of_vnc_image() -> None:
    attrs = parse_inspect(fixture("inspect-all-vnc-tigervnc.json"))
    img = image_from_inspect("/srv/images/vnc.sif", attrs, size=1, mtime=0)
    assert img.kind == "viz"
    assert img.vnc == "tigervnc"
    assert img.name == "desktop-tigervnc"
    assert img.apps == ["desktop", "vnc"]
    assert "XFCE" in img.description


def test_parse_real_labels_only_json() -> None:
    # `apptainer inspect --json` (no --all) has labels only
    attrs = parse_inspect(fixture("inspect-json-compute.json"))
    img = image_from_inspect("/x/compute.sif", attrs, size=0, mtime=0)
    assert img.kind == "compute" and img.apps == []


def test_parse_tolerates_leading_noise_and_bytes() -> None:
    raw = "INFO:    squashfuse not found\n" + fixture("inspect-all-compute.json")
    assert parse_inspect(raw.encode())["labels"]["org.vizdesk.name"] == "compute-debian12"


@pytest.mark.parametrize("raw", ["", "no json here", "{not json", "[1, 2]", '{"data": 5}'])
def test_parse_rejects_garbage(raw: str) -> None:
    with pytest.raises(InspectError):
        parse_inspect(raw)


# ---------------------------------------------------------------- classification


def test_kind_label_wins_over_heuristics() -> None:
    labels = {"org.vizdesk.kind": "compute", "note": "has Xvnc inside"}
    assert classify(labels, ["vnc"], "exec Xvnc") == ("compute", "")


@pytest.mark.parametrize(
    ("labels", "apps", "runscript", "expected"),
    [
        ({}, [], "exec startxfce4", ("viz", "")),
        ({}, [], "exec /opt/TurboVNC/bin/vncserver -fg", ("viz", "turbovnc")),
        ({"desc": "TigerVNC desktop"}, [], "", ("viz", "tigervnc")),
        ({}, ["xfce"], "", ("viz", "")),
        ({}, ["paraview"], 'exec python3 "$@"', ("compute", "")),
        ({}, [], "", ("compute", "")),
        ({"org.vizdesk.kind": "VIZ", "org.vizdesk.vnc": "TurboVNC"}, [], "", ("viz", "turbovnc")),
        ({"org.vizdesk.kind": "database"}, [], "", ("custom", "")),
        ({"org.vizdesk.kind": "custom"}, [], "Xvnc", ("custom", "")),
    ],
)
def test_classify(
    labels: dict[str, str], apps: list[str], runscript: str, expected: tuple[str, str]
) -> None:
    assert classify(labels, apps, runscript) == expected


def test_word_boundaries_do_not_misclassify() -> None:
    # "vncserverless" / "xfce4x" are not markers; "xvnc" inside a word neither
    assert classify({"a": "myxvncthing"}, [], "")[0] == "compute"


def test_name_falls_back_to_seed_then_file_name() -> None:
    attrs: dict[str, Any] = {"labels": {}}
    assert image_from_inspect("/d/foo.sif", attrs, size=0, mtime=0, seed_name="bar").name == "bar"
    assert image_from_inspect("/d/foo.sif", attrs, size=0, mtime=0).name == "foo"


def test_description_falls_back_to_help_first_line() -> None:
    attrs = {"labels": {}, "helpfile": "\n   Paraview 5.12 with MPI.\n  more\n"}
    assert image_from_inspect("/d/p.sif", attrs, size=0, mtime=0).description == (
        "Paraview 5.12 with MPI."
    )


# ---------------------------------------------------------------- ids and references


def test_image_id_is_stable_and_path_based() -> None:
    assert image_id("/a/b.sif") == image_id("/a/b.sif")
    assert image_id("/a/b.sif") != image_id("/a/c.sif")
    assert len(image_id("/a/b.sif")) == 12
    assert all(c in "0123456789abcdef" for c in image_id("/a/b.sif"))


@pytest.mark.parametrize("ref", ["desktop-tigervnc", "0123456789ab", "paraview_5.12", "a"])
def test_valid_refs(ref: str) -> None:
    assert valid_ref(ref)


@pytest.mark.parametrize(
    "ref",
    ["", "/srv/images/vnc.sif", "images/vnc", "..", "a..b", ".hidden", "a b", "x" * 200, "a\0b"],
)
def test_invalid_refs(ref: str) -> None:
    assert not valid_ref(ref)


def test_public_view_hides_path_and_labels() -> None:
    img = Image(
        id="0123456789ab",
        name="n",
        path="/secret/n.sif",
        kind="viz",
        vnc="tigervnc",
        description="d",
        apps=["desktop"],
        labels={"k": "v"},
        size=3,
        mtime=4.0,
    )
    pub = img.to_public()
    assert set(pub) == {"id", "name", "kind", "vnc", "description", "apps"}
    assert "/secret" not in json.dumps(pub)
    assert img.to_admin()["path"] == "/secret/n.sif"


# ---------------------------------------------------------------- catalog without Redis


class DownRedis:
    """A Redis client whose every call fails (Redis unreachable)."""

    async def hgetall(self, key: str) -> dict[str, str]:
        raise ConnectionError("redis down")

    def pipeline(self, transaction: bool = True) -> Any:
        raise ConnectionError("redis down")


def fake_apptainer(tmp_path: Path) -> Path:
    """An `apptainer` that prints a real captured inspect output (and logs its calls)."""
    script = tmp_path / "apptainer"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, pathlib\n"
        f"log = pathlib.Path({str(tmp_path / 'calls.log')!r})\n"
        "log.open('a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "path = sys.argv[-1]\n"
        "if 'broken' in path:\n"
        "    sys.stderr.write('FATAL:   not a SIF file\\n'); sys.exit(255)\n"
        f"fx = 'inspect-all-vnc-tigervnc.json' if 'vnc' in path else 'inspect-all-compute.json'\n"
        f"sys.stdout.write(pathlib.Path({str(FIXTURES)!r}, fx).read_text())\n"
    )
    script.chmod(0o755)
    return script


async def test_catalog_works_without_redis_and_refuses_paths(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "vnc.sif").write_bytes(b"x")
    (images / "compute.sif").write_bytes(b"y")
    (images / "broken.sif").write_bytes(b"z")
    (images / "notes.txt").write_text("not an image")
    cfg = Config(images=ImagesConfig(dirs=[str(images)], apptainer=str(fake_apptainer(tmp_path))))
    cat = ImageCatalog(cfg, DownRedis(), Keys("t:"))
    listed = await cat.list()
    assert [(i.name, i.kind) for i in listed] == [
        ("desktop-tigervnc", "viz"),
        ("compute-debian12", "compute"),
    ]
    vnc = listed[0]
    assert vnc.path == str(images / "vnc.sif")
    assert (await cat.resolve(vnc.id)) == vnc
    assert (await cat.resolve("desktop-tigervnc")) == vnc
    assert await cat.resolve(str(images / "vnc.sif")) is None  # an existing path: refused
    assert await cat.resolve("../images/vnc.sif") is None
    assert await cat.resolve("nope") is None
    assert await cat.resolve("broken") is None  # failed inspect: never offered


async def test_missing_apptainer_is_an_inspect_error(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.sif").write_bytes(b"x")
    cfg = Config(images=ImagesConfig(dirs=[str(images)], apptainer=str(tmp_path / "missing")))
    cat = ImageCatalog(cfg, DownRedis(), Keys("t:"))
    assert await cat.list() == []
    with pytest.raises(InspectError, match="cannot run"):
        await cat.inspect(str(images / "a.sif"))


async def test_missing_directory_is_skipped(tmp_path: Path) -> None:
    cfg = Config(images=ImagesConfig(dirs=[str(tmp_path / "nowhere")]))
    assert await ImageCatalog(cfg, DownRedis(), Keys("t:")).list() == []
