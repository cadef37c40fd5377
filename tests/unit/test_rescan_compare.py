"""The rescan's comparison: a segment of the walk against the store's rows of its range."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd import plan
from syncd.model import FileStat, TrackedFile
from syncd.plan import Change, Segment
from syncd.store import Store

ROOT = "/hot"
FILES = "folder, relpath, size, mtime_ns, inode, dev, sha256, asset_key"


class Rows:
    """A store's rows of one folder as a TrackedSource; counts the record look-ups."""

    def __init__(self, rows: list[plan.Seen]) -> None:
        self.rows = sorted(rows)
        self.lookups = 0

    def _in(self, segment: Segment) -> list[plan.Seen]:
        hi = segment.hi
        return [r for r in self.rows if segment.lo <= r[0] and (hi is None or r[0] < hi)]

    def contents(self, segment: Segment, *, limit: int) -> list[plan.Seen]:
        return self._in(segment)[:limit]

    def files(self, segment: Segment) -> dict[str, TrackedFile]:
        self.lookups += 1
        return {
            r[0]: TrackedFile(ROOT, r[0], FileStat(*r[1:], dev=1), "a" * 64, "k")
            for r in self._in(segment)
        }


def test_changes_tell_new_changed_and_gone_by_name() -> None:
    """Same tuple: unchanged; a name on one side only: new or gone; else changed."""
    seen = [("a.jpg", 1, 1, 1), ("b.jpg", 2, 2, 2), ("c.jpg", 3, 3, 3), ("e.jpg", 5, 5, 5)]
    stored = [("a.jpg", 1, 1, 1), ("b.jpg", 2, 9, 2), ("d.jpg", 4, 4, 4), ("e.jpg", 5, 5, 6)]
    assert plan.changes(seen, stored) == [
        ("b.jpg", Change.CHANGED),
        ("c.jpg", Change.NEW),
        ("d.jpg", Change.GONE),
        ("e.jpg", Change.CHANGED),
    ]
    assert plan.changes(seen, list(seen)) == []


def test_an_unchanged_segment_builds_no_record() -> None:
    """Segments equal to the store's rows yield nothing and never ask for records."""
    rows = [("d/a.jpg", 1, 10, 100), ("d/b.jpg", 2, 20, 200)]
    source = Rows(rows)
    segments = [
        Segment("", "", "d/"),
        Segment("d/", "d/", "d0", rows, [1, 1]),
        Segment("", "d0", None),
    ]
    assert list(plan.diff(segments, source)) == []
    assert source.lookups == 0


def test_differences_carry_the_stat_and_the_record() -> None:
    """A changed file has the new stat and the old record; gone under an unreadable
    folder is not gone; a row below a folder the walk did not enter is gone."""
    stored = [
        ("a.jpg", 1, 1, 1),
        ("b.jpg", 2, 2, 2),
        ("locked/x.jpg", 3, 3, 3),
        ("raw/y.jpg", 4, 4, 4),
    ]
    source = Rows(stored)
    seen = [("a.jpg", 1, 5, 1), ("c.jpg", 7, 7, 7)]
    diffs = list(
        plan.diff(
            [Segment("", "", None, seen, [8, 9])],
            source,
            unreadable=lambda p: p.startswith("locked/"),
        )
    )
    assert [(d.change, d.relpath) for d in diffs] == [
        (Change.CHANGED, "a.jpg"),
        (Change.GONE, "b.jpg"),
        (Change.NEW, "c.jpg"),
        (Change.GONE, "raw/y.jpg"),
    ]
    changed, gone, new, _ = diffs
    assert changed.stat == FileStat(1, 5, 1, 8) and changed.tracked is not None
    assert changed.tracked.stat.mtime_ns == 1
    assert gone.stat is None and gone.tracked is not None and gone.tracked.relpath == "b.jpg"
    assert new.stat == FileStat(7, 7, 7, 9) and new.tracked is None
    assert source.lookups == 1


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(tmp_path / "state.db")
    rows = [
        (ROOT, rel, i, i * 10, i * 100, 1, "a" * 64, "k")
        for i, rel in enumerate(["a.jpg", "d/b.jpg", "d/e/c.jpg", "d0.jpg", "é.jpg"], start=1)
    ]
    rows.append(("/other", "d/b.jpg", 9, 9, 9, 1, None, None))
    with store.write() as conn:
        conn.executemany(f"INSERT INTO files ({FILES}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    yield store
    store.close()


def test_the_store_answers_a_range_with_plain_tuples(store: Store) -> None:
    """Rows of the folder in [lo, hi) in relpath order, as (relpath, size, mtime_ns, inode)."""
    with store.tracked(ROOT) as tracked:
        assert tracked.contents(limit=9, segment=Segment("d/", "d/", "d0")) == [
            ("d/b.jpg", 2, 20, 200),
            ("d/e/c.jpg", 3, 30, 300),
        ]
        assert [r[0] for r in tracked.contents(limit=9, segment=Segment("", "d0", None))] == [
            "d0.jpg",
            "é.jpg",
        ]
        assert tracked.contents(limit=9, segment=Segment("", "", "d/"))[0] == ("a.jpg", 1, 10, 100)
        record = tracked.files(Segment("d/", "d/", "d/e/"))["d/b.jpg"]
    assert record == TrackedFile(ROOT, "d/b.jpg", FileStat(2, 20, 200, 1), "a" * 64, "k")


def test_a_whole_folder_compares_through_the_store(store: Store) -> None:
    """The walk's segments against the real store: only what differs comes out."""
    segments = [
        Segment("", "", "d/", [("a.jpg", 1, 10, 100)], [1]),
        Segment("d/", "d/", "d/e/", [("d/b.jpg", 2, 21, 200)], [1]),
        Segment("d/e/", "d/e/", "d/e0"),
        Segment("d/", "d/e0", "d0", [("d/new.jpg", 5, 5, 5)], [1]),
        Segment("", "d0", None, [("d0.jpg", 4, 40, 400), ("é.jpg", 5, 50, 500)], [1, 1]),
    ]
    with store.tracked(ROOT) as tracked:
        found = [(d.change, d.relpath) for d in plan.diff(segments, tracked)]
    assert found == [
        (Change.CHANGED, "d/b.jpg"),
        (Change.GONE, "d/e/c.jpg"),
        (Change.NEW, "d/new.jpg"),
    ]


def test_a_range_holding_many_rows_is_read_a_page_at_a_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows below a folder the walk left out come a page at a time, all of them gone."""
    monkeypatch.setattr(plan, "PAGE", 2)
    rows = [(ROOT, f"raw/{i}.jpg", i, i, i, 1, None, None) for i in range(7)]
    with store.write() as conn:
        conn.executemany(f"INSERT INTO files ({FILES}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    seen = [("d0.jpg", 4, 40, 400), ("é.jpg", 5, 50, 500)]
    segments = [Segment("", "d0", None, seen, [1, 1])]
    pages: list[int] = []
    with store.tracked(ROOT) as tracked:
        contents = tracked.contents
        monkeypatch.setattr(
            tracked, "contents", lambda s, **kw: pages.append(0) or contents(s, **kw)
        )
        found = [(d.change, d.relpath) for d in plan.diff(segments, tracked)]
    assert found == [(Change.GONE, f"raw/{i}.jpg") for i in range(7)]
    assert len(pages) == 5
