"""The command line: parse, call the library, render. Nothing else lives here.

Exit codes: 0 done; 1 jobs failed (``sync``), a check failed, or a daemon thread died
(``run``: systemd's ``Restart=on-failure`` then starts it again); 2 bad config or usage;
3 the state database cannot be used (locked by another syncd, corrupt, foreign).
"""

from __future__ import annotations

import faulthandler
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from syncd import __version__, log
from syncd.cli_common import (
    EXIT_FAILED,
    config_option,
    load_config,
)
from syncd.cli_common import handled_errors as _errors
from syncd.cli_common import open_state as _state

if TYPE_CHECKING:
    from syncd.daemon import Daemon


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="syncd")
def main() -> None:
    """syncd: keep hot folders of product images mirrored into your Assets library."""


@main.command()
@config_option
def run(config_path: Path | None) -> None:
    """Run the daemon in the foreground (systemd Type=notify ready); stop with SIGTERM."""
    with _errors(), _daemon(config_path) as daemon:
        daemon.run_forever()
        sys.exit(EXIT_FAILED if daemon.failed else 0)


@main.command()
@config_option
@click.option(
    "--max-wait",
    type=float,
    default=600.0,
    show_default=True,
    help="Give up after this many seconds if the API keeps failing (exit 1).",
)
@click.option(
    "--dry-run", is_flag=True, help="Only say what would be done (as `syncd plan`); send nothing."
)
def sync(config_path: Path | None, max_wait: float, dry_run: bool) -> None:
    """One pass: scan, upload and delete what differs, print a summary, exit (see its last line)."""
    if dry_run:
        from syncd.cli_operator import run_plan

        run_plan(config_path, as_json=False)
        return
    with _errors(), _daemon(config_path, role="sync") as daemon:
        with _progress() as progress:
            result = daemon.sync_once(max_wait=max_wait, progress=progress)
        for line in result.lines():
            click.echo(line)
        sys.exit(result.exit_code)


@contextmanager
def _daemon(config_path: Path | None, role: str = "run") -> Iterator[Daemon]:
    """A started daemon that stops however the block ends; signals only ask it to stop."""
    from syncd.daemon import Daemon

    daemon = Daemon(load_config(config_path))
    daemon.role = role
    _on_signals(daemon.request_stop)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@contextmanager
