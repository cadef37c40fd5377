"""Scans against a real store and real folders: what a walk cannot see is not gone, and
a scan does not walk the root twice."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from syncd.admin import Admin
from syncd.api import AssetsClient
from syncd.breaker import Breaker
from syncd.config import Config, load
from syncd.context import Context
from syncd.ledger import Ledger
from syncd.model import JobKind
from syncd.store import Store
from syncd.sweep import Sweeper
from syncd.tags import Rules
from syncd.uploader import FileWorkflow
from tests.support import config_text, write_image

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


@contextmanager
def sweeping(config: Config) -> Iterator[tuple[Store, Sweeper]]:
    """The store and a sweeper over it, built as the daemon builds them (no API call)."""
    store = Store.open(config.state.path)
    folders = {f.key: f for f in config.folders}
    rules = {f.key: Rules(f.include, f.exclude) for f in config.folders}
    client = AssetsClient(config.api.base_url, lambda: "unused")
    ctx = Context(Ledger(store, folders), client, folders, rules, Breaker(), clock=time.time,
                  admin=Admin(store))  # fmt: skip
    try:
        yield store, Sweeper(ctx)
    finally:
        client.close()
        store.close()


def track_everything(config: Config) -> int:
    """A full scan, then every file job run: the store tracks what the folder holds."""
    with sweeping(config) as (store, sweeper):
        sweeper.scan(config.folders[0])
        files = FileWorkflow(sweeper.ctx)
        while (job := store.claim([JobKind.FILE])) is not None:
            files.run(job)
        return len(store.query("SELECT 1 FROM files WHERE folder = ?", (config.folders[0].key,)))


def write_config(where: Path, hot: Path) -> Config:
    conf = where / "syncd.toml"
    state = where / "state" / "state.db"
    conf.write_text(config_text("http://127.0.0.1:9", [hot], state, settle=0))
    conf.chmod(0o600)
    return load(conf)


# Everything is imported first: the interpreter's own files may be out of nobody's reach.
_PREFIX_SCAN_AS_NOBODY = """
import json, os, sys
from pathlib import Path
from syncd.config import load
from tests.integration.test_sweep import sweeping
import httpx
httpx.Client().close()  # httpx imports its transport lazily: do it while we still can
if os.geteuid() == 0:
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
config = load(Path(sys.argv[1]))
with sweeping(config) as (store, sweeper):
    report = sweeper.scan(config.folders[0], sys.argv[2])
print("RESULT " + json.dumps([report.gone, report.unreadable_dirs]))
"""


def test_a_prefix_scan_of_a_folder_it_cannot_list_reads_nothing_as_gone(
    world_readable_dir: Path,
) -> None:
    """The walk's own top unreadable ("") hides every path below the prefix: none is gone."""
    base = world_readable_dir
    hot = base / "hot"
    for seed, rel in enumerate(["a.jpg", "locked/x.jpg", "locked/deep/y.jpg"]):
        write_image(hot / rel, 180 + seed)
    config = write_config(base, hot)
    assert track_everything(config) == 3
    if os.geteuid() == 0:  # root ignores mode bits: the scan runs as nobody
        for path in [base, *base.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
    (hot / "locked").chmod(0)
    assert config.source is not None
    done = subprocess.run(
        [sys.executable, "-c", _PREFIX_SCAN_AS_NOBODY, str(config.source), "locked"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=base,
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    gone, unreadable = json.loads(line.removeprefix("RESULT "))
    assert unreadable == [""]
    assert gone == 0
    with sweeping(config) as (store, _):
        assert (
            store.query("SELECT relpath FROM jobs WHERE kind = 'file' AND state = 'pending'") == []
        )


@functools.cache
def listed_folders() -> list[str]:
    """Every folder opened for listing from the first call on (an audit hook stays for good).

    The walk opens each folder by name from its parent's descriptor, so names are relative.
    """
    listed: list[str] = []

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == "open" and len(args) == 3 and isinstance(args[0], str):
            flags = args[2]
            if isinstance(flags, int) and flags & os.O_DIRECTORY:
                listed.append(args[0])

    sys.addaudithook(hook)
    return listed


@pytest.mark.parametrize("files", [True, False], ids=["holding-files", "empty"])
def test_a_full_scan_of_an_approved_root_walks_it_once(tmp_path: Path, files: bool) -> None:
    """Whether an approved root is empty comes from the scan's walk, not a second one."""
    hot = tmp_path / "hot"
    (hot / "sub").mkdir(parents=True)
    if files:
        write_image(hot / "sub" / "a.jpg", 190)
    config = write_config(tmp_path, hot)
    folder = config.folders[0]
    with sweeping(config) as (store, sweeper):
        store.set_folder(folder.key, approved=1)
        listed = listed_folders()
        listed.clear()
        sweeper.scan(folder)
        assert listed.count("sub") == 1
        # The approval lasts until the root holds files again.
        assert (store.folder_row(folder.key) or {})["approved"] == (0 if files else 1)
