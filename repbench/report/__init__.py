"""Stage 6, the report: runs -> table sections (tables.py), rendered as markdown, LaTeX or CSV (render.py) or as
an HTML page (leaderboard.py), with the report's figures (figures.py, drawn by repbench/measure/plots.py) and
Welch's test between learners (stats.py)."""
from .tables import (Report, Section, Stat, build, load_paper_numbers, missing_cells, records_from_mlflow,
                     records_from_suite)
from .render import FORMATS, build_report, render
from .leaderboard import write_page

__all__ = ["Report", "Section", "Stat", "build", "load_paper_numbers", "missing_cells", "records_from_mlflow",
           "records_from_suite", "FORMATS", "build_report", "render", "write_page"]
