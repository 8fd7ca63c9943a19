"""Graceful shutdown: SIGINT or SIGTERM stops a worker within a moment, its trial given back.

The first signal sets a flag: the worker claims no new trial. If a trial is training, the
handler raises :class:`Interrupted` in the main thread right away — but only inside
:meth:`Shutdown.interruptible`, which the worker wraps around the objective alone, never
around the study's bookkeeping. That is how Ctrl-C has always stopped Python code: the trainer
needs no flag to poll and its hot loop pays nothing; the next bytecode after the current
PyTorch operation raises. The worker then gives the trial back and exits 0.

Python drops an exception raised inside a weakref callback, a ``__del__`` or a garbage
collection callback ("Exception ignored in ..."), and a signal can land there: about one
SIGTERM in eight was lost that way during training, and the trial then ran to its end. So the
first signal insists: until :class:`Interrupted` has left the interruptible block, a watcher
thread re-delivers it every :data:`INSIST_SECONDS` (as ``SIGUSR2``, handled only while
:meth:`Shutdown.handling` is active), and the next bytecode outside such a callback raises it.
The dropped one is not printed ("Exception ignored in ..." with a traceback): it is no error.

A second signal raises ``KeyboardInterrupt`` wherever the worker is: quit now; the trial's
heartbeat stops and another worker retries it after the grace period.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Re-delivers a stop that Python dropped (see module docs); never sent from outside.
INSIST_SIGNAL = signal.SIGUSR2
INSIST_SECONDS = 0.2


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
        self._insister: threading.Thread | None = None
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
        previous[INSIST_SIGNAL] = signal.signal(INSIST_SIGNAL, self._on_insist)
        unraisable = sys.unraisablehook

        def quiet(args: sys.UnraisableHookArgs) -> None:  # a dropped stop is delivered again
            if not isinstance(args.exc_value, Interrupted):
                unraisable(args)

        sys.unraisablehook = quiet
        try:
            yield self
        finally:
            if self._insister is not None:  # done within INSIST_SECONDS: nothing is armed now
                self._insister.join()
            sys.unraisablehook = unraisable
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
            self._insister = threading.Thread(target=self._insist, name="hpo-stop", daemon=True)
            self._insister.start()
            raise Interrupted(self.signal_name or "request")

    def _on_insist(self, signum: int, frame: FrameType | None) -> None:
        if self._armed:  # the first Interrupted was dropped: the block is still running
            raise Interrupted(self.signal_name or "request")

    def _insist(self) -> None:
        """Re-deliver the stop to the main thread until the interruptible block has ended."""
        main = threading.main_thread().ident
        while True:
            time.sleep(INSIST_SECONDS)
            if not self._armed or main is None:
                return
            signal.pthread_kill(main, INSIST_SIGNAL)
