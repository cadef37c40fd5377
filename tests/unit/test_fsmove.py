"""The archive move: never overwriting, and finishing what a crash cut short."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from syncd import fsmove
from syncd.safepath import Root


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_relocate_moves_and_keeps_the_bytes(tmp_path: Path) -> None:
    """The file ends at the destination only, with its bytes."""
    src, dest = tmp_path / "hot" / "a.jpg", tmp_path / "archive" / "x" / "a.jpg"
    src.parent.mkdir()
    src.write_bytes(b"shot")
    with Root(tmp_path / "hot") as root:
        assert fsmove.relocate(root, "a.jpg", dest, sha(b"shot"))
    assert not src.exists() and dest.read_bytes() == b"shot"


def test_an_existing_other_file_is_never_overwritten(tmp_path: Path) -> None:
    """A destination holding other bytes raises Clash and is left as it was."""
    src, dest = tmp_path / "a.jpg", tmp_path / "b.jpg"
    src.write_bytes(b"new")
    dest.write_bytes(b"old")
    with pytest.raises(fsmove.Clash), Root(tmp_path) as root:
        fsmove.relocate(root, "a.jpg", dest, sha(b"new"))
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
    with Root(tmp_path) as root:
        assert fsmove.relocate(root, "a.jpg", dest, sha(b"shot"))
    assert not src.exists() and dest.read_bytes() == b"shot"


def test_a_partial_copy_left_by_a_crash_is_replaced(tmp_path: Path) -> None:
    """A half-written partial file beside the destination is not taken for the file."""
    src, dest = tmp_path / "a.jpg", tmp_path / "arch" / "a.jpg"
    src.write_bytes(b"the whole shot")
    dest.parent.mkdir()
    (dest.parent / ".a.jpg.syncd-partial").write_bytes(b"the wh")
    with Root(tmp_path) as root:
        assert fsmove.relocate(root, "a.jpg", dest, sha(b"the whole shot"))
    assert dest.read_bytes() == b"the whole shot" and not src.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.jpg"]


def test_free_name_adds_a_suffix_before_the_extension(tmp_path: Path) -> None:
    """a.jpg is taken: a (1).jpg, then a (2).jpg."""
    (tmp_path / "a.jpg").write_bytes(b"1")
    assert fsmove.free_name(tmp_path / "a.jpg") == tmp_path / "a (1).jpg"
    (tmp_path / "a (1).jpg").write_bytes(b"2")
    assert fsmove.free_name(tmp_path / "a.jpg") == tmp_path / "a (2).jpg"


@pytest.mark.parametrize("action", ["archive", "remove"])
def test_a_folder_swapped_for_a_symlink_is_never_followed(tmp_path: Path, action: str) -> None:
    """d/ became a link to a private folder: its file is not there; nothing in it is touched."""
    hot, private, dest = tmp_path / "hot", tmp_path / "private", tmp_path / "arch" / "a.jpg"
    private.mkdir()
    (private / "a.jpg").write_bytes(b"private")
    hot.mkdir()
    (hot / "d").symlink_to(private)
    with Root(hot) as root:
        if action == "archive":
            assert fsmove.relocate(root, "d/a.jpg", dest, sha(b"private")) is False
        else:
            fsmove.remove(root, "d/a.jpg")
    assert (private / "a.jpg").read_bytes() == b"private" and not dest.exists()


def test_a_half_done_move_through_a_swapped_folder_leaves_the_private_file(
    tmp_path: Path,
) -> None:
    """The archive holds the copy already; the source's folder is now a link: only done."""
    hot, private, dest = tmp_path / "hot", tmp_path / "private", tmp_path / "arch" / "a.jpg"
    private.mkdir()
    (private / "a.jpg").write_bytes(b"shot")
    dest.parent.mkdir()
    dest.write_bytes(b"shot")
    hot.mkdir()
    (hot / "d").symlink_to(private)
    with Root(hot) as root:
        assert fsmove.relocate(root, "d/a.jpg", dest, sha(b"shot"))
    assert (private / "a.jpg").read_bytes() == b"shot"


def test_a_file_swapped_for_a_symlink_is_not_archived(tmp_path: Path) -> None:
    """A link standing at the file's name is neither followed nor linked into the archive."""
    (tmp_path / "private.jpg").write_bytes(b"private")
    hot = tmp_path / "hot"
    hot.mkdir()
    (hot / "a.jpg").symlink_to(tmp_path / "private.jpg")
    dest = tmp_path / "arch" / "a.jpg"
    with Root(hot) as root, pytest.raises(fsmove.Changed):
        fsmove.relocate(root, "a.jpg", dest, sha(b"private"))
    assert not dest.parent.exists() and (hot / "a.jpg").is_symlink()
