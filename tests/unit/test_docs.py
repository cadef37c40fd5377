"""The README keeps up with the code: commands, config keys, status keys, states, exit codes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click
import pytest

from syncd import cli, model, report
from syncd.store import Store

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLE = (ROOT / "config.example.toml").read_text(encoding="utf-8")
COMMANDS = sorted(cli.main.commands)


def section(title: str) -> str:
    """The README's text under a ``## title`` heading, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match is not None, f"no '## {title}' section in the README"
    return match.group(1)


def code_blocks(text: str) -> list[list[str]]:
    return [block.splitlines() for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)]


def test_readme_opens_with_the_two_setup_commands() -> None:
    """The first code block is the demo and the test command, each installing first."""
    assert code_blocks(README)[0] == [
        "pip install -e '.[test]' && syncd demo",
        "pip install -e '.[test]' && python -m pytest",
    ]
    assert README.index("```") < README.index("\n## ")


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_text(name: str) -> None:
    """`syncd <command> --help` explains the command in a sentence."""
    command = cli.main.commands[name]
    assert command.help and len(command.help.split()) >= 4
    for option in command.params:
        if isinstance(option, click.Option):
            assert option.help, f"syncd {name} --{option.name} has no help"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_in_the_readme(name: str) -> None:
    """Each command is listed in the README's command table."""
    assert f"`syncd {name}" in section("Commands")


def example_keys() -> set[str]:
    """Every key the example config sets or shows commented out, by section."""
    keys: set[str] = set()
    table = ""
    for line in EXAMPLE.splitlines():
        if heading := re.match(r"^\[+(\w+)\]+", line):
            table = heading.group(1)
        elif key := re.match(r"^#? ?(\w+) = ", line):
            keys.add(f"{table}.{key.group(1)}")
    return keys


def test_example_keys_are_found_by_the_reader() -> None:
    """The key reader sees every key the TOML parser sees (and the commented-out ones)."""
    parsed = tomllib.loads(EXAMPLE)
    found = {f"{t}.{k}" for t, v in parsed.items() for k in (v[0] if isinstance(v, list) else v)}
    assert found <= example_keys()
    assert {"api.api_key", "api.api_key_file"} <= example_keys()


@pytest.mark.parametrize("key", sorted(example_keys()))
def test_every_config_key_is_in_the_reference(key: str) -> None:
    """Each key of config.example.toml has a row in its section of the config reference."""
    table, name = key.split(".")
    reference = section("Configuration reference")
    match = re.search(rf"^### `\[+{table}\]+`.*?(?=^### |\Z)", reference, re.M | re.S)
    assert match is not None, f"no [{table}] table in the config reference"
    assert f"| `{name}` |" in match.group(0)


def test_status_json_keys_are_documented(tmp_path: Path) -> None:
    """Every key `status --json` prints, and every job state it counts, is in the README."""
    store = Store.open(tmp_path / "state.db")
    try:
        status = report.gather(store, [], now=0.0, stale_after=15.0)
    finally:
        store.close()
    documented = section("Status")
    for key in status:
        assert f"| `{key}` |" in documented
    for key in [*status["daemon"], *status["api_key"], "count", "items"]:
        assert f"`{key}`" in documented
    for kind, states in status["jobs"].items():
        assert f"`{kind}` ({', '.join(f'`{s}`' for s in states)})" in documented


def test_state_machine_is_the_one_in_the_model() -> None:
    """The README's state machine is copied line for line from syncd/model.py."""
    doc = model.__doc__ or ""
    diagram = doc.split("::\n", 1)[1].split("\nA job that is claimed", 1)[0]
    lines = [line for line in diagram.splitlines() if line.strip()]
    assert len(lines) > 10
    block = next(b for b in code_blocks(section("The job state machine")) if b)
    assert [line for line in block if line.strip()] == lines


def test_exit_codes_are_documented() -> None:
    """Each exit code the CLI docstring names has a row in the README."""
    codes = re.findall(r"(\d) [a-z]", (cli.__doc__ or "").split("Exit codes:", 1)[1])
    assert codes == ["0", "1", "2", "3"]
    table = section("Commands")
    for code in codes:
        assert f"\n| {code} |" in table
