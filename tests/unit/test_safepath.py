"""Opening beneath a held root, with openat2 and with the component walk alike."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd import safepath
from syncd.safepath import Outside, Root


@pytest.fixture(params=[True, False], ids=["openat2", "component-walk"])
def mode(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Each test runs on both paths; the walk is what a pre-5.6 kernel (or seccomp) gets."""
    safepath.use_openat2(request.param)
    if request.param and not safepath.openat2_available():
        pytest.fail("this kernel has no openat2 (5.6+), or a filter refuses it")
    yield request.param
    safepath.use_openat2(True)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(b"inside")
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "x.jpg").write_bytes(b"private")
    (root / "rel.jpg").symlink_to("a/x.jpg")
    (root / "abs.jpg").symlink_to(root / "a" / "x.jpg")
    (root / "out.jpg").symlink_to(tmp_path / "private" / "x.jpg")
    (root / "up.jpg").symlink_to("../private/x.jpg")
    (root / "d").symlink_to(tmp_path / "private")
    (root / "dd").symlink_to("a")
    (root / "loop.jpg").symlink_to("loop.jpg")
    return root


def read(root: Root, relpath: str) -> bytes:
    fd = root.open_file(relpath)
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


def test_files_and_links_inside_are_read(tree: Path, mode: bool) -> None:
    """A plain file, and links (relative or absolute) to a file inside, read the file."""
    with Root(tree) as root:
        assert read(root, "a/x.jpg") == b"inside"
        assert read(root, "rel.jpg") == b"inside"
        assert read(root, "abs.jpg") == b"inside"


@pytest.mark.parametrize("relpath", ["out.jpg", "up.jpg", "../private/x.jpg", "a/../../x"])
def test_links_and_paths_out_are_refused(tree: Path, mode: bool, relpath: str) -> None:
    """Whatever leads out of the root (absolute or relative link, '..') raises Outside."""
    with Root(tree) as root, pytest.raises(Outside):
        read(root, relpath)


@pytest.mark.parametrize("relpath", ["d/x.jpg", "dd/x.jpg"])
def test_a_link_on_the_way_is_never_followed(tree: Path, mode: bool, relpath: str) -> None:
    """A folder on the path that is a link (out, or even inside) is not a folder: not there."""
    with Root(tree) as root, pytest.raises(NotADirectoryError):
        read(root, relpath)
    with Root(tree) as root, pytest.raises(OSError) as info:
        root.open_dir(relpath.split("/", maxsplit=1)[0])
    assert info.value.errno in (errno.ELOOP, errno.ENOTDIR)


def test_a_loop_is_eloop_and_a_missing_file_not_found(tree: Path, mode: bool) -> None:
    """A link loop is ELOOP (unreadable), an absent name FileNotFoundError (gone)."""
    with Root(tree) as root:
        with pytest.raises(OSError) as info:
            read(root, "loop.jpg")
        assert info.value.errno == errno.ELOOP
        with pytest.raises(FileNotFoundError):
            read(root, "a/none.jpg")


def test_the_root_is_held_by_its_descriptor(tree: Path, mode: bool) -> None:
    """Renaming the root away and putting a link in its place changes nothing already open."""
    with Root(tree) as root:
        tree.rename(tree.with_name("moved"))
        tree.symlink_to(tree.parent / "private")
        assert read(root, "a/x.jpg") == b"inside"
        with Root(tree) as now:
            assert root.identity != now.identity