def _progress() -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    before = log.raise_console_level("warning")
    try:
        with Progress(transient=True) as bar:
            task = bar.add_task("syncing", total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield update
    finally:
        log.set_console_level(before)


@main.command()
@config_option
@click.option(
    "--repair",
    is_flag=True,
    help="Queue uploads again for assets missing remotely; remove syncd's own duplicates.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def verify(config_path: Path | None, repair: bool, as_json: bool) -> None:
    """Compare the library with the state database by identity tag (exit 1 if they differ)."""
    import json

    from syncd.api import AssetsClient
    from syncd.config import require_api_key
    from syncd.verify import verify as compare

    with _errors():
        config = load_config(config_path)
        with (
            _state(config) as (admin, ledger),
            AssetsClient(
                config.api.base_url,
                require_api_key(config).reveal,
                timeout=config.api.timeout_seconds,
            ) as client,
        ):
            result = compare(ledger, admin, client, repair=repair)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(
            f"library: {result.checked_remote} assets; state database: "
            f"{result.checked_local} uploaded assets"
        )
        click.echo(
            f"missing remotely: {len(result.missing)}"
            + (f" ({result.requeued} queued again)" if repair else "")
        )
        click.echo(
            f"duplicated remotely: {len(result.duplicates)}"
            + (f" ({result.removed} extra copies removed)" if repair else "")
        )
        click.echo(f"in the library with an identity tag but unknown here: {len(result.unknown)}")
        click.echo("in agreement" if result.ok else "they differ")
    sys.exit(0 if result.ok else EXIT_FAILED)


@main.command()
@config_option
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object (its keys are listed in the README)."
)
def status(config_path: Path | None, as_json: bool) -> None:
    """Show the queue, held deletions, failures, folder health and whether the daemon runs."""
    import json
    import time

    from rich.console import Console

    from syncd import report
    from syncd.daemon import Timers

    with _errors():
        config = load_config(config_path)
        now = time.time()
        data = report.collect(config, now=now, stale_after=3 * Timers().heartbeat)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        # Piped or redirected, nothing is cropped: a long folder path stays whole.
        width = None if sys.stdout.isatty() else 10_000
        report.render(data, Console(highlight=False, width=width), now=now)


@main.command()
@config_option
def check(config_path: Path | None) -> None:
    """Check the config, folders, watch limit, state database and API key; say how to fix."""
    from rich.console import Console
    from rich.markup import escape

    from syncd import checks
    from syncd.tags import for_people

    with _errors():
        config = load_config(config_path)
        findings = checks.run_all(config)
    console = Console(highlight=False, soft_wrap=True)
    marks = {
        "ok": "[green]ok[/]     ",
        "warning": "[yellow]warning[/]",
        "problem": "[red]PROBLEM[/]",
    }
    source = config.source.absolute() if config.source else "(defaults)"
    console.print(f"{marks['ok']}  config   {escape(for_people(str(source)))}")
    for finding in findings:
        console.print(
            f"{marks[finding.level]}  {finding.check:<8} {escape(for_people(finding.text))}"
        )
        if finding.fix:
            console.print(f"{'':9}  fix: {escape(for_people(finding.fix))}")
    sys.exit(EXIT_FAILED if checks.failed(findings) else 0)


@main.command()
@click.option("--keep", is_flag=True, help="Stay up afterwards so you can drop files in (Ctrl-C).")
@click.option(
    "--seconds",
    type=click.FloatRange(min=0),
    default=None,
    help="Stay up this many seconds afterwards, then clean up (with or without --keep).",
)
def demo(keep: bool, seconds: float | None) -> None:
    """A self-contained tour: emulator, hot folder, uploads, a deletion; no account, no network."""
    from syncd import demo as tour

    keep_for = seconds if seconds is not None else (float("inf") if keep else None)
    sys.exit(tour.run(keep_for=keep_for))


@main.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback exposes it to the network.",
)
@click.option("--port", default=8765, show_default=True, type=int, help="0 picks a free one.")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the library here (default: a temporary folder).",
)
@click.option(
    "--api-key",
    default=None,
    envvar="SYNCD_EMULATOR_API_KEY",
    help="The key it accepts (default: demo-key; env SYNCD_EMULATOR_API_KEY).",
)
@click.option(
    "--processing-seconds",
    type=float,
    default=None,
    help="Seconds an upload stays 'processing' before 'ready' (default 0.5).",
)
@click.option(
    "--failure-rate",
    type=float,
    default=None,
    help="Chance that an upload's processing ends 'failed', with a reason.",
)
@click.option(
    "--failure-reason",
    multiple=True,
    help="A reason processing may fail with (repeatable; default: three built in).",
)
@click.option(
    "--error-rate", type=float, default=None, help="Chance of a 500/502/503 for each API request."
)
@click.option(
    "--rate-limit-rate", type=float, default=None, help="Chance of a 429 for each API request."
)
@click.option(
    "--ambiguous-rate",
    type=float,
    default=None,
    help="Chance that a request is handled, then dropped unanswered.",
)
@click.option("--latency", type=float, default=None, help="Seconds added to every API request.")
@click.option("--seed", type=int, default=None, help="Makes the faults replayable.")
def emulator(**options: Any) -> None:
    """Run a local emulator of the Assets API (loopback only by default)."""
    from syncd import emulator as emu

    argv = []
    for reason in options.pop("failure_reason"):
        argv += ["--failure-reason", reason]
    for name, value in options.items():
        if value is not None and name != "api_key":
            argv += [f"--{name.replace('_', '-')}", str(value)]
    if options["api_key"]:
        argv += ["--api-key", options["api_key"]]
    sys.exit(emu.main(argv))


def _on_signals(stop: Callable[[], None]) -> None:
    """Handlers only set a flag; the loops notice it. SIGUSR1 writes every thread's stack
    to stderr (the journal) and the daemon goes on: what a stuck daemon is doing, without
    stopping it. Frames only (files, lines, functions), never a value, so never the key."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop())
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True, chain=False)


def _register_operator_commands() -> None:
    from syncd.cli_operator import COMMANDS, explain

    for command in COMMANDS:
        main.add_command(command)
    main.add_command(COMMANDS[COMMANDS.index(explain)], "why")


_register_operator_commands()
