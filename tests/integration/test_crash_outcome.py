"""kill -9 once an upload's POST was answered and its outcome recorded, before that
record reached the disk (outcomes do not wait for it): the next start finds the asset by
looking, adopts it, and sends nothing twice.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from syncd.emulator import EmulatorServer
from tests.integration.test_crash import alive, expected_pairs, library_pairs, start
from tests.support import config_text, wait_until, write_image, write_private

#: Rounds at most; the first kill that lands in the window ends the test. The window (from
#: the log line to the next commit) is a millisecond or two: beside two CPU-bound
#: processes, 8 rounds missed it in 2 runs of 9.
ROUNDS = 20
POSTS = "POST /v1/training-asset"


def upload_state(db: Path, relpath: str) -> str | None:
    """The state of the latest upload job for a file, as the disk holds it."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute(
            "SELECT state FROM jobs WHERE kind = 'upload' AND relpath = ? ORDER BY id DESC",
            (relpath,),
        ).fetchone()
    return None if row is None else str(row[0])


def kill_after_upload_done(proc: subprocess.Popen[bytes], log: Path, relpath: str) -> None:
    """SIGKILL the moment the daemon logs the upload as done (its outcome recorded)."""
    wait_until(
        lambda: alive(proc, log) and relpath in done_lines(log), 30, interval=0.001,
        message=f"upload.done for {relpath}",
    )  # fmt: skip
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def done_lines(log: Path) -> str:
    return "\n".join(line for line in log.read_text().splitlines() if "upload.done" in line)


@pytest.mark.timeout(300)
def test_an_outcome_lost_with_its_batch_is_adopted_not_sent_twice(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """Killed after upload.done with the job still `uploading` on disk: after restart the
    asset is adopted (one POST per file, one asset per file), until such a kill happened."""
    hot, db, log = tmp_path / "hot", tmp_path / "state.db", tmp_path / "daemon.log"
    hot.mkdir()
    conf = write_private(
        tmp_path / "syncd.toml",
        config_text(emulator.base_url, [hot], db, tags=("crash",), concurrency=1),
    )
    proc = start(conf, log)
    lost = 0
    try:
        for i in range(ROUNDS):
            relpath = f"img{i}.jpg"
            write_image(hot / relpath, 900 + i)
            kill_after_upload_done(proc, log, relpath)
            if upload_state(db, relpath) == "uploading":
                lost += 1  # the POST went through, its outcome is not on disk
            proc = start(conf, log)
            if lost:
                break
        want = expected_pairs(hot)
        wait_until(
            lambda: alive(proc, log) and library_pairs(emulator) == want, 60,
            message="the library converged",
        )  # fmt: skip
        wait_until(lambda: upload_state(db, relpath) == "done", 30, message="the upload done")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert lost, f"no kill in {ROUNDS} rounds landed before an outcome reached the disk"
    assert emulator.stats()["requests"][POSTS] == len(want), "an upload was sent twice"
    assert max(library_pairs(emulator).values()) == 1
    assert "upload.adopt" in log.read_text()
