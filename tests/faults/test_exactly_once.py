"""Exactly once when the library moves under a rebuild, when the server answers late, and
with no more requests than the work needs.

Each case runs the real daemon in this process (real watcher, real SQLite, real HTTP over
loopback) against the emulator, whose seeded faults add another client's churn between
list pages and hold uploads past the client's timeout. ``SYNCD_EXACTLY_ONCE_SEED`` picks
the seed (printed, and in the fault table's note).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from syncd.api import AssetsClient
from syncd.emulator import OTHER_CLIENT_TAG, EmulatorServer, Faults
from syncd.verify import remote_key
from tests.faults.conftest import (
    DELETES,
    POSTS,
    FaultReport,
    converge,
    disk_pairs,
    make_files,
    pairs,
    status_json,
)
from tests.running import Launcher, Running
from tests.support import image_bytes, wait_until, write_image

pytestmark = pytest.mark.faults

SEED = int(os.environ.get("SYNCD_EXACTLY_ONCE_SEED", "1201"))
LISTS = "GET /v1/my-uploaded-assets"


def requests(emulator: EmulatorServer) -> dict[str, int]:
    return dict(emulator.stats()["requests"])


def tag_lookups(emulator: EmulatorServer) -> int:
    """Listings filtered by a tag: the lookups an upload makes before it sends."""
    return emulator.tag_lookups()


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)
    }


def other_client_uploads(emulator: EmulatorServer, count: int) -> None:
    """Another studio machine's images, stored before syncd's (so its deletes shift ours)."""
    with httpx.Client(
        base_url=emulator.base_url, headers={"Authorization": "Bearer test-key"}
    ) as c:
        for i in range(count):
            files = {"file": (f"o{i}.png", image_bytes(90_000 + i, "PNG"), "image/png")}
            c.post("/v1/training-asset", files=files, data={"tags[]": [OTHER_CLIENT_TAG]})


def forget_state(run: Running) -> None:
    """The state database is lost: stop, delete it with its side files."""
    run.stop()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{run.config.state.path}{suffix}").unlink(missing_ok=True)


def linked(run: Running) -> int:
    """Tracked files whose asset has a remote id (uploaded, or found in the library)."""
    assert run.daemon.store is not None
    return int(
        run.daemon.store.query(
            "SELECT count(*) AS n FROM files JOIN assets ON assets.key = files.asset_key"
            " WHERE assets.asset_id IS NOT NULL"
        )[0]["n"]
    )


def own_seen_by_offset_paging(emulator: EmulatorServer) -> int:
    """How many of syncd's assets one plain offset read sees under the same churn."""
    with AssetsClient(emulator.base_url, lambda: "test-key") as client:
        return sum(remote_key(asset) is not None for asset in client.iter_assets())


