"""Measures of the daemon as a whole: a burst, a first start, latency, fsyncs, RSS, READY."""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx

from benchmarks.common import (
    DaemonProc,
    cpu_meter,
    emulator,
    emulator_pid,
    emulator_state,
    jpeg,
    make_tree,
    perf_counts_syncs,
    rss_kb,
    state_at_rest,
    state_bytes,
    uploaded,
    wait_uploaded,
    write_config,
)

Result = dict[str, float]
CONCURRENCY = 4
SETTLE = 0.3


def raw_uploader(paths: list[Path], base: Path) -> Result:
    """Baseline: bare httpx POSTs by ``CONCURRENCY`` threads; no queue, hash or database.

    Seconds (``elapsed_s``), and the CPU seconds of this process's threads and of the
    emulator meanwhile."""
    with emulator(base / "emu-raw") as url:
        client = httpx.Client(base_url=url, headers={"Authorization": "Bearer k"})

        def send(path: Path) -> None:
            answer = client.post(
                "/v1/training-asset",
                files={"file": (path.name, path.read_bytes(), "image/jpeg")},
                data={"name": path.stem, "tags[]": ["bench", path.parent.name]},
            )
            answer.raise_for_status()

        used = cpu_meter(os.getpid(), emulator_pid(url))
        start = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(send, paths))
        elapsed = time.perf_counter() - start
        client_cpu, server_cpu = used()
        client.close()
    return {"elapsed_s": elapsed, "client_cpu_s": client_cpu, "emulator_cpu_s": server_cpu}


#: The burst alternates the raw uploader and syncd this many times, each against a fresh
#: emulator; the figures are the medians. One pair of runs on a shared machine can be a
#: third off either way (the raw baseline alone swung from 149 to 349 files/s).
BURST_ROUNDS = 3


def burst(base: Path, files: int, rounds: int = BURST_ROUNDS) -> Result:
    """N files dropped at once, until all are in the library, alternating with the raw
    uploader (medians of ``rounds`` pairs); RSS, state and commits of the last round."""
    source = base / "card"
    paths = make_tree(source, files, salt=1)
    raws: list[Result] = []
    runs: list[Result] = []
    for i in range(rounds):
        (base / f"raw{i}").mkdir()
        raws.append(raw_uploader(paths, base / f"raw{i}"))
        runs.append(_burst_once(base / f"syncd{i}", source, files))
    raw_s = [raw["elapsed_s"] for raw in raws]
    elapsed = [run.pop("elapsed_s") for run in runs]
    ratios = [raw / took for raw, took in zip(raw_s, elapsed, strict=True)]
    return {
        "raw_httpx_files_per_s": files / statistics.median(raw_s),
        "syncd_files_per_s": files / statistics.median(elapsed),
        "ratio_syncd_vs_raw": statistics.median(ratios),
        **{f"ratio_round_{i + 1}": ratio for i, ratio in enumerate(ratios)},
        "rounds": rounds,
        **_cpu_per_file(raws, runs, files),
        **runs[-1],
    }


def _cpu_per_file(raws: list[Result], runs: list[Result], files: int) -> Result:
    """CPU milliseconds per file (medians over the rounds), and the ratio syncd could
    reach at most if its CPU and its emulator's kept every core busy (``cpu_bound_ratio``):
    the two uploaders and the emulator share this machine's cores."""
    cores = len(os.sched_getaffinity(0))

    def per_file(rows: list[Result], key: str) -> float:
        return statistics.median(row.pop(key) for row in rows) * 1000 / files

    bounds = [
        cores * raw["elapsed_s"] / (run["daemon_cpu_s"] + run["emulator_cpu_s"])
        for raw, run in zip(raws, runs, strict=True)
    ]
    return {
        "cpu_ms_per_file_raw_client": per_file(raws, "client_cpu_s"),
        "cpu_ms_per_file_raw_emulator": per_file(raws, "emulator_cpu_s"),
        "cpu_ms_per_file_syncd_daemon": per_file(runs, "daemon_cpu_s"),
        "cpu_ms_per_file_syncd_emulator": per_file(runs, "emulator_cpu_s"),
        "cpu_bound_ratio": statistics.median(bounds),
        "cores": cores,
    }


