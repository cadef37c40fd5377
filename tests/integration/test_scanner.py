"""The scanner on real folders: order, ignores, symlinks, unreadable parts, root health."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import syncd
from syncd.hashing import file_stat
from syncd.scanner import Scan, is_empty, root_health, walk
from syncd.tags import Rules

EVERYTHING = Rules(include=[])


def _touch(root: Path, relpath: str, data: bytes = b"x") -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _relpaths(scan: Scan) -> list[str]:
    return [entry.relpath for entry in scan]


def _skips(root: Path, rules: Rules = EVERYTHING) -> tuple[list[str], dict[str, str]]:
    skipped: dict[str, str] = {}
    scan = walk(root, rules, on_skip=skipped.__setitem__)
    return _relpaths(scan), skipped


# Characters on both sides of "/" (0x2f) in code point order, astral ones included.
segment = st.text(alphabet=" !-0Aa_zé日😀", min_size=1, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(segment, min_size=1, max_size=4), min_size=1, max_size=25))
def test_order_is_python_string_order(paths: list[list[str]]) -> None:
    """Entries come out exactly in sorted(relpath) order, the order SQLite's BINARY gives."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        created: set[str] = set()
        for segments in paths:
            relpath = "/".join(segments)
            try:
                _touch(root, relpath)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                continue
            created.add(relpath)
        assert _relpaths(walk(root, EVERYTHING)) == sorted(created)


def test_sibling_prefixes_sort_like_strings(tmp_path: Path) -> None:
    """A folder sorts by name + '/', so 'a-b', 'a.jpg' and 'a0' bracket 'a/...' correctly."""
    for rel in ["a/x.jpg", "a-b.jpg", "a.jpg", "a0.jpg", "a/b/c.jpg", "a b.jpg", "Z.jpg", "é.jpg"]:
        _touch(tmp_path, rel)
    got = _relpaths(walk(tmp_path, Rules()))
    assert got == sorted(got)
    assert got == [
        "Z.jpg",
        "a b.jpg",
        "a-b.jpg",
        "a.jpg",
        "a/b/c.jpg",
        "a/x.jpg",
        "a0.jpg",
        "é.jpg",
    ]


def test_entries_carry_the_file_stat(tmp_path: Path) -> None:
    """Each entry's stat is the file's size, mtime, inode and device."""
    path = _touch(tmp_path, "sub/a.jpg", b"12345")
    [entry] = list(walk(tmp_path, Rules()))
    assert entry.relpath == "sub/a.jpg"
    assert entry.stat == file_stat(os.stat(path))
    assert entry.stat.size == 5


def test_ignored_files_and_folders_are_skipped(tmp_path: Path) -> None:
    """Hidden, temporary, debris and excluded names never appear, nor anything below them."""
    kept = ["a.jpg", "shoes/b.png", "shoes/red/c.webp"]
    ignored = [
        ".hidden.jpg",
        ".cache/x.jpg",
        "@eaDir/a.jpg/thumb.jpg",
        "shoes/@eaDir/x.jpg",
        "CaptureOne/Cache/x.jpg",
        "a.jpg.tmp",
        "~lock.jpg",
        "Thumbs.db",
        "a.xmp",
        "notes.txt",
        "raw/x.jpg",
        "shoes/raw/y.jpg",
    ]
    for rel in kept + ignored:
        _touch(tmp_path, rel)
    assert _relpaths(walk(tmp_path, Rules(exclude=["raw/"]))) == kept


def test_no_descent_into_ignored_folders(tmp_path: Path) -> None:
    """An ignored folder is not even listed: an unreadable one below it goes unnoticed."""
    _touch(tmp_path, "@eaDir/x.jpg")
    (tmp_path / "@eaDir" / "loop").symlink_to(tmp_path)
    scan = walk(tmp_path, Rules())
    assert _relpaths(scan) == []
    assert scan.unreadable_dirs == []


def test_symlinks(tmp_path: Path) -> None:
    """Links to files inside are followed; outside, broken, looping and folder links are told."""
    root = tmp_path / "root"
    outside = _touch(tmp_path, "outside.jpg", b"out")
    target = _touch(root, "real/target.jpg", b"target")
    (root / "link-in.jpg").symlink_to(target)
    (root / "link-rel.jpg").symlink_to("real/target.jpg")
    (root / "link-out.jpg").symlink_to(outside)
    (root / "broken.jpg").symlink_to(root / "nothing.jpg")
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    (root / "dirlink").symlink_to(root)
    (root / "real" / "up").symlink_to("..")

    got, skipped = _skips(root)

    assert got == ["link-in.jpg", "link-rel.jpg", "real/target.jpg"]
    entries = {e.relpath: e for e in walk(root, EVERYTHING)}
    assert entries["link-in.jpg"].stat == file_stat(os.stat(target))
    assert skipped == {
        "link-out.jpg": "symlink points outside the folder",
        "broken.jpg": "broken symlink",
        "loop.jpg": "symlink loop",
        "dirlink": "symlink to a folder: not followed",
        "real/up": "symlink to a folder: not followed",
    }


