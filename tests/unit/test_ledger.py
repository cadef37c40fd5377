"""The ledger's transactions: linking, deduplication, releases, grace, holds."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd import plan
from syncd.admin import Admin
from syncd.config import FolderConfig
from syncd.ledger import Ledger
from syncd.model import EventKind, FileStat, FsEvent, Job, JobKind, JobState, RemoteAsset
from syncd.schema import sha_blob
from syncd.store import Store
from tests.support import FakeClock

SHA_A = "a" * 64
SHA_B = "b" * 64
ROOT = "/hot"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    store = Store.open(tmp_path / "state.db", clock=FakeClock())
    folder = FolderConfig(path=Path(ROOT), max_deletes=3, delete_grace_seconds=30)
    yield Ledger(store, {ROOT: folder})
    store.close()


@pytest.fixture
def admin(ledger: Ledger) -> Admin:
    """The operator's side of the same store."""
    return Admin(ledger.store)


def stat(inode: int = 1, size: int = 10) -> FileStat:
    return FileStat(size=size, mtime_ns=5, inode=inode, dev=1)


def claim(ledger: Ledger, kind: JobKind, later: float = 0.0) -> Job:
    job = ledger.store.claim([kind], now=ledger.store.clock() + later)
    assert job is not None, f"no {kind} job due"
    return job


def link(ledger: Ledger, relpath: str, sha: str, tags: tuple[str, ...] = ("t",), inode: int = 1):
    ledger.enqueue_paths(ROOT, [relpath])
    job = claim(ledger, JobKind.FILE, later=5)
    return ledger.file_linked(job, stat(inode), sha, tags, relpath.rsplit(".", 1)[0])


def upload(ledger: Ledger, asset_id: str) -> None:
    job = claim(ledger, JobKind.UPLOAD)
    ledger.upload_done(job, RemoteAsset(asset_id, "n", "processing", ("t",), "2026-01-01"))


def gone(ledger: Ledger, relpath: str) -> None:
    ledger.enqueue_paths(ROOT, [relpath])
    ledger.file_gone(claim(ledger, JobKind.FILE, later=5))


def states(ledger: Ledger, kind: JobKind) -> list[str]:
    rows = ledger.store.query("SELECT state FROM jobs WHERE kind = ? ORDER BY id", (str(kind),))
    return [r["state"] for r in rows]


def test_a_new_file_queues_one_upload_and_a_copy_queues_none(ledger: Ledger) -> None:
    """Same content and tags at a second path is recorded against the same asset."""
    assert link(ledger, "a.jpg", SHA_A).queued_upload
    assert not link(ledger, "copy.jpg", SHA_A, inode=2).queued_upload
    assert states(ledger, JobKind.UPLOAD) == ["pending"]


def test_same_content_with_other_tags_is_another_asset(ledger: Ledger) -> None:
    """An asset is a (content, tag set) pair."""
    link(ledger, "a.jpg", SHA_A, ("x",))
    assert link(ledger, "b.jpg", SHA_A, ("y",), inode=2).queued_upload


def test_events_coalesce_into_one_pending_job_per_path(ledger: Ledger) -> None:
    """A burst of events on one path leaves one pending job, due after the last one settles."""
    events = [FsEvent(ROOT, EventKind.MODIFIED, "a.jpg") for _ in range(50)]
    ledger.record_events(events)
    assert states(ledger, JobKind.FILE) == ["pending"]


def test_a_move_event_carries_the_record_without_rehashing(ledger: Ledger) -> None:
    """The tracked record follows a rename, keeping its hash."""
    link(ledger, "a.jpg", SHA_A)
    ledger.record_events([FsEvent(ROOT, EventKind.MOVED, "a.jpg", "b.jpg")])
    moved = ledger.store.get_file(ROOT, "b.jpg")
    assert moved is not None and moved.sha256 == SHA_A
    assert ledger.store.get_file(ROOT, "a.jpg") is None


