"""The shipped systemd units: systemd accepts them as written, and their sandbox holds.

``systemd-analyze verify`` exits 0 on an unknown or misspelt key (it only prints a
warning), so these tests fail on *any* output from it, not on its exit status.
It also checks that ExecStart's program exists and is executable: each unit is
copied into tmp_path with its ExecStart pointed at the ``syncd`` script installed
with this package. ``User=syncd`` needs no such care: verify does not resolve users.

``systemd-analyze security --offline=yes`` scores a unit as a system service. For the
user unit that score means nothing (it reports "runs as root" and a full capability
set, which a user manager never grants), so the user unit is verified only, and its
sandbox is checked against the system unit's instead.

These tests need ``systemd-analyze`` and ``systemd-sysusers`` (Debian: the
``systemd`` package); without them they fail, they do not skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"
SYSTEM_UNIT = UNITS / "syncd.service"
TEMPLATE_UNIT = UNITS / "syncd@.service"
USER_UNIT = UNITS / "user" / "syncd.service"
SYSUSERS = UNITS / "sysusers.d" / "syncd.conf"
MAX_EXPOSURE = 2.0
INSTALLED_EXEC = {"/usr/local/bin/syncd", "%h/.local/bin/syncd"}
EXPOSURE_LINE = re.compile(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?)")

Setting = tuple[str, str, str]  # (section, key, value)


def tool(name: str) -> str:
    """The path of a systemd tool, or a failed test that says how to get it."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install it (Debian/Ubuntu: apt-get install -y systemd)")
    return found


def installed_syncd() -> str:
    """The ``syncd`` console script of the Python running the tests."""
    beside = Path(sys.executable).parent / "syncd"
    found = str(beside) if beside.is_file() else shutil.which("syncd")
    if found is None:
        pytest.fail("the syncd console script is not installed: pip install -e .")
    return found


def settings(unit: Path) -> list[Setting]:
    """The unit's assignments in order, comments and blank lines dropped."""
    section, out = "", []
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def value(unit: Path, key: str) -> str:
    """The single value of ``key`` in the unit's [Service] or [Unit] section."""
    found = [v for _, k, v in settings(unit) if k == key]
    assert len(found) == 1, f"{unit.name}: expected one {key}=, found {found}"
    return found[0]


def colon_table(path: Path) -> dict[str, list[str]]:
    """/etc/passwd or /etc/group, keyed by name."""
    rows = [line.split(":") for line in path.read_text().splitlines()]
    return {row[0]: row for row in rows}


def staged(unit: Path, directory: Path) -> Path:
    """A copy of ``unit`` in ``directory`` whose ExecStart runs the installed syncd."""
    text = unit.read_text()
    exec_lines = re.findall(r"^ExecStart=(\S+)", text, flags=re.MULTILINE)
    assert len(exec_lines) == 1 and exec_lines[0] in INSTALLED_EXEC, exec_lines
    program = installed_syncd().replace("%", "%%")
    text = text.replace(f"ExecStart={exec_lines[0]}", f"ExecStart={program}", 1)
    directory.mkdir(parents=True, exist_ok=True)
    copy = directory / unit.name
    copy.write_text(text)
    return copy