def test_a_lost_database_rebuilt_under_churn_uploads_nothing_again(
    start_daemon: Launcher, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """450 own assets, another client adding and deleting on every page: 0 POSTs, 0 dups."""
    other_client_uploads(emulator, 150)
    make_files(hot, 450, first_seed=20_000)
    want = disk_pairs(hot)
    run = start_daemon(concurrency=4)
    converge(run, want, timeout=120)
    forget_state(run)
    churn = Faults(churn_adds=2, churn_deletes=3, seed=SEED)
    emulator.set_faults(churn)
    naive = own_seen_by_offset_paging(emulator)
    emulator.set_faults(churn)  # the same draws again, for the daemon's rebuild
    before = requests(emulator)
    again = start_daemon(concurrency=4)
    wait_until(lambda: linked(again) == 450 and again.idle(), 60, message="450 files linked")
    spent = delta(before, requests(emulator))
    got = pairs(emulator)
    assert spent.get(POSTS, 0) == 0, f"re-uploads after the rebuild: {spent}"
    assert all(n == 1 for n in got.values()) and set(got) == want
    assert naive < 450, "the churn must make a plain offset read miss some assets"
    note = (
        f"seed={SEED} plain offset read saw {naive}/450; rebuild: {spent.get(LISTS, 0)} list "
        f"GETs, 0 POSTs, churn pages={emulator.stats()['faults']['churn']}"
    )
    print(f"\nlost database under churn: {note}")
    fault_report.check(emulator, want, note)


def test_a_file_the_rebuild_did_not_find_asks_the_library_first(
    start_daemon: Launcher, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """A rebuilt database missing an asset: one filtered GET finds it, nothing is POSTed."""
    write_image(hot / "red" / "a.jpg", 31)
    run = start_daemon()
    run.wait_assets(1)
    forget_state(run)
    store_path = run.config.state.path
    from syncd.store import Store

    # What a rebuild that missed this asset leaves: indexed, rebuilt, nothing on record.
    store = Store.open(store_path)
    stamp = str(store.clock())
    store.set_meta("library_indexed", stamp)
    store.set_meta("library_rebuilt", stamp)
    store.close()
    before = requests(emulator)
    again = start_daemon()
    wait_until(lambda: again.jobs("kind = 'upload' AND state = 'done'"), message="adopted")
    wait_until(again.idle)
    spent = delta(before, requests(emulator))
    assert spent == {LISTS: 1}, spent
    fault_report.check(emulator, disk_pairs(hot), f"requests={spent}")


def test_a_server_slower_than_the_timeout_stores_each_image_once(
    start_daemon: Launcher, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """Every upload answered 2.5 s late (timeout 1 s): looked up after the wait, never resent."""
    emulator.set_faults(Faults(late_rate=1.0, late_seconds=2.5, seed=SEED))
    run = start_daemon(
        timeout=1, extra_api="late_answer_seconds = 3.5\nlate_answer_seconds_per_mb = 0"
    )
    wait_until(run.daemon.indexed.is_set, 10, message="the library indexed")
    make_files(hot, 6, first_seed=32_000)
    want = disk_pairs(hot)
    converge(run, want, timeout=60)
    wait_until(lambda: not run.jobs("kind = 'dedupe' AND state != 'done'"), 30, message="checks")
    spent = requests(emulator)
    assert spent[POSTS] == 6, f"an image was sent twice: {spent}"
    assert len(run.jobs("kind = 'dedupe'")) == 6
    note = f"seed={SEED} requests={spent} late={emulator.stats()['faults']['late']}"
    print(f"\nslow server: {note}")
    fault_report.check(emulator, want, note)


def test_a_server_slower_than_the_wait_is_healed_by_the_later_look(
    start_daemon: Launcher, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """The first POST lands after the re-send: the dedupe look removes the late copy."""
    emulator.set_faults(Faults(late_rate=1.0, late_seconds=3.5, seed=SEED))
    run = start_daemon(
        timeout=1, extra_api="late_answer_seconds = 2\nlate_answer_seconds_per_mb = 0"
    )
    wait_until(run.daemon.indexed.is_set, 10, message="the library indexed")
    write_image(hot / "a.jpg", 33)
    want = disk_pairs(hot)
    wait_until(lambda: run.jobs("kind = 'upload' AND detail LIKE '%late%'"), 10, message="timeout")
    emulator.set_faults(Faults())  # the re-send is answered at once; the first still lands
    status = wait_until(
        lambda: (s := status_json(run.config_path))["duplicates_removed"] == 1 and s,
        20,
        message="the late copy removed",
    )
    converge(run, want, timeout=20)
    spent = requests(emulator)
    assert spent[POSTS] == 2 and spent[DELETES] == 1, spent
    recorded = run.daemon.store.query("SELECT asset_id FROM assets")[0]["asset_id"]
    assert [a["asset_id"] for a in emulator.assets()] == [recorded]
    note = f"seed={SEED} requests={spent} status.duplicates_removed={status['duplicates_removed']}"
    print(f"\nslower than the wait: {note}")
    fault_report.check(emulator, want, note)


def test_a_folder_renamed_away_and_back_costs_two_requests_per_image_each_way(
    start_daemon: Launcher, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """200 images: away is 200 POSTs + 200 DELETEs, and back the same, with no lookups."""
    for i in range(200):
        write_image(hot / "shoot" / f"{i:03d}.jpg", 40_000 + i)
    run = start_daemon(concurrency=4, max_deletes=1000, grace=0)
    run.wait_assets(200, timeout=120)
    figures = []
    for src, dst in (("shoot", "moved"), ("moved", "shoot")):
        before, looked = requests(emulator), tag_lookups(emulator)
        (hot / src).rename(hot / dst)
        wait_until(
            lambda dst=dst: run.idle() and {t[-1] for t in run.folder_tags()} == {dst},
            120,
            message=f"200 assets tagged {dst}",
        )
        spent = delta(before, requests(emulator))
        # The processing follow-up lists new assets by status; a lookup filters by tag.
        listed = spent.pop("GET /v1/my-uploaded-assets", 0)
        figures.append(spent)
        assert spent == {POSTS: 200, DELETES: 200}, spent
        assert tag_lookups(emulator) == looked, f"{listed} listings, some by tag"
    assert len(emulator.assets()) == 200
    note = "away " + json.dumps(figures[0]) + " back " + json.dumps(figures[1])
    print(f"\nrename away and back: {note}")
    fault_report.check(emulator, disk_pairs(hot), note)