def test_last_file_gone_schedules_a_delete_after_the_grace(ledger: Ledger) -> None:
    """A release waits delete_grace_seconds before it can be claimed."""
    link(ledger, "a.jpg", SHA_A)
    upload(ledger, "asset-1")
    gone(ledger, "a.jpg")
    assert states(ledger, JobKind.DELETE) == ["waiting"]
    assert ledger.store.claim([JobKind.DELETE], now=ledger.store.clock() + 29) is None
    assert ledger.store.claim([JobKind.DELETE], now=ledger.store.clock() + 31) is not None


def test_shared_content_is_deleted_only_with_its_last_file(ledger: Ledger) -> None:
    """While a copy is tracked, deleting one file deletes nothing remotely."""
    link(ledger, "a.jpg", SHA_A)
    upload(ledger, "asset-1")
    link(ledger, "copy.jpg", SHA_A, inode=2)
    gone(ledger, "a.jpg")
    assert states(ledger, JobKind.DELETE) == []
    gone(ledger, "copy.jpg")
    assert states(ledger, JobKind.DELETE) == ["waiting"]


def test_a_file_that_comes_back_cancels_the_waiting_delete(ledger: Ledger) -> None:
    """Within the grace period, the same content and tags reappearing cancels the delete."""
    link(ledger, "a.jpg", SHA_A)
    upload(ledger, "asset-1")
    gone(ledger, "a.jpg")
    result = link(ledger, "a.jpg", SHA_A, inode=9)
    assert not result.queued_upload and result.asset_id == "asset-1"
    assert states(ledger, JobKind.DELETE) == ["cancelled"]


def test_modified_content_uploads_new_and_releases_old(ledger: Ledger) -> None:
    """New content at the same path queues an upload and schedules the old asset's delete."""
    link(ledger, "a.jpg", SHA_A)
    upload(ledger, "asset-1")
    assert link(ledger, "a.jpg", SHA_B, inode=2).queued_upload
    assert states(ledger, JobKind.DELETE) == ["waiting"]


def test_a_file_gone_before_its_upload_cancels_the_upload(ledger: Ledger) -> None:
    """Nothing is uploaded for a file that no longer exists."""
    link(ledger, "a.jpg", SHA_A)
    gone(ledger, "a.jpg")
    assert states(ledger, JobKind.UPLOAD) == ["cancelled"]
    assert ledger.store.query("SELECT * FROM assets WHERE sha256 = ?", (sha_blob(SHA_A),)) == []


def test_a_burst_over_max_deletes_holds_them_all(ledger: Ledger, admin: Admin) -> None:
    """More than max_deletes releases in a folder are held until approved."""
    for i in range(5):
        link(ledger, f"{i}.jpg", f"{i}" * 64, inode=i + 1)
        upload(ledger, f"asset-{i}")
    for i in range(5):
        gone(ledger, f"{i}.jpg")
    assert states(ledger, JobKind.DELETE) == ["held"] * 5
    assert len(admin.held()) == 5
    assert admin.approve_deletes() == (5, [])
    assert states(ledger, JobKind.DELETE) == ["waiting"] * 5


def test_upload_finishing_after_its_file_went_schedules_the_delete(ledger: Ledger) -> None:
    """A file deleted while its upload was in flight still has its asset removed."""
    link(ledger, "a.jpg", SHA_A)
    job = claim(ledger, JobKind.UPLOAD)
    gone(ledger, "a.jpg")
    ledger.upload_done(job, RemoteAsset("asset-1", "a", "ready", ("t",), "2026-01-01"))
    assert states(ledger, JobKind.DELETE) == ["waiting"]


def test_delete_done_while_a_file_took_the_asset_again_reuploads(ledger: Ledger) -> None:
    """If a file links to an asset whose DELETE is in flight, it is uploaded again after."""
    link(ledger, "a.jpg", SHA_A)
    upload(ledger, "asset-1")
    gone(ledger, "a.jpg")
    job = claim(ledger, JobKind.DELETE, later=60)
    link(ledger, "a.jpg", SHA_A, inode=3)
    ledger.delete_done(job)
    assert states(ledger, JobKind.UPLOAD)[-1] == "pending"


