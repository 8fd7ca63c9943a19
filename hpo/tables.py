"""Tables as a person reads them: one header and rows, rendered as text, Markdown or HTML.

Every table hpo prints or writes (the comparison and its tests, the best model's per-class scores
and confusion matrix, the study note's tables, the HTML report's) is a :class:`Table`,
so the terminal, the note and the page show the same cells.

The rendering is tabulate's: one call turns the same rows into aligned plain text, Markdown
(GitHub's pipe tables, which optuna-dashboard's note renders) or an HTML ``<table>`` whose cells
it escapes. rich was the other candidate; it draws tables for a terminal, but has no Markdown
table output and exports HTML only as a styled capture of a whole console, so it would have
left two of the three formats hand-written.

Callers format their own numbers (``0.800`` is a decision, not ``0.8``), so cells are text and
tabulate's number parsing is off; a column whose every cell is a number is right-aligned.
This module imports nothing else of hpo: every layer may use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from tabulate import tabulate

Format = Literal["text", "markdown", "html"]
TABLEFMT: dict[str, str] = {"text": "simple", "markdown": "pipe", "html": "html"}


@dataclass(frozen=True)
class Table:
    """A header and rows of cells, to be shown as a table; cells are kept as ``str(cell)``.

    An empty header shows the rows alone. Raises ValueError for a row whose length differs
    from the header's (or, without a header, from the first row's).
    """

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def __init__(self, header: Iterable[str], rows: Iterable[Iterable[object]]) -> None:
        object.__setattr__(self, "header", tuple(header))
        object.__setattr__(self, "rows", tuple(tuple(str(c) for c in row) for row in rows))
        for row in self.rows:
            if len(row) != self.width:
                raise ValueError(f"a row has {len(row)} cells, the table {self.width}: {row!r}")

    @property
    def width(self) -> int:
        return len(self.header) if self.header else len(self.rows[0]) if self.rows else 0

    def render(self, fmt: Format = "text") -> str:
        """The table as ``text`` (aligned columns), ``markdown`` or ``html``.

        Markdown cells have ``|`` escaped; HTML cells are escaped by tabulate.

        Raises:
            ValueError: an unknown format.
        """
        if fmt not in TABLEFMT:
            raise ValueError(f"fmt must be one of {sorted(TABLEFMT)}, but got {fmt=}")
        header, rows = self.header, self.rows
        if fmt == "markdown":
            # A bare "|" would end the cell early; GitHub Markdown reads "\|" as the character.
            header = tuple(map(_pipe_escaped, header))
            rows = tuple(tuple(map(_pipe_escaped, row)) for row in rows)
        columns = [[row[i] for row in rows] for i in range(self.width)]
        align = ["right" if _numeric(column) else "left" for column in columns]
        return str(
            tabulate(
                rows,
                headers=header,
                tablefmt=TABLEFMT[fmt],
                disable_numparse=True,
                colalign=align or None,
            )
        )


def _pipe_escaped(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def _numeric(column: list[str]) -> bool:
    """Every non-empty cell is a number (``1,000``, ``-0.25``, ``12.5%`` count)."""
    filled = [c for c in column if c]
    return bool(filled) and all(_is_number(c) for c in filled)


def _is_number(cell: str) -> bool:
    try:
        float(cell.removesuffix("%").replace(",", ""))
    except ValueError:
        return False
    return True
