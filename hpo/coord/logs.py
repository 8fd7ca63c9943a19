"""Log lines of workers: one format, on stderr, with passwords masked in every record.

hpo's own messages already pass storage URLs through :func:`hpo.coord.storage.mask`; the filter here
also covers what it does not write itself (a driver's error text, a traceback), so that a
password in a storage URL never reaches a log.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from hpo.coord.storage import mask_text


class MaskPasswords(logging.Filter):
    """Rewrites each record's message (and traceback) with passwords masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        return True


class _Stderr(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each record (a test runner may swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure(level: int = logging.INFO) -> None:
    """Send hpo's log records to stderr as ``time level name: message``, passwords masked."""
    logger = logging.getLogger("hpo")
    logger.setLevel(level)
    if any(isinstance(h, _Stderr) for h in logger.handlers):
        return
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskPasswords())
    logger.addHandler(handler)