def _burst_once(base: Path, source: Path, files: int) -> Result:
    """One syncd burst: the card's files copied into a watched folder, against a fresh
    emulator, until all are uploaded; seconds (``elapsed_s``), RSS, state, commits."""
    hot, db = base / "hot", base / "state.db"
    hot.mkdir(parents=True)
    with emulator(base / "emu-daemon") as url:
        daemon = DaemonProc(write_config(base, url, hot, db, settle=SETTLE, conc=CONCURRENCY), base)
        daemon.start()
        ready = daemon.wait_ready()
        time.sleep(1.0)
        idle_before = rss_kb(daemon.pid)
        used = cpu_meter(daemon.pid, emulator_pid(url))
        start = time.perf_counter()
        shutil.copytree(source, hot, dirs_exist_ok=True)
        copy = time.perf_counter() - start
        elapsed, peak = wait_uploaded(db, files, 600, daemon.pid)
        elapsed += copy
        daemon_cpu, server_cpu = used()
        time.sleep(2.0)
        idle_after = rss_kb(daemon.pid)
        counts = daemon.stop()
        remote = len(emulator_state(url)["assets"])  # type: ignore[arg-type]
    state = state_bytes(db)
    rest = state_at_rest(db)
    return {
        "elapsed_s": elapsed,
        "daemon_cpu_s": daemon_cpu,
        "emulator_cpu_s": server_cpu,
        "assets_in_library": remote,
        "write_transactions_per_file": counts.get("write_transactions", 0) / files,
        "records_per_file": counts.get("records", 0) / files,
        "start_to_ready_s_empty": ready,
        "rss_idle_mb_before": idle_before / 1024,
        "rss_burst_peak_mb": peak / 1024,
        "rss_idle_mb_after": idle_after / 1024,
        **{f"state_{k}": v for k, v in state.items()},
        **{f"state_at_rest_{k}": v for k, v in rest.items()},
    }


def fsyncs(base: Path, files: int) -> Result:
    """fsync/fdatasync calls and write transactions per file in a burst.

    The calls are counted by ``perf stat`` where it can (``under_strace`` 0), else by
    strace (1), whose stop at every call can change the batching it measures.
    """
    source = base / "card"
    make_tree(source, files, salt=2)
    hot, db = base / "hot", base / "state.db"
    hot.mkdir()
    with emulator(base / "emu") as url:
        conf = write_config(base, url, hot, db, settle=SETTLE, conc=CONCURRENCY)
        daemon = DaemonProc(conf, base, count_syncs=True)
        daemon.start()
        daemon.wait_ready()
        time.sleep(0.5)
        shutil.copytree(source, hot, dirs_exist_ok=True)
        wait_uploaded(db, files, 600)
        counts = daemon.stop()
    syncs = counts.get("fsync", 0) + counts.get("fdatasync", 0)
    return {
        "fsyncs_per_file": syncs / files,
        "write_transactions_per_file": counts.get("write_transactions", 0) / files,
        "records_per_file": counts.get("records", 0) / files,
        "files": files,
        "under_strace": float(not perf_counts_syncs()),
    }


def latency(base: Path, files: int) -> Result:
    """close -> POST for files arriving one by one, minus the settle time."""
    hot, db = base / "hot", base / "state.db"
    (hot / "arrivals").mkdir(parents=True)
    closed: dict[str, float] = {}
    with emulator(base / "emu") as url:
        daemon = DaemonProc(write_config(base, url, hot, db, settle=SETTLE, conc=CONCURRENCY), base)
        daemon.start()
        daemon.wait_ready()
        time.sleep(1.0)
        for i in range(files):
            data = jpeg(i, salt=3)
            with open(hot / "arrivals" / f"IMG_{i:05d}.jpg", "wb") as out:
                out.write(data)
            closed[hashlib.sha256(data).hexdigest()] = time.time()
            time.sleep(0.04)
        wait_uploaded(db, files, 300)
        assets = emulator_state(url)["assets"]
        daemon.stop()
    lags = []
    for asset in assets:  # type: ignore[attr-defined]
        created = datetime.fromisoformat(asset["created_at"].replace("Z", "+00:00")).timestamp()
        lags.append((created - closed[asset["sha256"]] - SETTLE) * 1000)
    lags.sort()
    return {
        "p50_ms": statistics.median(lags),
        "p95_ms": lags[int(0.95 * (len(lags) - 1))],
        "max_ms": lags[-1],
        "settle_s": SETTLE,
        "files": len(lags),
    }


def first_start(base: Path, present: int, window: int, burst_rate: float | None) -> Result:
    """A first start with ``present`` files in the folder: files/s over the first uploads."""
    hot, db = base / "hot", base / "state.db"
    make_tree(hot, present, salt=4)
    with emulator(base / "emu") as url:
        daemon = DaemonProc(write_config(base, url, hot, db, settle=SETTLE, conc=CONCURRENCY), base)
        daemon.start()
        ready = daemon.wait_ready()
        t0 = time.perf_counter()
        marks: dict[int, float] = {}
        half = window // 2
        peak = 0
        while len(marks) < 2 and time.perf_counter() - t0 < 900:
            up = uploaded(db)
            peak = max(peak, rss_kb(daemon.pid))
            for mark in (half, window):
                if up >= mark and mark not in marks:
                    marks[mark] = time.perf_counter() - t0
            time.sleep(0.1)
        daemon.stop()
    first = half / marks[half]
    second = (window - half) / (marks[window] - marks[half])
    out = {
        "present": present,
        "start_to_ready_s": ready,
        "files_per_s_first_window": window / marks[window],
        "files_per_s_first_half": first,
        "files_per_s_second_half": second,
        "rss_peak_mb": peak / 1024,
    }
    if burst_rate:
        out["ratio_vs_burst"] = (window / marks[window]) / burst_rate
    return out
