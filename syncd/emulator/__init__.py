"""A local emulator of the Assets API (see the API notes in the spec), for tests and demos.

It stands apart: it imports nothing of syncd, and the daemon never imports it. It is a
real HTTP server on loopback, so the API client is tested over a real socket with real
framing, keep-alive and dropped connections.

In process::

    with EmulatorServer(tmp_path, api_key="test-key", processing_seconds=0) as srv:
        srv.base_url                 # "http://127.0.0.1:PORT"
        srv.set_faults(Faults(error_rate=0.2, ambiguous_rate=0.1, seed=7))
        srv.set_api_key("rotated")   # the old key now gets 401
        srv.assets()                 # every record, with sha256
        srv.stats()                  # {"requests": {...}, "faults": {...}}

Command line: ``python -m syncd.emulator --port 8765 --data DIR`` (see ``--help``).

Behaviour where the API reference is silent, decided here:

* Format is read from the signature (magic bytes); the name and declared content type
  are ignored. Not JPEG/PNG/WebP: 415. A file part over 10 MiB: 413.
* An image with a good signature that Pillow cannot decode in full (truncated, corrupt):
  **422** ``invalid_image``, nothing stored. Answering at once (rather than accepting and
  marking the asset ``failed`` later) keeps such files failing where syncd can report
  them, as a permanent error for that content.
* The processing model: ``processing`` turns ``ready`` ``processing_seconds`` after the
  upload (0: at once), or ``failed`` with a chance of ``failure_rate``, drawn at upload
  time from a generator seeded with ``processing_seed`` (``--seed``). A failed asset
  carries ``failure_reason`` (one of the configured reasons) in list and get answers;
  it is ``null`` otherwise. ``set_processing()`` changes the model at run time.
* The URL form (JSON ``{"url": ...}``) answers 400 ``cannot_fetch``: no network here.
* Upload without ``name``: the file name without its extension. Repeated tags are kept
  once, in their first order.
* List: ``limit`` outside 1..100, a negative ``offset`` or an unknown ``status`` is a
  400, not a clamp. Items come in upload order. ``tags`` is split on commas and means
  all-of; a tag that itself contains a comma cannot be used as a filter. ``+`` in a query
  string is a space, so send a literal plus as ``%2B``.
* Request bodies need a ``Content-Length`` (411 otherwise, chunked bodies included).
* Errors are ``{"error": {"code": "...", "message": "..."}}``.
* ``Retry-After`` on an injected 429 is a whole number of seconds (rounded up).

Faults (:class:`Faults`) apply to ``/v1`` only: ``down`` answers 503 to everything;
``latency`` delays each request; ``rate_limit_rate`` answers 429; ``error_rate`` answers
500/502/503 without doing anything; ``ambiguous_rate`` does the work (an upload is
stored, a delete happens) and then closes the connection with no answer at all. Faults
are drawn before auth, the drop after it. ``late_rate``/``late_seconds`` store an upload
only after a wait longer than a client's timeout (a server that answers late), and
``churn_adds``/``churn_deletes`` let another client (tag ``other-client``) add and delete
assets after every list page; both draw from a second seeded generator.

Inspection over HTTP, without auth (loopback only!), never faulted and not counted:

* ``GET /_emulator/state`` → ``{"assets": [... full records with sha256 ...],
  "requests": {"POST /v1/training-asset": n, ...}, "faults": {"error": n, "rate_limit":
  n, "ambiguous": n, "latency": n, "down": n, "late": n, "churn": n}, "fault_settings": {...},
  "processing_seconds": s}``
* ``GET /_emulator/faults`` → ``{"fault_settings": {...}}``
* ``POST /_emulator/faults`` with the :class:`Faults` fields as JSON (missing ones take
  their defaults, unknown ones are a 400) → ``{"fault_settings": {...}}``
* ``POST /_emulator/api-key`` with ``{"api_key": "..."}`` → 204 (simulates a revoked key)
* ``POST /_emulator/reset`` → 204: every asset and count forgotten, settings kept

Files are served without auth at ``/files/<asset_id>.<format>`` and thumbnails (PNG,
at most 256 px a side) at ``/thumbnails/<asset_id>.png``.
"""

from .command import main
from .faults import OTHER_CLIENT_TAG, Faults
from .server import EmulatorServer

__all__ = ["OTHER_CLIENT_TAG", "EmulatorServer", "Faults", "main"]