def test_mirror_deletes_off_keeps_the_remote_asset(tmp_path: Path) -> None:
    """A folder with mirror_deletes = false never schedules a remote delete."""
    store = Store.open(tmp_path / "s.db", clock=FakeClock())
    ledger = Ledger(store, {ROOT: FolderConfig(path=Path(ROOT), mirror_deletes=False)})
    link(ledger, "a.jpg", SHA_A)
    upload(ledger, "asset-1")
    gone(ledger, "a.jpg")
    assert states(ledger, JobKind.DELETE) == []
    store.close()


def test_failed_jobs_are_retried_on_request(ledger: Ledger, admin: Admin) -> None:
    """`syncd retry` puts failed jobs back in the queue."""
    ledger.enqueue_paths(ROOT, ["bad.jpg"])
    ledger.file_failed(claim(ledger, JobKind.FILE, later=5), stat(), None, "not an image")
    assert [j.reason for j in admin.failures()] == ["not an image"]
    assert admin.retry_failed(["bad.jpg"]) == 1
    assert states(ledger, JobKind.FILE) == [str(JobState.PENDING)]


def test_a_newly_excluded_file_is_forgotten_without_deleting_its_asset(ledger: Ledger) -> None:
    """Excluding a tracked file stops tracking it; the remote asset is left alone."""
    link(ledger, "a.jpg", SHA_A)
    upload(ledger, "asset-1")
    ledger.enqueue_paths(ROOT, ["a.jpg"])
    ledger.file_forget(claim(ledger, JobKind.FILE, later=5), "ignored")
    assert ledger.store.get_file(ROOT, "a.jpg") is None
    assert states(ledger, JobKind.DELETE) == []
    assert (
        ledger.store.query("SELECT * FROM assets WHERE sha256 = ?", (sha_blob(SHA_A),))[0][
            "asset_id"
        ]
        == "asset-1"
    )


def test_an_index_entry_is_adopted_once_and_then_forgotten(ledger: Ledger) -> None:
    """A file matching the library index takes its asset_id; a later return re-uploads."""
    ledger.remember_remote([(f"sha256:{SHA_A[:32]}", ("t",), "remote-1", "")])
    result = link(ledger, "a.jpg", SHA_A)
    assert (result.queued_upload, result.asset_id) == (False, "remote-1")
    assert ledger.store.query("SELECT * FROM remote_index") == []
    gone(ledger, "a.jpg")
    ledger.delete_done(claim(ledger, JobKind.DELETE, later=60))
    assert link(ledger, "a.jpg", SHA_A, inode=5).queued_upload


def test_an_upload_found_in_the_index_ends_without_a_post(ledger: Ledger) -> None:
    """An upload job whose asset the index learned of meanwhile is adopted, not sent."""
    link(ledger, "a.jpg", SHA_A)
    ledger.remember_remote([(f"sha256:{SHA_A[:32]}", ("t",), "remote-2", "")])
    assert ledger.upload_from_index(claim(ledger, JobKind.UPLOAD)) == "remote-2"
    assert states(ledger, JobKind.UPLOAD) == ["done"]


def test_a_post_sent_by_a_cancelled_job_makes_the_next_one_reconcile(ledger: Ledger) -> None:
    """Intent outlives a cancelled upload: the next upload of that asset looks first."""
    link(ledger, "a.jpg", SHA_A)
    first = claim(ledger, JobKind.UPLOAD)
    assert not ledger.posted_before(first)
    ledger.retry_later(first, 0, "OutcomeUnknown")
    gone(ledger, "a.jpg")
    # It tried once: it stays, to look for what its POST may have stored.
    assert states(ledger, JobKind.UPLOAD) == ["pending"]
    looking = claim(ledger, JobKind.UPLOAD)
    assert ledger.posted_before(looking)
    assert ledger.upload_cancelled(looking, "no file needs this asset now")
    link(ledger, "a.jpg", SHA_A, inode=2)
    second = claim(ledger, JobKind.UPLOAD)
    assert second.attempt == 1 and ledger.posted_before(second)


