"""Plain-text tables: fixed-width for the terminal, Markdown for reports (one writer each, shared by every view)."""

from __future__ import annotations


def fixed_width(head: list[str], body: list[list[str]], left: int = 1) -> list[str]:
    """Header, rule and rows, columns two spaces apart; the first `left` columns left-aligned, the rest right."""
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return [line(head), "  ".join("-" * w for w in widths), *map(line, body)]


def markdown(head: list[str], body: list[list[str]]) -> list[str]:
    """A Markdown table (`|` in a cell escaped)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(head), "|" + "---|" * len(head), *map(line, body)]
