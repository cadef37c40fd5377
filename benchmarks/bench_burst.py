"""A camera-card dump: N files land at once; how long until every one is in the library?

    python benchmarks/bench_burst.py [--files 2000] [--concurrency 4]

Baseline, in the same script against the same kind of emulator: the bare minimum, each
file read and POSTed once by ``concurrency`` threads with the same client and no queue,
no hashing, no database. Then the daemon: the files are copied into a watched folder and
the clock runs until the library holds all of them and the queue is idle. Prints both
times, files/s, the ratio, the requests the daemon made per file, and the daemon's
thread count (fixed, whatever N is).
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from syncd import log
from syncd.api import AssetsClient
from syncd.config import load
from syncd.daemon import Daemon, Timers
from syncd.emulator import EmulatorServer


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


def baseline(paths: list[Path], base: Path, concurrency: int) -> float:
    with EmulatorServer(base / "emu-baseline", api_key="k", processing_seconds=0) as emu:
        client = AssetsClient(emu.base_url, lambda: "k")
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
        assert len(emu.assets()) == len(paths)
    return elapsed


def daemon_run(source: Path, base: Path, count: int, concurrency: int) -> tuple[float, int, int]:
    hot = base / "hot"
    hot.mkdir()
    with EmulatorServer(base / "emu-daemon", api_key="k", processing_seconds=0) as emu:
        conf = base / "syncd.toml"
        conf.write_text(
            f'[api]\nbase_url = "{emu.base_url}"\napi_key = "k"\nconcurrency = {concurrency}\n'
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
        while len(emu.assets()) < count or daemon.ctx.ledger.outstanding():
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        threads = threading.active_count()
        requests = sum(emu.stats()["requests"].values())
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