def test_special_files_are_skipped_with_a_reason(tmp_path: Path) -> None:
    """A named pipe is reported, not opened and not yielded."""
    os.mkfifo(tmp_path / "pipe.jpg")
    _touch(tmp_path, "a.jpg")
    got, skipped = _skips(tmp_path)
    assert got == ["a.jpg"]
    assert skipped == {"pipe.jpg": "not a regular file"}


def test_undecodable_names_are_skipped_with_a_reason(tmp_path: Path) -> None:
    """File and folder names that are not UTF-8 are reported (escaped) and not yielded."""
    base = os.fsencode(tmp_path)
    with open(base + b"/caf\xe9.jpg", "wb") as f:
        f.write(b"x")
    os.mkdir(base + b"/d\xff")
    with open(base + b"/d\xff/inner.jpg", "wb") as f:
        f.write(b"x")
    _touch(tmp_path, "ok.jpg")
    got, skipped = _skips(tmp_path)
    assert got == ["ok.jpg"]
    assert skipped == {
        "caf\\xe9.jpg": "file name is not valid UTF-8: it cannot be stored",
        "d\\xff": "folder name is not valid UTF-8: it cannot be stored",
    }


def test_file_vanishing_mid_scan_is_left_out_silently(tmp_path: Path) -> None:
    """A file listed but gone before its stat is neither yielded, skipped nor unreadable."""
    for rel in ["a/1.jpg", "a/2.jpg", "a/3.jpg"]:
        _touch(tmp_path, rel)
    skipped: list[str] = []
    scan = walk(tmp_path, Rules(), on_skip=lambda rel, why: skipped.append(rel))
    got = []
    for entry in scan:
        got.append(entry.relpath)
        if entry.relpath == "a/1.jpg":
            (tmp_path / "a" / "2.jpg").unlink()
    assert got == ["a/1.jpg", "a/3.jpg"]
    assert skipped == []
    assert scan.unreadable_dirs == []
    assert scan.unreadable_files == []


_SCAN_AS_NOBODY = """
import json, os, sys
from pathlib import Path
from syncd.scanner import walk
from syncd.tags import Rules
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
scan = walk(Path(sys.argv[1]), Rules())
entries = [e.relpath for e in scan]
print("RESULT " + json.dumps([entries, scan.unreadable_dirs]))
"""


def _scan_unprivileged(root: Path) -> tuple[list[str], list[str]]:
    """Scan with permissions enforced: root ignores mode bits, so drop to nobody first."""
    if os.geteuid() != 0:
        scan = walk(root, Rules())
        return _relpaths(scan), scan.unreadable_dirs
    repo = Path(syncd.__file__).resolve().parent.parent  # the child imports this same syncd
    done = subprocess.run(
        [sys.executable, "-c", _SCAN_AS_NOBODY, str(root)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    entries, unreadable = json.loads(line.removeprefix("RESULT "))
    return entries, unreadable


def test_unreadable_folder_is_reported_not_emptied(world_readable_dir: Path) -> None:
    """A folder that cannot be listed is named in unreadable_dirs; the rest is scanned."""
    root = world_readable_dir
    for rel in ["a.jpg", "locked/x.jpg", "locked/deep/y.jpg", "z/b.jpg"]:
        _touch(root, rel)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (root / "locked").chmod(0)
    entries, unreadable = _scan_unprivileged(root)
    assert entries == ["a.jpg", "z/b.jpg"]
    assert unreadable == ["locked"]


def test_missing_root_is_unreadable_not_empty(tmp_path: Path) -> None:
    """Scanning a root that is not there reports the root itself as unreadable."""
    scan = walk(tmp_path / "nope", Rules())
    assert _relpaths(scan) == []
    assert scan.unreadable_dirs == [""]


def test_is_empty(tmp_path: Path) -> None:
    """Only files the rules keep count; a missing root looks empty (deletions are held)."""
    assert is_empty(tmp_path, Rules()) is True
    _touch(tmp_path, ".hidden/a.jpg")
    _touch(tmp_path, "x/Thumbs.db")
    assert is_empty(tmp_path, Rules()) is True
    _touch(tmp_path, "x/y/a.jpg")
    assert is_empty(tmp_path, Rules()) is False
    assert is_empty(tmp_path / "missing", Rules()) is True


def test_root_health(tmp_path: Path) -> None:
    """Missing, not a folder, or on another device: not ok, with a reason; else ok with dev."""
    dev = os.stat(tmp_path).st_dev
    assert root_health(tmp_path, expected_dev=None).ok is True
    healthy = root_health(tmp_path, expected_dev=dev)
    assert (healthy.ok, healthy.reason, healthy.dev) == (True, None, dev)

    missing = root_health(tmp_path / "nope", expected_dev=dev)
    assert (missing.ok, missing.reason) == (False, "missing")
    file = _touch(tmp_path, "file.jpg")
    assert root_health(file, expected_dev=dev).reason == "not a directory"
    assert root_health(file / "below", expected_dev=dev).reason == "missing"

    moved = root_health(tmp_path, expected_dev=dev + 1)
    assert moved.ok is False
    assert moved.dev == dev
    assert moved.reason is not None
    assert "another device" in moved.reason
