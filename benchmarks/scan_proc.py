"""One full rescan of a folder against a tracked database, in a process of its own.

python -m benchmarks.scan_proc STATE_DB ROOT   -> JSON: seconds (best of 2), peak RSS
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from benchmarks.common import rss_kb
from syncd.admin import Admin
from syncd.api import AssetsClient
from syncd.breaker import Breaker
from syncd.config import FolderConfig
from syncd.context import Context
from syncd.ledger import Ledger
from syncd.store import Store
from syncd.sweep import Sweeper
from syncd.tags import Rules


def main() -> None:
    db, root = Path(sys.argv[1]), Path(sys.argv[2])
    store = Store.open(db)
    folder = FolderConfig(path=root)
    admin = Admin(store)
    client = AssetsClient("http://127.0.0.1:9", lambda: "unused")
    ctx = Context(
        Ledger(store, {folder.key: folder}),
        client,
        {folder.key: folder},
        {folder.key: Rules(folder.include, folder.exclude)},
        Breaker(),
        clock=time.time,
        admin=admin,
    )
    sweeper = Sweeper(ctx)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        report = sweeper.scan(folder)
        times.append(time.perf_counter() - start)
    queued = admin.outstanding()
    client.close()
    store.close()
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
    peak = rss_kb(os.getpid(), "VmHWM")
    changes = report.new + report.changed + report.gone
    print(json.dumps({"seconds": min(times), "rss_peak_mb": peak / 1024, "queued": queued,
                      "changes": changes}))  # fmt: skip


if __name__ == "__main__":
    main()
