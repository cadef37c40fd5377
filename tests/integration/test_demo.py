"""`syncd demo`, the README's first command, run exactly as a newcomer would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def run_demo(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env_tmp = tmp_path / "tmp"
    env_tmp.mkdir()
    return subprocess.run(
        [sys.executable, "-m", "syncd", "demo", *args], capture_output=True, text=True,
        timeout=60, check=False, stdin=subprocess.DEVNULL, cwd=tmp_path,
        env={**_env(), "TMPDIR": str(env_tmp), "COLUMNS": "200"},
    )  # fmt: skip


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}


@pytest.mark.timeout(90)
def test_demo_uploads_mirrors_a_deletion_and_cleans_up(tmp_path: Path) -> None:
    """Five products go up with their tags, a deletion is mirrored, a summary; nothing is left."""
    result = run_demo(tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    uploads = re.findall(r"uploaded (SKU-\d+) +tags: (\w+(?:, \w+)*)", out)
    assert sorted(uploads) == [
        ("SKU-1042", "demo, shoes, red"), ("SKU-1043", "demo, shoes, red"),
        ("SKU-1077", "demo, shoes, blue"), ("SKU-2001", "demo, bags"),
        ("SKU-2040", "demo, bags, leather"),
    ]  # fmt: skip
    assert re.search(r"deleted +SKU-2001", out)
    assert "no second upload" in out
    summary = re.search(r"Summary: (\d+) files tracked, (\d+) assets in the library", out)
    assert summary is not None and summary.groups() == ("5", "4")
    assert list((tmp_path / "tmp").iterdir()) == []
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(90)
def test_demo_stays_up_when_asked_and_says_where(tmp_path: Path) -> None:
    """With --seconds it stays up, prints the hot folder and the emulator URL, then ends."""
    result = run_demo("--keep", "--seconds", "0.5", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Drop images into \S+/hot", result.stdout)
    assert re.search(r"the emulator is at http://127\.0\.0\.1:\d+", result.stdout)
    assert list((tmp_path / "tmp").iterdir()) == []
