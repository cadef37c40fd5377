"""Config: TOML (``tomllib``) into frozen dataclasses, every default from the spec.

A typo must not silently switch off a safety setting, so every key is checked against a
table of known keys (one converter per key, below); an error names the dotted key and the
file. The defaults live in the dataclasses and nowhere else.

The API key is located here but read lazily (:class:`ApiKey`): ``syncd status`` must work
for a user who may not read the key file, and a rotated key must be picked up without a
restart.
"""

from __future__ import annotations

import difflib
import ipaddress
import itertools
import json
import math
import os
import stat
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs

from syncd.apikey import ApiKey, resolve_key, within
from syncd.errors import ConfigError
from syncd.tags import DEFAULT_INCLUDE

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
OVERSIZE_POLICIES = ("fail", "downscale")
CONVERTIBLE = ("tiff", "heic", "avif")
#: Naming a format in ``convert`` includes its files: the globs it adds to ``include``.
CONVERT_GLOBS = {
    "tiff": ("*.tif", "*.tiff"),
    "heic": ("*.heic", "*.heif"),
    "avif": ("*.avif",),
}
PROCESSING_FAILED_POLICIES = ("report", "reupload")
AFTER_UPLOAD = ("keep", "archive", "remove")
AFTER_UPLOAD_WHEN = ("ready", "sent")
NAME_POLICIES = ("first", "follow")
MAX_CONCURRENCY = 64
SYSTEM_CONFIG = Path("/etc/syncd/config.toml")


@dataclass(frozen=True)
class ApiConfig:
    base_url: str = "https://api.productai.photo"
    api_key: ApiKey | None = None
    api_key_file: Path | None = None
    timeout_seconds: float = 30.0
    concurrency: int = 4
    identity_tag: bool = True
    #: ``http://`` to a host other than this machine sends the key in clear: opt in only.
    allow_insecure_http: bool = False
    late_answer_seconds: float = 0.0
    late_answer_seconds_per_mb: float = 5.0


@dataclass(frozen=True)
class StateConfig:
    path: Path = Path("state.db")


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True)
class DaemonConfig:
    rescan_interval_seconds: float = 3600.0
    #: Follow-ups of remote processing back off from a few seconds up to this.
    processing_check_max_seconds: float = 300.0
    #: At most this many follow-up requests a second, whatever is pending.
    processing_requests_per_second: float = 2.0


@dataclass(frozen=True)
class MetricsConfig:
    """Opt-in Prometheus endpoint: ``listen`` is ``host:port`` (loopback unless said)."""

    listen: str | None = None


@dataclass(frozen=True)
class NotifyConfig:
    """Opt-in events for people: ``command`` (an argv, run without a shell) gets JSON."""

    command: tuple[str, ...] = ()
    min_interval_seconds: float = 300.0


@dataclass(frozen=True)
class FolderConfig:
    path: Path
    tags: tuple[str, ...] = ()
    mirror_deletes: bool = True
    settle_seconds: float = 2.0
    max_deletes: int = 50
    delete_grace_seconds: float = 30.0
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = ()
    #: ``"auto"``: by the folder's filesystem type (network and FUSE mounts are polled).
    polling: bool | Literal["auto"] = "auto"
    poll_interval_seconds: float = 5.0
    oversize: Literal["fail", "downscale"] = "fail"
    convert: tuple[str, ...] = ()
    #: Folders nested deeper than this below the root are skipped (with a reason).
    max_depth: int = 64
    on_processing_failed: Literal["report", "reupload"] = "report"
    #: What happens to a file once its asset is safely in the library.
    after_upload: Literal["keep", "archive", "remove"] = "keep"
    archive_path: Path | None = None
    after_upload_when: Literal["ready", "sent"] = "ready"
    #: "follow": a rename to a new stem re-uploads under the new name.
    names: Literal["first", "follow"] = "first"

    @property
    def key(self) -> str:
        """The folder's identity in the store: its resolved root path."""
        return str(self.path)


