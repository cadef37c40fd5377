"""Work wakes idle workers the moment it is durable, not at their next timeout."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.admin import Admin
from syncd.api import AssetsClient
from syncd.breaker import Breaker
from syncd.config import FolderConfig
from syncd.context import Context
from syncd.ledger import Ledger
from syncd.model import JobKind
from syncd.store import Store
from syncd.workers import API_KINDS, FILE_KINDS, Workers
from tests.support import FakeClock

ROOT = "/hot"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "state.db", clock=FakeClock())
    yield s
    s.close()


def test_a_commit_that_queues_work_tells_its_listeners(store: Store) -> None:
    """Listeners hear of claimable jobs per kind after COMMIT, and nothing of a rollback."""
    heard: list[Counter[JobKind]] = []
    store.on_queued(lambda queued: heard.append(Counter(queued)))
    with store.write() as conn:
        store.new_job(conn, JobKind.UPLOAD, ROOT, asset_key="k")
        store.new_job(conn, JobKind.FILE, ROOT, relpath="a.jpg")
        assert heard == []
    with pytest.raises(RuntimeError), store.write() as conn:
        store.new_job(conn, JobKind.UPLOAD, ROOT, asset_key="k2")
        raise RuntimeError("rolled back")
    assert heard == [Counter({JobKind.UPLOAD: 1, JobKind.FILE: 1})]


def test_a_queued_upload_wakes_an_idle_api_worker(store: Store) -> None:
    """An API worker asleep for a minute returns as soon as an upload is committed."""
    folder = FolderConfig(path=Path(ROOT))
    client = AssetsClient("http://127.0.0.1:9", lambda: "unused")
    ctx = Context(Ledger(store, {ROOT: folder}), client, {ROOT: folder}, {}, Breaker(),
                  clock=store.clock, admin=Admin(store))  # fmt: skip
    workers = Workers(ctx, {}, stopping=threading.Event(), indexed=threading.Event(),
                      clock=store.clock)  # fmt: skip
    with workers.wake:
        seen = workers._generation[API_KINDS]
    sleeper = threading.Thread(target=workers.wait, args=(60.0, API_KINDS, seen))
    sleeper.start()
    with store.write() as conn:
        store.new_job(conn, JobKind.FILE, ROOT, relpath="a.jpg")
    sleeper.join(2.0)
    assert sleeper.is_alive(), "a file job must not wake the API lane"
    with store.write() as conn:
        store.new_job(conn, JobKind.UPLOAD, ROOT, asset_key="k")
    sleeper.join(10.0)
    assert not sleeper.is_alive()
    with workers.wake:
        assert workers._generation[FILE_KINDS] == 1
    client.close()
