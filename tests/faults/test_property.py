"""Random sequences of file operations, restarts and kill -9 under API faults: afterwards the
library holds exactly one asset per (content, folder tags) pair on disk, and nothing else.

Hypothesis draws each sequence over a small tree (two hot folders, one with a sub-folder;
six file names; five contents), so collisions are common: the same content in several
places, a move onto an existing file, a copy over another, a file deleted and written back.
Each example gets fresh folders, a fresh state database and an emptied emulator, and runs a
real ``syncd run`` process, which ``Kill`` ends with SIGKILL and ``Restart`` with SIGTERM.
Each example starts with a few files already there (found by the start-up scan), and runs
with API faults on throughout: 10% 5xx, 10% answers dropped after the work was done. Two
actions change the world beyond the disk: ``Churn`` lets a second client add and delete
assets of its own after every list page from then on (the library must keep them and
nothing of syncd's may be missed), and ``Late`` answers uploads only after the client's
timeout from then on (each must still be stored once).

Replay: the run prints its seed; ``SYNCD_PROPERTY_SEED=<seed> pytest
tests/faults/test_property.py`` draws the same sequences (the daemon's thread timing still
varies). ``SYNCD_PROPERTY_EXAMPLES`` sets how many sequences run, ``SYNCD_PROPERTY_SHRINK=1``
lets Hypothesis shrink a failure to a minimal sequence (slow: every try runs a daemon).
"""

from __future__ import annotations

import collections
import hashlib
import os
import shutil
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from syncd.emulator import EmulatorServer, Faults
from syncd.store import Store
from tests.faults.conftest import DaemonProcess, FaultReport, pairs
from tests.support import config_text, image_bytes, wait_until

pytestmark = pytest.mark.faults

SEED = int(os.environ.get("SYNCD_PROPERTY_SEED", "20261130"))
EXAMPLES = int(os.environ.get("SYNCD_PROPERTY_EXAMPLES", "12"))
PHASES = (Phase.explicit, Phase.generate) + (
    (Phase.shrink,) if os.environ.get("SYNCD_PROPERTY_SHRINK") else ()
)

ROOTS = ("a", "b")
#: Where a file may sit: (hot folder, directory inside it); the directory is a tag.
PLACES = (("a", ""), ("a", "red"), ("b", ""))
NAMES = tuple(f"f{i}.jpg" for i in range(6))
CONTENTS = tuple(image_bytes(seed) for seed in range(5))
#: One file per root that is never touched: a root emptied of every tracked file looks
#: unmounted, and then deletions are held on purpose (that rule has tests of its own).
ANCHORS = {root: image_bytes(90 + i) for i, root in enumerate(ROOTS)}
LIVE = ("pending", "hashing", "uploading", "waiting", "deleting")


