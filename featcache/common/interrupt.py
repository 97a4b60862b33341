"""Ctrl-C that stops a long loop after the step in hand instead of in the middle of it.

A KeyboardInterrupt raised at an arbitrary point can fall between the writes of one step (a
batch of rows, a model and its record) or cut a worker's handover mid-handshake. Stages wrap
their loop in :class:`StopAfterCurrent` and check ``requested`` after each step.

No torch and no scikit-learn here: every stage may use it.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading

log = logging.getLogger(__name__)


class StopAfterCurrent:
    """The first Ctrl-C sets ``requested`` (and logs what is being finished); a second one
    raises KeyboardInterrupt at once.

    Only installed over Python's default handler, in the main thread (signals reach only
    that thread, and a handler someone else installed stays theirs). Set ``what`` as the loop
    moves on, so that the warning names the step that will be finished."""

    def __init__(self, what: str = "the step in hand", logger: logging.Logger | None = None) -> None:
        self.what = what
        self.requested = False
        self._log = logger or log
        self._previous = None

    @property
    def installed(self) -> bool:
        """Whether Ctrl-C is handled here (False off the main thread or over another handler)."""
        return self._previous is not None

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._log.warning("stopping after %s (Ctrl-C again to stop now)", self.what)

    def __enter__(self) -> StopAfterCurrent:
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def ignore_sigint_in_worker() -> None:
    """In a worker process (joblib/loky), ignore SIGINT: the parent decides when to stop.

    A terminal's Ctrl-C reaches every process of its group; a KeyboardInterrupt in a worker
    would abort the very fit the parent's :class:`StopAfterCurrent` means to finish. The parent
    still stops at once on a second Ctrl-C and then shuts its workers down. A no-op in the
    main process (n_jobs=1 runs tasks there) and off a main thread."""
    if multiprocessing.parent_process() is None or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
