"""The watcher on real folders with real watchdog observers (inotify and polling)."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from syncd.model import EventKind, FsEvent
from syncd.tags import Rules
from syncd.watcher import FolderWatcher

K = EventKind
FOLDER = "hot"
WAIT_SECONDS = 10.0

Predicate = Callable[[list[FsEvent]], bool]


class Collector:
    """The sink: records events and lets a test wait for a condition with a deadline."""

    def __init__(self) -> None:
        self.events: list[FsEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: FsEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, predicate: Predicate, timeout: float = WAIT_SECONDS) -> list[FsEvent]:
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate(self.events), timeout)
            assert ok, f"condition not met within {timeout}s; events: {self.events}"
            return list(self.events)

    def wait_event(self, kind: EventKind, relpath: str = "", **fields: object) -> list[FsEvent]:
        def seen(events: list[FsEvent]) -> bool:
            return any(_matches(e, kind, relpath, fields) for e in events)

        return self.wait_for(seen)

    def barrier(self, root: Path, name: str = "barrier.jpg") -> list[FsEvent]:
        """Write a file and wait for it: everything before it has been dispatched (inotify)."""
        (root / name).write_bytes(b"barrier")
        return self.wait_event(K.CREATED, name)


def _matches(event: FsEvent, kind: EventKind, relpath: str, fields: dict[str, object]) -> bool:
    if event.kind != kind or (relpath and event.relpath != relpath):
        return False
    return all(getattr(event, name) == value for name, value in fields.items())


def _paths(events: list[FsEvent]) -> set[str]:
    return {e.relpath for e in events} | {e.dest_relpath for e in events if e.dest_relpath}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "hot"
    path.mkdir()
    return path


Factory = Callable[..., tuple[FolderWatcher, Collector]]


@pytest.fixture
def start_watcher(root: Path) -> Iterator[Factory]:
    """Start watchers on ``root``; stop them afterwards and check no thread is left."""
    before = set(threading.enumerate())
    watchers: list[FolderWatcher] = []

    def start(
        rules: Rules | None = None, sink: Callable[[FsEvent], None] | None = None, **kw: object
    ) -> tuple[FolderWatcher, Collector]:
        collector = Collector()
        watcher = FolderWatcher(FOLDER, root, rules or Rules(), sink or collector, **kw)  # type: ignore[arg-type]
        watchers.append(watcher)
        assert watcher.start() is True
        return watcher, collector

    yield start
    for watcher in watchers:
        watcher.stop()
    leaked = [t for t in threading.enumerate() if t not in before]
    assert leaked == []


@pytest.fixture(params=["inotify", "polling"])
def mode_kwargs(request: pytest.FixtureRequest) -> dict[str, object]:
    if request.param == "polling":
        return {"polling": True, "poll_interval": 0.1}
    return {}


def test_create_modify_delete(
    root: Path, start_watcher: Factory, mode_kwargs: dict[str, object]
) -> None:
    """A new file is CREATED, a change MODIFIED, a removal DELETED, in both modes."""
    watcher, events = start_watcher(**mode_kwargs)
    assert watcher.mode == ("polling" if mode_kwargs else "inotify")
    (root / "a.jpg").write_bytes(b"one")
    events.wait_event(K.CREATED, "a.jpg", is_dir=False)
    with (root / "a.jpg").open("ab") as f:
        f.write(b"two, longer")
    events.wait_event(K.MODIFIED, "a.jpg")
    (root / "a.jpg").unlink()
    got = events.wait_event(K.DELETED, "a.jpg", is_dir=False)
    assert all(e.folder == FOLDER for e in got)
    assert watcher.alive() is True


def test_reading_a_file_gives_no_event(root: Path, start_watcher: Factory) -> None:
    """Opening and reading a file (as syncd's own hashing does) is not a change."""
    (root / "a.jpg").write_bytes(b"a")
    _, events = start_watcher()
    assert (root / "a.jpg").read_bytes() == b"a"
    got = events.barrier(root)
    assert _paths(got) == {"barrier.jpg"}


def test_metadata_change_is_modified(
    root: Path, start_watcher: Factory, mode_kwargs: dict[str, object]
) -> None:
    """A touch or chmod (a file made readable again) is MODIFIED: it may need a new look."""
    (root / "a.jpg").write_bytes(b"a")
    _, events = start_watcher(**mode_kwargs)
    os.utime(root / "a.jpg", ns=(1_000_000_000, 1_000_000_000))
    events.wait_event(K.MODIFIED, "a.jpg")


def test_move_within_root(
    root: Path, start_watcher: Factory, mode_kwargs: dict[str, object]
) -> None:
    """A rename inside the folder is one MOVED with its destination."""
    (root / "sub").mkdir()
    (root / "a.jpg").write_bytes(b"a")
    _, events = start_watcher(**mode_kwargs)
    (root / "a.jpg").rename(root / "sub" / "b.jpg")
    events.wait_event(K.MOVED, "a.jpg", dest_relpath="sub/b.jpg", is_dir=False)


def test_temp_then_rename_save(root: Path, start_watcher: Factory) -> None:
    """A save through `x.jpg.tmp` renamed onto `x.jpg` arrives as MOVED to `x.jpg` only."""
    _, events = start_watcher()
    with (root / "x.jpg.tmp").open("wb") as f:
        f.write(b"partial")
        f.write(b" and the rest")
    (root / "x.jpg.tmp").rename(root / "x.jpg")
    got = events.wait_event(K.MOVED, "x.jpg.tmp", dest_relpath="x.jpg")
    assert [e for e in got if e.relpath == "x.jpg.tmp" and e.kind != K.MOVED] == []


def test_move_onto_an_ignored_name_is_a_deletion(root: Path, start_watcher: Factory) -> None:
    """Renaming a tracked file to a name the rules ignore deletes it from syncd's view."""
    (root / "a.jpg").write_bytes(b"a")
    _, events = start_watcher()
    (root / "a.jpg").rename(root / "a.jpg.bak")
    got = events.wait_event(K.DELETED, "a.jpg")
    assert "a.jpg.bak" not in _paths(got)


def test_move_out_of_the_root_is_a_deletion(
    root: Path, tmp_path: Path, start_watcher: Factory
) -> None:
    """A file moved out of the folder is DELETED there."""
    (root / "a.jpg").write_bytes(b"a")
    _, events = start_watcher()
    (root / "a.jpg").rename(tmp_path / "elsewhere.jpg")
    events.wait_event(K.DELETED, "a.jpg")


def test_ignored_names_produce_nothing(root: Path, start_watcher: Factory) -> None:
    """Temporary, hidden, debris and excluded files give no event at all."""
    _, events = start_watcher(Rules(exclude=["*_draft.jpg"]))
    for name in [
        "a.tmp",
        "b.jpg.part",
        ".hidden.jpg",
        "Thumbs.db",
        "notes.txt",
        "c_draft.jpg",
        "~d.jpg",
    ]:
        (root / name).write_bytes(b"x")
    (root / "a.tmp").unlink()
    (root / "notes.txt").rename(root / "notes2.txt")
    got = events.barrier(root)
    assert _paths(got) == {"barrier.jpg"}


def _inotify_watched_inodes() -> set[int]:
    """Inodes that this process's inotify instances watch, from /proc/self/fdinfo."""
    inodes: set[int] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            text = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("inotify wd:"):
                field = next(p for p in line.split() if p.startswith("ino:"))
                inodes.add(int(field.removeprefix("ino:"), 16))
    return inodes


def test_no_watch_inside_ignored_folders(root: Path, start_watcher: Factory) -> None:
    """Ignored folders get no inotify watch and writes inside them give no event."""
    for rel in [".hidden/deep", "@eaDir/a.jpg", "raw/x", "kept/sub"]:
        (root / rel).mkdir(parents=True)
    _, events = start_watcher(Rules(exclude=["raw/"]))

    watched = _inotify_watched_inodes()
    for rel in ["", "kept", "kept/sub"]:
        assert (root / rel).stat().st_ino in watched, rel
    for rel in [".hidden", ".hidden/deep", "@eaDir", "@eaDir/a.jpg", "raw", "raw/x"]:
        assert (root / rel).stat().st_ino not in watched, rel

    for rel in [".hidden/a.jpg", ".hidden/deep/b.jpg", "@eaDir/a.jpg/thumb.jpg", "raw/x/c.jpg"]:
        (root / rel).write_bytes(b"x")
    (root / ".late").mkdir()
    (root / ".late" / "d.jpg").write_bytes(b"x")
    got = events.barrier(root)
    assert _paths(got) == {"barrier.jpg"}
    assert (root / ".late").stat().st_ino not in _inotify_watched_inodes()


def test_folder_moved_in_from_outside(root: Path, tmp_path: Path, start_watcher: Factory) -> None:
    """A folder dropped in arrives as CREATED with is_dir, so its subtree can be scanned."""
    outside = tmp_path / "outside" / "shoes"
    outside.mkdir(parents=True)
    (outside / "a.jpg").write_bytes(b"a")
    _, events = start_watcher()
    outside.rename(root / "shoes")
    events.wait_event(K.CREATED, "shoes", is_dir=True)
    (root / "shoes" / "b.jpg").write_bytes(b"b")
    events.wait_event(K.CREATED, "shoes/b.jpg")


def test_folder_moved_and_deleted_within_root(root: Path, start_watcher: Factory) -> None:
    """Folder renames are MOVED with is_dir, folder removals DELETED with is_dir."""
    (root / "red").mkdir()
    (root / "red" / "a.jpg").write_bytes(b"a")
    (root / "empty").mkdir()
    _, events = start_watcher()
    (root / "red").rename(root / "blue")
    events.wait_event(K.MOVED, "red", dest_relpath="blue", is_dir=True)
    (root / "empty").rmdir()
    events.wait_event(K.DELETED, "empty", is_dir=True)
    (root / "blue" / "b.jpg").write_bytes(b"b")
    events.wait_event(K.CREATED, "blue/b.jpg")


def _fill(root: Path) -> None:
    for rel in ["a.jpg", "b.jpg", "sub/c.jpg", "sub/deeper/d.jpg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")


def test_root_gone_is_one_event_not_deletions(
    root: Path, tmp_path: Path, start_watcher: Factory, mode_kwargs: dict[str, object]
) -> None:
    """A root that disappears (unmount, share outage) is ROOT_GONE, never per-file deletions."""
    _fill(root)
    watcher, events = start_watcher(**mode_kwargs)
    away = tmp_path / "away"
    root.rename(away)
    shutil.rmtree(away)
    got = events.wait_event(K.ROOT_GONE)
    assert [e for e in got if e.kind == K.DELETED] == []
    assert watcher.alive() is False


def test_root_removed_reports_root_gone(root: Path, start_watcher: Factory) -> None:
    """`rm -rf` of the root ends with ROOT_GONE and nothing after it; the watcher is dead."""
    _fill(root)
    watcher, events = start_watcher()
    shutil.rmtree(root)
    got = events.wait_event(K.ROOT_GONE)
    assert got[-1].kind == K.ROOT_GONE
    assert [e for e in got if e.kind == K.ROOT_GONE] == [FsEvent(FOLDER, K.ROOT_GONE)]
    assert watcher.alive() is False


def test_raising_sink_does_not_kill_the_observer(root: Path, start_watcher: Factory) -> None:
    """A sink that raises is turned into a RESCAN; later events still arrive."""
    events = Collector()
    calls = {"n": 0}

    def flaky(event: FsEvent) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("sink failure")
        events(event)

    watcher, _ = start_watcher(sink=flaky)
    (root / "a.jpg").write_bytes(b"a")
    events.wait_event(K.RESCAN)
    (root / "b.jpg").write_bytes(b"b")
    events.wait_event(K.CREATED, "b.jpg")
    assert watcher.alive() is True


def test_inotify_queue_overflow_asks_for_a_rescan(root: Path, start_watcher: Factory) -> None:
    """The kernel's IN_Q_OVERFLOW becomes a RESCAN and the watcher keeps going."""
    from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, WatchDescriptor

    watcher, events = start_watcher()
    # The kernel cannot be made to overflow on demand without a system-wide sysctl, so
    # hand the real inotify reader the overflow record the kernel would send (wd -1).
    reader = watcher._observer.inotify_fd  # type: ignore[union-attr]
    reader.handle_event(InotifyEvent(WatchDescriptor(-1), InotifyConstants.IN_Q_OVERFLOW, 0, b""))
    events.wait_event(K.RESCAN)
    events.barrier(root)
    assert watcher.alive() is True


def test_watch_limit_at_start_falls_back_to_polling(root: Path, start_watcher: Factory) -> None:
    """Too few inotify watches for the tree: polling takes over, with a RESCAN, and works."""
    for rel in ["a/x", "b/y", "c"]:
        (root / rel).mkdir(parents=True)
    watcher, events = start_watcher(max_watches=2, poll_interval=0.1)
    assert watcher.mode == "polling"
    events.wait_event(K.RESCAN)
    (root / "a" / "x" / "new.jpg").write_bytes(b"x")
    events.wait_event(K.CREATED, "a/x/new.jpg")
    assert watcher.alive() is True


def test_watch_limit_at_run_time_asks_for_a_rescan(root: Path, start_watcher: Factory) -> None:
    """New folders past the watch limit give a RESCAN and alive() turns false (replace me)."""
    watcher, events = start_watcher(max_watches=2)
    assert watcher.mode == "inotify"
    (root / "one").mkdir()
    events.wait_event(K.CREATED, "one", is_dir=True)
    assert watcher.alive() is True
    (root / "two").mkdir()
    events.wait_event(K.RESCAN)
    assert watcher.alive() is False


def test_missing_root_does_not_start(tmp_path: Path) -> None:
    """start() says False for a missing root or a file, and leaves no thread behind."""
    before = set(threading.enumerate())
    (tmp_path / "file").write_bytes(b"x")
    for path in [tmp_path / "missing", tmp_path / "file"]:
        watcher = FolderWatcher(FOLDER, path, Rules(), Collector())
        assert watcher.start() is False
        assert watcher.alive() is False
        watcher.stop()
    assert [t for t in threading.enumerate() if t not in before] == []


def test_stop_ends_every_thread(root: Path, mode_kwargs: dict[str, object]) -> None:
    """stop() joins the observer's threads; alive() is then false; stop twice is fine."""
    before = set(threading.enumerate())
    watcher = FolderWatcher(FOLDER, root, Rules(), Collector(), **mode_kwargs)  # type: ignore[arg-type]
    assert watcher.start() is True
    assert len([t for t in threading.enumerate() if t not in before]) >= 2
    assert watcher.alive() is True
    watcher.stop()
    watcher.stop()
    assert watcher.alive() is False
    assert [t for t in threading.enumerate() if t not in before] == []
