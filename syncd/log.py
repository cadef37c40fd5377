"""The one structlog set-up: JSON lines for machines, readable lines for people.

Only this module configures logging. structlog events and stdlib records (httpx, uvicorn,
watchdog) go through one handler on the root logger and one processor chain, so both get
the same timestamp, level and logger name, and the same redaction.

Secrets never reach the output: :class:`Redactor` masks every registered secret wherever
it appears (event values, nested containers, reprs, the rendered exception), and masks
keys named like ``api_key`` or ``authorization`` whatever their value. Tracebacks are
rendered without local variables, since a local may hold the key.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TextIO

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from syncd.tags import for_people

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("auto", "json", "console")
MASK = "***"

SecretSource = Callable[[], str] | str

# Key names whose values are masked whatever they hold (compared lower-case, "-" as "_").
_SENSITIVE_NAMES = (
    "api_key",
    "apikey",
    "authorization",
    "token",
    "password",
    "passwd",
    "secret",
    "cookie",
)
# Names ending so hold where a secret is kept, not the secret: they stay readable.
_LOCATION_SUFFIXES = ("_file", "_path", "_dir")
# Libraries that log per request or per file event, or headers at debug level.
_QUIET_LOGGERS = ("httpx", "httpcore", "hpack", "watchdog", "uvicorn.access", "PIL", "multipart")
_PLAIN = (int, float, bool, type(None))


@functools.lru_cache(maxsize=1024)
def _is_sensitive(name: str) -> bool:
    lowered = name.lower().replace("-", "_")
    if lowered.endswith(_LOCATION_SUFFIXES):
        return False
    return any(part in lowered for part in _SENSITIVE_NAMES)


class Redactor:
    """A structlog processor that masks secrets; providers are asked on every event.

    A provider (``ApiKey.known``: no file access, for it runs on every line) may return a
    new key after a rotation: every value it ever returned stays masked, since older log
    lines and retries may still carry it.
    """

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._providers: list[Callable[[], str]] = []
        self._lock = threading.Lock()

    def add(self, secret: SecretSource) -> None:
        with self._lock:
            if callable(secret):
                self._providers.append(secret)
            elif secret:
                self._values.add(secret)

    def secrets(self) -> tuple[str, ...]:
        """Longest first, so a secret that contains another is masked whole."""
        with self._lock:
            providers = list(self._providers)
        fresh = {value for provider in providers if (value := _ask(provider))}
        with self._lock:
            self._values |= fresh
            return tuple(sorted(self._values, key=len, reverse=True))

    def scrub_text(self, text: str, secrets: tuple[str, ...]) -> str:
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def scrub(self, value: Any, secrets: tuple[str, ...]) -> Any:
        if isinstance(value, str):
            return self.scrub_text(value, secrets)
        if isinstance(value, _PLAIN):
            return value
        if isinstance(value, dict):
            return self._scrub_dict(value, secrets)
        if isinstance(value, tuple):
            return tuple(self.scrub(item, secrets) for item in value)
        if isinstance(value, list | set | frozenset):
            return [self.scrub(item, secrets) for item in value]
        # Rendered here, so the text that gets written is the text that was checked.
        text = str(value) if isinstance(value, os.PathLike) else repr(value)
        return self.scrub_text(text, secrets)

    def _scrub_dict(self, value: Mapping[Any, Any], secrets: tuple[str, ...]) -> dict[Any, Any]:
        scrubbed = {}
        for key, item in value.items():
            name = self.scrub(key, secrets)
            sensitive = isinstance(key, str) and _is_sensitive(key)
            scrubbed[name] = MASK if sensitive else self.scrub(item, secrets)
        return scrubbed

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        scrubbed: EventDict = self._scrub_dict(event_dict, self.secrets())
        return scrubbed


def _ask(provider: Callable[[], str]) -> str | None:
    try:
        return provider()
    except Exception:  # noqa: BLE001 - a log line must not fail because a key file went away
        return None


_REDACTOR = Redactor()
_state: dict[str, logging.Handler] = {}


def add_secret(secret: SecretSource) -> None:
    """Mask ``secret`` (a value, or a callable returning the current value) in all output."""
    _REDACTOR.add(secret)


def resolve_format(fmt: str, stream: TextIO, env: Mapping[str, str]) -> Literal["json", "console"]:
    """``auto``: JSON for the journal and for pipes and files, console lines on a terminal."""
    if fmt == "json":
        return "json"
    if fmt == "console":
        return "console"
    if fmt != "auto":
        raise ValueError(f"unknown log format {fmt!r}: use one of {', '.join(FORMATS)}")
    if env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"):
        return "json"
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def _shared_processors() -> list[Processor]:
    """What structlog events and stdlib records both get before they are rendered."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _final_processors(form: str, stream: TextIO) -> list[Processor]:
    """Exceptions become text or dicts first, so the redactor sees what will be written."""
    meta = structlog.stdlib.ProcessorFormatter.remove_processors_meta
    if form == "json":
        no_locals = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        return [
            meta,
            structlog.processors.ExceptionRenderer(no_locals),
            _REDACTOR,
            structlog.processors.JSONRenderer(),
        ]
    isatty = getattr(stream, "isatty", None)
    renderer = structlog.dev.ConsoleRenderer(
        colors=bool(isatty and isatty()),
        exception_formatter=structlog.dev.plain_traceback,
    )
    return [
        meta,
        structlog.processors.format_exc_info,
        _REDACTOR,
        _for_people,
        _Scrubbed(renderer),
    ]


