"""``syncd run`` with a counter on the store's write transactions (written at exit)."""

from __future__ import annotations

import atexit
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from syncd import cli
from syncd.store import Store


def main() -> None:
    conf, out = sys.argv[1], Path(sys.argv[2])
    counts = {"write_transactions": 0}
    inner = Store.write

    @contextlib.contextmanager
    def counted(self: Store, *args: Any, **kwargs: Any) -> Iterator[Any]:
        counts["write_transactions"] += 1
        with inner(self, *args, **kwargs) as conn:
            yield conn

    Store.write = counted  # type: ignore[method-assign]
    atexit.register(lambda: out.write_text(json.dumps(counts)))
    cli.main(["run", "--config", conf])


if __name__ == "__main__":
    main()