@dataclass(frozen=True)
class Config:
    api: ApiConfig = field(default_factory=ApiConfig)
    state: StateConfig = field(default_factory=StateConfig)
    log: LogConfig = field(default_factory=LogConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    folders: tuple[FolderConfig, ...] = ()
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    source: Path | None = None


# --- finding and loading ---------------------------------------------------------------


def default_config_paths() -> tuple[Path, ...]:
    """Where a config is looked for when neither ``-c`` nor ``$SYNCD_CONFIG`` says."""
    return (platformdirs.user_config_path("syncd") / "config.toml", SYSTEM_CONFIG)


def find_config_path(
    explicit: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    search: Sequence[Path] | None = None,
) -> Path:
    """The config file to use; a named file that is missing is an error, not a fallback."""
    env = os.environ if env is None else env
    if explicit is not None:
        return _existing(explicit, "-c")
    if named := env.get("SYNCD_CONFIG"):
        return _existing(Path(named).expanduser(), "$SYNCD_CONFIG")
    candidates = default_config_paths() if search is None else tuple(search)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(["-c (not given)", "$SYNCD_CONFIG (not set)", *map(str, candidates)])
    raise ConfigError(
        f"no config file found; tried {tried}. Pass -c CONFIG or set SYNCD_CONFIG"
        " (config.example.toml documents every key)"
    )


def _existing(path: Path, via: str) -> Path:
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(f"config file {path} (from {via}) {what}", file=str(path))
    return path


def load(path: Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read and check the config file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read the config: {exc.strerror}", file=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("the config is not UTF-8 text", file=str(path)) from None
    config = parse(text, source=path, env=env)
    if os.name == "posix" and mode & 0o077 and _holds_key(text):
        raise ConfigError(
            f"api.api_key: the config file holds the API key and is open to group or others"
            f" (mode {stat.S_IMODE(mode):04o}); run chmod 600 {path}, or move the key to"
            " api.api_key_file",
            key="api.api_key",
            file=str(path),
        )
    return config


def _holds_key(text: str) -> bool:
    api = tomllib.loads(text).get("api")
    return isinstance(api, dict) and "api_key" in api


def parse(text: str, *, source: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Check TOML text; relative paths resolve against the config file's directory."""
    ctx = _Source(
        file=None if source is None else str(source),
        base=Path.cwd() if source is None else source.absolute().parent,
        env=os.environ if env is None else env,
    )
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=ctx.file) from None
    return _build(raw, ctx, source)


# --- the schema: one converter per key ---------------------------------------------------

Convert = Callable[[Any], Any]


class _Invalid(Exception):
    """A value that does not fit its key; ``at`` narrows the key (``[2]`` of a list)."""

    def __init__(self, problem: str, at: str = "") -> None:
        self.problem = problem
        self.at = at
        super().__init__(problem)


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _integer(low: int, high: int | None = None) -> Convert:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected an integer, got {_describe(value)}")
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise _Invalid(f"must be {bounds}, got {value}")
        return value

    return convert


def _number(low: float, *, inclusive: bool) -> Convert:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"expected a number, got {_describe(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise _Invalid(f"must be a finite number, got {value}")
        if number < low or (number == low and not inclusive):
            bound = f"{low:g} or more" if inclusive else f"greater than {low:g}"
            raise _Invalid(f"must be {bound}, got {value}")
        return number

    return convert


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_describe(value)}")
    return value


def _auto_or_boolean(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    if value == "auto":
        return "auto"
    raise _Invalid(f'expected "auto", true or false, got {_describe(value)}')


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_describe(value)}")
    if not value.strip():
        raise _Invalid("must not be empty")
    return value


def _secret(value: Any) -> str:
    """Like ``_text``, but the value is never echoed: it is the API key."""
    if not isinstance(value, str):
        raise _Invalid("expected a string")
    if not value.strip():
        raise _Invalid("must not be empty")
    return value.strip()


def _choice(*options: str, fold_case: bool = False) -> Convert:
    def convert(value: Any) -> str:
        text = _text(value)
        text = text.lower() if fold_case else text
        if text not in options:
            listed = ", ".join(json.dumps(o) for o in options)
            raise _Invalid(f"must be one of {listed}, got {_describe(value)}")
        return text

    return convert


def _url(value: Any) -> str:
    parts = urlsplit(_text(value))
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise _Invalid(f'must be an http(s) URL like "https://host", got {_describe(value)}')
    return str(value).rstrip("/")


def is_loopback(host: str | None) -> bool:
    """Whether a host name or address means this machine (the key then never leaves it)."""
    if not host:
        return False
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def insecure_host(base_url: str) -> str | None:
    """The host an ``http://`` base URL would send the key to in clear, or None."""
    parts = urlsplit(base_url)
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return parts.hostname
    return None


def _path(value: Any) -> Path:
    try:
        return Path(_text(value)).expanduser()
    except RuntimeError:
        raise _Invalid(f"cannot expand ~ in {_describe(value)}") from None


def _strings(*, allowed: Sequence[str] = (), at_least: int = 0) -> Convert:
    def convert(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise _Invalid(f"expected an array of strings, got {_describe(value)}")
        items: list[str] = []
        for i, item in enumerate(value):
            try:
                text = _choice(*allowed)(item) if allowed else _text(item)
            except _Invalid as exc:
                raise _Invalid(exc.problem, at=f"[{i}]") from None
            if text not in items:
                items.append(text)
        if len(items) < at_least:
            raise _Invalid(f"must list at least {at_least} item(s)")
        return tuple(items)

    return convert


_API: dict[str, Convert] = {
    "base_url": _url,
    "api_key_file": _path,
    "api_key": _secret,
    "timeout_seconds": _number(0, inclusive=False),
    "concurrency": _integer(1, MAX_CONCURRENCY),
    "identity_tag": _boolean,
    "allow_insecure_http": _boolean,
    "late_answer_seconds": _number(0, inclusive=True),
    "late_answer_seconds_per_mb": _number(0, inclusive=True),
}
_STATE: dict[str, Convert] = {"path": _path}
_LOG: dict[str, Convert] = {
    "level": _choice(*LOG_LEVELS, fold_case=True),
    "format": _choice(*LOG_FORMATS),
}
_DAEMON: dict[str, Convert] = {
    "rescan_interval_seconds": _number(0, inclusive=False),
    "processing_check_max_seconds": _number(1, inclusive=True),
    "processing_requests_per_second": _number(0, inclusive=False),
}


def _listen(value: Any) -> str:
    """``host:port``; IPv6 hosts in brackets (``[::1]:9464``); port 0 picks a free one."""
    text = _text(value)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise _Invalid(f'expected "host:port", e.g. "127.0.0.1:9464", got {text!r}')
    return text


def _argv(value: Any) -> tuple[str, ...]:
    """A command as a list of arguments (run without a shell); repeats are kept."""
    if not isinstance(value, list) or not value:
        raise _Invalid(f"expected a non-empty list of strings, got {_describe(value)}")
    items = []
    for i, item in enumerate(value):
        try:
            items.append(_text(item))
        except _Invalid as exc:
            raise _Invalid(exc.problem, at=f"[{i}]") from None
    return tuple(items)


_METRICS: dict[str, Convert] = {"listen": _listen}
_NOTIFY: dict[str, Convert] = {
    "command": _argv,
    "min_interval_seconds": _number(0, inclusive=True),
}
_FOLDER: dict[str, Convert] = {
    "path": _path,
    "tags": _strings(),
    "mirror_deletes": _boolean,
    "settle_seconds": _number(0, inclusive=True),
    "max_deletes": _integer(0),
    "delete_grace_seconds": _number(0, inclusive=True),
    "include": _strings(at_least=1),
    "exclude": _strings(),
    "polling": _auto_or_boolean,
    "poll_interval_seconds": _number(0, inclusive=False),
    "oversize": _choice(*OVERSIZE_POLICIES),
    "convert": _strings(allowed=CONVERTIBLE),
    "max_depth": _integer(1, 4096),
    "on_processing_failed": _choice(*PROCESSING_FAILED_POLICIES),
    "after_upload": _choice(*AFTER_UPLOAD),
    "archive_path": _path,
    "after_upload_when": _choice(*AFTER_UPLOAD_WHEN),
    "names": _choice(*NAME_POLICIES),
}
_TOP_LEVEL = ("api", "state", "log", "daemon", "folders", "metrics", "notify")


# --- building the Config ---------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    file: str | None
    base: Path
    env: Mapping[str, str]

    def error(self, key: str, problem: str) -> ConfigError:
        err = ConfigError(f"{key}: {problem}", file=self.file)
        err.key = key  # set afterwards: the message already starts with the key
        return err

    def absolute(self, path: Path) -> Path:
        return path if path.is_absolute() else self.base / path


def _build(raw: dict[str, Any], ctx: _Source, source: Path | None) -> Config:
    for name in raw:
        if name not in _TOP_LEVEL:
            raise ctx.error(name, f"unknown key{_suggest(name, _TOP_LEVEL)}")
    api = _section(raw, "api", _API, ctx)
    inline_key = api.pop("api_key", None)
    state = _section(raw, "state", _STATE, ctx)
    state_path = state.get("path") or default_state_path(ctx.env)
    config = Config(
        api=ApiConfig(**api, api_key=resolve_key(inline_key, api.get("api_key_file"), ctx.env)),
        state=StateConfig(path=state_path.resolve()),
        log=LogConfig(**_section(raw, "log", _LOG, ctx)),
        daemon=DaemonConfig(**_section(raw, "daemon", _DAEMON, ctx)),
        folders=_folders(raw.get("folders"), ctx),
        metrics=MetricsConfig(**_section(raw, "metrics", _METRICS, ctx)),
        notify=NotifyConfig(**_section(raw, "notify", _NOTIFY, ctx)),
        source=source,
    )
    _check_layout(config, ctx)
    _check_transport(config, ctx)
    return config


def _check_transport(config: Config, ctx: _Source) -> None:
    """The key travels in every request: plain http only to this machine, unless opted in."""
    host = insecure_host(config.api.base_url)
    if host is not None and not config.api.allow_insecure_http:
        raise ctx.error(
            "api.base_url",
            f"http:// would send the API key unencrypted to {host}; use https://, or set"
            " api.allow_insecure_http = true if the network between is trusted",
        )


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _section(
    raw: dict[str, Any], name: str, schema: dict[str, Convert], ctx: _Source
) -> dict[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ctx.error(name, f"expected a table ([{name}]), got {_describe(table)}")
    return _read_table(table, schema, name, ctx)


def _read_table(
    table: dict[str, Any], schema: dict[str, Convert], where: str, ctx: _Source
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{where}.{name}"
        convert = schema.get(name)
        if convert is None:
            raise ctx.error(key, f"unknown key{_suggest(name, list(schema))}")
        try:
            converted = convert(value)
        except _Invalid as exc:
            raise ctx.error(key + exc.at, exc.problem) from None
        values[name] = ctx.absolute(converted) if isinstance(converted, Path) else converted
    return values


def _folders(value: Any, ctx: _Source) -> tuple[FolderConfig, ...]:
    if value is None or value == []:
        raise ctx.error("folders", "no folder configured: add a [[folders]] table with a path")
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ctx.error("folders", "expected an array of tables: write each as [[folders]]")
    return tuple(_folder(table, f"folders[{i}]", ctx) for i, table in enumerate(value))


def _folder(table: dict[str, Any], where: str, ctx: _Source) -> FolderConfig:
    values = _read_table(table, _FOLDER, where, ctx)
    if "path" not in values:
        raise ctx.error(f"{where}.path", "missing: every [[folders]] table needs a path")
    values["path"] = values["path"].resolve()
    if values.get("convert"):
        include = values.get("include", DEFAULT_INCLUDE)
        added = [g for fmt in values["convert"] for g in CONVERT_GLOBS[fmt] if g not in include]
        values["include"] = (*include, *added)
    if values.get("archive_path") is not None:
        values["archive_path"] = values["archive_path"].resolve()
    if values.get("after_upload") == "archive" and values.get("archive_path") is None:
        raise ctx.error(
            f"{where}.archive_path", 'missing: after_upload = "archive" needs an archive_path'
        )
    return FolderConfig(**values)


def _check_layout(config: Config, ctx: _Source) -> None:
    """Overlapping folders would give a file two owners; a state file inside one is on the share."""
    for (i, a), (j, b) in itertools.combinations(enumerate(config.folders), 2):
        if within(a.path, b.path) or within(b.path, a.path):
            raise ctx.error(
                f"folders[{j}].path",
                f"{b.path} overlaps folders[{i}].path ({a.path}): a file would belong to two"
                " folders; keep watched folders apart",
            )
    for i, folder in enumerate(config.folders):
        archive = folder.archive_path
        for j, other in enumerate(config.folders):
            if archive is not None and (within(archive, other.path) or within(other.path, archive)):
                raise ctx.error(
                    f"folders[{i}].archive_path",
                    f"{archive} overlaps folders[{j}].path ({other.path}): an archived file"
                    " would be found again; keep the archive outside every watched folder",
                )
        if within(config.state.path, folder.path):
            raise ctx.error(
                "state.path",
                f"{config.state.path} is inside folders[{i}].path ({folder.path}): keep the"
                " state database on a local disk, outside every watched folder",
            )


def default_state_path(env: Mapping[str, str]) -> Path:
    """systemd's ``StateDirectory=`` when running as a service, else the user data dir."""
    if state_dir := env.get("STATE_DIRECTORY"):
        return Path(state_dir.split(":")[0]) / "state.db"
    return platformdirs.user_data_path("syncd") / "state.db"


# --- the API key -----------------------------------------------------------------------


def require_api_key(config: Config) -> ApiKey:
    """The key, read once now so a missing, empty or open key file is reported up front."""
    key = config.api.api_key
    if key is None:
        raise ConfigError(
            "no API key: set SYNCD_API_KEY, api.api_key_file, $CREDENTIALS_DIRECTORY/api_key"
            " (systemd LoadCredential=) or api.api_key",
            key="api.api_key_file",
            file=None if config.source is None else str(config.source),
        )
    key.reveal()
    return key
