"""Small parts of issue 10: rule explanations, folder names, the sync summary, the notify
message, the [metrics]/[notify] config keys, and the console level under a progress bar."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from syncd import log
from syncd.alerts import message_for
from syncd.config import parse
from syncd.errors import ConfigError
from syncd.steer import resolve_folder
from syncd.summary import Summary
from syncd.tags import Rules

PATHS = [
    "a.jpg", "A.JPG", ".hidden.jpg", "x/.git/a.jpg", "raw/a.jpg", "a.psd", "a.tmp", "~a.jpg",
    "@eaDir/a.jpg", "notes.txt", "deep/er/a.png", "Thumbs.db", "a.xmp", "clients/old/a.jpg",
]  # fmt: skip


@pytest.mark.parametrize("relpath", PATHS)
def test_why_ignored_agrees_with_ignores_file(relpath: str) -> None:
    """A reason is given exactly when the file is ignored: explain never contradicts the scan."""
    rules = Rules(exclude=["raw", "*.psd", "clients/old/*"])
    assert (rules.why_ignored(relpath) is not None) == rules.ignores_file(relpath)


def test_why_ignored_names_the_rule() -> None:
    """Each kind of rule is named in words."""
    rules = Rules(exclude=["raw"])
    assert "hidden" in (rules.why_ignored(".a.jpg") or "")
    assert "temporary" in (rules.why_ignored("a.part") or "")
    assert "exclude" in (rules.why_ignored("raw/a.jpg") or "")
    assert "include" in (rules.why_ignored("a.txt") or "")


def test_folders_are_found_by_config_path_absolute_path_or_name(tmp_path: Path) -> None:
    """`hot1` as written in the config (from any cwd), its absolute path, or its name."""
    conf = tmp_path / "syncd.toml"
    text = '[[folders]]\npath = "studio/hot1"\n[[folders]]\npath = "hot2"\n'
    config = parse(text, source=conf)
    elsewhere = tmp_path / "somewhere"
    assert resolve_folder(config, "studio/hot1", cwd=elsewhere).path == tmp_path / "studio/hot1"
    assert resolve_folder(config, str(tmp_path / "hot2"), cwd=elsewhere).path == tmp_path / "hot2"
    assert resolve_folder(config, "hot1", cwd=elsewhere).path == tmp_path / "studio/hot1"
    assert resolve_folder(config, "hot3", cwd=elsewhere) is None


def test_summary_exit_codes_say_why() -> None:
    """2: refused key; 1: new failures or queued work; else 0 (old failures don't count)."""
    assert Summary(stopped="key").exit_code == 2
    assert Summary(failed_count=1).exit_code == 1 and Summary(queued=3).exit_code == 1
    old = Summary(uploaded=4, failed_before=2, held=1)
    assert old.exit_code == 0
    text = "\n".join(old.lines())
    assert "2 job(s) failed in an earlier pass" in text and "held" in text
    assert text.endswith("exit 0: done; the held deletions wait for a person")


def test_a_burst_is_summarised_in_one_message() -> None:
    """Counts by kind are complete; events beyond the first 50 are counted as `more`."""
    batch = [{"kind": "file_failed", "path": f"{i}.jpg"} for i in range(60)]
    message = message_for([*batch, {"kind": "key_rejected"}])
    assert message["counts"] == {"file_failed": 60, "key_rejected": 1}
    assert len(message["events"]) == 50 and message["more"] == 11
    assert "60 file failed" in message["summary"]


def test_metrics_and_notify_config_keys() -> None:
    """listen is host:port; command is an argv whose repeats are kept; typos are errors."""
    config = parse(
        '[metrics]\nlisten = "127.0.0.1:9464"\n[notify]\ncommand = ["a", "-x", "-x"]\n'
        '[[folders]]\npath = "/srv/hot"\n'
    )
    assert config.metrics.listen == "127.0.0.1:9464"
    assert config.notify.command == ("a", "-x", "-x")
    with pytest.raises(ConfigError, match=r"metrics\.listen"):
        parse('[metrics]\nlisten = "9464"\n[[folders]]\npath = "/srv/hot"\n')
    with pytest.raises(ConfigError, match=r"notify\.command"):
        parse('[notify]\ncommand = "mail x"\n[[folders]]\npath = "/srv/hot"\n')


def test_console_log_is_held_to_warnings_under_a_progress_bar() -> None:
    """While sync's bar runs, info lines stay off the terminal; the level is restored after."""
    log.configure("info", "console")
    before = log.raise_console_level("warning")
    handler = logging.getLogger().handlers[-1]
    assert handler.level == logging.WARNING
    log.set_console_level(before)
    assert handler.level == before
