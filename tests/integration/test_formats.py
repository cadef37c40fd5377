"""Formats people drop: convert includes its extensions; camera raw is set aside."""

from __future__ import annotations

import time
from pathlib import Path

import structlog

from syncd import report
from syncd.config import parse
from syncd.emulator import EmulatorServer
from tests.running import Launcher
from tests.support import image_bytes, wait_until, write_image


def test_naming_a_format_in_convert_includes_its_extensions() -> None:
    """convert = ["tiff"] adds *.tif and *.tiff to the default include."""
    config = parse('[[folders]]\npath = "/srv/hot"\nconvert = ["tiff", "heic"]\n')
    include = config.folders[0].include
    assert include[:4] == ("*.jpg", "*.jpeg", "*.png", "*.webp")
    assert {"*.tif", "*.tiff", "*.heic", "*.heif"} <= set(include)


def test_convert_tiff_alone_uploads_a_tif_file(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """With only convert = ["tiff"] set, a .tif dropped in is converted and uploaded."""
    run = start_daemon(extra_folder='convert = ["tiff"]\n')
    write_image(hot / "scan.tif", 11, fmt="TIFF")
    [asset] = run.wait_assets(1)
    assert asset["name"] == "scan"
    assert asset["format"] in ("jpeg", "png")


def test_camera_raw_is_reported_once_per_folder_and_never_uploaded(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """A DNG or CR2 (TIFF inside) is not uploaded from its preview; one warning per folder."""
    with structlog.testing.capture_logs() as logs:
        run = start_daemon(
            extra_folder='include = ["*.jpg", "*.dng", "*.cr2"]\nconvert = ["tiff"]\n'
        )
        (hot / "IMG_0001.dng").write_bytes(image_bytes(12, "TIFF", size=(160, 107)))
        (hot / "IMG_0002.CR2").write_bytes(image_bytes(13, "TIFF", size=(160, 107)))
        write_image(hot / "ok.jpg", 14)
        [asset] = run.wait_assets(1)
        wait_until(run.idle, 10, message="an idle queue")
    assert asset["name"] == "ok"
    raw = [e for e in logs if e["event"] == "folder.camera_raw"]
    assert len(raw) == 1 and raw[0]["hint"] == "camera raw: export JPEG/PNG/WebP"
    status = report.collect(run.config, now=time.time(), stale_after=15)
    assert status["failures"]["count"] == 0
    assert status["problem_files"] == 2
    assert emulator.stats()["requests"]["POST /v1/training-asset"] == 1
