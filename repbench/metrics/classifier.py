"""A learner's own classifier (a semi-supervised learner's q(y|x)), scored on the test set."""
from __future__ import annotations

import numpy as np
import torch

from . import register_metric


def classifier_accuracy(probabilities, labels) -> float:
    """Accuracy (%) of the arg-max of class probabilities [N, classes] against integer labels [N]."""
    p = np.asarray(probabilities)
    return float((p.argmax(1) == np.asarray(labels)).mean() * 100.0)


@register_metric("classifier_accuracy", unit="%", direction="higher", needs=("classifier", "labels"), version=1,
                 description="test accuracy of the learner's own classifier (e.g. M2's q(y|x))")
def _classifier_accuracy(inputs, cfg, generator):
    with torch.inference_mode():
        n = inputs.batch_size
        probs = torch.cat([inputs.learner.predict_proba(inputs.data.test_x[i:i + n]).cpu()
                           for i in range(0, len(inputs.data.test_x), n)])
    return {"classifier_accuracy": classifier_accuracy(probs.numpy(), inputs.data.test_y.numpy())}
