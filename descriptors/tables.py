"""The one table formatter of the toolkit: rows of cells -> a Markdown table.

Every CLI, pipeline and benchmark that prints a table builds its header and rows (numbers
already formatted as strings, so each caller keeps its own precision) and calls
:func:`format_table`; the JSON twin of a table is written with :func:`descriptors.util.write_json`.
"""

from __future__ import annotations

from typing import Any, Sequence

#: ``align`` letters: left, right, centre
_RULE = {"l": lambda w: ":" + "-" * (w - 1), "r": lambda w: "-" * (w - 1) + ":"}
_RULE["c"] = lambda w: ":" + "-" * (w - 2) + ":"
_PAD = {"l": str.ljust, "r": str.rjust, "c": str.center}


def _cell(v: Any) -> str:
    return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def format_table(
    header: Sequence[Any],
    rows: Sequence[Sequence[Any]],
    align: str | None = None,
    title: str | None = None,
) -> str:
    """A Markdown (GitHub pipe) table, columns padded so the plain text lines up too.

    Args:
        header: column names.
        rows: one sequence of cells per row; a cell is ``str()``-ed (None -> empty, ``|``
            escaped); a short row is padded with empty cells.
        align: one letter per column, ``l`` / ``r`` / ``c``; default: the first column left,
            the others right (labels, then numbers).
        title: a line printed above the table.
    Returns:
        the table, lines joined by ``\\n``, no trailing newline.
    """
    n = len(header)
    align = align or ("l" + "r" * (n - 1))
    if len(align) != n or set(align) - set(_PAD):
        raise ValueError(f"align {align!r}: need one of l/r/c per column ({n} columns)")
    body = [[_cell(c) for c in r] for r in rows]
    if any(len(r) > n for r in body):
        raise ValueError(f"a row has more than the {n} columns of the header")
    body = [r + [""] * (n - len(r)) for r in body]
    head = [_cell(h) for h in header]
    widths = [max(3, len(head[i]), *(len(r[i]) for r in body)) for i in range(n)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(_PAD[a](c, w) for c, w, a in zip(cells, widths, align)) + " |"

    rule = "|" + "|".join(_RULE[a](w + 2) for w, a in zip(widths, align)) + "|"
    out = ([title] if title else []) + [line(head), rule] + [line(r) for r in body]
    return "\n".join(out)


__all__ = ["format_table"]
