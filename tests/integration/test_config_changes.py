"""What a changed config does to work already queued, and a lost database under `sync`."""

from __future__ import annotations

from pathlib import Path

from syncd.store import Store
from tests.running import Running
from tests.support import config_text, wait_until, write_image


def test_a_deletion_queued_before_mirroring_was_switched_off_is_dropped(
    start_daemon, hot: Path
) -> None:
    """A release waiting out its grace is cancelled, not sent, once mirror_deletes = false."""
    run: Running = start_daemon(grace=3600)
    write_image(hot / "a.jpg", 400)
    run.wait_assets(1)
    (hot / "a.jpg").unlink()
    wait_until(lambda: run.jobs("kind = 'delete' AND state = 'waiting'"), message="release")
    run.stop()
    store_path = run.config.state.path
    run2: Running = start_daemon(grace=0, extra_folder="mirror_deletes = false")
    assert run2.config.state.path == store_path
    assert run2.daemon.store is not None
    with run2.daemon.store.write() as conn:  # the grace is over: the job is due now
        conn.execute("UPDATE jobs SET not_before = 0 WHERE kind = 'delete'")
    wait_until(
        lambda: run2.jobs("kind = 'delete' AND state = 'cancelled'"),
        message="the queued deletion cancelled",
    )
    assert len(run2.assets()) == 1
    assert run2.emulator.stats()["requests"].get("DELETE /v1/assets/{id}", 0) == 0


def test_sync_on_a_lost_database_uploads_nothing_twice(tmp_path: Path, emulator, hot, cli) -> None:
    """`syncd sync` with its state database deleted indexes the library and sends no POST."""
    for i in range(5):
        write_image(hot / "s" / f"{i}.jpg", 410 + i)
    conf = tmp_path / "sync.toml"
    state = tmp_path / "sync-state.db"
    conf.write_text(config_text(emulator.base_url, [hot], state, settle=0))
    conf.chmod(0o600)
    assert cli("sync", "-c", conf).returncode == 0
    assert len(emulator.assets()) == 5
    for suffix in ("", "-wal", "-shm"):
        Path(f"{state}{suffix}").unlink(missing_ok=True)
    again = cli("sync", "-c", conf)
    assert again.returncode == 0, again.stderr
    assert emulator.stats()["requests"]["POST /v1/training-asset"] == 5
    assert len(emulator.assets()) == 5


def test_the_daemon_prunes_finished_jobs_older_than_a_month(start_daemon, hot: Path) -> None:
    """A done job from long ago is removed by the running daemon; a recent one stays."""
    run: Running = start_daemon()
    write_image(hot / "a.jpg", 420)
    run.wait_assets(1)
    run.stop()
    store = Store.open(run.config.state.path, lock=False)
    with store.write() as conn:
        conn.execute("UPDATE jobs SET updated_at = 1000 WHERE kind = 'file'")
    recent = store.query("SELECT count(*) AS n FROM jobs WHERE kind = 'upload'")[0]["n"]
    store.close()
    run2: Running = start_daemon()
    wait_until(lambda: not run2.jobs("kind = 'file' AND updated_at = 1000"), message="pruned")
    assert len(run2.jobs("kind = 'upload'")) == recent
