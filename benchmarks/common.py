"""What the measures share: test data, the emulator and the daemon as processes of their own."""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from syncd.admin import Admin
from syncd.store import Store

PER_DIR = 500
ROOT = Path(__file__).parent.parent
ACTIVE = "('pending', 'hashing', 'uploading', 'waiting', 'deleting')"


def base_jpeg() -> bytes:
    img = Image.new("RGB", (96, 64), (90, 140, 200))
    out = io.BytesIO()
    img.save(out, "JPEG")
    return out.getvalue()


_BASE = base_jpeg()


def jpeg(i: int, salt: int = 0) -> bytes:
    """A small valid JPEG, unique per (i, salt): a comment segment right after SOI."""
    comment = b"syncd-bench" + salt.to_bytes(4, "big") + i.to_bytes(8, "big")
    return _BASE[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + _BASE[2:]


def make_tree(root: Path, count: int, *, salt: int = 0, prefix: str = "d") -> list[Path]:
    """``count`` unique JPEGs in folders of 500."""
    paths = []
    for i in range(count):
        d = root / f"{prefix}{i // PER_DIR:04d}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True, exist_ok=True)
        path = d / f"IMG_{i:07d}.jpg"
        path.write_bytes(jpeg(i, salt))
        paths.append(path)
    return paths


@contextlib.contextmanager
def emulator(data: Path) -> Iterator[str]:
    """``syncd emulator`` as a process of its own (the real API is remote); its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd.emulator", "--port", "0", "--api-key", "k",
         "--processing-seconds", "0", "--data", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    match = re.search(r"http://\S+", proc.stdout.readline())
    assert match, "the emulator did not say where it listens"
    url = match.group(0)
    _EMULATOR_PIDS[url] = proc.pid
    try:
        yield url
    finally:
        del _EMULATOR_PIDS[url]
        proc.terminate()
        proc.wait(10)


#: The process of each running emulator, by its URL.
_EMULATOR_PIDS: dict[str, int] = {}


def emulator_pid(url: str) -> int:
    """The process id of the running emulator at ``url``."""
    return _EMULATOR_PIDS[url]


def cpu_seconds(pid: int) -> float:
    """CPU time (user plus system, all threads) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_meter(*pids: int) -> Callable[[], list[float]]:
    """Started now: called later, the CPU seconds each process has used since."""
    start = [cpu_seconds(pid) for pid in pids]
    return lambda: [cpu_seconds(pid) - was for pid, was in zip(pids, start, strict=True)]


def emulator_state(url: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{url}/_emulator/state") as answer:
        return dict(json.load(answer))


def write_config(base: Path, url: str, hot: Path, db: Path, *, settle: float, conc: int) -> Path:
    conf = base / "syncd.toml"
    conf.write_text(
        f'[api]\nbase_url = "{url}"\napi_key = "k"\nconcurrency = {conc}\n'
        f'[state]\npath = "{db}"\n[log]\nlevel = "warning"\n'
        f'[[folders]]\npath = "{hot}"\ntags = ["bench"]\nsettle_seconds = {settle}\n'
    )
    conf.chmod(0o600)  # it holds the key: syncd refuses a config open to others
    return conf


def rss_kb(pid: int, key: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


#: What a daemon loads: imported once into the bytecode cache before any is measured.
_WARM = (
    "import benchmarks.daemon_proc, syncd.daemon, syncd.metrics, syncd.imaging, PIL.Image,"
    " PIL.ImageOps, PIL.JpegImagePlugin, httpx, httpcore, h11, sqlite_utils"
)


@functools.cache
def _bytecode_cache() -> Path:
    """Bytecode of syncd and of all it imports, made once for the whole run.

    A daemon installed by pip starts from bytecode; a checkout run with
    PYTHONDONTWRITEBYTECODE would compile every module of syncd from source at each
    start, a cost no installed daemon pays. The cache is a folder of its own
    (PYTHONPYCACHEPREFIX), filled here before anything is measured, removed at exit.
    """
    cache = Path(tempfile.mkdtemp(prefix="syncd-bench-pyc-"))
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(cache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for cmd in (["-m", "compileall", "-q", "syncd", "benchmarks"], ["-c", _WARM]):
        subprocess.run([sys.executable, *cmd], env=env, cwd=ROOT, check=True)
    return cache


def daemon_env(*, bytecode: bool = True) -> dict[str, str]:
    """The environment of a daemon started by a measure: with syncd's bytecode (default),
    or compiling from source (``bytecode=False``: as the earlier figures were taken)."""
    env = dict(os.environ)
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(_bytecode_cache())
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    return env


#: The kernel's own count of the two calls, per process and its threads (perf's syscall
#: tracepoints): nothing stops the daemon at each call.
_PERF_EVENTS = "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync"


@functools.cache
def perf_counts_syncs() -> bool:
    """Whether ``perf stat`` can count the fsync calls here (it needs the tracepoints)."""
    try:
        probe = subprocess.run(
            ["perf", "stat", "-x,", "-e", _PERF_EVENTS, "true"],
            check=False, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0 and "sys_enter_fdatasync" in probe.stderr


def sync_counter(out: Path) -> list[str]:
    """The command that runs a daemon and counts its fsync and fdatasync calls into ``out``.

    ``perf stat`` where it can: strace stops the daemon at every call it counts, and those
    stops alone changed what was measured (NOTES.md, "The fsyncs measure's two modes").
    strace otherwise, filtered to the two calls.
    """
    if perf_counts_syncs():
        return ["perf", "stat", "-x,", "-e", _PERF_EVENTS, "-o", str(out), "--"]
    return ["strace", "-f", "-qq", "--seccomp-bpf", "-c", "-e", "trace=fsync,fdatasync",
            "-o", str(out)]  # fmt: skip


def _sync_counts(text: str) -> dict[str, int]:
    """fsync and fdatasync calls from what ``sync_counter``'s tool wrote."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if ",syscalls:sys_enter_" in line:  # perf stat -x,: count,unit,event,...
            value, _unit, event = line.split(",")[:3]
            if value.isdigit():
                counts[event.removeprefix("syscalls:sys_enter_")] = int(value)
            continue
        parts = line.split()  # strace -c: a table, the call's name last
        if parts and parts[-1] in ("fsync", "fdatasync"):
            counts[parts[-1]] = int(parts[3] if len(parts) >= 6 else parts[-2])
    return counts


@dataclass
class DaemonProc:
    """``syncd run`` in a process of its own, with sd_notify READY and counters."""

    conf: Path
    base: Path
    count_syncs: bool = False
    bytecode: bool = True
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ready_after: float | None = None
    counts_file: Path = field(init=False)
    syncs_file: Path = field(init=False)
    _sock: socket.socket | None = None
    _drainer: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.counts_file = self.base / "counts.json"
        self.syncs_file = self.base / "syncs.txt"

    def start(self) -> None:
        sock_path = self.base / "notify.sock"
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(sock_path))
        env = {**daemon_env(bytecode=self.bytecode), "NOTIFY_SOCKET": str(sock_path)}
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.daemon_proc",
            str(self.conf),
            str(self.counts_file),
        ]
        if self.count_syncs:
            cmd = [*sync_counter(self.syncs_file), *cmd]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
        self._drainer = threading.Thread(target=self._drain, args=(self._sock,), daemon=True)
        self._drainer.start()

    def _drain(self, sock: socket.socket) -> None:
        """Read every notification (READY, STATUS...): a full socket would block the daemon.

        Ends at the empty read a shutdown gives, before ``stop`` closes the socket: a read
        still under way on a closed descriptor could take the next daemon's READY from a
        new socket given the same number (a start that then never looked ready).
        """
        while True:
            try:
                msg = sock.recv(8192).decode()
            except OSError:
                return
            if not msg:
                return
            if "READY=1" in msg.split("\n") and self.ready_after is None:
                self.ready_after = time.perf_counter() - self.started
                self._ready.set()

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds from start to READY; fails at once if the daemon exits first."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self._ready.wait(min(0.5, max(0.0, deadline - time.monotonic()))):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({self.proc.returncode}) before READY")
            if time.monotonic() >= deadline:
                os.kill(self.pid, signal.SIGUSR1)  # its threads' stacks, to its stderr
                time.sleep(1.0)
                raise RuntimeError(f"the daemon (pid {self.pid}) was not ready in {timeout} s")
        assert self.ready_after is not None
        return self.ready_after

    @property
    def pid(self) -> int:
        """The daemon's own pid (when its fsyncs are counted, the counter's child)."""
        assert self.proc is not None
        if not self.count_syncs:
            return self.proc.pid
        kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return int(kids[0]) if kids else self.proc.pid

    def stop(self) -> dict[str, int]:
        """SIGTERM, wait; the counters it wrote (write transactions; fsyncs when counted)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        self.proc.wait(120)
        if self._sock is not None:
            self._sock.shutdown(socket.SHUT_RDWR)
            if self._drainer is not None:
                self._drainer.join(10)
            self._sock.close()
        counts: dict[str, int] = {}
        if self.counts_file.exists():
            counts.update(json.loads(self.counts_file.read_text()))
        if self.count_syncs and self.syncs_file.exists():
            counts.update(_sync_counts(self.syncs_file.read_text()))
        return counts


def db_query(db: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        return conn.execute(sql).fetchall()


def uploaded(db: Path) -> int:
    """Assets uploaded, as the daemon's database says: one cheap query, whatever the queue
    holds (``progress`` also counts the active jobs, ~18 ms at 100k queued, a load a poll
    every 0.1 s would put on the cores the daemon is measured on)."""
    try:
        up = db_query(db, "SELECT count(*) FROM assets WHERE asset_id IS NOT NULL")[0][0]
    except sqlite3.Error:
        return 0
    return int(up)  # type: ignore[call-overload]


def progress(db: Path) -> tuple[int, int]:
    """(assets uploaded, jobs still active) as the daemon's database says."""
    try:
        active = db_query(db, f"SELECT count(*) FROM jobs WHERE state IN {ACTIVE}")[0][0]
    except sqlite3.Error:
        return 0, 1
    return uploaded(db), int(active)  # type: ignore[call-overload]


def wait_uploaded(db: Path, count: int, timeout: float, pid: int = 0) -> tuple[float, int]:
    """Seconds until ``count`` assets are uploaded and nothing is active; peak RSS seen (kB)."""
    start = time.perf_counter()
    peak = 0
    while time.perf_counter() - start < timeout:
        up, active = progress(db)
        if pid:
            peak = max(peak, rss_kb(pid))
        if up >= count and not active:
            return time.perf_counter() - start, peak
        time.sleep(0.05)
    raise RuntimeError(f"timed out: {progress(db)} of {count}")


def state_bytes(db: Path) -> dict[str, float]:
    """Bytes of the state database in use (pages minus free pages), per tracked file."""
    page = db_query(db, "PRAGMA page_size")[0][0]
    pages = db_query(db, "PRAGMA page_count")[0][0]
    free = db_query(db, "PRAGMA freelist_count")[0][0]
    files = db_query(db, "SELECT count(*) FROM files")[0][0] or 1
    used = int(page) * (int(pages) - int(free))  # type: ignore[call-overload]
    out = {"bytes_per_file": used / int(files), "files": float(files)}  # type: ignore[call-overload]
    with contextlib.suppress(sqlite3.Error):
        for name, size in db_query(db, "SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            out[f"bytes_per_file[{name}]"] = int(size) / int(files)  # type: ignore[call-overload]
    return out


def state_at_rest(db: Path) -> dict[str, float]:
    """State bytes per file an hour later: after the daemon's own prune, and compacted.

    A copy is pruned as the daemon's hourly housekeeping would, then vacuumed (the pages
    freed are what later writes reuse), so this is the size the state settles at.
    """
    copy = db.with_name("at-rest.db")
    with (
        contextlib.closing(sqlite3.connect(db)) as src,
        contextlib.closing(sqlite3.connect(copy)) as dst,
    ):
        src.backup(dst)
    later = time.time() + 3600
    store = Store.open(copy, clock=lambda: later)
    Admin(store).prune(later - 30 * 86400)
    store.close()
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        conn.execute("VACUUM")
    return state_bytes(copy)
