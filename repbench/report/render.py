"""A report as text: markdown (GitHub tables) or LaTeX ready for a paper (JSON and CSV rows: tidy.py).

LaTeX: each table is a `table` float with `\\caption`, booktabs rules, right-aligned numbers with the same
decimals down a column, mean ± std as `$a \\pm b$`, the best value of each column among the rows of one dataset
and preset in bold (by the metric's direction), and scaled down to the text width only when it would overflow. It needs `\\usepackage{booktabs}` and
`\\usepackage{graphicx}`, which the output says in its first line.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from tabulate import tabulate

from ..errors import RepbenchError
from .stats import MIXED, UNCONVERGED, UNTRUSTED
from .tables import NOT_APPLICABLE, NOT_MEASURED, Report, Section, Stat, build

FORMATS = ("markdown", "latex")
LEGEND = (f"mean ± sample std (n − 1) over training seeds; ↑ higher is better, ↓ lower, no arrow: neither; "
          f"{NOT_APPLICABLE}: does not apply, {NOT_MEASURED}: not measured, {UNTRUSTED}: NaN or infinite, "
          f"{UNCONVERGED}: a probe's solver did not converge, {MIXED}: seeds measured with different settings "
          f"or code versions")


def texts(section: Section) -> list[list[str]]:
    return [[c.text if isinstance(c, Stat) else str(c) for c in row] for row in section.rows]


def render(report: Report, fmt: str) -> str:
    if fmt not in FORMATS:
        raise RepbenchError(f"unknown format '{fmt}'; use {', '.join(FORMATS)} (json and csv rows: tidy.py)")
    if fmt == "latex":
        return latex_document(report)
    parts = []
    for i, s in enumerate(report.sections):
        title = s.title + (f" — {report.title}" if report.title and i == 0 else "") + (f" ({LEGEND})" if i == 0 else "")
        parts.append(title)
        if not s.rows:
            parts.append(s.note or "(nothing to show)")
            continue
        parts.append(tabulate(texts(s), headers=s.columns, tablefmt="github", disable_numparse=True))
        if s.note:
            parts.append(f"*{s.note}*")
    parts += [f"Figure: {caption} in {path}" for caption, path in report.figures]
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------ LaTeX
_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "↑": r"$\uparrow$",
            "↓": r"$\downarrow$", "—": "---", "−": "$-$", "≥": r"$\geq$", "×": r"$\times$"}


def escape(text: str) -> str:
    return "".join(_ESCAPES.get(ch, ch) for ch in str(text))


def best_cells(section: Section) -> set[tuple[int, int]]:
    """(row, column) of the best mean of each column whose metric has a direction, among the rows comparable
    with it (the same values in the section's `comparable` columns: dataset and preset): a run on other data
    or of another length is never anyone's best."""
    keys = [section.columns.index(c) for c in section.comparable if c in section.columns]
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(section.rows):
        groups.setdefault(tuple(str(row[k]) for k in keys), []).append(i)
    best = set()
    for j, name in enumerate(section.columns):
        direction = section.directions.get(name, "neither")
        if direction not in ("higher", "lower"):
            continue
        for members in groups.values():
            means = {i: section.rows[i][j].mean for i in members
                     if isinstance(section.rows[i][j], Stat) and section.rows[i][j].mean is not None}
            if len(means) > 1:
                target = max(means.values()) if direction == "higher" else min(means.values())
                best |= {(i, j) for i, m in means.items() if math.isclose(m, target, rel_tol=0, abs_tol=1e-12)}
    return best


def latex_cell(cell, bold: bool) -> str:
    """A value in math mode as its text reads (`90.9 ± 0.1` -> `$90.9 \\pm 0.1$`), a marker as text."""
    if not isinstance(cell, Stat):
        return escape(cell)
    if cell.mean is None:
        return escape(cell.text)
    body = cell.text.replace(" ± ", r" \pm ").replace("−", "-")
    return f"$\\mathbf{{{body}}}$" if bold else f"${body}$"


def caption(section: Section) -> str:
    """The section's title as a LaTeX caption: LaTeX numbers its tables itself, so the paper's table number
    moves to the end ("Table 2: likelihood, ..." -> "Likelihood, ... (as the paper's Table 2)")."""
    number, sep, rest = section.title.partition(": ")
    title = f"{rest[:1].upper()}{rest[1:]} (as the paper's {number})" if sep and re.fullmatch(r"Table \d+", number) \
        else section.title
    return escape(title) + (f". {escape(section.note)}" if section.note else "")


def latex_table(section: Section, label: str) -> str:
    numeric = [any(isinstance(row[j], Stat) for row in section.rows) for j in range(len(section.columns))]
    spec = "".join("r" if n else "l" for n in numeric)
    best = best_cells(section)
    lines = [r"\begin{table}[htbp]", r"\centering", f"\\caption{{{caption(section)}}}", f"\\label{{tab:{label}}}",
             # scaled down only if wider than the text: never blown up
             r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
             f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(escape(c) for c in section.columns) + r" \\", r"\midrule"]
    for i, row in enumerate(section.rows):
        lines.append(" & ".join(latex_cell(c, (i, j) in best) for j, c in enumerate(row)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines)


def latex_document(report: Report) -> str:
    """The tables as LaTeX floats, preceded by what they need; paste into a document or \\input it."""
    parts = [f"% repbench report{': ' + report.title if report.title else ''}. Needs \\usepackage{{booktabs}} "
             f"and \\usepackage{{graphicx}}.\n% {escape(LEGEND)}"]
    for s in report.sections:
        if s.rows:
            parts.append(latex_table(s, f"repbench-{re.sub(r'[^a-z0-9]+', '-', s.key.lower())}"))
    parts += [f"% Figure: {text} in {path}" for text, path in report.figures]
    return "\n\n".join(parts) + "\n"


def build_report(records: list[dict], fmt: str = "markdown", figure: Path | None = None, title: str = "",
                 paper: list[dict] | None = None, compare=(), figures_dir: Path | None = None) -> str:
    """The report as text in one of the text formats: tables (markdown, latex) or tidy rows (json, csv)."""
    from .tidy import TIDY_FORMATS, render_tidy
    if fmt not in FORMATS + TIDY_FORMATS:
        raise RepbenchError(f"unknown format '{fmt}'; use {', '.join(FORMATS + TIDY_FORMATS)}")
    report = build(records, title, paper, compare, figures_dir, figure)
    return render_tidy(report.records, fmt, title) if fmt in TIDY_FORMATS else render(report, fmt)
