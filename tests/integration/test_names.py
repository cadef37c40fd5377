"""Names follow files: a file renamed before its upload started goes up under its final name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from syncd.emulator import EmulatorServer, Faults
from syncd.model import JobKind
from syncd.verify import verify
from tests.running import Launcher, Running
from tests.support import noise_jpeg, wait_until, write_image


def test_renamed_before_its_upload_started_gets_the_final_name(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """cp x tmpq1w2e3.jpg, settle, mv to rocket.jpg while the upload waits: named "rocket"."""
    run = start_daemon(concurrency=1)
    emulator.set_faults(Faults(latency=1.5))  # the one upload worker is kept busy
    (hot / "first.jpg").write_bytes(noise_jpeg(1))
    wait_until(lambda: run.jobs("kind = 'upload' AND state = 'uploading'"), 10,
               message="the worker busy")  # fmt: skip
    write_image(hot / "tmpq1w2e3.jpg", 2)
    wait_until(
        lambda: run.jobs("kind = 'upload' AND state = 'pending' AND intent_at IS NULL"),
        10,
        message="the second upload queued, not started",
    )
    (hot / "tmpq1w2e3.jpg").rename(hot / "rocket.jpg")
    assets = run.wait_assets(2, timeout=30)
    assert sorted(a["name"] for a in assets) == ["first", "rocket"]


def test_a_rename_after_the_upload_keeps_the_asset_and_its_name(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """names = "first" (the default): once sent, a rename uploads nothing again."""
    run = start_daemon()
    write_image(hot / "tmpq1w2e3.jpg", 3)
    run.wait_assets(1)
    (hot / "tmpq1w2e3.jpg").rename(hot / "rocket.jpg")
    wait_until(lambda: run.daemon.store.get_file(str(hot), "rocket.jpg"), 10,  # type: ignore[union-attr]
               message="the record followed the file")  # fmt: skip
    [asset] = run.wait_assets(1)
    assert asset["name"] == "tmpq1w2e3"
    assert emulator.stats()["requests"]["POST /v1/training-asset"] == 1


def test_names_follow_reuploads_under_the_new_name_and_releases_the_old(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """names = "follow": a rename to a new stem uploads "rocket", then deletes "tmpq1w2e3"."""
    run = start_daemon(extra_folder='names = "follow"\n')
    write_image(hot / "tmpq1w2e3.jpg", 5)
    [first] = run.wait_assets(1)
    assert first["name"] == "tmpq1w2e3"
    (hot / "tmpq1w2e3.jpg").rename(hot / "rocket.jpg")
    wait_until(
        lambda: [a["name"] for a in emulator.assets()] == ["rocket"] and run.idle(),
        20,
        message="the asset renamed by re-upload",
    )
    requests = emulator.stats()["requests"]
    assert requests["POST /v1/training-asset"] == 2
    assert requests["DELETE /v1/assets/{id}"] == 1


def _dedupe_look(run: Running, key: str) -> None:
    """A ``dedupe`` job for the asset, due now, as a timed-out upload leaves one; run to done."""
    store = run.daemon.store
    assert store is not None
    with store.write() as conn:
        job = store.new_job(conn, JobKind.DEDUPE, run.config.folders[0].key, asset_key=key).id
    wait_until(lambda: run.jobs("id = ? AND state = 'done'", (job,)), 20, message="dedupe done")


def test_two_names_of_one_image_survive_every_duplicate_healing(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """names = "follow", one image as a.jpg and b.jpg: two assets; only same-name copies go."""
    folder = 'names = "follow"\n'
    run = start_daemon(extra_folder=folder)
    data = write_image(hot / "a.jpg", 41)
    (hot / "b.jpg").write_bytes(data)
    both = {a["name"]: a for a in run.wait_assets(2)}
    assert set(both) == {"a", "b"}
    mine = {a["asset_id"] for a in both.values()}
    assert run.daemon.store is not None
    keys = {r["name"]: r["key"] for r in run.daemon.store.query("SELECT key, name FROM assets")}

    late = _copy(emulator, data, both["a"])  # a real duplicate of "a"
    _dedupe_look(run, keys["a"])
    _dedupe_look(run, keys["b"])
    assert {a["asset_id"] for a in emulator.assets()} == mine, "dedupe look"
    assert late not in {a["asset_id"] for a in emulator.assets()}

    late = _copy(emulator, data, both["b"])
    assert run.daemon.ctx is not None
    ledger, admin, client = run.daemon.ctx.ledger, run.daemon.ctx.admin, run.daemon.ctx.client
    found = verify(ledger, admin, client)
    assert [sorted(ids) for ids in found.duplicates.values()] == [
        sorted([both["b"]["asset_id"], late])
    ]
    assert verify(ledger, admin, client, repair=True).removed == 1
    assert {a["asset_id"] for a in emulator.assets()} == mine, "verify --repair"

    late = _copy(emulator, data, both["a"])
    run.stop()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{run.config.state.path}{suffix}").unlink(missing_ok=True)
    posts = emulator.stats()["requests"]["POST /v1/training-asset"]
    again = start_daemon(extra_folder=folder)
    store = again.daemon.store
    assert store is not None
    # The index may remove the late copy before the scan has queued a job: the queue is
    # idle then too, so the wait is for both assets recorded as well.
    wait_until(
        lambda: (
            {a["asset_id"] for a in emulator.assets()} == mine
            and len(again.jobs("kind = 'file' AND state = 'done'"))
            == 2  # scanned, not only indexed
            and again.idle()
            and {r["asset_id"] for r in store.query("SELECT asset_id FROM assets")} == mine
        ),
        20,
        message="the rebuild kept a and b, removed the late copy of a and recorded a and b",
    )
    assert emulator.stats()["requests"]["POST /v1/training-asset"] == posts


def _copy(emulator: EmulatorServer, data: bytes, like: dict[str, Any]) -> str:
    """Another copy of an asset (same bytes, tags and name), as a late POST would leave it."""
    answer = httpx.post(
        f"{emulator.base_url}/v1/training-asset",
        files={"file": (f"{like['name']}.jpg", data, "image/jpeg")},
        data={"tags[]": like["tags"], "name": like["name"]},
        headers={"Authorization": "Bearer test-key"},
    )
    assert answer.status_code == 201
    return str(answer.json()["asset_id"])
