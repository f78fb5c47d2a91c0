"""A report as text: markdown (GitHub tables), CSV, or LaTeX ready for a paper.

LaTeX: each table is a `table` float with `\\caption`, booktabs rules, right-aligned numbers with the same
decimals down a column, mean ± std as `$a \\pm b$`, the best value of each column in bold (by the metric's
direction), and scaled down to the text width only when it would overflow. It needs `\\usepackage{booktabs}` and
`\\usepackage{graphicx}`, which the output says in its first line.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from tabulate import tabulate

from ..errors import RepbenchError
from .tables import NOT_APPLICABLE, NOT_MEASURED, Report, Section, Stat, build

FORMATS = ("markdown", "latex", "csv")
LEGEND = (f"mean ± sample std (n − 1) over training seeds; ↑ higher is better, ↓ lower, no arrow: neither; "
          f"{NOT_APPLICABLE}: does not apply, {NOT_MEASURED}: not measured")


def texts(section: Section) -> list[list[str]]:
    return [[c.text if isinstance(c, Stat) else str(c) for c in row] for row in section.rows]


def render(report: Report, fmt: str) -> str:
    if fmt == "latex":
        return latex_document(report)
    parts = []
    for i, s in enumerate(report.sections):
        title = s.title + (f" — {report.title}" if report.title and i == 0 else "") + (f" ({LEGEND})" if i == 0 else "")
        parts.append(title)
        if not s.rows:
            parts.append(s.note or "(nothing to show)")
            continue
        parts.append(tabulate(texts(s), headers=s.columns, tablefmt="github", disable_numparse=True)
                     if fmt == "markdown" else _csv(s))
        if s.note and fmt == "markdown":
            parts.append(f"*{s.note}*")
    parts += [f"Figure: {caption} in {path}" for caption, path in report.figures]
    return "\n\n".join(parts) + "\n"


def _csv(section: Section) -> str:
    import csv
    import io
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(section.columns)
    writer.writerows(texts(section))
    return buffer.getvalue().rstrip("\n")


# ------------------------------------------------------------------------------------------ LaTeX
_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "↑": r"$\uparrow$",
            "↓": r"$\downarrow$", "—": "---", "−": "$-$", "≥": r"$\geq$", "×": r"$\times$"}


def escape(text: str) -> str:
    return "".join(_ESCAPES.get(ch, ch) for ch in str(text))


def best_means(section: Section) -> dict[int, set[float]]:
    """Column index -> the best mean(s) in it, for columns whose metric has a direction."""
    best = {}
    for j, name in enumerate(section.columns):
        direction = section.directions.get(name, "neither")
        means = [row[j].mean for row in section.rows if isinstance(row[j], Stat) and row[j].mean is not None]
        if direction in ("higher", "lower") and len(means) > 1:
            target = max(means) if direction == "higher" else min(means)
            best[j] = {m for m in means if math.isclose(m, target, rel_tol=0, abs_tol=1e-12)}
    return best


def latex_cell(cell, bold: bool) -> str:
    if not isinstance(cell, Stat):
        return escape(cell)
    if cell.mean is None:
        return escape(cell.text)
    if cell.std is None:
        return f"$\\mathbf{{{cell.text}}}$" if bold else f"${cell.text}$"
    body = f"{cell.mean:.{cell.digits}f} \\pm {cell.std:.{cell.digits}f}"
    return f"$\\mathbf{{{body}}}$" if bold else f"${body}$"


def latex_table(section: Section, label: str) -> str:
    numeric = [any(isinstance(row[j], Stat) for row in section.rows) for j in range(len(section.columns))]
    spec = "".join("r" if n else "l" for n in numeric)
    best = best_means(section)
    lines = [r"\begin{table}[htbp]", r"\centering", f"\\caption{{{escape(section.title)}"
             + (f". {escape(section.note)}" if section.note else "") + "}", f"\\label{{tab:{label}}}",
             # scaled down only if wider than the text: never blown up
             r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
             f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(escape(c) for c in section.columns) + r" \\", r"\midrule"]
    for row in section.rows:
        lines.append(" & ".join(latex_cell(c, isinstance(c, Stat) and c.mean in best.get(j, ()))
                                for j, c in enumerate(row)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines)


def latex_document(report: Report) -> str:
    """The tables as LaTeX floats, preceded by what they need; paste into a document or \\input it."""
    parts = [f"% repbench report{': ' + report.title if report.title else ''}. Needs \\usepackage{{booktabs}} "
             f"and \\usepackage{{graphicx}}.\n% {escape(LEGEND)}"]
    for s in report.sections:
        if s.rows:
            parts.append(latex_table(s, f"repbench-{re.sub(r'[^a-z0-9]+', '-', s.key.lower())}"))
    parts += [f"% Figure: {caption} in {path}" for caption, path in report.figures]
    return "\n\n".join(parts) + "\n"


def build_report(records: list[dict], fmt: str = "markdown", figure: Path | None = None, title: str = "",
                 paper: list[dict] | None = None, compare=(), figures_dir: Path | None = None) -> str:
    """The report as text in one of the text formats (markdown, csv, latex)."""
    if fmt not in FORMATS:
        raise RepbenchError(f"unknown format '{fmt}'; use {', '.join(FORMATS)}")
    return render(build(records, title, paper, compare, figures_dir, figure), fmt)
