"""One exception tree for syncd; adapters translate their libraries' errors into it.

::

    SyncdError
    ├── ConfigError            bad or unreadable config (names the key and the file)
    ├── StoreError             the state database
    │   ├── StoreLocked        another syncd holds the same state file
    │   ├── StoreCorrupt       not a syncd database, or damaged: never overwritten
    │   ├── StoreFull          the disk holding the database is full: nothing is lost
    │   ├── InvalidTransition  a job move outside the state machine (a bug)
    │   └── StaleAttempt       an attempt that is no longer current tried to record
    ├── FileProblem            a local file that cannot be uploaded as it is (permanent)
    │   └── FileChanged        the file changed while it was read: start again (transient)
    ├── RootUnavailable        a hot folder's root is missing or is not the folder recorded
    └── ApiError               the Assets API, by class of answer
        ├── AuthError          401/403: the key is not accepted; pause, keep every job
        ├── PermanentError     400/413/415/422: this content will never go up as it is
        ├── NotFound           404
        ├── RateLimited        429, with the parsed Retry-After in seconds
        ├── TransientError     5xx, connection errors, timeouts before the body was sent
        └── OutcomeUnknown     the request was sent and no answer came: the asset may exist

Only ``api`` sees httpx exceptions and only ``store`` sees sqlite ones.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""


class ConfigError(SyncdError):
    """The config cannot be used; ``key`` and ``file`` say where."""

    def __init__(self, message: str, *, key: str | None = None, file: str | None = None) -> None:
        self.key = key
        self.file = file
        where = ""
        if key:
            where += f" [key: {key}]"
        if file:
            where += f" [file: {file}]"
        super().__init__(f"{message}{where}")


class StoreError(SyncdError):
    """The state database could not do what was asked."""


class StoreLocked(StoreError):
    """Another syncd process holds this state database."""


class StoreCorrupt(StoreError):
    """The file is not a syncd state database, or is damaged; it is left untouched."""


class StoreFull(StoreError):
    """The disk under the state database is full; the write was rolled back."""


class InvalidTransition(StoreError):
    """A job state change that the state machine does not allow."""


class StaleAttempt(StoreError):
    """An attempt tried to record an outcome after the job moved on without it."""


class FileProblem(SyncdError):
    """A local file that cannot be uploaded as it stands; ``reason`` is for people."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class FileChanged(FileProblem):
    """The file changed while it was being read; it is looked at again once settled."""


class RootUnavailable(SyncdError):
    """A hot folder's root cannot be used now (missing, or another folder than recorded)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ApiError(SyncdError):
    """An answer (or the lack of one) from the Assets API."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class AuthError(ApiError):
    """401/403: the API key is not accepted."""


class PermanentError(ApiError):
    """400/413/415/422: retrying the same request cannot succeed."""


class NotFound(ApiError):
    """404: no such asset."""


class RateLimited(ApiError):
    """429: slow down; ``retry_after`` seconds when the server said."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = 429,
        code: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status, code=code)


class TransientError(ApiError):
    """5xx, connection refused, timeouts before sending: safe to retry later."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status, code=code)


class OutcomeUnknown(ApiError):
    """The request body went out and no answer came back: it may have taken effect.

    ``late`` says the server may still be working on it (we timed out, or a gateway did:
    504): what it makes may land well after we gave up, so look for it only later.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        late: bool = False,
    ) -> None:
        self.late = late
        super().__init__(message, status=status, code=code)
