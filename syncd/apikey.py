"""The API key: found in the spec's order, read lazily, re-read when rotated, never shown.

``syncd status`` must work for a user who may not read the key file, and a rotated key
must be picked up without a restart, so the key is located at config time and read on
use. Its ``repr`` is masked and it refuses to be pickled.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from syncd.errors import ConfigError

_HIDDEN = "********"


class ApiKey:
    """The API key, resolved in the spec's order and never shown.

    ``reveal()`` returns the key; when it came from a file, the file is re-read when its
    (mtime, size, inode) changes, so a replaced key is picked up without a restart. A file
    that vanishes or is empty for a moment (a rotation in progress) keeps the last good key.
    ``repr``/``str`` mask it; ``origin`` and ``file`` say where it came from.
    """

    def __init__(
        self,
        *,
        origin: str,
        value: str | None = None,
        file: Path | None = None,
        check_mode: bool = True,
    ) -> None:
        if (value is None) == (file is None):
            raise ValueError("an ApiKey has either a value or a file")
        self.origin = origin
        self.file = file
        self._value = value
        self._check_mode = check_mode
        self._seen: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    def known(self) -> str:
        """The key as last read, without touching the file: for the log redactor, which
        asks on every line. Every value ever sent was read through :meth:`reveal` first, so
        it is known here; before the first read, the file is read once.
        """
        value = self._value
        if value is None:
            return self.reveal()
        return value

    def reveal(self) -> str:
        if self.file is None:
            assert self._value is not None
            return self._value
        with self._lock:
            return self._refresh(self.file)

    def _refresh(self, path: Path) -> str:
        try:
            st = path.stat()
        except OSError as exc:
            if self._value is not None:
                return self._value
            raise self._error(f"cannot read the API key file {path}: {exc.strerror}") from None
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature == self._seen and self._value is not None:
            return self._value
        if self._check_mode and os.name == "posix" and st.st_mode & 0o077:
            mode = stat.S_IMODE(st.st_mode)
            raise self._error(
                f"the API key file {path} is open to group or others (mode {mode:04o});"
                f" fix it with: chmod 600 {path}"
            )
        text = self._read(path)
        if not text:
            if self._value is not None:
                return self._value
            raise self._error(f"the API key file {path} is empty")
        self._value, self._seen = text, signature
        return text

    def _read(self, path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise self._error(f"cannot read the API key file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise self._error(f"the API key file {path} is not UTF-8 text") from None

    def _error(self, message: str) -> ConfigError:
        return ConfigError(message, key=self.origin)

    def __repr__(self) -> str:
        where = f", file={str(self.file)!r}" if self.file else ""
        return f"ApiKey({_HIDDEN!r}, origin={self.origin!r}{where})"

    __str__ = __repr__

    def __copy__(self) -> ApiKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ApiKey:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError("an ApiKey is not pickled: the key would be written out")


def resolve_key(inline: str | None, key_file: Path | None, env: Mapping[str, str]) -> ApiKey | None:
    """The spec's order: $SYNCD_API_KEY, api.api_key_file, systemd credential, api.api_key."""
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if value := env.get("SYNCD_API_KEY", "").strip():
        return ApiKey(origin="$SYNCD_API_KEY", value=value)
    if key_file is not None:
        trusted = credentials is not None and within(key_file, Path(credentials))
        return ApiKey(origin="api.api_key_file", file=key_file, check_mode=not trusted)
    if credentials and (path := Path(credentials) / "api_key").exists():
        # systemd sets credential files right, and they belong to this service only.
        return ApiKey(origin="$CREDENTIALS_DIRECTORY/api_key", file=path, check_mode=False)
    if inline:
        return ApiKey(origin="api.api_key", value=inline)
    return None


def within(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or lies below it (by name)."""
    return path == root or root in path.parents
