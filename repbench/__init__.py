"""repbench: a benchmark and leaderboard harness for representation quality."""
from .malloc import tune as _tune_malloc

_tune_malloc()  # before torch allocates anything: see repbench/malloc.py
from .api import (ABILITIES, LEARNERS, ImageGenerator, LabelUser, Learner, Likelihood, Posterior, create_learner,
                  has_ability, list_learners, load_learner)
from .config import PRESETS, TrainConfig
from .data import ImageData, list_datasets, load_dataset
from .registry import Registry, RepbenchError
from .torch_learner import TorchLearner
from .outside import evaluate

__version__ = "0.1.0"
__all__ = ["ABILITIES", "LEARNERS", "ImageGenerator", "LabelUser", "Learner", "Likelihood", "Posterior",
           "TorchLearner", "create_learner", "has_ability", "list_learners", "load_learner", "PRESETS",
           "TrainConfig", "ImageData", "list_datasets", "load_dataset", "Registry", "RepbenchError", "evaluate"]
