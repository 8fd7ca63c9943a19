"""Errors a user can cause, each carrying a one-line message and an exit code.

The CLI turns an :class:`HpoError` into ``Error: <message>`` on stderr and its exit code,
with no traceback. Library callers catch them like any other exception.
"""

from __future__ import annotations


class HpoError(Exception):
    """A problem the user can fix; ``str(err)`` says what is wrong and what to do."""

    exit_code = 1


class SpecError(HpoError):
    """The study file is malformed, names an unknown option, or declares an impossible range."""

    exit_code = 2

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class StorageError(HpoError):
    """The storage URL is malformed, the database is unreachable, or the study is missing."""

    exit_code = 2


class StudyMismatchError(HpoError):
    """The study in storage was created from a different study file."""

    exit_code = 2


class DataNotFoundError(HpoError):
    """Fashion-MNIST was found nowhere and could not be downloaded, or a file of it is damaged
    (checked before anything is written), or the data folder is a file."""

    exit_code = 2


class ConfirmError(HpoError):
    """``hpo confirm`` was asked for what the study cannot give: more configurations than it
    has completed, or another --top/--seeds than its confirm study was created with."""

    exit_code = 2
