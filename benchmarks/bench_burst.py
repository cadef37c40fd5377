"""A camera-card dump: N files land at once; how long until every one is in the library?

    python benchmarks/bench_burst.py [--files 2000] [--concurrency 4]

The emulator runs as a process of its own (as the real API would be remote), so it does
not compete with the daemon for the interpreter. Baseline, in the same script against the
same kind of emulator: the bare minimum, each
file read and POSTed once by ``concurrency`` threads with the same client and no queue,
no hashing, no database. Then the daemon: the files are copied into a watched folder and
the clock runs until the library holds all of them and the queue is idle. Prints both
times, files/s, the ratio, the requests the daemon made per file, and the daemon's
thread count (fixed, whatever N is).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from syncd import log
from syncd.api import AssetsClient
from syncd.config import load
from syncd.daemon import Daemon, Timers


def make_files(folder: Path, count: int) -> list[Path]:
    rng = random.Random(7)
    paths = []
    for i in range(count):
        img = Image.new("RGB", (96, 64), (rng.randrange(256), rng.randrange(256), i % 256))
        img.putpixel((i % 96, (i // 96) % 64), (255, 255, 255))
        out = io.BytesIO()
        img.save(out, "JPEG")
        path = folder / f"card{i // 500}" / f"IMG_{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(out.getvalue())
        paths.append(path)
    return paths


@contextmanager
def emulator(data: Path) -> Iterator[str]:
    """`syncd emulator` as a separate process; yields its base URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syncd.emulator",
            "--port",
            "0",
            "--api-key",
            "k",
            "--processing-seconds",
            "0",
            "--data",
            str(data),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    match = re.search(r"http://\S+", proc.stdout.readline())
    assert match, "the emulator did not say where it listens"
    try:
        yield match.group(0)
    finally:
        proc.terminate()
        proc.wait(10)


def count_assets(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_emulator/state") as answer:
        return len(json.load(answer)["assets"])


def count_requests(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_emulator/state") as answer:
        return sum(json.load(answer)["requests"].values())


def baseline(paths: list[Path], base: Path, concurrency: int) -> float:
    with emulator(base / "emu-baseline") as url:
        client = AssetsClient(url, lambda: "k")
        start = time.perf_counter()

        def send(path: Path) -> None:
            client.upload(
                path.read_bytes(),
                filename=path.name,
                content_type="image/jpeg",
                name=path.stem,
                tags=["bench", path.parent.name],
            )

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(send, paths))
        elapsed = time.perf_counter() - start
        client.close()
        assert count_assets(url) == len(paths)
    return elapsed


def daemon_run(source: Path, base: Path, count: int, concurrency: int) -> tuple[float, int, int]:
    hot = base / "hot"
    hot.mkdir()
    with emulator(base / "emu-daemon") as url:
        conf = base / "syncd.toml"
        conf.write_text(
            f'[api]\nbase_url = "{url}"\napi_key = "k"\nconcurrency = {concurrency}\n'
            f'[state]\npath = "{base / "state.db"}"\n[log]\nlevel = "warning"\n'
            f'[[folders]]\npath = "{hot}"\ntags = ["bench"]\nsettle_seconds = 0.5\n'
        )
        daemon = Daemon(load(conf), timers=Timers(tick=0.05))
        daemon.start()
        thread = threading.Thread(target=daemon.run_forever, daemon=True)
        thread.start()
        while str(hot) not in daemon.watchers:
            time.sleep(0.01)
        start = time.perf_counter()
        shutil.copytree(source, hot, dirs_exist_ok=True)
        assert daemon.ctx is not None
        while daemon.ctx.ledger.outstanding() or count_assets(url) < count:
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        threads = threading.active_count()
        requests = count_requests(url)
        daemon.request_stop()
        thread.join(15)
        daemon.stop()
    return elapsed, requests, threads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    log.configure("warning")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        source = base / "card"
        paths = make_files(source, args.files)
        base_s = baseline(paths, base, args.concurrency)
        ours, requests, threads = daemon_run(source, base, args.files, args.concurrency)
    print(
        f"baseline: bare POSTs, {args.concurrency} threads  {base_s:7.2f} s  "
        f"{args.files / base_s:7.1f} files/s"
    )
    print(
        f"syncd: drop to all uploaded (settle 0.5 s)  {ours:7.2f} s  "
        f"{args.files / ours:7.1f} files/s"
    )
    print(
        f"ratio syncd / baseline: {ours / base_s:.2f}x; requests per file: "
        f"{requests / args.files:.2f}; threads in the process: {threads}"
    )


if __name__ == "__main__":
    main()
