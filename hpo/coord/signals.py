"""Graceful shutdown: SIGINT or SIGTERM stops a worker within a moment, its trial given back.

The first signal sets a flag: the worker claims no new trial. If a trial is training, the
handler raises :class:`Interrupted` in the main thread right away — but only inside
:meth:`Shutdown.interruptible`, which the worker wraps around the objective alone, never
around the study's bookkeeping. That is how Ctrl-C has always stopped Python code: the trainer
needs no flag to poll and its hot loop pays nothing; the next bytecode after the current
PyTorch operation raises. The worker then gives the trial back and exits 0.

A second signal raises ``KeyboardInterrupt`` wherever the worker is: quit now; the trial's
heartbeat stops and another worker retries it after the grace period.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Raised in the trial's code by the first SIGINT/SIGTERM (a BaseException, so that no
    ``except Exception`` in training or Optuna code swallows it)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class Shutdown:
    """Remembers whether the worker was asked to stop, and interrupts its trial if so."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._armed = False
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, name: str = "request") -> None:
        """Ask for a stop without a signal (from another thread, say)."""
        self.signal_name = self.signal_name or name
        self._event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True at once if a stop is requested."""
        return self._event.wait(seconds)

    @contextlib.contextmanager
    def handling(self) -> Iterator[Shutdown]:
        """Install the SIGINT/SIGTERM handlers for the block (main thread only; elsewhere a
        no-op, and the caller uses :meth:`request`)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Let a stop request interrupt this block by raising :class:`Interrupted` in it."""
        if self.requested:
            raise Interrupted(self.signal_name or "request")
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.request(signal.Signals(signum).name)
        if self._armed:
            self._armed = False
            raise Interrupted(self.signal_name or "request")
