"""repbench: a benchmark and leaderboard harness for representation quality.

The package follows the path of one run, each stage a package that imports only the stages below it:
data -> learners (the contract, training) -> measure (the battery over metrics/) -> runs (one run and its record)
-> suites (many runs, the gate) -> report. errors.py, registry.py and config.py serve them all."""
__version__ = "0.1.0"  # first: runs/records.py reads it while this file may still be importing

from .config import PRESETS, TrainConfig
from .data import ImageData, list_datasets, load_dataset
from .errors import RepbenchError
from .learners import (ABILITIES, LEARNERS, ImageGenerator, LabelUser, Learner, Likelihood, Posterior, TorchLearner,
                       create_learner, has_ability, list_learners, load_learner)
from .measure import BatteryConfig, run_battery
from .registry import Registry

__all__ = ["ABILITIES", "LEARNERS", "ImageGenerator", "LabelUser", "Learner", "Likelihood", "Posterior",
           "TorchLearner", "create_learner", "has_ability", "list_learners", "load_learner", "PRESETS",
           "TrainConfig", "ImageData", "list_datasets", "load_dataset", "Registry", "RepbenchError", "evaluate",
           "BatteryConfig", "run_battery"]


def __getattr__(name: str):
    # The run stage is loaded when first asked for: it draws figures, and matplotlib's backend is a setting an
    # `import repbench` should leave alone.
    if name == "evaluate":
        from .runs import evaluate
        return evaluate
    raise AttributeError(f"module 'repbench' has no attribute {name!r}")
