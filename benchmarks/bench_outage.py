"""How long after an outage's end does the first upload land? For outages of several lengths.

    python benchmarks/bench_outage.py [--outages 15 60 300]

The real daemon (real watcher, SQLite, HTTP) runs in this process against the emulator;
the emulator's server is stopped for the outage (connections refused) while five files
wait, then started again on the same port. Prints, per
outage length, the seconds from "API answers again" to "first asset in the library", and
the goal (10 s). The 15 s case also runs in the test suite
(tests/integration/test_outage.py); the long ones live here to keep the suite fast.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncd import log
from syncd.emulator import EmulatorServer
from tests.outage import api_back_to_first_upload
from tests.running import Launcher

GOAL = 10.0


def measure(outage: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        hot = base / "hot"
        hot.mkdir()
        server = EmulatorServer(base / "emulator", api_key="test-key")
        server.start()
        launcher = Launcher(base, server, hot)
        try:
            run = launcher()
            log.configure("error", "json")
            took, back = api_back_to_first_upload(run, server, hot, outage)
            back.stop()
            return took
        finally:
            launcher.close()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outages", type=float, nargs="+", default=[15.0, 60.0, 300.0])
    args = parser.parse_args()
    print(f"{'outage':>8}  {'API back -> first upload':>24}  goal")
    for outage in args.outages:
        took = measure(outage)
        verdict = "ok" if took <= GOAL else "MISSED"
        print(f"{outage:>7.0f}s  {took:>23.2f}s  <= {GOAL:.0f}s {verdict}", flush=True)


if __name__ == "__main__":
    main()
