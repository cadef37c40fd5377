"""``python -m syncd.emulator``: run the emulator in the foreground until a signal."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from .app import is_loopback_peer
from .faults import Faults
from .server import EmulatorServer

API_KEY_ENV = "SYNCD_EMULATOR_API_KEY"
DEFAULT_API_KEY = "demo-key"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd emulator",
        description="A local emulator of the Assets API, for tests, demos and offline trials.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    add("--port", type=int, default=8765, metavar="N", help="0 picks a free one (default: 8765)")
    add("--data", type=Path, metavar="DIR", help="kept across restarts (default: a temp dir)")
    add("--api-key", metavar="KEY", help=f"default: ${API_KEY_ENV}, else {DEFAULT_API_KEY!r}")
    add("--processing-seconds", type=float, default=0.5, metavar="S", help="until ready")
    add(
        "--failure-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="chance that an upload's processing ends 'failed' (with a reason)",
    )
    add(
        "--failure-reason",
        action="append",
        default=None,
        metavar="TEXT",
        help="a reason processing may fail with (repeatable; default: three built in)",
    )
    add("--error-rate", type=float, default=0.0, metavar="P", help="chance of a 500/502/503")
    add("--rate-limit-rate", type=float, default=0.0, metavar="P", help="chance of a 429")
    add("--retry-after", type=float, default=1.0, metavar="S", help="Retry-After on a 429")
    add("--latency", type=float, default=0.0, metavar="S", help="added to every API request")
    add("--ambiguous-rate", type=float, default=0.0, metavar="P",
        help="chance that a request is handled, then dropped unanswered")  # fmt: skip
    add("--seed", type=int, metavar="N", help="makes the faults replayable")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        faults = Faults(
            error_rate=args.error_rate, rate_limit_rate=args.rate_limit_rate,
            retry_after=args.retry_after, latency=args.latency,
            ambiguous_rate=args.ambiguous_rate, seed=args.seed,
        )  # fmt: skip
    except ValueError as exc:
        parser.error(str(exc))
    if not 0.0 <= args.failure_rate <= 1.0:
        parser.error("--failure-rate must be between 0 and 1")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or DEFAULT_API_KEY
    with ExitStack() as stack:
        data_dir, note = args.data, ""
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emulator-")))
            note = ", temporary"
        server = EmulatorServer(
            data_dir, api_key=api_key, host=args.host, port=args.port,
            processing_seconds=args.processing_seconds, faults=faults,
            failure_rate=args.failure_rate, failure_reasons=tuple(args.failure_reason or ()),
            processing_seed=args.seed,
        )  # fmt: skip
        try:
            server.start()
        except OSError as exc:
            print(f"cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
            return 1
        stack.callback(server.stop)
        print(f"Assets API emulator on {server.base_url} (data: {data_dir}{note})", flush=True)
        if args.host != "localhost" and not is_loopback_peer((args.host,)):
            print(
                f"warning: listening on {args.host}: the emulated Assets API (and its key,"
                " sent in clear over http) is open to the network; its /_emulator controls"
                " (library state, faults, the key) still answer this machine only",
                file=sys.stderr,
                flush=True,
            )
        _wait_for_signal()
    return 0


def _wait_for_signal() -> None:
    """The handlers only set a flag; the main thread does the stopping."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
