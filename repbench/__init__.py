"""repbench: a benchmark and leaderboard harness for representation quality."""
from .api import LEARNERS, Learner, TorchLearner, create_learner, list_learners, load_learner
from .config import PRESETS, TrainConfig
from .data import ImageData, list_datasets, load_dataset
from .registry import Registry, RepbenchError

__version__ = "0.1.0"
__all__ = ["LEARNERS", "Learner", "TorchLearner", "create_learner", "list_learners", "load_learner", "PRESETS",
           "TrainConfig", "ImageData", "list_datasets", "load_dataset", "Registry", "RepbenchError"]
