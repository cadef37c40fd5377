"""`syncd check`'s findings, from real folders and files under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd import checks
from syncd.apikey import ApiKey
from syncd.checks import Level
from syncd.config import ApiConfig, Config, FolderConfig, StateConfig
from syncd.store import Store


def limit_file(tmp_path: Path, limit: int) -> Path:
    path = tmp_path / "max_user_watches"
    path.write_text(f"{limit}\n")
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A hot folder with 9 watched sub-folders and 3 that are never watched."""
    root = tmp_path / "hot"
    for rel in ("a/b/c", "d/e", "f", "g/h", "g/i", "@eaDir/x", ".hidden", "raw"):
        (root / rel).mkdir(parents=True)
    return root


def config_for(*folders: FolderConfig, state: Path | None = None) -> Config:
    return Config(folders=folders, state=StateConfig(path=state or Path("state.db")))


def test_watch_count_leaves_out_ignored_and_excluded_folders(tree: Path, tmp_path: Path) -> None:
    """The root and its 9 sub-folders take watches; @eaDir, hidden and excluded ones do not."""
    config = config_for(FolderConfig(tree, exclude=("raw",)))
    (finding,) = checks.watch_findings(config, limit_file(tmp_path, 1000))
    assert finding.level is Level.OK
    assert finding.text == "10 directories to watch, limit 1000"


def test_watch_count_close_to_the_limit_is_a_warning(tree: Path, tmp_path: Path) -> None:
    """Over 80 % of the limit: a warning with the sysctl fix, which does not fail the check."""
    findings = checks.watch_findings(config_for(FolderConfig(tree)), limit_file(tmp_path, 12))
    assert [f.level for f in findings] == [Level.WARNING]
    assert "close to the inotify limit" in findings[0].text
    assert "sysctl fs.inotify.max_user_watches=" in findings[0].fix
    assert not checks.failed(findings)


def test_watch_count_over_the_limit_is_a_problem(tree: Path, tmp_path: Path) -> None:
    """Over the limit: a problem, the fix names the sysctl and a sysctl.d file."""
    findings = checks.watch_findings(config_for(FolderConfig(tree)), limit_file(tmp_path, 5))
    assert [f.level for f in findings] == [Level.PROBLEM]
    assert "more than 5 directories" in findings[0].text
    assert "/etc/sysctl.d/" in findings[0].fix and "524288" in findings[0].fix
    assert checks.failed(findings)


def test_polling_folders_need_no_watches(tree: Path, tmp_path: Path) -> None:
    """A polling folder is not counted against the inotify limit."""
    findings = checks.watch_findings(
        config_for(FolderConfig(tree, polling=True)), limit_file(tmp_path, 1)
    )
    assert [(f.level, f.text) for f in findings] == [(Level.OK, "no folder needs inotify watches")]


def test_count_stops_at_the_cap(tree: Path) -> None:
    """Counting a huge tree stops once the answer is known."""
    assert checks.count_dirs([FolderConfig(tree)], cap=3) == 3


def test_missing_and_non_directory_folders_get_their_own_fix(tmp_path: Path) -> None:
    """A missing root says mkdir or mount; a file where a folder should be says so."""
    (tmp_path / "file").write_text("x")
    config = config_for(FolderConfig(tmp_path / "nope"), FolderConfig(tmp_path / "file"))
    missing, not_dir = checks.folder_findings(config)
    assert "folders[0].path" in missing.text and "mkdir -p" in missing.fix
    assert "folders[1].path" in not_dir.text and "directory" in not_dir.fix


def test_a_missing_state_database_is_not_created(tmp_path: Path) -> None:
    """No database yet in a writable folder: fine, and the check creates nothing."""
    (finding,) = checks.state_findings(tmp_path / "state" / "state.db")
    assert finding.level is Level.OK and "created at first run" in finding.text
    assert not (tmp_path / "state").exists()


def test_a_foreign_file_as_state_database_is_a_problem(tmp_path: Path) -> None:
    """A file that is not a syncd database is reported, and left untouched."""
    path = tmp_path / "state.db"
    path.write_bytes(b"not sqlite at all" * 100)
    (finding,) = checks.state_findings(path)
    assert finding.level is Level.PROBLEM and "move the file aside" in finding.fix
    assert path.read_bytes() == b"not sqlite at all" * 100


def test_a_database_held_by_a_running_syncd_is_fine(tmp_path: Path) -> None:
    """The daemon's lock is expected: reported as in use, not as a problem."""
    path = tmp_path / "state.db"
    Store.open(path).close()
    (free,) = checks.state_findings(path)
    assert free.text.endswith("opens and is not in use")
    daemon = Store.open(path)
    try:
        (held,) = checks.state_findings(path)
    finally:
        daemon.close()
    assert held.level is Level.OK and "in use by a running syncd" in held.text


def test_an_open_key_file_is_a_problem_with_chmod_as_fix(tmp_path: Path) -> None:
    """A key file others can read: the problem names it, the fix is chmod 600."""
    key_file = tmp_path / "api_key"
    key_file.write_text("k-123\n")
    key_file.chmod(0o644)
    key = ApiKey(origin="api.api_key_file", file=key_file)
    findings, found = checks.key_findings(Config(api=ApiConfig(api_key=key)))
    assert found is None
    assert [f.level for f in findings] == [Level.PROBLEM]
    assert findings[0].fix == f"chmod 600 {key_file}"
    assert "k-123" not in findings[0].text


def test_no_key_at_all_says_where_one_can_go() -> None:
    """Without any key the fix lists the ways to provide one."""
    findings, found = checks.key_findings(Config())
    assert found is None and "api_key_file" in findings[0].fix


def test_check_warns_when_hard_links_to_others_files_are_allowed(tmp_path: Path) -> None:
    """fs.protected_hardlinks = 0 is a warning with its fix; 1 is fine."""
    from syncd import checks

    setting = tmp_path / "protected_hardlinks"
    setting.write_text("0\n")
    (found,) = checks.hardlink_findings(setting)
    assert found.level is checks.Level.WARNING and "sysctl fs.protected_hardlinks=1" in found.fix
    setting.write_text("1\n")
    (found,) = checks.hardlink_findings(setting)
    assert found.level is checks.Level.OK