def test_an_upload_that_finished_leaves_nothing_to_look_for(ledger: Ledger) -> None:
    """Uploaded, deleted remotely, needed again: one POST, no lookup (renamed back)."""
    link(ledger, "a.jpg", SHA_A)
    upload(ledger, "asset-1")
    gone(ledger, "a.jpg")
    ledger.delete_done(claim(ledger, JobKind.DELETE, later=60))
    link(ledger, "a.jpg", SHA_A, inode=2)
    again = claim(ledger, JobKind.UPLOAD)
    assert not ledger.posted_before(again)


def test_a_pending_upload_never_tried_is_cancelled_on_release(ledger: Ledger) -> None:
    """An upload that never went out has nothing to look for: released, it is cancelled."""
    link(ledger, "a.jpg", SHA_A)
    gone(ledger, "a.jpg")
    assert states(ledger, JobKind.UPLOAD) == ["cancelled"]


def test_an_upload_cancel_that_lost_a_race_requeues_instead(ledger: Ledger) -> None:
    """If a file linked since the worker looked, cancelling becomes a re-queue."""
    link(ledger, "a.jpg", SHA_A)
    job = claim(ledger, JobKind.UPLOAD)
    assert ledger.upload_cancelled(job, "no file needs this asset now") is False
    assert states(ledger, JobKind.UPLOAD) == ["pending"]


def test_a_delete_is_cancelled_only_while_the_asset_is_used(ledger: Ledger) -> None:
    """The in-use check and the cancel are one transaction."""
    link(ledger, "a.jpg", SHA_A)
    upload(ledger, "asset-1")
    gone(ledger, "a.jpg")
    job = claim(ledger, JobKind.DELETE, later=60)
    assert ledger.delete_cancelled_if_used(job) is False
    assert states(ledger, JobKind.DELETE) == ["deleting"]


def test_approve_accepts_guarded_roots_only(ledger: Ledger, admin: Admin) -> None:
    """A root missing right now is never approved: its guard stays on for when it returns."""
    ledger.store.set_folder("/missing", health="unavailable", reason="missing")
    ledger.store.set_folder(ROOT, health="guarded", reason="root is empty")
    assert admin.approve_deletes() == (0, [ROOT])
    assert (ledger.store.folder_row("/missing") or {})["approved"] == 0
    assert (ledger.store.folder_row(ROOT) or {})["approved"] == 1


def test_a_path_being_hashed_is_not_claimed_twice(ledger: Ledger) -> None:
    """A second file job for a path waits until the first one has finished with it."""
    ledger.enqueue_paths(ROOT, ["a.jpg"])
    first = claim(ledger, JobKind.FILE, later=5)
    ledger.enqueue_paths(ROOT, ["a.jpg"])
    assert ledger.store.claim([JobKind.FILE], now=ledger.store.clock() + 5) is None
    ledger.file_linked(first, stat(), SHA_A, ("t",), "a")
    assert claim(ledger, JobKind.FILE, later=5).relpath == "a.jpg"


def test_prune_keeps_the_history_reconciliation_needs(ledger: Ledger, admin: Admin) -> None:
    """Old finished jobs go, except a cancelled upload that may have sent a POST."""
    link(ledger, "a.jpg", SHA_A)
    ledger.retry_later(claim(ledger, JobKind.UPLOAD), 0, "OutcomeUnknown")
    gone(ledger, "a.jpg")
    # The worker looked, found nothing, and cancelled it.
    assert ledger.upload_cancelled(claim(ledger, JobKind.UPLOAD), "no file needs this asset now")
    removed = admin.prune(before=ledger.store.clock() + 1)
    left = ledger.store.query("SELECT kind, state FROM jobs")
    assert removed == 2 and left == [{"kind": "upload", "state": "cancelled"}]


def test_finished_jobs_move_to_a_compact_history_kept_by_count(
    ledger: Ledger, admin: Admin
) -> None:
    """After a while finished jobs leave the queue; the history keeps the newest that did
    not end as a plain success (a file linked, an asset uploaded: their rows say it)."""
    for i in range(4):
        link(ledger, f"{i}.jpg", str(i) * 64)
        upload(ledger, f"A{i}")
        gone(ledger, f"{i}.jpg")
    clock = ledger.store.clock
    assert isinstance(clock, FakeClock)
    clock.now += 3600
    moved = admin.prune(before=clock.now - 30 * 86400, keep=3)
    assert moved == 12
    assert states(ledger, JobKind.FILE) == [] and states(ledger, JobKind.UPLOAD) == []
    kept = ledger.store.query("SELECT kind, state, relpath, reason FROM job_history ORDER BY id")
    assert kept == [
        {"kind": "file", "state": "done", "relpath": f"{i}.jpg", "reason": "gone"}
        for i in (1, 2, 3)
    ]


