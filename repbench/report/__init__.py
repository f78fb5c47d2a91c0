"""Stage 6, the report: runs -> table sections (tables.py), rendered as markdown or LaTeX (render.py) or as an
HTML page (leaderboard.py), or as tidy rows in JSON or CSV for programs (tidy.py), with the report's figures
(figures.py, drawn by repbench/measure/plots.py) and Welch's test between learners (stats.py)."""
from .tables import (Report, Section, Stat, build, left_out_values, load_paper_numbers, missing_cells,
                     records_from_mlflow, records_from_suite)
from .render import FORMATS, build_report, render
from .leaderboard import write_page
from .tidy import read_tidy, tidy_rows

__all__ = ["Report", "Section", "Stat", "build", "left_out_values", "load_paper_numbers", "missing_cells",
           "records_from_mlflow", "records_from_suite", "FORMATS", "build_report", "render", "write_page", "read_tidy", "tidy_rows"]
