"""``syncd demo``: the whole loop on one machine, for someone who has just installed syncd.

Everything runs in this process and under one temporary folder: the Assets API
emulator on a free loopback port, a hot folder, the daemon on its own threads. A few
generated product images are dropped into tag folders, each upload is shown with its
tags as the emulator receives it, one file is deleted and its remote deletion shown,
then a summary. It needs no account and no network, and leaves nothing behind.

What happens is read from the emulator (its library) rather than from syncd's log: the
demo shows what the user's library would hold, and the daemon's log stays at warning
level so the output reads as a story.
"""

from __future__ import annotations

import io
import json
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.markup import escape

from syncd import log
from syncd.config import load
from syncd.daemon import Daemon, Timers
from syncd.emulator import EmulatorServer
from syncd.lifecycle import Lifecycle
from syncd.notify import Notifier

DEMO_KEY = "demo-key"
TAGS = ("demo",)
SETTLE_SECONDS = 0.5
GRACE_SECONDS = 1.0
#: Each phase of the tour gives up after this long (it takes about a second).
PHASE_TIMEOUT = 30.0
POLL = 0.1
#: How long the emulated library takes to process an upload (syncd follows it to ready).
PROCESSING_SECONDS = 1.0


@dataclass(frozen=True)
class Product:
    relpath: str
    sku: str
    colour: tuple[int, int, int]
    shape: str


PRODUCTS = (
    Product("shoes/red/SKU-1042.jpg", "SKU-1042", (200, 40, 40), "ellipse"),
    Product("shoes/red/SKU-1043.jpg", "SKU-1043", (235, 110, 60), "rectangle"),
    Product("shoes/blue/SKU-1077.jpg", "SKU-1077", (40, 80, 200), "ellipse"),
    Product("bags/SKU-2001.png", "SKU-2001", (120, 80, 40), "rectangle"),
    Product("bags/leather/SKU-2040.jpg", "SKU-2040", (90, 50, 30), "triangle"),
)
#: A copy with the same content and tags: tracked, never uploaded a second time.
COPY = ("shoes/red/SKU-1042.jpg", "shoes/red/SKU-1042 copy.jpg")
DELETED = "bags/SKU-2001.png"


def product_image(product: Product) -> bytes:
    """A recognisable product shot: a coloured shape and its SKU on a light background."""
    img = Image.new("RGB", (480, 360), (245, 243, 238))
    draw = ImageDraw.Draw(img)
    box = (120, 60, 360, 250)
    if product.shape == "ellipse":
        draw.ellipse(box, fill=product.colour)
    elif product.shape == "triangle":
        draw.polygon([(240, 50), (370, 260), (110, 260)], fill=product.colour)
    else:
        draw.rectangle(box, fill=product.colour)
    _label(draw, product.sku)
    out = io.BytesIO()
    img.save(out, "PNG" if product.relpath.endswith(".png") else "JPEG", quality=85)
    return out.getvalue()


def _label(draw: ImageDraw.ImageDraw, text: str) -> None:
    """Large and centred where Pillow has FreeType; the small built-in font elsewhere."""
    try:
        font = ImageFont.load_default(size=36)
        draw.text((240, 310), text, fill=(30, 30, 30), font=font, anchor="mm")
    except (TypeError, ValueError):  # Pillow 10.0 (no size), or a bitmap font (no anchor)
        draw.text((200, 305), text, fill=(30, 30, 30))


def _drop(hot: Path, relpath: str, data: bytes) -> None:
    """Write under a temporary name, then rename: how a careful export tool saves."""
    path = hot / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    part.write_bytes(data)
    part.rename(path)


def _config_text(base_url: str, hot: Path, state: Path) -> str:
    """TOML strings written as JSON strings: the same escapes, for any temp path."""
    return (
        f"[api]\nbase_url = {json.dumps(base_url)}\napi_key = {json.dumps(DEMO_KEY)}\n"
        f"timeout_seconds = 10\n\n[state]\npath = {json.dumps(str(state))}\n\n"
        '[log]\nlevel = "warning"\nformat = "console"\n\n'
        f"[[folders]]\npath = {json.dumps(str(hot))}\ntags = {json.dumps(list(TAGS))}\n"
        f"settle_seconds = {SETTLE_SECONDS}\ndelete_grace_seconds = {GRACE_SECONDS}\n"
    )