def analyze(
    args: list[str], tmp_path: Path, *, user: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze; a user manager needs a runtime directory, given in tmp_path."""
    env = dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER="", LANG="C.UTF-8")
    command = [tool("systemd-analyze")]
    if user:
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env.update(XDG_RUNTIME_DIR=str(runtime), XDG_CONFIG_HOME=str(tmp_path / "config"))
        command.append("--user")
    return subprocess.run(
        command + args, capture_output=True, text=True, env=env, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("unit", "name", "user"),
    [
        (SYSTEM_UNIT, "syncd.service", False),
        (TEMPLATE_UNIT, "syncd@studio.service", False),
        (USER_UNIT, "syncd.service", True),
    ],
    ids=["system", "template", "user"],
)
def test_verify_is_silent(unit: Path, name: str, user: bool, tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit without a single warning."""
    copy = staged(unit, tmp_path / "units")
    args = ["verify", "--man=no", "--generators=no", str(copy.parent / name)]
    result = analyze(args, tmp_path, user=user)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_verify_catches_a_typo(tmp_path: Path) -> None:
    """The verify check can fail: a misspelt key in a unit produces output."""
    copy = staged(SYSTEM_UNIT, tmp_path / "units")
    copy.write_text(copy.read_text().replace("ProtectSystem=", "ProtectSystme=", 1))
    result = analyze(["verify", "--man=no", "--generators=no", str(copy)], tmp_path)
    assert "ProtectSystme" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("unit", "name"),
    [(SYSTEM_UNIT, "syncd.service"), (TEMPLATE_UNIT, "syncd@studio.service")],
    ids=["system", "template"],
)
def test_security_exposure(unit: Path, name: str, tmp_path: Path) -> None:
    """systemd-analyze security rates the unit's overall exposure at 2.0 or below."""
    copy = staged(unit, tmp_path / "units")
    result = analyze(["security", "--offline=yes", str(copy.parent / name)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    match = EXPOSURE_LINE.search(result.stdout)
    assert match is not None, result.stdout
    assert match.group(1) == name
    assert float(match.group(2)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.parametrize("unit", [SYSTEM_UNIT, TEMPLATE_UNIT, USER_UNIT], ids=lambda u: u.name)
def test_service_contract(unit: Path) -> None:
    """Each unit runs syncd as Type=notify with a watchdog, a sane restart and stop time."""
    assert value(unit, "Type") == "notify"
    assert value(unit, "NotifyAccess") == "main"
    assert value(unit, "Restart") == "on-failure"
    assert value(unit, "RestartSec") == "5s"
    assert value(unit, "RestartPreventExitStatus") == "2"
    assert value(unit, "WatchdogSec") == "60s"
    assert value(unit, "TimeoutStopSec") == "15s"
    assert value(unit, "ExecStart").split()[1:3] == ["run", "-c"]
    assert value(unit, "UMask") == "0077"


# Lines of the template that name its instance; everything else is syncd.service.
TEMPLATE_ONLY = {"Description", "ExecStart", "StateDirectory", "LoadCredential"}

# What the system unit has that a user manager cannot do: switch identity, read
# root-only credentials, or the options systemd documents as system-only.
SYSTEM_ONLY = {
    "User",
    "Group",
    "SupplementaryGroups",
    "ConfigurationDirectory",
    "StateDirectory",
    "StateDirectoryMode",
    "LoadCredential",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "ProtectProc",
    "ProcSubset",
    "ProtectControlGroups",
    "PrivateMounts",
    "RemoveIPC",
    "KeyringMode",
    "Wants",
    "After",
    "WantedBy",
}
# What the user unit has on top: its own user namespace, which makes mount sandboxing
# work there, and a writable state directory where `syncd status` looks by default.
USER_ONLY = {"PrivateUsers", "ExecStartPre", "ReadWritePaths"}


def test_template_matches_system_unit() -> None:
    """The template's sandbox and service settings are the system unit's, line for line."""

    def common(unit: Path) -> list[Setting]:
        return [s for s in settings(unit) if s[1] not in TEMPLATE_ONLY]

    assert common(TEMPLATE_UNIT) == common(SYSTEM_UNIT)
    assert value(TEMPLATE_UNIT, "ExecStart").endswith("-c %E/syncd/%i.toml")
    assert value(TEMPLATE_UNIT, "StateDirectory") == "syncd/%i"
    assert value(TEMPLATE_UNIT, "LoadCredential") == "api_key:/etc/syncd/%i.api_key"


def test_user_unit_matches_system_unit() -> None:
    """The user unit keeps every setting of the system unit that a user manager supports."""

    def common(unit: Path) -> set[Setting]:
        skip = SYSTEM_ONLY | USER_ONLY | {"Description", "ExecStart"}
        return {s for s in settings(unit) if s[1] not in skip}

    assert common(USER_UNIT) == common(SYSTEM_UNIT)
    assert value(USER_UNIT, "PrivateUsers") == "yes"
    assert value(USER_UNIT, "ExecStart").endswith("-c %E/syncd/config.toml")
    assert value(USER_UNIT, "ReadWritePaths") == "%h/.local/share/syncd"


def test_system_unit_paths() -> None:
    """The system unit reads /etc/syncd, writes only /var/lib/syncd, gets the key as credential."""
    assert value(SYSTEM_UNIT, "ExecStart").endswith("-c %E/syncd/config.toml")
    assert value(SYSTEM_UNIT, "ConfigurationDirectory") == "syncd"
    assert value(SYSTEM_UNIT, "StateDirectory") == "syncd"
    assert value(SYSTEM_UNIT, "LoadCredential") == "api_key:/etc/syncd/api_key"
    assert value(SYSTEM_UNIT, "ProtectSystem") == "strict"
    assert value(SYSTEM_UNIT, "ProtectHome") == "read-only"
    keys = {k for _, k, _ in settings(SYSTEM_UNIT)}
    assert not keys & {"ReadWritePaths", "EnvironmentFile", "DynamicUser", "PrivateUsers"}
    assert not any("API_KEY" in v for _, _, v in settings(SYSTEM_UNIT))


def test_sysusers_creates_the_unit_identities(tmp_path: Path) -> None:
    """systemd-sysusers, fed the shipped file, creates the user and groups the units name."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    result = subprocess.run(
        [tool("systemd-sysusers"), f"--root={root}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    users = colon_table(root / "etc" / "passwd")
    groups = colon_table(root / "etc" / "group")
    for unit in (SYSTEM_UNIT, TEMPLATE_UNIT):
        user, group = value(unit, "User"), value(unit, "Group")
        assert users[user][3] == groups[group][2], "the user's primary group is Group="
        assert users[user][6].endswith("nologin")
        assert value(unit, "SupplementaryGroups") in groups
