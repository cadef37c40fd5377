"""The operator's commands: ask why, list, review and steer held deletions, plan, rescan.

Each reads the state database without taking the daemon's lock; the few that change it
(``retry``, ``approve-deletes``, ``reject-deletes``, ``rescan``) write small transactions
a running daemon sees at once. Anything an operator names that matches nothing is an
error (exit 1, or 2 for a folder that is not configured), never a silent "0 done".
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from syncd.cli_common import (
    EXIT_FAILED,
    config_option,
    handled_errors,
    load_config,
    open_state,
)
from syncd.config import Config

if TYPE_CHECKING:
    from syncd.store import Store

json_option = click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
#: How long ``rescan`` waits to see the daemon take its request.
RESCAN_WAIT = 10.0


@contextmanager
def _readonly(config: Config) -> Iterator[Store]:
    from syncd.store import Store

    store = Store.open_readonly(config.state.path)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _readonly_or_empty(config: Config) -> Iterator[Store]:
    """The state database read-only; before the first run, an empty one made elsewhere."""
    if config.state.path.exists():
        with _readonly(config) as store:
            yield store
        return
    import tempfile

    from syncd.store import Store

    with tempfile.TemporaryDirectory(prefix="syncd-plan-") as tmp:
        store = Store.open(Path(tmp) / "empty.db", lock=False)
        try:
            yield store
        finally:
            store.close()


def _folder_key(config: Config, text: str | None) -> str | None:
    """A folder named by path (as in the config, or from here) or by name; usage error if none."""
    if text is None:
        return None
    from syncd.steer import folder_names, resolve_folder

    folder = resolve_folder(config, text)
    if folder is None:
        raise click.BadParameter(
            f"{text!r} is not a configured folder (configured: {folder_names(config)})",
            param_hint="--folder/FOLDER",
        )
    return folder.key


def _selection_options(func: Any) -> Any:
    for option in reversed(
        (
            click.option("--folder", default=None, help="Only this folder (path or name)."),
            click.option("--path", "path_glob", default=None, help="Only files matching GLOB."),
            click.option("--tag", default=None, help="Only assets carrying this tag."),
        )
    ):
        func = option(func)
    return func


@click.command()
@config_option
@click.argument("paths", nargs=-1)
def retry(config_path: Path | None, paths: tuple[str, ...]) -> None:
    """Re-queue failed jobs (all, or those of the given paths); exit 1 if none matches."""
    with handled_errors():
        config = load_config(config_path)
        wanted = tuple(p for path in paths for p in _path_forms(config, path))
        with open_state(config) as (admin, _):
            count = admin.retry_failed(wanted)
    if paths and not count:
        click.echo(f"syncd: no failed job matches {', '.join(paths)}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"re-queued {count} failed job(s)")


def _path_forms(config: Config, text: str) -> list[str]:
    """A path as typed, and as ``folder/relpath`` when it lies in a folder from here."""
    from syncd.explain import locate

    _, folder, relpath = locate(config, text)
    forms = [text]
    if folder is not None and relpath:
        forms.append(f"{folder.key}/{relpath}")
    return forms


@click.command()
@config_option
@_selection_options
@json_option
def held(
    config_path: Path | None,
    folder: str | None,
    path_glob: str | None,
    tag: str | None,
    as_json: bool,
) -> None:
    """List every held deletion: path, tags, asset, why held, since when."""
    from syncd import steer

    with handled_errors():
        config = load_config(config_path)
        selection = steer.Selection(_folder_key(config, folder), path_glob, tag)
        with _readonly(config) as store:
            items = list(steer.held(store, selection))
            guarded = store.query(
                "SELECT key, reason FROM folders WHERE health = 'guarded' AND approved = 0"
            )
    if as_json:
        out = {"held": [_dated(i) for i in items], "guarded_folders": [dict(g) for g in guarded]}
        click.echo(json.dumps(out, indent=2))
        return
    for item in items:
        click.echo(
            f"{item['folder']}/{item['path'] or '?'}  asset {item['asset_id']} ({item['name']})"
            f"  tags {', '.join(item['tags']) or '-'}  since {_local(item['since'])}"
            f"\n    {item['reason']}"
        )
    for row in guarded:
        click.echo(f"guarded folder {row['key']}: {row['reason']} (nothing there is deleted)")
    click.echo(
        f"{len(items)} held deletion(s), {len(guarded)} guarded folder(s);"
        " `syncd approve-deletes` or `syncd reject-deletes` decide"
    )


def _dated(item: dict[str, Any]) -> dict[str, Any]:
    from syncd.explain import iso

    return {k: v for k, v in item.items() if k != "id"} | {"since": iso(item["since"])}


def _local(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _decide(config_path: Path | None, sel: tuple[Any, ...], *, reject: bool) -> None:
    from syncd import steer

    with handled_errors():
        config = load_config(config_path)
        folder_key = _folder_key(config, sel[0])
        selection = steer.Selection(folder_key, sel[1], sel[2])
        with open_state(config) as (admin, _):
            ids = [item["id"] for item in steer.held(admin.store, selection)]
            count = steer.release(admin.store, ids, reject=reject)
            accepted: list[str] = []
            if not reject and not selection.narrow:
                _, accepted = admin.approve_deletes(folder_key)
    verb = "rejected" if reject else "approved"
    if not count and not accepted:
        click.echo(f"syncd: no held deletion matches; nothing {verb}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"{verb} {count} held deletion(s)")
    if reject and count:
        click.echo("their assets stay in the library; the local files are forgotten")
    for root in accepted:
        click.echo(f"accepted the guarded folder {root}: a running daemon rescans it now")


@click.command("approve-deletes")
@config_option
@_selection_options
def approve_deletes(
    config_path: Path | None, folder: str | None, path_glob: str | None, tag: str | None
) -> None:
    """Let held deletions go (all, or those selected) and accept guarded folders."""
    _decide(config_path, (folder, path_glob, tag), reject=False)


@click.command("reject-deletes")
@config_option
@_selection_options
def reject_deletes(
    config_path: Path | None, folder: str | None, path_glob: str | None, tag: str | None
) -> None:
    """Cancel held deletions (all, or those selected): the remote assets stay."""
    _decide(config_path, (folder, path_glob, tag), reject=True)


@click.command()
@config_option
@click.argument("path")
@json_option
def explain(config_path: Path | None, path: str, as_json: bool) -> None:
    """Why a file is (not) uploaded: rules, hash, tags, asset, history, what it waits for."""
    from syncd import explain as why

    with handled_errors():
        config = load_config(config_path)
        with _readonly(config) as store:
            out = why.explain(config, store, path, now=time.time())
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        for line in why.render(out):
            click.echo(line)


@click.command("ls")
@config_option
@click.argument("folder", required=False)
@click.option("--tag", default=None, help="Only files whose asset carries this tag.")
@click.option(
    "--state",
    type=click.Choice(["uploaded", "queued", "failed"]),
    default=None,
    help="Only files in this state.",
)
@click.option("--ignored", is_flag=True, help="List the files the rules ignore, with the rule.")
@json_option
def ls(
    config_path: Path | None,
    folder: str | None,
    *,
    tag: str | None,
    state: str | None,
    ignored: bool,
    as_json: bool,
) -> None:
    """List tracked files and their assets (or, with --ignored, what is left alone and why)."""
    from syncd import explain as why

    with handled_errors():
        config = load_config(config_path)
        key = _folder_key(config, folder)
        if ignored:
            folders = [f for f in config.folders if key is None or f.key == key]
            items = (item for f in folders for item in why.ignored(f))
            _emit(items, as_json, lambda i: f"{i['folder']}/{i['path']}  ignored: {i['rule']}")
            return
        with _readonly(config) as store:
            _emit(why.listing(store, key, tag=tag, state=state), as_json, _ls_line)


def _ls_line(item: dict[str, Any]) -> str:
    asset = item["asset_id"] or "-"
    tags = ", ".join(item["tags"]) or "-"
    problem = f"  ({item['problem']})" if item["problem"] else ""
    return f"{item['state']:<8} {item['folder']}/{item['path']}  {asset}  [{tags}]{problem}"


def _emit(items: Iterator[dict[str, Any]], as_json: bool, line: Any) -> None:
    """Streamed: one JSON object per line with --json, else one line of text each."""
    for item in items:
        click.echo(json.dumps(item) if as_json else line(item))


@click.command()
@config_option
@json_option
def plan(config_path: Path | None, as_json: bool) -> None:
    """What `syncd sync` would upload, link and delete; nothing is sent or written."""
    run_plan(config_path, as_json)


def run_plan(config_path: Path | None, as_json: bool) -> None:
    from syncd.dryrun import make_plan

    with handled_errors():
        config = load_config(config_path)
        with _readonly_or_empty(config) as store:
            result = make_plan(config, store)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        for line in result.lines():
            click.echo(line)


@click.command()
@config_option
@click.argument("folder", required=False)
def rescan(config_path: Path | None, folder: str | None) -> None:
    """Ask the running daemon to rescan now (one folder, or all); it does the scanning."""
    from syncd import beacon, report
    from syncd.daemon import Timers

    with handled_errors():
        config = load_config(config_path)
        key = _folder_key(config, folder)
        with open_state(config) as (admin, _):
            store = admin.store
            holder = report.holder(store, now=time.time(), stale_after=3 * Timers().heartbeat)
            if not holder["running"] or holder.get("role") == "sync":
                click.echo(
                    "syncd: no `syncd run` is running on this state database; a rescan is"
                    " what it does at start (or run `syncd sync`)",
                    err=True,
                )
                sys.exit(EXIT_FAILED)
            beacon.request_rescan(store, key)
            taken = _wait_taken(store)
    what = key or "every folder"
    if not taken:
        click.echo(
            f"syncd: the daemon (pid {holder['pid']}) has not taken the request yet", err=True
        )
        sys.exit(EXIT_FAILED)
    click.echo(f"the daemon (pid {holder['pid']}) is rescanning {what}")


def _wait_taken(store: Store) -> bool:
    deadline = time.monotonic() + RESCAN_WAIT
    while time.monotonic() < deadline:
        if not store.query("SELECT 1 FROM requests LIMIT 1"):
            return True
        time.sleep(0.1)
    return False


COMMANDS = (retry, held, approve_deletes, reject_deletes, explain, ls, plan, rescan)
