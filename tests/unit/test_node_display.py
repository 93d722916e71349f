"""X display selection by scanning and the -displayfd answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from vizdesk.node.display import (
    NoFreeDisplayError,
    display_is_free,
    parse_displayfd_output,
    pick_free_display,
)


def test_lock_file_or_socket_makes_a_display_taken(tmp_path: Path) -> None:
    (tmp_path / ".X11-unix").mkdir()
    (tmp_path / ".X3-lock").write_text("123")
    (tmp_path / ".X11-unix" / "X4").write_text("")
    assert not display_is_free(3, tmp_path)
    assert not display_is_free(4, tmp_path)


def test_pick_skips_taken_and_excluded(tmp_path: Path) -> None:
    (tmp_path / ".X11-unix").mkdir()
    (tmp_path / ".X11-unix" / "X10").write_text("")
    for _ in range(20):
        n = pick_free_display(exclude=[11], tmp=tmp_path, low=10, high=12)
        assert n == 12


def test_no_free_display(tmp_path: Path) -> None:
    (tmp_path / ".X5-lock").write_text("1")
    with pytest.raises(NoFreeDisplayError):
        pick_free_display(tmp=tmp_path, low=5, high=5)


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"0\n", 0), (b"17\n", 17), (b"", None), (b"abc\n", None), (b"1234567\n", None)],
)
def test_parse_displayfd(data: bytes, expected: int | None) -> None:
    assert parse_displayfd_output(data) == expected
