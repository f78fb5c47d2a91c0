"""The leaderboard page: one self-contained HTML file (inline CSS and JS, figures embedded) that a group can publish
as it is, e.g. on GitHub Pages. Tables sort by any column (click a header; the order is kept in the address, so
a sorted view can be linked), the paper's numbers sit beside ours, and every run has its configuration and
provenance (commit, date, machine)."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..files import read_json
from .render import LEGEND
from .tables import Report, Section, Stat

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
     padding:0 1rem;color:#1b1f24}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem} .legend,.note{color:#57606a}
table{border-collapse:collapse;margin:.6rem 0;font-variant-numeric:tabular-nums}
th,td{padding:.3rem .6rem;border-bottom:1px solid #d0d7de;text-align:left;white-space:nowrap}
td.num{text-align:right} th{cursor:pointer;background:#f6f8fa;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"} th[aria-sort=descending]::after{content:" \\25BC"}
td.best{font-weight:700} img{max-width:100%;border:1px solid #d0d7de}
details{margin:.3rem 0} summary{cursor:pointer} pre{background:#f6f8fa;padding:.6rem;overflow:auto;font-size:12px}
.samples{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1rem}
"""

SCRIPT = """
const started = performance.now();
function sortTable(table, col, dir) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const key = r => { const c = r.cells[col]; const v = c.dataset.value;
                     return v === undefined ? c.textContent.trim() : parseFloat(v); };
  rows.sort((a, b) => { const x = key(a), y = key(b);
    if (typeof x === "number" && typeof y === "number") return dir * (x - y);
    if (typeof x === "number") return -1; if (typeof y === "number") return 1;
    return dir * String(x).localeCompare(String(y)); });
  rows.forEach(r => body.appendChild(r));
  Array.from(table.tHead.rows[0].cells).forEach((th, i) =>
    th.setAttribute("aria-sort", i === col ? (dir > 0 ? "ascending" : "descending") : "none"));
}
function applyHash() {
  const m = location.hash.match(/^#sort=([\\w.-]+):(\\d+):(asc|desc)$/);
  if (!m) return;
  const table = document.getElementById(m[1]);
  if (table) sortTable(table, parseInt(m[2]), m[3] === "asc" ? 1 : -1);
}
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable").forEach(table => {
    Array.from(table.tHead.rows[0].cells).forEach((th, col) => th.addEventListener("click", () => {
      const dir = th.getAttribute("aria-sort") === "descending" ? 1 : -1;
      sortTable(table, col, dir);
      history.replaceState(null, "", "#sort=" + table.id + ":" + col + ":" + (dir > 0 ? "asc" : "desc"));
    }));
  });
  applyHash();
  document.body.dataset.loadMs = (performance.now() - started).toFixed(1);
});
window.addEventListener("hashchange", applyHash);
"""


def write_page(report: Report, folder: Path, title: str = "") -> Path:
    """Write `folder/index.html`; return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>{html.escape(title or report.title or 'repbench leaderboard')}</h1>",
             f"<p class=legend>{html.escape(LEGEND)}. Click a column header to sort.</p>"]
    for section in report.sections:
        parts.append(section_html(section))
    parts += [f"<h2>{html.escape(caption)}</h2>{image(path)}" for caption, path in report.figures]
    parts.append(samples_html(report.records))
    parts.append(runs_html(report.records))
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport "
            f"content='width=device-width,initial-scale=1'><title>{html.escape(title or report.title)}</title>"
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>{''.join(parts)}</body></html>")
    out = folder / "index.html"
    out.write_text(page)
    return out


def section_html(section: Section) -> str:
    from .render import best_cells
    best = best_cells(section)
    head = "".join(f"<th scope=col>{html.escape(c)}</th>" for c in section.columns)
    rows = []
    for i, row in enumerate(section.rows):
        cells = []
        for j, cell in enumerate(row):
            if isinstance(cell, Stat):
                cls = "num best" if (i, j) in best else "num"
                value = f" data-value='{cell.mean!r}'" if cell.mean is not None else ""
                cells.append(f"<td class='{cls}'{value}>{html.escape(cell.text)}</td>")
            else:
                cells.append(f"<td>{html.escape(str(cell))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table_id = section.key.replace(".", "-")
    note = f"<p class=note>{html.escape(section.note)}</p>" if section.note else ""
    body = (f"<table class=sortable id='{table_id}'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
            f"</tbody></table>") if rows else ""
    return f"<h2>{html.escape(section.title)}</h2>{body}{note}"


def image(path: Path, alt: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<img alt='{html.escape(alt or Path(path).stem)}' src='data:image/png;base64,{data}'>"


def samples_html(records: list[dict]) -> str:
    """Each learner x dataset x preset group's samples.png (of its first run that has one); the groups without
    one are named with why."""
    from .figures import GROUP, label
    shown, items, missing = set(), [], {}
    for r in records:
        key = label(*(r[k] for k in GROUP))
        folder = (r.get("_record") or {}).get("_folder")
        path = Path(folder) / "samples.png" if folder else None
        if key in shown:
            continue
        if path is None or not path.exists():
            missing.setdefault(key, "its run folder is not on this machine" if folder is None else
                               "no samples.png in its run folder: a learner without a generator, or --grid 0")
            continue
        shown.add(key)
        missing.pop(key, None)
        items.append(f"<figure>{image(path, key)}<figcaption>{html.escape(key)}, seed {r['seed']}"
                     f"</figcaption></figure>")
    note = "".join(f"<li>{html.escape(k)}: {html.escape(why)}</li>" for k, why in missing.items() if k not in shown)
    note = f"<p class=note>No samples shown for:</p><ul class=note>{note}</ul>" if note else ""
    return f"<h2>Samples</h2><div class=samples>{''.join(items)}</div>{note}" if items or note else ""


def runs_html(records: list[dict]) -> str:
    """One collapsible entry per run: configuration, provenance, values."""
    items = []
    for r in records:
        rec = r.get("_record") or {}
        state = read_json(Path(rec["_folder"]) / "run.json") if rec.get("_folder") else {}
        logged = {**rec.get("params", {}), **rec.get("tags", {})}  # a process's own values are MLflow tags
        env = state.get("environment") or {k.removeprefix("env."): v for k, v in logged.items()
                                           if k.startswith("env.")}
        provenance = {k: env.get(k) for k in ("git_commit", "started_at", "hostname", "machine", "cpu_features",
                                             "torch", "torch_build", "threads") if env.get(k)}
        detail = {"run": rec.get("name"), "folder": rec.get("_folder"), "mlflow_run_id": state.get(
            "mlflow_run_id") or rec.get("mlflow_run_id"), "finished_at": state.get("finished_at"),
                  "provenance": provenance, "configuration": state.get("params") or rec.get("params"),
                  "measured_with": rec.get("measured_with"), "metrics": rec.get("metrics")}
        summary = f"{r['learner']} / {r['dataset']} / {r['preset']} / seed {r['seed']}"
        if provenance:
            summary += f" — commit {str(provenance.get('git_commit', '?'))[:8]}, {provenance.get('started_at', '')}"
        items.append(f"<details><summary>{html.escape(summary)}</summary><pre>"
                     f"{html.escape(json.dumps(detail, indent=2, default=str))}</pre></details>")
    return "<h2>Runs</h2>" + "".join(items)
