"""Graceful stop on SIGTERM / SIGINT.

Outside the training loop a signal raises Cancelled at once. Inside it the signal is only noted;
the loop finishes the optimizer step it is in, writes a checkpoint and then raises Cancelled, so
that a pre-empted job resumes where it stopped.
"""

from __future__ import annotations

import signal


class Cancelled(Exception):
    """The run was stopped by a signal (SIGTERM from a scheduler, SIGINT from Ctrl-C)."""


class Stop:
    def __init__(self):
        self.signal: str | None = None
        self.deferred = False
        self._previous = {}

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name
        if not self.deferred:
            raise Cancelled(f"received signal {self.signal}")

    def install(self) -> "Stop":
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def check(self) -> None:
        if self.signal:
            raise Cancelled(f"received signal {self.signal}")
