"""What every command shares: the config option, loading, error handling, exit codes.

Exit codes: 0 done; 1 jobs failed (``sync``), a check failed, nothing matched what an
operator named, or a daemon thread died; 2 bad config or usage (for ``sync``: the API key
was rejected); 3 the state database cannot be used (locked by another syncd, corrupt,
foreign).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from syncd import log
from syncd.config import Config, find_config_path, load
from syncd.errors import ConfigError, StoreError, SyncdError

if TYPE_CHECKING:
    from syncd.admin import Admin
    from syncd.ledger import Ledger

EXIT_FAILED, EXIT_CONFIG, EXIT_STORE = 1, 2, 3

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Config file (default: $SYNCD_CONFIG, ~/.config/syncd/config.toml, "
    "/etc/syncd/config.toml).",
)


@contextmanager
def handled_errors() -> Iterator[None]:
    """Known errors become one clear line and an exit code, never a traceback."""
    try:
        yield
    except ConfigError as exc:
        click.echo(f"syncd: config error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except StoreError as exc:
        click.echo(f"syncd: state database: {exc}", err=True)
        sys.exit(EXIT_STORE)
    except SyncdError as exc:
        click.echo(f"syncd: {exc}", err=True)
        sys.exit(EXIT_FAILED)


def load_config(config_path: Path | None) -> Config:
    config = load(find_config_path(config_path))
    log.configure(config.log.level, config.log.format)
    if config.api.api_key is not None:
        log.add_secret(config.api.api_key.known)
    return config


@contextmanager
def open_state(config: Config) -> Iterator[tuple[Admin, Ledger]]:
    """The state database (no lock) as (Admin, Ledger): operator actions, and records."""
    from syncd.admin import Admin
    from syncd.ledger import Ledger
    from syncd.store import Store

    store = Store.open(config.state.path, lock=False)
    try:
        yield Admin(store), Ledger(store, {f.key: f for f in config.folders})
    finally:
        store.close()