def _for_people(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Console lines: control characters in values (a file name with ESC) come out escaped."""
    return {
        key: for_people(value, keep_newlines=key == "exception")
        if isinstance(value, str)
        else value
        for key, value in event_dict.items()
    }


class _Scrubbed:
    """A last pass over the rendered line, for text the console renderer builds itself."""

    def __init__(self, renderer: Callable[[WrappedLogger, str, EventDict], str]) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        line = self._renderer(logger, method, event_dict)
        return _REDACTOR.scrub_text(line, _REDACTOR.secrets())


def configure(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    secrets: Iterable[SecretSource] = (),
    *,
    env: Mapping[str, str] | None = None,
) -> None:
    """Set up structlog and stdlib logging; calling it again replaces the earlier set-up."""
    level = level.lower()
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}")
    form = resolve_format(
        fmt, sys.stderr if stream is None else stream, os.environ if env is None else env
    )
    for secret in secrets:
        add_secret(secret)
    _install_handler(form, stream, logging.getLevelNamesMapping()[level.upper()])
    structlog.configure(
        processors=[
            _tell_observers,
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: tests reconfigure, and capture_logs must reach module-level loggers.
        cache_logger_on_first_use=False,
    )


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is now: test runners and click's runner swap it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # emit runs under the handler's lock
        super().emit(record)


def _install_handler(form: str, stream: TextIO | None, level: int) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=_final_processors(form, sys.stderr if stream is None else stream),
    )
    handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if (previous := _state.pop("handler", None)) is not None:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(level)
    _state["handler"] = handler
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


#: Callables told of every event (its name and fields), whatever the log level: the
#: metrics and the notify command learn what happened from the same events people read.
#: They hear events once :func:`configure` has run (every command does it first).
Observer = Callable[[str, Mapping[str, Any]], None]
_observers: list[Observer] = []


def observe(observer: Observer) -> Callable[[], None]:
    """Tell ``observer`` of every event from now on; returns the way to stop."""
    _observers.append(observer)
    return lambda: _observers.remove(observer) if observer in _observers else None


def _tell_observers(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """First in the chain, before the level filter; an observer's error is never the log's."""
    name = str(event_dict.get("event", ""))
    for observer in tuple(_observers):
        with contextlib.suppress(Exception):  # a broken observer must not silence the log
            observer(name, event_dict)
    return event_dict


def raise_console_level(level: str) -> int:
    """Make our handler at least this quiet; returns its level before, to restore later.

    ``syncd sync`` on a terminal keeps info lines off the screen while its progress bar
    runs (warnings still show): hundreds of upload lines would push the bar away.
    """
    handler = _state.get("handler")
    if handler is None:
        return logging.NOTSET
    before = handler.level
    handler.setLevel(max(before, logging.getLevelNamesMapping()[level.upper()]))
    return before


def set_console_level(level: int) -> None:
    if (handler := _state.get("handler")) is not None:
        handler.setLevel(level)


def reset() -> None:
    """Undo :func:`configure` (tests): structlog defaults, no handler of ours on the root."""
    if (handler := _state.pop("handler", None)) is not None:
        logging.getLogger().removeHandler(handler)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    logging.getLogger().setLevel(logging.WARNING)
    structlog.reset_defaults()
