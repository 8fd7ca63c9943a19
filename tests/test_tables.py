"""Tables: the same cells in text, Markdown and HTML; cells escaped where a format needs it."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from hpo.tables import Table

TABLE = Table(
    ("trial", "network", "val_accuracy", "share"),
    [
        ("#4", "32-32 adam lr=2.0e-03", "0.7610", "12.5%"),
        ("#10", "a|b <script>alert(1)</script> & co", "0.800", ""),
    ],
)


class Cells(HTMLParser):
    """The text of every <th> and <td>, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.inside = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "tr":
            self.rows.append([])
        self.inside = tag in ("td", "th")
        if self.inside:
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        self.inside = False

    def handle_data(self, data: str) -> None:
        if self.inside:
            self.rows[-1][-1] += data


def html_cells(text: str) -> list[list[str]]:
    parser = Cells()
    parser.feed(text)
    return [[c.strip() for c in row] for row in parser.rows]


def markdown_cells(text: str) -> list[list[str]]:
    """Cells of a pipe table, split on unescaped pipes; the alignment row left out."""
    lines = text.splitlines()
    rows = [lines[0], *lines[2:]]
    split = [line.replace("\\|", "\0").strip().strip("|").split("|") for line in rows]
    return [[c.strip().replace("\0", "|") for c in row] for row in split]


def test_html_has_every_cell_escaped_and_nothing_else():
    out = TABLE.render("html")
    assert html_cells(out) == [list(TABLE.header), *map(list, TABLE.rows)]
    assert "<script>" not in out and "&lt;script&gt;" in out and "&amp; co" in out


def test_markdown_has_every_cell_with_pipes_escaped():
    out = TABLE.render("markdown")
    assert markdown_cells(out) == [list(TABLE.header), *map(list, TABLE.rows)]
    assert "a\\|b" in out


def test_text_has_every_cell_in_its_row():
    lines = TABLE.render("text").splitlines()
    assert lines[0].split() == list(TABLE.header)
    for line, row in zip(lines[2:], TABLE.rows, strict=True):
        at = 0
        for cell in filter(None, row):  # in order, left to right
            assert cell in line[at:], (cell, line)
            at = line.index(cell, at) + len(cell)


def test_numbers_stay_as_written_and_numeric_columns_align_right():
    out = TABLE.render("markdown")
    assert "0.800" in out and "0.7610" in out  # not re-formatted as 0.8
    # trial ("#4") and network are text; val_accuracy and share (one cell empty) are numbers
    markers = out.splitlines()[1].strip("|").split("|")  # :--- left, ---: right
    assert ["right" if m.endswith(":") else "left" for m in markers] == [
        "left",
        "left",
        "right",
        "right",
    ]
    first, second = TABLE.render("text").splitlines()[2:]
    assert first.index("0.7610") + len("0.7610") == second.index("0.800") + len("0.800")


def test_rows_without_a_header():
    out = Table((), [("python", "3.11"), ("cpu", "x86")]).render("html")
    assert "<th" not in out and html_cells(out) == [["python", "3.11"], ["cpu", "x86"]]


def test_a_row_of_the_wrong_length_or_an_unknown_format_is_an_error():
    with pytest.raises(ValueError, match="3 cells"):
        Table(("a", "b"), [("1", "2", "3")])
    with pytest.raises(ValueError, match="fmt='latex'"):
        TABLE.render("latex")  # type: ignore[arg-type]
