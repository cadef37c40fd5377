"""What a whole-library read costs, in requests, and what it misses while another client
writes to the library.

    python benchmarks/bench_listing.py [--assets 10000] [--others 1000] [--seed 7]

The emulator's data dir is filled directly (``--others`` assets of another client first,
then ``--assets`` of syncd's own, with identity tags), then served over loopback. Three
reads, each against a still library and against churn (after every list page the other
client adds 2 assets and deletes 3 of its own, seeded):

* baseline: one plain offset pass (``AssetsClient.iter_assets``), what syncd did before;
* ``read_library``: overlapping pages, passes until one settles or finds nothing new;
* the same, plus what a rebuild would then pay: one filtered GET per own asset it missed.

Prints requests, own assets seen, and the request ratio against the baseline.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

from PIL import Image

from syncd.api import AssetsClient
from syncd.emulator import OTHER_CLIENT_TAG, EmulatorServer, Faults
from syncd.emulator.images import decode
from syncd.emulator.storage import Library
from syncd.listing import ReadFigures, read_library
from syncd.verify import remote_key

KEY = "bench-key"


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(out, "PNG")
    return out.getvalue()


def fill(data_dir: Path, own: int, others: int) -> None:
    library = Library(data_dir, processing_seconds=0)
    data = png()
    image = decode(data, "png")
    for i in range(others):
        library.add(f"o{i}", [OTHER_CLIENT_TAG], "png", data, image)
    for i in range(own):
        library.add(f"p{i}", ["studio", f"sha256:{i:032x}"], "png", data, image)
    library.close()


def plain(client: AssetsClient, server: EmulatorServer) -> tuple[int, int]:
    before = sum(server.stats()["requests"].values())
    seen = {a.asset_id for a in client.iter_assets() if remote_key(a) is not None}
    return sum(server.stats()["requests"].values()) - before, len(seen)


def robust(client: AssetsClient) -> tuple[int, int, int]:
    figures = ReadFigures()
    seen = {
        a.asset_id
        for a in read_library(client, wanted=lambda a: remote_key(a) is not None, figures=figures)
    }
    return figures.requests, len(seen), figures.passes


def row(label: str, requests: int, seen: int, ratio: float) -> None:
    print(f"{label:<52} {requests:>8} {seen:>9} {ratio:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=10_000)
    parser.add_argument("--others", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "library"
        fill(data_dir, args.assets, args.others)
        with (
            EmulatorServer(data_dir, api_key=KEY, processing_seconds=0) as server,
            AssetsClient(server.base_url, lambda: KEY) as client,
        ):
            print(
                f"library: {args.assets} own assets, {args.others} of another client, pages of 100"
            )
            print(f"{'read':<52} {'requests':>8} {'own seen':>9} {'ratio':>6}")
            for label, faults in (
                ("still", Faults()),
                ("churn", Faults(churn_adds=2, churn_deletes=3, seed=args.seed)),
            ):
                server.set_faults(faults)
                base, base_seen = plain(client, server)
                server.set_faults(faults)
                requests, seen, passes = robust(client)
                missed = args.assets - seen
                row(f"{label}: plain offset pass (baseline)", base, base_seen, 1.0)
                row(f"{label}: read_library, {passes} passes", requests, seen, requests / base)
                total = requests + missed
                row(f"{label}: + a filtered GET per missed asset", total, args.assets, total / base)


if __name__ == "__main__":
    main()
