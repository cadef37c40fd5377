"""Bounded memory for images: four conversions of a large TIFF at once stay under the bound."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
#: The README's bound for the prepare step ("Memory"): one 88 MP re-encode and the process.
PEAK_BOUND_MB = 800

_FOUR_AT_ONCE = """
import resource, sys, threading
from pathlib import Path
from syncd import imaging
data = Path(sys.argv[1]).read_bytes()
out = []
def convert():
    out.append(imaging.prepare(data, "big.tif", convert=["tiff"], oversize="downscale"))
threads = [threading.Thread(target=convert) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert len(out) == 4 and all(p.format == "jpeg" for p in out)
print("PEAK_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.slow
def test_four_concurrent_conversions_of_an_88_megapixel_tiff_stay_bounded(tmp_path: Path):
    """Each conversion alone peaks near 650 MB; four at once must not add up (one slot)."""
    width, height = 10_800, 8_150  # 88 MP, as a medium-format camera writes
    image = Image.new("RGB", (width, height), (200, 180, 160))
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 97):
        draw.line([(x, 0), (width - x, height)], fill=(x % 255, 40, 90), width=9)
    tiff = tmp_path / "big.tif"
    image.save(tiff, compression="tiff_lzw")  # small on disk, 88 MP decoded
    image.close()
    done = subprocess.run(
        [sys.executable, "-c", _FOUR_AT_ONCE, str(tiff)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    peak = int(done.stdout.split("PEAK_MB")[1])
    print(f"four concurrent 88 MP TIFF conversions: peak RSS {peak} MB (bound {PEAK_BOUND_MB})")
    assert peak < PEAK_BOUND_MB
