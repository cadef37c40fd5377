"""`verify` reads the library back by identity tag and matches it against the store."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from click.testing import CliRunner

from syncd.api import LIST_PATH, AssetsClient
from syncd.cli import main
from syncd.config import require_api_key
from syncd.verify import verify
from tests.running import Running
from tests.support import wait_until, write_image


def test_an_agreeing_library_verifies_clean(start_daemon, hot: Path) -> None:
    """After a sync, every uploaded asset is found once and nothing else is ours."""
    run: Running = start_daemon()
    for i in range(3):
        write_image(hot / "v" / f"{i}.jpg", 300 + i)
    run.wait_assets(3)
    assert run.daemon.ctx is not None
    result = verify(run.daemon.ctx.ledger, run.daemon.ctx.admin, run.daemon.ctx.client)
    assert result.ok, result.as_dict()
    assert (result.checked_local, result.checked_remote) == (3, 3)


def test_an_asset_deleted_by_hand_is_found_missing_and_repaired(start_daemon, hot) -> None:
    """A remote asset deleted outside syncd is reported and, with repair, uploaded again."""
    run: Running = start_daemon()
    write_image(hot / "a.jpg", 310)
    (asset,) = run.wait_assets(1)
    answer = httpx.delete(
        f"{run.emulator.base_url}/v1/assets/{asset['asset_id']}",
        headers={"Authorization": "Bearer test-key"},
    )
    assert answer.status_code == 204
    assert run.daemon.ctx is not None
    result = verify(run.daemon.ctx.ledger, run.daemon.ctx.admin, run.daemon.ctx.client, repair=True)
    assert result.missing == [asset["asset_id"]] and result.requeued == 1
    (again,) = wait_until(run.assets, message="the asset uploaded again")
    assert again["sha256"] == asset["sha256"] and again["asset_id"] != asset["asset_id"]
    wait_until(run.idle, message="idle")
    assert verify(run.daemon.ctx.ledger, run.daemon.ctx.admin, run.daemon.ctx.client).ok


def test_our_assets_the_store_does_not_know_are_reported(start_daemon, hot, emulator) -> None:
    """An asset with an identity tag that no store row matches (a lost database) shows up."""
    run: Running = start_daemon()
    write_image(hot / "a.jpg", 320)
    run.wait_assets(1)
    files = {"file": ("x.jpg", (hot / "a.jpg").read_bytes(), "image/jpeg")}
    data = {"tags[]": ["studio", "other", "sha256:" + "0" * 32], "name": "x"}
    answer = httpx.post(
        f"{emulator.base_url}/v1/training-asset",
        files=files,
        data=data,
        headers={"Authorization": "Bearer test-key"},
    )
    assert answer.status_code == 201
    assert run.daemon.ctx is not None
    result = verify(run.daemon.ctx.ledger, run.daemon.ctx.admin, run.daemon.ctx.client)
    assert result.unknown == [answer.json()["asset_id"]] and not result.missing


def test_a_lost_state_database_uploads_nothing_twice(start_daemon, hot: Path, tmp_path) -> None:
    """With the state database deleted, a restart indexes the library and re-uploads nothing."""
    run: Running = start_daemon()
    for i in range(4):
        write_image(hot / "lost" / f"{i}.jpg", 330 + i)
    run.wait_assets(4)
    run.stop()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"state.db{suffix}").unlink(missing_ok=True)
    write_image(hot / "lost" / "new.jpg", 340)
    run2: Running = start_daemon()
    run2.wait_assets(5)
    assert run2.emulator.stats()["requests"]["POST /v1/training-asset"] == 5
    assert run2.daemon.store is not None
    assert (
        len(
            run2.daemon.store.query(
                "SELECT 1 FROM files WHERE folder = ?", (run2.config.folders[0].key,)
            )
        )
        == 5
    )


def test_the_verify_command_reports_agreement_and_difference(start_daemon, hot, cli) -> None:
    """`syncd verify --json` exits 0 when the library agrees and 1 when an asset is gone."""
    run: Running = start_daemon()
    write_image(hot / "a.jpg", 350)
    (asset,) = run.wait_assets(1)
    conf = run.config_path
    clean = cli("verify", "-c", conf, "--json")
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["ok"] is True
    httpx.delete(
        f"{run.emulator.base_url}/v1/assets/{asset['asset_id']}",
        headers={"Authorization": "Bearer test-key"},
    )
    differ = cli("verify", "-c", conf)
    assert differ.returncode == 1
    assert "missing remotely: 1" in differ.stdout


class ThenAfterListing(httpx.BaseTransport):
    """The real transport; once the library listing is answered, ``then`` runs first."""

    def __init__(self, then: Callable[[], None]) -> None:
        self.inner = httpx.HTTPTransport()
        self.then: Callable[[], None] | None = then

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path == LIST_PATH and self.then is not None:
            response.read()
            then, self.then = self.then, None
            then()
        return response

    def close(self) -> None:
        self.inner.close()


def test_an_asset_uploaded_after_the_listing_is_not_missing(start_daemon, hot: Path) -> None:
    """An upload landing between the listing and the store read is asked for, not re-sent."""
    run: Running = start_daemon()
    write_image(hot / "a.jpg", 360)
    run.wait_assets(1)

    def upload_one_more() -> None:
        write_image(hot / "late.jpg", 361)
        run.wait_assets(2)

    transport = ThenAfterListing(upload_one_more)
    with AssetsClient(
        run.config.api.base_url, require_api_key(run.config), transport=transport
    ) as client:
        assert run.daemon.ctx is not None
        result = verify(run.daemon.ctx.ledger, run.daemon.ctx.admin, client, repair=True)
    assert (result.missing, result.requeued) == ([], 0)
    assert result.checked_local == 2
    wait_until(run.idle, message="idle")
    assert len(run.assets()) == 2


@functools.cache
def opened_files() -> list[str]:
    """Every file opened from the first call on (an audit hook stays for good)."""
    opened: list[str] = []

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == "open" and args and isinstance(args[0], (str, os.PathLike)):
            opened.append(os.fspath(args[0]))

    sys.addaudithook(hook)
    return opened


def test_the_verify_command_reads_its_config_once(start_daemon, hot: Path) -> None:
    """`syncd verify` loads (and sets up logging from) its config a single time."""
    run: Running = start_daemon()
    conf = str(run.config_path)
    opened = opened_files()
    opened.clear()
    result = CliRunner().invoke(main, ["verify", "-c", conf, "--json"])
    assert result.exit_code == 0, result.output
    assert opened.count(conf) == 1


def _post_copy(emulator, data: bytes, tags: list[str], name: str) -> str:
    """Another copy of an image, POSTed straight to the library as a second client would."""
    answer = httpx.post(
        f"{emulator.base_url}/v1/training-asset",
        files={"file": (f"{name}.jpg", data, "image/jpeg")},
        data={"tags[]": tags, "name": name},
        headers={"Authorization": "Bearer test-key"},
    )
    assert answer.status_code == 201
    return str(answer.json()["asset_id"])


def test_duplicates_are_reported_and_repair_keeps_the_recorded_copy(
    start_daemon, hot, emulator
) -> None:
    """Two extra copies of our asset: verify lists them; --repair deletes them, keeps ours."""
    run: Running = start_daemon()
    write_image(hot / "d" / "a.jpg", 330)
    (asset,) = run.wait_assets(1)
    data = (hot / "d" / "a.jpg").read_bytes()
    extra = [_post_copy(emulator, data, asset["tags"], "a") for _ in range(2)]
    # Same content without our identity tag, and our tag with other folder tags: not ours
    # to remove as duplicates.
    plain = _post_copy(emulator, data, ["studio", "d"], "a")
    other_tags = _post_copy(emulator, data, [*asset["tags"], "more"], "a")
    assert run.daemon.ctx is not None
    ledger, admin, client = run.daemon.ctx.ledger, run.daemon.ctx.admin, run.daemon.ctx.client
    found = verify(ledger, admin, client)
    assert [sorted(ids) for ids in found.duplicates.values()] == [
        sorted([asset["asset_id"], *extra])
    ]
    assert found.removed == 0 and len(emulator.assets()) == 5
    repaired = verify(ledger, admin, client, repair=True)
    assert repaired.removed == 2
    left = {a["asset_id"] for a in emulator.assets()}
    assert left == {asset["asset_id"], plain, other_tags}
    assert admin.summary()["duplicates_removed"] == 2
    assert not verify(ledger, admin, client).duplicates


def test_a_whole_library_read_under_churn_misses_none_of_ours(emulator) -> None:
    """Another client deleting between pages: a plain offset pass skips, read_library does not."""
    from syncd.emulator import OTHER_CLIENT_TAG, Faults
    from syncd.listing import ReadFigures, read_library
    from syncd.verify import remote_key
    from tests.support import image_bytes

    with httpx.Client(
        base_url=emulator.base_url, headers={"Authorization": "Bearer test-key"}
    ) as http:
        for i in range(260):
            ours = i >= 60
            tags = ["studio", f"sha256:{i:032x}"] if ours else [OTHER_CLIENT_TAG]
            files = {"file": (f"{i}.png", image_bytes(5000 + i, "PNG"), "image/png")}
            assert http.post("/v1/training-asset", files=files, data={"tags[]": tags}).is_success
    churn = Faults(churn_adds=1, churn_deletes=4, seed=3)
    with AssetsClient(emulator.base_url, lambda: "test-key") as client:
        emulator.set_faults(churn)
        plain = sum(remote_key(a) is not None for a in client.iter_assets())
        emulator.set_faults(churn)
        figures = ReadFigures()
        ours = list(
            read_library(client, wanted=lambda a: remote_key(a) is not None, figures=figures)
        )
    assert plain < 200
    assert len(ours) == len({a.asset_id for a in ours}) == 200
    assert figures.passes >= 2 and figures.requests > 3


def test_repair_records_a_copy_of_a_lost_asset_instead_of_uploading_it(
    start_daemon, hot, emulator
) -> None:
    """The recorded asset deleted by hand, another copy of ours there: relinked, no POST."""
    run: Running = start_daemon()
    write_image(hot / "a.jpg", 340)
    (asset,) = run.wait_assets(1)
    copy = _post_copy(emulator, (hot / "a.jpg").read_bytes(), asset["tags"], "a")
    answer = httpx.delete(
        f"{emulator.base_url}/v1/assets/{asset['asset_id']}",
        headers={"Authorization": "Bearer test-key"},
    )
    assert answer.status_code == 204
    assert run.daemon.ctx is not None
    posts = emulator.stats()["requests"]["POST /v1/training-asset"]
    result = verify(run.daemon.ctx.ledger, run.daemon.ctx.admin, run.daemon.ctx.client, repair=True)
    assert result.missing == [asset["asset_id"]] and result.requeued == 0
    assert run.daemon.store is not None
    assert run.daemon.store.query("SELECT asset_id FROM assets")[0]["asset_id"] == copy
    wait_until(run.idle)
    assert emulator.stats()["requests"]["POST /v1/training-asset"] == posts
    assert verify(run.daemon.ctx.ledger, run.daemon.ctx.admin, run.daemon.ctx.client).ok


def test_repair_never_deletes_an_asset_the_store_records_under_another_key(
    emulator, tmp_path: Path
) -> None:
    """Two same-name copies, each recorded under its own key: reported, neither deleted."""
    from syncd.admin import Admin
    from syncd.ledger import Ledger
    from syncd.model import asset_key
    from syncd.store import Store
    from tests.support import image_bytes

    data = image_bytes(370)
    sha = hashlib.sha256(data).hexdigest()
    tags = ["studio", f"sha256:{sha[:32]}"]
    first, second = (_post_copy(emulator, data, tags, "x") for _ in range(2))
    store = Store.open(tmp_path / "state.db")
    try:
        with store.write() as conn:  # a plain folder's asset, and a names = "follow" one's
            for key, asset_id in ((asset_key(sha, ("studio",)), first),
                                  (asset_key(sha, ("studio",), "x"), second)):  # fmt: skip
                conn.execute(
                    "INSERT INTO assets (key, sha256, tags, name, asset_id) VALUES (?, ?, ?, ?, ?)",
                    (key, sha, '["studio"]', "x", asset_id),
                )
        with AssetsClient(emulator.base_url, lambda: "test-key") as client:
            result = verify(Ledger(store, {}), Admin(store), client, repair=True)
    finally:
        store.close()
    assert [sorted(ids) for ids in result.duplicates.values()] == [sorted([first, second])]
    assert result.removed == 0
    assert {a["asset_id"] for a in emulator.assets()} == {first, second}
