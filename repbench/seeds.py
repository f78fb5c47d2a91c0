"""Every random stream of a run, named once: each is a pure function of the run's seed (and the epoch or the
probe repeat), so a resumed run draws what an uninterrupted one would have and no two streams share numbers.
The constants are what every recorded run used; changing one changes results."""
from __future__ import annotations

EPOCH_STRIDE = 100_003   # a prime: (seed, epoch) pairs map to distinct seeds for fewer epochs than this
AUGMENT_SHIFT = 500_009  # another prime: an epoch's augmentation never replays a batch order


def weights(seed: int) -> int:
    """A learner's initial weights (its module built under this seed, the global generator left as it was)."""
    return seed


def training(seed: int) -> int:
    """The global torch generator when training starts from scratch (dropout, a learner's own sampling)."""
    return seed + 1


def batch_order(seed: int, epoch: int) -> int:
    """The order of the training images in one epoch."""
    return seed * EPOCH_STRIDE + epoch


def augmentation(seed: int, epoch: int) -> int:
    """The random crops and flips of one epoch's training batches."""
    return seed * EPOCH_STRIDE + epoch + AUGMENT_SHIFT


def metrics(seed: int) -> int:
    """The generator each metric of the battery gets (importance samples, sampled representations)."""
    return seed + 7


def sample_grid(seed: int) -> int:
    """The samples in a run's sample grid (samples.png)."""
    return seed


def probe_views(repeat: int) -> int:
    """The sampled representations a probe sees in its `repeat`-th run (the probe's own weights use `repeat`)."""
    return 1000 + repeat


FIXED_SUBSET = 0  # the permutation whose first n items are a dataset's train_limit / test_limit subset