def test_recently_finished_jobs_stay_in_the_queue(ledger: Ledger, admin: Admin) -> None:
    """A job finished minutes ago is still seen in the queue as it ended."""
    link(ledger, "a.jpg", SHA_A)
    assert admin.prune(before=ledger.store.clock() - 30 * 86400) == 0
    assert states(ledger, JobKind.FILE) == ["done"]


def test_a_scan_batch_queues_each_path_once_whatever_its_name(ledger: Ledger) -> None:
    """A batch larger than one lookup's chunk, with names JSON must escape, queues one
    pending job per path; queued again, the paths already pending are left as they are,
    and a failed job is superseded."""
    odd = ["a/\U0001f600.jpg", "e\u0301/u\u0308.jpg", 'q"b\\s.jpg', "t\tn\n.jpg", "l\u2028.jpg"]
    paths = odd + [f"d/IMG_{i:04d}.jpg" for i in range(1200)]
    assert ledger.enqueue_paths(ROOT, paths) == len(paths)
    rows = ledger.store.query("SELECT relpath, state FROM jobs WHERE kind = 'file' ORDER BY id")
    assert [r["relpath"] for r in rows] == paths
    assert {r["state"] for r in rows} == {str(JobState.PENDING)}
    failed = claim(ledger, JobKind.FILE, later=5)
    ledger.file_failed(failed, stat(), None, "not an image")
    ledger.enqueue_paths(ROOT, paths)
    counts = ledger.store.query(
        "SELECT state, count(*) AS n FROM jobs WHERE kind = 'file' GROUP BY state"
    )
    assert {r["state"]: r["n"] for r in counts} == {
        str(JobState.PENDING): len(paths),
        str(JobState.CANCELLED): 1,
    }


def _jobs(ledger: Ledger) -> list[tuple[object, ...]]:
    rows = ledger.store.query(
        "SELECT kind, state, relpath, not_before, detail FROM jobs ORDER BY relpath, kind, state"
    )
    return [tuple(r.values()) for r in rows]


@pytest.mark.parametrize("seed", range(60))
def test_a_batch_of_events_queues_what_the_events_one_by_one_queue(
    tmp_path: Path, seed: int
) -> None:
    """Adjacent events on one path are recorded as one (``plan.coalesce``): the jobs a
    random batch leaves are those its events leave recorded one at a time."""
    rng = random.Random(seed)
    kinds = [EventKind.CREATED, EventKind.MODIFIED, EventKind.DELETED]
    events = []
    for _ in range(rng.randrange(1, 12)):
        path = rng.choice(["a.jpg", "b.jpg", "d/c.jpg"])
        if rng.random() < 0.1:
            events.append(FsEvent(ROOT, EventKind.MOVED, path, rng.choice(["a.jpg", "e.jpg"])))
        elif rng.random() < 0.05:
            events.append(FsEvent(ROOT, EventKind.CREATED, "d", is_dir=True))
        else:
            events.append(FsEvent(ROOT, rng.choice(kinds), path))
    results = []
    for one_by_one in (False, True):
        store = Store.open(tmp_path / f"{one_by_one}.db", clock=FakeClock())
        ledger = Ledger(store, {ROOT: FolderConfig(path=Path(ROOT), settle_seconds=2)})
        ledger.enqueue_paths(ROOT, ["b.jpg"])  # a job queued before the batch
        for batch in ([e] for e in events) if one_by_one else [events]:
            ledger.record_events(batch)
        results.append(_jobs(ledger))
        store.close()
    assert results[0] == results[1], events
    assert len(plan.coalesce(events)) <= len(events)
