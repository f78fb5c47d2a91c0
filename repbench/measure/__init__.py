"""Stage 3 of a run, measuring: the battery runs the chosen metrics of repbench/metrics/ on a learner's
representations; plots.py draws one figure from given numbers (matplotlib; imported only where a figure is drawn)."""
from .battery import BatteryConfig, BatteryResult, battery_for, run_battery

__all__ = ["BatteryConfig", "BatteryResult", "battery_for", "run_battery"]
