"""The emulator as an object a test or a command starts and stops."""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from .app import EmulatorHTTPServer
from .endpoints import State
from .faults import FaultInjector, Faults
from .storage import Library


class EmulatorServer:
    """A real HTTP server on its own thread, serving one data dir.

    ``start`` returns once the socket listens (port 0 picks a free one); ``stop`` closes
    the listener, cuts idle keep-alive connections, joins every thread and closes the
    database, and may be called any number of times. Inspection (``assets``, ``stats``)
    works whether or not the server is running.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        api_key: str = "test-key",
        host: str = "127.0.0.1",
        port: int = 0,
        processing_seconds: float = 0.5,
        failure_rate: float = 0.0,
        failure_reasons: tuple[str, ...] = (),
        processing_seed: int | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self._wanted_port = port
        self._library = Library(
            self.data_dir,
            processing_seconds=processing_seconds,
            failure_rate=failure_rate,
            seed=processing_seed,
            **({"failure_reasons": failure_reasons} if failure_reasons else {}),
        )
        self._state = State(self._library, FaultInjector(faults), api_key)
        self._httpd: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EmulatorServer(data_dir={str(self.data_dir)!r}, port={self._port!r})"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        with self._lock:
            if self._httpd is not None:
                raise RuntimeError("the emulator is already running")
            self._state.stopping.clear()
            httpd = EmulatorHTTPServer((self.host, self._wanted_port), self._state)
            self._port = int(httpd.server_address[1])
            self._state.address = self.base_url.removeprefix("http://")
            self._thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.02},
                name=f"emulator-{self._port}",
                daemon=True,
            )
            self._thread.start()
            self._httpd = httpd

    def stop(self) -> None:
        with self._lock:
            httpd, self._httpd = self._httpd, None
            if httpd is None:
                return
            self._state.stopping.set()  # cuts injected latency short
            httpd.shutdown()
            httpd.cut_connections()
            httpd.server_close()  # joins the handler threads
            if self._thread is not None:
                self._thread.join()
            self._library.close()

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def set_faults(self, faults: Faults) -> None:
        self._state.faults.configure(faults)

    def set_processing(
        self,
        *,
        seconds: float | None = None,
        failure_rate: float | None = None,
        reasons: tuple[str, ...] | None = None,
    ) -> None:
        """Change the processing model for uploads from now on."""
        self._library.processing.configure(
            seconds=seconds, failure_rate=failure_rate, reasons=reasons
        )

    @property
    def faults(self) -> Faults:
        return self._state.faults.faults

    def set_api_key(self, api_key: str) -> None:
        """Swap the accepted key at run time: the old one is refused from the next request."""
        self._state.set_api_key(api_key)

    def assets(self) -> list[dict[str, Any]]:
        """Every stored asset with its ``sha256``, in upload order."""
        return self._library.all()

    def stats(self) -> dict[str, dict[str, int]]:
        return {"requests": self._state.requests(), "faults": self._state.faults.counts()}

    def tag_lookups(self) -> int:
        """Listings filtered by a tag: the lookups a client makes before it sends."""
        return self._state.tag_lookups()

    def reset(self) -> None:
        """Forget every asset and every count; the settings stay."""
        self._library.reset()
        self._state.reset_counts()
