"""Run the benchmarks, print a table of figures and ratios, write it as JSON.

python -m benchmarks                 # full sizes (2,000-file burst, 100k, 1M tracked)
python -m benchmarks --quick         # a tenth of the sizes, a minute or two
python -m benchmarks --scale 0.5 --only burst latency --out /some/where.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import daemon_measures as dm
from benchmarks import state_measures as st
from benchmarks import store_measures as sm

DEFAULT_OUT = Path(__file__).parent / "results" / "latest.json"
NAMES = (
    "burst",
    "fsyncs",
    "latency",
    "first_start",
    "rescan_scaling",
    "queue",
    "hashing",
    "state_size",
)


def _n(full: int, scale: float, least: int) -> int:
    return max(least, int(full * scale))


def plan(scale: float) -> dict[str, Callable[[Path, dict[str, Any]], Any]]:
    """Each measure with its sizes at this scale."""
    burst = _n(2000, scale, 200)
    return {
        "burst": lambda base, _r: dm.burst(base, burst),
        "fsyncs": lambda base, _r: dm.fsyncs(base, _n(500, scale, 100)),
        "latency": lambda base, _r: dm.latency(base, _n(200, scale, 60)),
        "first_start": lambda base, r: dm.first_start(
            base,
            _n(100_000, scale, 2000),
            _n(2000, scale, 300),
            r.get("burst", {}).get("syncd_files_per_s"),
        ),
        "rescan_scaling": lambda base, _r: sm.scaling(
            base,
            [_n(10_000, scale, 1000), _n(100_000, scale, 10_000), _n(1_000_000, scale, 100_000)],
            _n(100_000, scale, 10_000),
        ),
        "queue": lambda base, _r: sm.queue_scaling(base, 1000, _n(1_000_000, scale, 100_000)),
        "hashing": lambda base, _r: sm.hashing_speed(base, _n(1024, scale, 128)),
        "state_size": lambda base, _r: st.state_size(
            base, [_n(2000, scale, 2000), _n(100_000, scale, 10_000)]
        ),
    }


def flat(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in flat(f"{prefix}.{k}", v)]
    return [(prefix, value)]


def show(results: dict[str, Any]) -> None:
    rows = [row for name, value in results.items() for row in flat(name, value)]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        text = f"{value:,.3f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {text:>14}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    parser.add_argument("--scale", type=float, default=None, help="size factor (default 1)")
    parser.add_argument("--only", nargs="*", choices=NAMES, default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--label", default="", help="a note kept with the figures")
    args = parser.parse_args()
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for name, measure in plan(scale).items():
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"syncd-bench-{name}-") as tmp:
            start = time.perf_counter()
            print(f"... {name}", flush=True)
            results[name] = measure(Path(tmp), results)
            timings[name] = time.perf_counter() - start
    show(results)
    doc = {
        "label": args.label,
        "scale": scale,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "seconds_per_measure": timings,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
