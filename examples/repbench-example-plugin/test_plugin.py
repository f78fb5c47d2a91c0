"""What a plugin author runs: repbench's conformance check on their learner."""
from repbench.testing import check_learner
from repbench_example import LinearAE


def test_linear_ae_conforms():
    dims = check_learner(lambda **kw: LinearAE(preset="smoke", epochs=1, **kw))
    assert dims == {"mean": 8}
