"""A `Table` as Markdown, LaTeX (booktabs) or CSV.

Markdown and LaTeX show `mean ± std` rounded to `decimals`; CSV keeps full precision and splits each
score into `<benchmark>_mean`, `_std`, `_n` (and `_reported`, `_reported_source`; with a baseline
row, `_diff`, `_diff_ci95_lo`, `_diff_ci95_hi` of the paired comparison). A difference from the
baseline that the paired bootstrap does not support is marked † (a superscript dagger in LaTeX).
Reported numbers carry a note number ([1] in Markdown, a superscript in LaTeX) pointing to their
source under the table.
"""

from __future__ import annotations

import csv
import io

from .paired import MARK
from .tables import Stat, Table, reported_sources


def markdown(table: Table, decimals: int = 1) -> str:
    refs = _references(table)
    lines = [f"### {table.title}", "", "| " + " | ".join(c.title for c in table.columns) + " |"]
    lines.append("|" + "|".join("---" if c.kind == "text" else "---:" for c in table.columns) + "|")
    for row in table.rows:
        cells = [_text(c.kind, v, decimals, refs, "md") for c, v in zip(table.columns, row)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {note}" for note in table.notes]
    lines += [f"- [{n}] reported: {_source(*key)}" for key, n in refs.items()]
    return "\n".join(lines) + "\n"


def latex(table: Table, decimals: int = 1) -> str:
    refs = _references(table)
    spec = "".join("l" if c.kind == "text" else "r" for c in table.columns)
    lines = [
        f"% {table.title} (written by mof-llava tables; needs \\usepackage{{booktabs}})",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(_escape(c.title) for c in table.columns) + " \\\\",
        "\\midrule",
    ]
    for row in table.rows:
        lines.append(
            " & ".join(_text(c.kind, v, decimals, refs, "tex") for c, v in zip(table.columns, row)) + " \\\\"
        )
    lines += ["\\bottomrule", "\\end{tabular}"]
    lines += [f"% {note}" for note in table.notes]
    lines += [f"% ({n}) reported: {_source(*key)}" for key, n in refs.items()]
    return "\n".join(lines) + "\n"


def csv_text(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    paired = _paired_columns(table)
    header = []
    for column in table.columns:
        if column.kind == "stat":
            header += [f"{column.key}_mean", f"{column.key}_std", f"{column.key}_n"]
            if column.key in paired:
                header += [f"{column.key}_diff", f"{column.key}_diff_ci95_lo", f"{column.key}_diff_ci95_hi"]
        elif column.kind == "reported":
            header += [column.key, f"{column.key}_source"]
        else:
            header.append(column.key)
    writer.writerow(header)
    for row in table.rows:
        values = []
        for column, cell in zip(table.columns, row):
            if column.kind == "stat":
                values += (
                    ["", "", 0]
                    if cell is None
                    else [repr(cell.mean), "" if cell.std is None else repr(cell.std), cell.n]
                )
                if column.key in paired:
                    diff = cell.paired if cell is not None else None
                    values += ["", "", ""] if diff is None else [repr(diff.difference), *map(repr, diff.interval)]
            elif column.kind == "reported":
                values += ["", ""] if cell is None else [repr(cell.value), _source(cell.source, cell.note)]
            else:
                values.append("" if cell is None else cell)
        writer.writerow(values)
    return out.getvalue()


def _paired_columns(table: Table) -> set[str]:
    """Stat columns with a paired comparison in some row."""
    return {
        c.key
        for i, c in enumerate(table.columns)
        if c.kind == "stat" and any(isinstance(row[i], Stat) and row[i].paired for row in table.rows)
    }


def _text(kind: str, value, decimals: int, refs: dict[tuple[str, str], int], target: str) -> str:
    if value is None:
        return "–" if target == "md" else "--"
    if kind == "stat":
        return _stat(value, decimals, target)
    if kind == "reported":
        mark = refs[(value.source, value.note)]
        number = f"{value.value:.{decimals}f}"
        return f"{number} [{mark}]" if target == "md" else f"\\textit{{{number}}}\\textsuperscript{{{mark}}}"
    if kind == "number":
        return f"{value:g}"
    text = str(value)
    return _md_escape(text) if target == "md" else _escape(text)


def _stat(stat: Stat, decimals: int, target: str) -> str:
    mark = ""
    if stat.paired is not None and not stat.paired.supported:
        mark = f" {MARK}" if target == "md" else "$^\\dagger$"
    mean = f"{stat.mean:.{decimals}f}"
    if stat.std is None:
        if stat.interval is None:
            return mean + mark
        lo, hi = (f"{v:.{decimals}f}" for v in stat.interval)
        return f"{mean} [{lo}, {hi}]{mark}"
    std = f"{stat.std:.{decimals}f}"
    return (f"{mean} ± {std}" if target == "md" else f"{mean} $\\pm$ {std}") + mark


def _references(table: Table) -> dict[tuple[str, str], int]:
    """(source, note) -> note number, in order of appearance."""
    return {(v.source, v.note): n for n, v in enumerate(reported_sources(table), start=1)}


def _source(source: str, note: str) -> str:
    return source + (f" ({note})" if note else "")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")
