"""Tables for notebooks: a list of row dicts -> a Markdown table the book renders (no pandas needed)."""

from __future__ import annotations


def _cell(value, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[dict], digits: int = 4) -> str:
    """Rows (dicts with the same keys) as a Markdown table; floats rounded to `digits`."""
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r.get(k, ""), digits) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def show_table(rows: list[dict], digits: int = 4, caption: str = ""):
    """Display rows as a table in a notebook (returns an IPython Markdown object).

    caption: a line in italics above the table, e.g. which data it was measured on (a table made from the
    synthetic stand-in must say so).
    """
    from IPython.display import Markdown

    table = markdown_table(rows, digits)
    return Markdown(f"*{caption}*\n\n{table}" if caption else table)