# --- operations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    place: int
    name: int
    content: int
    atomic: bool

    def apply(self, tree: Path) -> None:
        path = _path(tree, self.place, self.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = CONTENTS[self.content]
        if self.atomic:
            tmp = path.with_name(f".{path.name}.part")
            tmp.write_bytes(data)
            tmp.rename(path)
        else:
            path.write_bytes(data)


@dataclass(frozen=True)
class _Transfer:
    """A file from one place and name to another (onto itself: nothing happens)."""

    place: int
    name: int
    to_place: int
    to_name: int

    def apply(self, tree: Path) -> None:
        src, dst = _path(tree, self.place, self.name), _path(tree, self.to_place, self.to_name)
        if src.exists() and src != dst:
            dst.parent.mkdir(parents=True, exist_ok=True)
            self.transfer(src, dst)

    def transfer(self, src: Path, dst: Path) -> None:
        raise NotImplementedError


class Move(_Transfer):
    def transfer(self, src: Path, dst: Path) -> None:
        src.rename(dst)


class Copy(_Transfer):
    def transfer(self, src: Path, dst: Path) -> None:
        shutil.copyfile(src, dst)


@dataclass(frozen=True)
class Delete:
    place: int
    name: int

    def apply(self, tree: Path) -> None:
        _path(tree, self.place, self.name).unlink(missing_ok=True)


@dataclass(frozen=True)
class Pause:
    """Let the daemon work for a moment between operations (no sync: that is the point)."""

    tenths: int


@dataclass(frozen=True)
class Restart:
    """After a moment, SIGTERM, then a new daemon."""

    tenths: int


@dataclass(frozen=True)
class Kill:
    """After a moment (mid-scan, mid-upload, mid-start: whatever it is), SIGKILL; restart."""

    tenths: int


@dataclass(frozen=True)
class Churn:
    """From now on another client adds ``adds`` assets and deletes one after each list page."""

    adds: int


@dataclass(frozen=True)
class Late:
    """From now on, half the uploads are stored and answered only after the timeout."""

    tenths: int


Op = Write | Move | Copy | Delete | Pause | Restart | Kill | Churn | Late


def _path(tree: Path, place: int, name: int) -> Path:
    root, sub = PLACES[place]
    return tree / root / sub / NAMES[name]


places = st.integers(0, len(PLACES) - 1)
names = st.integers(0, len(NAMES) - 1)
contents = st.integers(0, len(CONTENTS) - 1)
operations = st.one_of(
    st.builds(Write, places, names, contents, st.booleans()),
    st.builds(Move, places, names, places, names),
    st.builds(Copy, places, names, places, names),
    st.builds(Delete, places, names),
    st.builds(Pause, st.integers(1, 5)),
    st.builds(Restart, st.integers(0, 5)),
    st.builds(Kill, st.integers(0, 5)),
    st.builds(Kill, st.integers(0, 5)),
    st.builds(Churn, st.integers(1, 3)),
    st.builds(Late, st.integers(1, 10)),
)
#: A late answer comes this long after the request: past the 5 s timeout of the config.
LATE_SECONDS = 6.0


# --- one example -------------------------------------------------------------------------


def expected(tree: Path) -> collections.Counter[tuple[str, tuple[str, ...]]]:
    """One asset per distinct (content, folder tags) pair on disk."""
    found = set()
    for root in ROOTS:
        for path in (tree / root).rglob("*.jpg"):
            if path.name.startswith("."):
                continue
            folders = path.relative_to(tree / root).parts[:-1]
            found.add((hashlib.sha256(path.read_bytes()).hexdigest(), ("studio", *folders)))
    return collections.Counter(found)


def idle(state: Path) -> bool:
    store = Store.open_readonly(state)
    try:
        marks = ",".join("?" * len(LIVE))
        rows = store.query(f"SELECT count(*) AS n FROM jobs WHERE state IN ({marks})", LIVE)
        return rows[0]["n"] == 0
    finally:
        store.close()


class Totals:
    """Requests and faults over every example (the emulator's counts reset with each one)."""

    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.faults: collections.Counter[str] = collections.Counter()
        self.examples = 0
        self.operations = 0
        self.kills = 0
        self.restarts = 0
        self.churns = 0
        self.lates = 0

    def add(self, emulator: EmulatorServer) -> None:
        stats = emulator.stats()
        self.requests.update(stats["requests"])
        self.faults.update(stats["faults"])

    def stats(self) -> dict[str, dict[str, int]]:
        return {"requests": dict(self.requests), "faults": dict(self.faults)}


class Example:
    """The folders, config and daemon of one drawn sequence."""

    def __init__(
        self, base: Path, emulator: EmulatorServer, number: int, start: list[Write], faults: Faults
    ) -> None:
        self.tree = base / f"example{number}"
        self.emulator = emulator
        self.faults = faults
        emulator.set_faults(faults)
        for root, data in ANCHORS.items():
            (self.tree / root).mkdir(parents=True)
            (self.tree / root / "anchor.jpg").write_bytes(data)
        for write in start:
            write.apply(self.tree)
        self.state = self.tree / "state.db"
        self.config = self.tree / "syncd.toml"
        folders = [self.tree / root for root in ROOTS]
        self.config.write_text(config_text(emulator.base_url, folders, self.state))
        self.config.chmod(0o600)  # it holds the key: a config open to others does not load
        self.starts = 0
        self.daemon = self._start()

    def _start(self) -> DaemonProcess:
        self.starts += 1
        return DaemonProcess(self.config, self.tree / f"daemon{self.starts}.log").start()

    def run(self, op: Op, totals: Totals) -> None:
        if isinstance(op, Churn):
            totals.churns += 1
            self.faults = replace(self.faults, churn_adds=op.adds, churn_deletes=1)
            self.emulator.set_faults(self.faults)
            return
        if isinstance(op, Late):
            totals.lates += 1
            self.faults = replace(self.faults, late_rate=0.5, late_seconds=LATE_SECONDS)
            self.emulator.set_faults(self.faults)
            time.sleep(op.tenths / 10)  # from now on, half the uploads are answered late
            return
        if isinstance(op, Pause | Restart | Kill):
            time.sleep(op.tenths / 10)  # the daemon works meanwhile; nothing waits on it
        if isinstance(op, Restart):
            self.stop()
            self.daemon = self._start()
            totals.restarts += 1
        elif isinstance(op, Kill):
            assert self.daemon.proc is not None
            self.daemon.proc.send_signal(signal.SIGKILL)
            self.daemon.proc.wait(10)
            self.daemon = self._start()
            totals.kills += 1
        elif not isinstance(op, Pause):
            op.apply(self.tree)

    def converge(self, ops: list[Op]) -> None:
        want = expected(self.tree)

        def settled() -> bool:
            return pairs(self.emulator) == want and idle(self.state)

        try:
            wait_until(settled, 40, interval=0.1, message="the library to match the disk")
        except AssertionError:
            got = pairs(self.emulator)
            raise AssertionError(
                f"after {ops}:\n missing {sorted(set(want) - set(got))}\n"
                f" extra {sorted(set(got) - set(want))}\n"
                f" duplicated {[p for p, n in got.items() if n > 1]}\n"
                f" log: {self.daemon.log}"
            ) from None
        assert self.daemon.alive(), f"the daemon died; log: {self.daemon.log}"

    def stop(self) -> None:
        """SIGTERM ends a running daemon with 0; one still starting may die of the signal."""
        code = self.daemon.stop()
        if code == -signal.SIGTERM:
            ready = [e for e in self.daemon.log_lines() if e.get("event") == "daemon.ready"]
            assert not ready, f"a ready daemon must stop cleanly on SIGTERM: {self.daemon.log}"
        else:
            assert code == 0, f"exit {code} on SIGTERM; log: {self.daemon.log}"

    def close(self) -> None:
        if self.daemon.alive():
            self.stop()


# --- the property ----------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_random_operations_converge_to_exactly_the_disk(
    tmp_path: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """Any mix of writes, moves, copies, deletes, restarts and kills ends as the disk's pairs."""
    totals = Totals()
    print(f"\nproperty test: seed {SEED} (replay: SYNCD_PROPERTY_SEED={SEED})")

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=PHASES,
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        start=st.lists(st.builds(Write, places, names, contents, st.just(True)), max_size=6),
        ops=st.lists(operations, min_size=3, max_size=12),
    )
    def sequence(start: list[Write], ops: list[Op]) -> None:
        emulator.reset()
        faults = Faults(error_rate=0.1, ambiguous_rate=0.1, seed=SEED + totals.examples)
        example = Example(tmp_path, emulator, totals.examples, start, faults)
        totals.examples += 1
        totals.operations += len(ops)
        try:
            for op in ops:
                example.run(op, totals)
            example.converge([*start, *ops])
        finally:
            example.close()
            totals.add(emulator)

    sequence()
    note = (
        f"seed={SEED} examples={totals.examples} ops={totals.operations} "
        f"kills={totals.kills} restarts={totals.restarts} churn={totals.churns} "
        f"late={totals.lates} faults={dict(totals.faults)}"
    )
    print(f"property test: {note}")
    # Totals answers stats() like the emulator, summed over the examples.
    fault_report.record(totals, duplicates=0, losses=0, note=note)
