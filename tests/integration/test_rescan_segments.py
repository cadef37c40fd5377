"""The walk as segments: ranges that chain without a gap, over a real folder."""

from __future__ import annotations

import os
from itertools import pairwise
from pathlib import Path

import pytest

from syncd import scanner
from syncd.plan import Segment
from syncd.scanner import walk
from syncd.tags import Rules


def _touch(root: Path, relpath: str) -> None:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def _chained(segments: list[Segment], lo: str, hi: str | None) -> None:
    """Each segment starts where the one before ended, from ``lo`` to ``hi``; its files
    lie in its range, directly in its folder, in order."""
    assert segments[0].lo == lo and segments[-1].hi == hi
    for before, after in pairwise(segments):
        assert before.hi == after.lo
    for s in segments:
        names = [r[0] for r in s.seen]
        assert names == sorted(names)
        for relpath in names:
            assert s.lo <= relpath and (s.hi is None or relpath < s.hi)
            assert relpath.startswith(s.base) and "/" not in relpath[len(s.base) :]


def test_segments_chain_over_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Subfolders (walked or not) and big folders split the walk into ranges that cover
    the folder exactly once, and the files come out as the entries do."""
    monkeypatch.setattr(scanner, "SEGMENT_FILES", 3)
    rels = ["a-b.jpg", "a.jpg", "a/x.jpg", "a/b/c.jpg", "a0.jpg", "raw/y.jpg", "z.jpg"]
    rels += [f"big/{i:02d}.jpg" for i in range(8)]
    for rel in rels:
        _touch(tmp_path, rel)
    (tmp_path / "notes.txt").write_text("x")
    rules = Rules(exclude=["raw/"])
    segments = list(walk(tmp_path, rules).segments())
    _chained(segments, "", None)
    seen = [r[0] for s in segments for r in s.seen]
    assert seen == [e.relpath for e in walk(tmp_path, rules)]
    assert seen == sorted(r for r in rels if not r.startswith("raw/"))
    assert max(len(s.seen) for s in segments) == 3
    raw = next(s for s in segments if s.base == "raw/")
    assert (raw.lo, raw.hi, raw.seen) == ("raw/", "raw0", [])
    by_stat = {r[0]: r[1:] for s in segments for r in s.seen}
    st = os.stat(tmp_path / "a/b/c.jpg")
    assert by_stat["a/b/c.jpg"] == (st.st_size, st.st_mtime_ns, st.st_ino)


def test_a_prefix_walk_covers_its_folder_only(tmp_path: Path) -> None:
    """Below a prefix the ranges run from 'p/' to 'p0', relpaths from the folder's root."""
    for rel in ["p/a.jpg", "p/q/b.jpg", "pa.jpg"]:
        _touch(tmp_path, rel)
    segments = list(walk(tmp_path, Rules(), prefix="p").segments())
    _chained(segments, "p/", "p0")
    assert [r[0] for s in segments for r in s.seen] == ["p/a.jpg", "p/q/b.jpg"]


def test_a_folder_that_cannot_be_walked_is_one_empty_range(tmp_path: Path) -> None:
    """A missing prefix gives one empty segment over its range: what is tracked there is gone."""
    assert list(walk(tmp_path, Rules(), prefix="gone").segments()) == [
        Segment("gone/", "gone/", "gone0")
    ]
