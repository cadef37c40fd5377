"""The archive move: never overwriting, and finishing what a crash cut short."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from syncd import fsmove


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_relocate_moves_and_keeps_the_bytes(tmp_path: Path) -> None:
    """The file ends at the destination only, with its bytes."""
    src, dest = tmp_path / "hot" / "a.jpg", tmp_path / "archive" / "x" / "a.jpg"
    src.parent.mkdir()
    src.write_bytes(b"shot")
    fsmove.relocate(src, dest, sha(b"shot"))
    assert not src.exists() and dest.read_bytes() == b"shot"


def test_an_existing_other_file_is_never_overwritten(tmp_path: Path) -> None:
    """A destination holding other bytes raises Clash and is left as it was."""
    src, dest = tmp_path / "a.jpg", tmp_path / "b.jpg"
    src.write_bytes(b"new")
    dest.write_bytes(b"old")
    with pytest.raises(fsmove.Clash):
        fsmove.relocate(src, dest, sha(b"new"))
    assert dest.read_bytes() == b"old" and src.read_bytes() == b"new"


@pytest.mark.parametrize("step", ["linked", "copied"])
def test_a_move_cut_short_is_completed(tmp_path: Path, step: str) -> None:
    """Both names present after a crash (a link, or a finished copy): only the source goes."""
    src, dest = tmp_path / "a.jpg", tmp_path / "arch" / "a.jpg"
    src.write_bytes(b"shot")
    dest.parent.mkdir()
    if step == "linked":
        dest.hardlink_to(src)
    else:
        dest.write_bytes(b"shot")
    fsmove.relocate(src, dest, sha(b"shot"))
    assert not src.exists() and dest.read_bytes() == b"shot"


def test_a_partial_copy_left_by_a_crash_is_replaced(tmp_path: Path) -> None:
    """A half-written partial file beside the destination is not taken for the file."""
    src, dest = tmp_path / "a.jpg", tmp_path / "arch" / "a.jpg"
    src.write_bytes(b"the whole shot")
    dest.parent.mkdir()
    (dest.parent / ".a.jpg.syncd-partial").write_bytes(b"the wh")
    fsmove.relocate(src, dest, sha(b"the whole shot"))
    assert dest.read_bytes() == b"the whole shot" and not src.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.jpg"]


def test_free_name_adds_a_suffix_before_the_extension(tmp_path: Path) -> None:
    """a.jpg is taken: a (1).jpg, then a (2).jpg."""
    (tmp_path / "a.jpg").write_bytes(b"1")
    assert fsmove.free_name(tmp_path / "a.jpg") == tmp_path / "a (1).jpg"
    (tmp_path / "a (1).jpg").write_bytes(b"2")
    assert fsmove.free_name(tmp_path / "a.jpg") == tmp_path / "a (2).jpg"
