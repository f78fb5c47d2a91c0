"""Stage 5, many runs: the suite file (schema.py), its cells run here or in --jobs processes (runner.py) or on Ray
(cluster.py), their results read back (runner.py), and the regression gate over them (gate.py)."""
from .schema import Cell, FeatureCell, Suite, asked_values, load_suite, only_learners, suite_command
from .runner import latest_results, run_suite
from .cluster import RayOptions
from .gate import check_suite, write_baseline

__all__ = ["Cell", "FeatureCell", "Suite", "asked_values", "load_suite", "only_learners", "suite_command",
           "latest_results", "run_suite", "RayOptions", "check_suite", "write_baseline"]
