"""Stage 3 of a run, measuring: the battery runs the chosen metrics of repbench/metrics/ on a learner's
representations; plots.py draws one figure from given numbers (matplotlib; imported only where a figure is drawn)."""
from .battery import (BATTERY_KEYS, BatteryConfig, BatteryResult, Flag, battery_flags, battery_for, flag_values,
                      run_battery)

__all__ = ["BATTERY_KEYS", "BatteryConfig", "BatteryResult", "Flag", "battery_flags", "battery_for", "flag_values",
           "run_battery"]