@dataclass
class Tour:
    """The running pieces, and what the emulator's library looked like at the last look."""

    console: Console
    emulator: EmulatorServer
    daemon: Daemon
    thread: threading.Thread
    hot: Path
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def show_changes(self) -> None:
        """Print assets that appeared or went since the last look."""
        now = {a["asset_id"]: a for a in self.emulator.assets()}
        for asset_id, asset in now.items():
            before = self.seen.get(asset_id)
            if before is None:
                tags = ", ".join(t for t in asset["tags"] if not t.startswith("sha256:"))
                self.console.print(
                    f"  [green]uploaded[/] {escape(asset['name']):<10} tags: {escape(tags)}"
                    f"  [dim]({asset_id}, {asset['status']})[/]"
                )
            elif before["status"] != asset["status"] and asset["status"] == "ready":
                self.console.print(f"  [green]ready[/]    {escape(asset['name']):<10} usable now")
        for asset_id, asset in self.seen.items():
            if asset_id not in now:
                self.console.print(
                    f"  [red]deleted[/]  {escape(asset['name']):<10} [dim]"
                    f"({asset_id}, removed from the library)[/]"
                )
        self.seen = now

    def idle(self) -> bool:
        ctx = self.daemon.ctx
        return ctx is not None and ctx.admin.outstanding() == 0 and self.daemon.busy == 0

    def wait(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + PHASE_TIMEOUT
        while time.monotonic() < deadline:
            self.show_changes()
            if done():
                return
            if not self.thread.is_alive():
                raise DemoFailed("the daemon stopped unexpectedly (see the log above)")
            time.sleep(POLL)
        raise DemoFailed(f"gave up after {PHASE_TIMEOUT:.0f} s waiting for {what}")


class DemoFailed(Exception):
    """The tour did not reach a step in time; the message says which."""


def run(*, keep_for: float | None = None, console: Console | None = None) -> int:
    """The tour; ``keep_for`` seconds (``inf``: until Ctrl-C) of staying up afterwards."""
    console = console or Console(highlight=False, soft_wrap=True)
    log.configure("warning", "console")
    with ExitStack() as stack:
        tour = _start(stack, console)
        try:
            _upload_phase(tour)
            _delete_phase(tour)
        except DemoFailed as exc:
            console.print(f"[red]demo failed:[/] {escape(str(exc))}")
            return 1
        _summary(tour)
        if keep_for:
            _keep(tour, keep_for)
        console.print("Stopping the daemon and the emulator; removing the temporary folder.")
    return 0


def _start(stack: ExitStack, console: Console) -> Tour:
    root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="syncd-demo-")))
    hot = root / "hot"
    hot.mkdir()
    emulator = EmulatorServer(
        root / "library", api_key=DEMO_KEY, processing_seconds=PROCESSING_SECONDS
    )
    emulator.start()
    stack.callback(emulator.stop)
    conf = root / "syncd.toml"
    conf.write_text(_config_text(emulator.base_url, hot, root / "state.db"), encoding="utf-8")
    conf.chmod(0o600)
    daemon = Daemon(
        load(conf),
        notifier=Notifier(None),
        timers=Timers(tick=0.1, heartbeat=1.0, key_probe=5.0, processing_first=0.5),
    )
    daemon.start()
    thread = threading.Thread(target=daemon.run_forever, name="syncd-demo", daemon=True)
    thread.start()
    stack.callback(_stop_daemon, daemon, thread)
    console.print(
        "[bold]syncd demo[/]: an Assets API emulator, a hot folder and the daemon,"
        " all on this machine."
    )
    console.print(f"  emulator    {emulator.base_url} (API key {DEMO_KEY})")
    console.print(
        f"  hot folder  {escape(str(hot))} (tags: {', '.join(TAGS)}, then the folder names)"
    )
    tour = Tour(console, emulator, daemon, thread, hot)
    key = daemon.config.folders[0].key
    tour.wait(lambda: key in daemon.watchers, "the daemon to watch the hot folder")
    return tour


