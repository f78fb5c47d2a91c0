"""Stage 1 and 2 of a run, the learner and its training: the learner contract and registry (learner.py), the
one training loop with its checkpoints (train.py) and TorchLearner, the base class that joins them."""
from .learner import (ABILITIES, LEARNERS, REPRESENTATION_KINDS, Classifier, ImageGenerator, LabelUser, Learner,
                      Likelihood, Posterior, ability_problems, create_learner, has_ability, learner_from_params,
                      list_learners, load_learner)
from .train import NonFiniteLoss, load_checkpoint, save_checkpoint
from .torch_learner import TorchLearner

__all__ = ["ABILITIES", "LEARNERS", "REPRESENTATION_KINDS", "Classifier", "ImageGenerator", "LabelUser", "Learner",
           "Likelihood", "Posterior", "ability_problems", "create_learner", "has_ability", "learner_from_params",
           "list_learners", "load_learner", "NonFiniteLoss", "load_checkpoint", "save_checkpoint", "TorchLearner"]
