"""Pure rules of the files unit and the tus edge: path components, ranges, result
patterns, file names, tus headers (Upload-Metadata, Upload-Checksum, Range)."""

from __future__ import annotations

import base64

import pytest

from vizdesk.api import tus
from vizdesk.core.validate import ValidationError
from vizdesk.files import helper, names
from vizdesk.files.patterns import matches, matching


@pytest.mark.parametrize("rel", ["a", "a/b", "dir/file.txt", "ünï/çødé", "x" * 255])
def test_good_relative_paths(rel: str) -> None:
    assert helper.components(rel) == rel.split("/")


@pytest.mark.parametrize(
    "rel", ["", "/etc/shadow", "a/../b", "..", ".", "a//b", "a/", "./a", "a\0b", "x" * 256]
)
def test_bad_relative_paths(rel: str) -> None:
    with pytest.raises(helper.Fail) as err:
        helper.components(rel)
    assert err.value.code == helper.BAD_PATH


@pytest.mark.parametrize(
    ("spec", "size", "want"),
    [
        (None, 10, (0, 9)),
        ("0-0", 10, (0, 0)),
        ("2-5", 10, (2, 5)),
        ("5-", 10, (5, 9)),
        ("-3", 10, (7, 9)),
        ("-30", 10, (0, 9)),
        ("8-100", 10, (8, 9)),
    ],
)
def test_ranges(spec: str | None, size: int, want: tuple[int, int]) -> None:
    assert helper.resolve_range(spec, size) == want


@pytest.mark.parametrize(("spec", "size"), [("10-", 10), ("-0", 10), ("0-", 0), ("-1", 0)])
def test_unsatisfiable_ranges(spec: str, size: int) -> None:
    with pytest.raises(helper.Fail) as err:
        helper.resolve_range(spec, size)
    assert err.value.code == helper.RANGE and err.value.extra["size"] == size


def test_range_header_parsing() -> None:
    assert tus.parse_range("bytes=0-99") == "0-99"
    assert tus.parse_range("bytes=100-") == "100-"
    assert tus.parse_range("bytes=-5") == "-5"
    for ignored in (None, "bytes=0-1,4-5", "items=0-1", "bytes=5-2", "bytes=-", "bytes=a-b"):
        assert tus.parse_range(ignored) is None


def test_patterns() -> None:
    assert matches("*.vtk", "case/0/U.vtk")
    assert matches("results/*", "results/deep/x")
    assert matches("**/*.log", "run.log") and matches("**/*.log", "a/b/run.log")
    assert not matches("*.vtk", "U.vtkx")
    assert not matches("results/*", "other/results/x")
    assert matching(["*.vtk", "run.log", "*.txt"], "run.log") == ["run.log"]


@pytest.mark.parametrize("name", ["mesh.msh", "Case 1.json", "ünïcode.dat", "a" * 255])
def test_good_file_names(name: str) -> None:
    assert names.check_filename(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "a\\b", "-rf", " lead", "trail ", "a\nb", "a\0b", "é" * 128]
)
def test_bad_file_names(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        names.check_filename(name)
    assert err.value.field == "Upload-Metadata.filename" and err.value.status == 400


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_upload_metadata() -> None:
    got = tus.parse_metadata(f"filename {b64('mesh.msh')},slot {b64('mesh')},is_confidential")
    assert got == {"filename": "mesh.msh", "slot": "mesh", "is_confidential": None}
    assert tus.parse_metadata(tus.encode_metadata(got)) == got
    assert tus.parse_metadata(None) == {} and tus.parse_metadata(" ") == {}
    for bad, field in (
        ("filename !!!", "Upload-Metadata.filename"),
        (f"filename {b64('a')},filename {b64('b')}", "Upload-Metadata"),
        ("a b c", "Upload-Metadata"),
        (f"ke=y {b64('x')}", "Upload-Metadata"),
        ("filename " + base64.b64encode(b"\xff\xfe").decode(), "Upload-Metadata.filename"),
    ):
        with pytest.raises(ValidationError) as err:
            tus.parse_metadata(bad)
        assert err.value.field == field, bad


def test_checksum_and_integers() -> None:
    assert tus.parse_checksum(None) is None
    assert tus.parse_checksum("sha1 " + b64("x" * 20)) == "sha1:" + b64("x" * 20)
    with pytest.raises(ValidationError) as err:
        tus.parse_checksum("crc32 AAAA")
    assert err.value.code == "unsupported_checksum_algorithm"
    with pytest.raises(ValidationError):
        tus.parse_checksum("sha1 not*base64")
    assert tus.parse_int("42", "Upload-Length") == 42
    for bad in ("-1", "+1", "1_0", "", "²", "1" * 20):
        with pytest.raises(ValidationError):
            tus.parse_int(bad, "Upload-Length")
    with pytest.raises(ValidationError) as missing:
        tus.parse_int(None, "Upload-Offset")
    assert missing.value.field == "Upload-Offset"


def test_helper_refuses_to_run_as_root_and_bad_usage(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    code = helper.main(["size", "/tmp", "x"])
    err = capfd.readouterr().err
    if os.geteuid() == 0:
        assert code == helper.PERMISSION and "root" in err
    else:
        assert code == helper.NOT_FOUND