def _stop_daemon(daemon: Daemon, thread: threading.Thread) -> None:
    daemon.request_stop()
    thread.join(15)
    daemon.stop()


def _upload_phase(tour: Tour) -> None:
    console = tour.console
    console.print(f"\nDropping {len(PRODUCTS)} product images into tag folders:")
    for product in PRODUCTS:
        _drop(tour.hot, product.relpath, product_image(product))
        console.print(f"  + {escape(product.relpath)}")
    console.print("\nsyncd waits until each file has settled, then uploads it once:")
    tour.wait(lambda: len(tour.seen) == len(PRODUCTS) and tour.idle(), "the uploads")
    console.print("\nThe library processes each image; syncd follows it until it is ready:")
    tour.wait(lambda: _remote(tour).get("ready") == len(PRODUCTS), "processing to finish")
    # The copy comes once its original is in the library: the asset keeps the original's
    # name (an asset is named after the first file that brought its content and tags).
    shutil.copyfile(tour.hot / COPY[0], tour.hot / COPY[1])
    console.print(f"\nCopying {escape(COPY[0])} to {escape(COPY[1])} (same content, same tags):")
    tour.wait(lambda: _tracked(tour) == len(PRODUCTS) + 1 and tour.idle(), "the copy")
    console.print(f"  {escape(COPY[1])}: tracked, and no second upload")


def _delete_phase(tour: Tour) -> None:
    tour.console.print(
        f"\nDeleting {escape(DELETED)} from the hot folder; after a grace of"
        f" {GRACE_SECONDS:g} s its asset is deleted from the library:"
    )
    (tour.hot / DELETED).unlink()
    tour.wait(lambda: len(tour.seen) == len(PRODUCTS) - 1 and tour.idle(), "the deletion")


def _remote(tour: Tour) -> dict[str, Any]:
    """What the daemon's state says of the library's side (as `syncd status` shows it)."""
    store = tour.daemon.store
    return {} if store is None else Lifecycle(store, tour.daemon.folders).summary(0)


def _tracked(tour: Tour) -> int:
    ctx = tour.daemon.ctx
    return 0 if ctx is None else int(ctx.admin.summary()["tracked_files"])


def _summary(tour: Tour) -> None:
    requests = tour.emulator.stats()["requests"]
    posts = requests.get("POST /v1/training-asset", 0)
    deletes = requests.get("DELETE /v1/assets/{id}", 0)
    tour.console.print(
        f"\n[bold]Summary[/]: {_tracked(tour)} files tracked, {len(tour.seen)} assets in the"
        f" library, {sum(requests.values())} API requests ({_count(posts, 'upload')},"
        f" {_count(deletes, 'deletion')}), {time.monotonic() - tour.started:.1f} s."
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _keep(tour: Tour, seconds: float) -> None:
    """Stay up so the user can drop files in; print what reaches the library."""
    console = tour.console
    console.print(
        f"\nStill running. Drop images into {escape(str(tour.hot))} (sub-folders become tags)"
    )
    console.print(
        f"and watch them arrive; the emulator is at {tour.emulator.base_url}"
        f" (Authorization: Bearer {DEMO_KEY})."
    )
    console.print(
        "Press Ctrl-C to stop."
        if seconds == float("inf")
        else f"Stopping in {seconds:g} s (Ctrl-C stops sooner)."
    )
    deadline = time.monotonic() + seconds
    with _stop_on_signals() as stop:
        while not stop.is_set() and time.monotonic() < deadline and tour.thread.is_alive():
            tour.show_changes()
            stop.wait(min(0.5, max(0.0, deadline - time.monotonic())))


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C and SIGTERM only set a flag; the loop notices and cleans up."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
