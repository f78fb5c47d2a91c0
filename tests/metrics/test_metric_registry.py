"""Every registered metric: its unit and direction, and a known answer through the battery (parametrized over the
metric registry, so a new metric fails here until it brings its own known-answer case)."""
import json
import math

import pytest

from repbench.measure.battery import BatteryConfig, run_battery
from repbench.runs.record import RunRecord
from repbench.metrics import DIRECTIONS, METRICS, battery_metrics, metric_info, summary_metrics

from known import KnownCode, coded_data, cond_entropy_of

# metric -> (learner options, {value name: known answer})
KNOWN = {
    "bpd": ({"scale": 0.0, "std": 1.0}, {"bpd": 8.0}),                  # uniform likelihood, posterior = prior
    "bpd_iw": ({"scale": 0.0, "std": 1.0}, {"bpd_iw": 8.0}),            # every importance weight is 1
    "mutual_info": ({"scale": 2.0, "std": 1.0}, {"mutual_info": 2.0}),  # KL(N(e_y * 2, I) || N(0, I)) = 2
    "cond_entropy": ({"std": 0.5}, {"cond_entropy": cond_entropy_of(0.5, 10)}),
    "intrinsic_dim": ({}, {"intrinsic_dim": 9}),                        # ten balanced one-hot codes span 9 dims
    "linear_probe": ({}, {"linear_probe": 100.0, "linear_probe_std": 0.0}),
    "nonlinear_probe": ({}, {"nonlinear_probe": 100.0}),
    "knn_probe": ({}, {"knn_probe": 100.0, "knn_probe_std": 0.0}),
    "classifier_accuracy": ({}, {"classifier_accuracy": 100.0}),
    "label_efficiency": ({}, {f"{p}.labels_{n}": 100.0 for p in ("linear_probe", "nonlinear_probe", "knn_probe")
                              for n in (100, 400)}),
    "rep_types": ({}, {f"{p}.{t}": 100.0 for p in ("linear_probe", "nonlinear_probe", "knn_probe")
                       for t in ("sample_k1", "sample_k100", "embedding")}),
}


@pytest.mark.parametrize("name", battery_metrics())
def test_metric_has_unit_direction_and_a_known_answer(name):
    metric = METRICS.get(name)
    assert metric.unit and metric.direction in DIRECTIONS and metric.description, name
    assert name in KNOWN, f"metric '{name}' has no known-answer case in {__file__}: add one"
    options, answers = KNOWN[name]
    cfg = BatteryConfig(metrics=(name,), probe_seeds=2, iw_samples=4, test_samples=5, nonlinear_epochs=10,
                        label_counts=(100, 400, 1000))
    res = run_battery(KnownCode(**options), coded_data(), cfg, progress=False)
    for value_name, expected in answers.items():
        assert res.metrics[value_name] == pytest.approx(expected, abs=1e-9), value_name
        assert metric.owns(value_name), value_name
    settings = {k: v for k, v in res.measured_with[name].items() if k != "fits"}
    assert settings == metric.resolved_settings(cfg) and settings["version"] == metric.version >= 1
    for value_name, fit in res.measured_with[name].get("fits", {}).items():  # how each linear probe's solver ended
        assert value_name.startswith("linear_probe") and fit["converged"] == [True, True], (value_name, fit)
        assert all(0 < n < 10_000 for n in fit["iterations"]), fit
    # the record, stored as JSON and read back, counts as measured with these settings: reuse measures nothing
    stored = json.loads(json.dumps({"metrics": res.metrics, "measured_with": res.measured_with}))
    assert RunRecord.from_json(stored).missing(cfg) == []
    if name == "label_efficiency":  # 1000 labels of a 400-image training set: does not apply, never a number
        assert res.metrics["linear_probe.labels_1000"] is None


def test_directions_say_what_the_paper_means():
    assert METRICS.get("mutual_info").direction == "neither"  # less latent information can be better
    assert metric_info("linear_probe_std")[1] == "neither"    # a spread is not better or worse
    assert metric_info("linear_probe.sample_k100") == metric_info("linear_probe")
    assert summary_metrics() == ["bpd", "mutual_info", "intrinsic_dim", "nonlinear_probe", "linear_probe", "knn_probe"]


def test_a_metric_that_does_not_apply_is_none_not_zero():
    from repbench.data.datasets import make_synthetic
    from repbench.testing import tiny
    data = make_synthetic(100, 60)
    learner = tiny("pca", d=4).fit(data.train_x)
    res = run_battery(learner, data, BatteryConfig(metrics=("bpd", "mutual_info", "intrinsic_dim"), iw_samples=2),
                      progress=False)
    assert res.metrics["bpd"] is None and res.metrics["mutual_info"] is None
    assert res.metrics["intrinsic_dim"] == 4 and not math.isnan(res.metrics["intrinsic_dim"])


def test_few_label_subsets_are_balanced_disjoint_from_the_test_set_and_the_same_for_every_learner():
    import torch
    from repbench.data.datasets import labelled_subset, load_dataset
    data = load_dataset("mnist5k")
    a, b = labelled_subset(data.train_y, 100, seed=1), labelled_subset(data.train_y, 100, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, labelled_subset(data.train_y, 100, seed=2))
    assert torch.bincount(data.train_y[a]).tolist() == [10] * 10 and len(set(a.tolist())) == 100
    assert a.max() < len(data.train_x)  # indices into the training split only: never a test image
    train_rows = {bytes(x.numpy()) for x in data.train_x[a]}
    assert not train_rows & {bytes(x.numpy()) for x in data.test_x}
