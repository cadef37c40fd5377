"""Helpers shared by the test trees: images, configs, waiting with a deadline, a fake clock."""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

T = TypeVar("T")


#: The user property under which a fault-suite test carries its row of the figures table.
FAULT_ROW = "fault_row"


def image_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
    """A small, valid image whose bytes differ for every seed."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    for _ in range(20):
        img.putpixel(
            (rng.randrange(size[0]), rng.randrange(size[1])),
            (rng.randrange(256), rng.randrange(256), rng.randrange(256)),
        )
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def noise_jpeg(seed: int, *, side: int = 256, quality: int = 95) -> bytes:
    """A valid JPEG that does not compress well (random pixels): large for its side."""
    pixels = random.Random(seed).randbytes(side * side * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(out, "JPEG", quality=quality)
    return out.getvalue()


def write_image(path: Path, seed: int, fmt: str = "JPEG") -> bytes:
    """Write an image atomically (temp name, then rename), as a careful tool would."""
    data = image_bytes(seed, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    tmp.rename(path)
    return data


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last: {last!r}")


class FakeClock:
    """Wall and monotonic time that only moves when the code under test sleeps.

    Callable itself, for the parts that take a ``clock`` function (the store, the ledger).
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def toml_list(items: Sequence[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def write_private(path: Path, text: str) -> Path:
    """Write a config that holds the key, readable by its owner only (syncd refuses others)."""
    path.write_text(text)
    path.chmod(0o600)
    return path


def config_text(
    base_url: str,
    folders: Sequence[Path],
    state: Path,
    *,
    api_key: str = "test-key",
    api_key_file: Path | None = None,
    timeout: float = 5,
    tags: Sequence[str] = ("studio",),
    settle: float = 0.2,
    grace: float = 0.0,
    max_deletes: int = 50,
    extra_api: str = "",
    extra_folder: str = "",
    concurrency: int = 2,
) -> str:
    """A complete syncd config for tests, with short settle and grace times.

    The key is inline unless ``api_key_file`` is given; then the file is the only source.
    """
    key = f'api_key_file = "{api_key_file}"' if api_key_file else f'api_key = "{api_key}"'
    text = (
        f'[api]\nbase_url = "{base_url}"\n{key}\ntimeout_seconds = {timeout}\n'
        f"concurrency = {concurrency}\n{extra_api}\n"
        f'[state]\npath = "{state}"\n\n[log]\nlevel = "debug"\nformat = "json"\n'
    )
    for folder in folders:
        text += (
            f'\n[[folders]]\npath = "{folder}"\ntags = {toml_list(tags)}\n'
            f"settle_seconds = {settle}\ndelete_grace_seconds = {grace}\n"
            f"max_deletes = {max_deletes}\n{extra_folder}\n"
        )
    return text
