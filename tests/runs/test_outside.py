"""Representations made outside repbench: `repbench eval --features FILE.npz` and `repbench.evaluate(encode, data)`,
scored by the metrics that need only representations, recorded like any run, and shown beside trained learners."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import repbench
from repbench.cli import cli
from repbench.data.datasets import make_synthetic

FAST = ["--probe-seeds", "1", "--probe-epochs", "5", "--label-counts", "100", "-q"]


def features(path, train, test, ytr, yte):
    np.savez(path, train=train, train_y=ytr, test=test, test_y=yte)
    return str(path)


def labels(n):
    return np.arange(n) % 10


def test_one_hot_labels_score_100_and_constant_features_score_chance(tmp_path):
    ytr, yte = labels(400), labels(200)
    onehot = features(tmp_path / "onehot.npz", np.eye(10)[ytr], np.eye(10)[yte], ytr, yte)
    const = features(tmp_path / "const.npz", np.ones((400, 4)), np.ones((200, 4)), ytr, yte)
    for path, expected in ((onehot, 100.0), (const, 10.0)):
        out = CliRunner().invoke(cli, ["eval", "--features", path, "--results-dir", str(tmp_path / "r"), *FAST])
        assert out.exit_code == 0, out.output
    records = {json.loads(p.read_text())["learner"]: json.loads(p.read_text())
               for p in (tmp_path / "r" / "runs").glob("*/metrics.json")}
    assert records["onehot"]["metrics"]["linear_probe"] == 100.0 == records["onehot"]["metrics"]["nonlinear_probe"]
    assert records["onehot"]["metrics"]["linear_probe.labels_100"] == 100.0
    assert records["onehot"]["metrics"]["intrinsic_dim"] == 9
    assert records["const"]["metrics"]["linear_probe"] == pytest.approx(10.0)  # every class once in ten
    assert records["const"]["metrics"]["intrinsic_dim"] == 0
    assert "bpd" not in records["onehot"]["metrics"]  # not a representation metric: not run, not faked
    again = CliRunner().invoke(cli, ["eval", "--features", onehot, "--results-dir", str(tmp_path / "r"), *FAST])
    assert again.exit_code == 0 and "REUSED" in again.output


@pytest.mark.parametrize("arrays,pattern", [
    ({"train": np.ones((4, 2)), "train_y": labels(4)}, r"lacks the array\(s\) test, test_y"),
    ({"train": np.ones(4), "train_y": labels(4), "test": np.ones((4, 2)), "test_y": labels(4)},
     r"'train' must be an N x d array of numbers, got shape \(4,\)"),
    ({"train": np.ones((4, 2)), "train_y": labels(3), "test": np.ones((4, 2)), "test_y": labels(4)},
     r"'train_y' must be 4 integer labels"),
    ({"train": np.ones((4, 2)), "train_y": labels(4) + 0.5, "test": np.ones((4, 2)), "test_y": labels(4)},
     r"'train_y' must be 4 integer labels, got shape \(4,\) float64"),
    ({"train": np.full((4, 2), np.nan), "train_y": labels(4), "test": np.ones((4, 2)), "test_y": labels(4)},
     r"'train' has 8 NaN or infinite values"),
    ({"train": np.ones((4, 2)), "train_y": labels(4), "test": np.ones((4, 3)), "test_y": labels(4)},
     r"differ in width \(2 vs 3\)"),
    ({"train": np.array([["a", "b"]] * 4), "train_y": labels(4), "test": np.ones((4, 2)), "test_y": labels(4)},
     r"'train' must be an N x d array of numbers"),
])
def test_a_bad_features_file_is_one_line(tmp_path, arrays, pattern):
    import re
    np.savez(tmp_path / "bad.npz", **arrays)
    out = CliRunner().invoke(cli, ["eval", "--features", str(tmp_path / "bad.npz"), "--results-dir", str(tmp_path)])
    lines = out.stderr.strip().splitlines()
    assert out.exit_code == 2 and len(lines) == 1 and re.search(pattern, lines[0]), out.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_not_an_npz_is_one_line(tmp_path):
    (tmp_path / "x.npz").write_text("not numpy")
    out = CliRunner().invoke(cli, ["eval", "--features", str(tmp_path / "x.npz"), "--results-dir", str(tmp_path)])
    assert out.exit_code == 2 and "cannot read features file" in out.stderr


def test_evaluate_scores_any_encoder_and_the_run_appears_beside_learners(tmp_path):
    from repbench.report import build_report, records_from_mlflow
    data = make_synthetic(300, 200)

    def pixels(x):  # a function from uint8 images to N x d
        return x.float().flatten(1) / 255

    battery = {"probe_seeds": 1, "nonlinear_epochs": 3, "label_counts": (100,)}
    record = repbench.evaluate(pixels, data, preset="smoke", battery=battery, results_dir=tmp_path)
    assert record["status"] == "FINISHED" and record["metrics"]["linear_probe"] > 50
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(6))
    torch.manual_seed(0)
    as_module = repbench.evaluate(lambda x: module(x.float()), data, name="random-linear", preset="smoke",
                                  battery=battery, results_dir=tmp_path)
    assert as_module["metrics"]["intrinsic_dim"] <= 6
    rows = records_from_mlflow(f"sqlite:///{tmp_path / 'mlflow.db'}", "repbench", {})
    assert {r["learner"] for r in rows} == {"pixels", "random-linear"} and {r["preset"] for r in rows} == {"features"}
    assert "| pixels" in build_report(rows)
    only = repbench.evaluate(pixels, data, preset="smoke", battery=battery, results_dir=None)
    assert only["metrics"]["linear_probe"] == record["metrics"]["linear_probe"]  # the same numbers, no record
    with pytest.raises(repbench.RepbenchError, match="must map 300 images to a 300 x d array"):
        repbench.evaluate(lambda x: np.ones(3), data, preset="smoke", results_dir=None)


def test_a_suite_scores_its_features_beside_its_learners(tmp_path):
    from repbench.report.tables import records_from_suite
    from repbench.suites.schema import load_suite
    from repbench.suites.runner import run_suite
    data = repbench.load_dataset("synthetic")   # the file holds the synthetic splits, as it says
    ytr, yte = data.train_y.numpy(), data.test_y.numpy()
    features(tmp_path / "oracle.npz", np.eye(10)[ytr], np.eye(10)[yte], ytr, yte)
    (tmp_path / "s.yaml").write_text("name: mixed\nlearners: [pca]\ndatasets: [synthetic]\npresets: [smoke]\n"
                                     "metrics: [intrinsic_dim, linear_probe]\nbattery: {probe_seeds: 1}\n"
                                     "features: [{name: oracle, file: oracle.npz, dataset: synthetic}]\n"
                                     "compare: [[pca, oracle]]\n")
    suite = load_suite(tmp_path / "s.yaml")
    outcomes = run_suite(suite, results_dir=tmp_path / "r", progress=False)
    assert [o["status"] for o in outcomes] == ["FINISHED", "FINISHED"]
    learners = {r["learner"]: r for r in records_from_suite(suite, tmp_path / "r")}
    assert learners["oracle"]["linear_probe"] == 100.0 and "pca" in learners


def test_a_features_file_must_hold_the_splits_of_the_dataset_it_names(tmp_path):
    """600 / 200 rows of 3 classes are not mnist5k: refused, before any work, unless named external; mnist5k's own
    4,000 / 1,000 labels in its order are taken, and so are the rows of a preset's share of a dataset."""
    ytr, yte = np.arange(600) % 3, np.arange(200) % 3
    other = features(tmp_path / "other.npz", np.eye(3)[ytr], np.eye(3)[yte], ytr, yte)
    args = ["eval", "--features", other, "--results-dir", str(tmp_path / "r"), "--metrics", "intrinsic_dim", "-q"]
    out = CliRunner().invoke(cli, args + ["--dataset", "mnist5k"])
    assert out.exit_code == 2 and "does not hold mnist5k's splits: its 600 / 200 rows" in out.output, out.output
    assert "4000 / 1000 rows" in out.output and "--dataset external" in out.output
    assert not (tmp_path / "r" / "runs").exists() or not any((tmp_path / "r" / "runs").iterdir())
    assert CliRunner().invoke(cli, args + ["--dataset", "external"]).exit_code == 0
    mnist = repbench.load_dataset("mnist5k")
    shuffled = mnist.train_y.numpy()[::-1].copy()   # the right labels in another order are other rows
    wrong = features(tmp_path / "wrong.npz", np.ones((4000, 2)), np.ones((1000, 2)), shuffled, mnist.test_y.numpy())
    out = CliRunner().invoke(cli, ["eval", "--features", wrong, "-d", "mnist5k", "--results-dir", str(tmp_path / "r"),
                                   "--metrics", "intrinsic_dim", "-q"])
    assert out.exit_code == 2 and "does not hold mnist5k's splits" in out.output
    from repbench.runs.outside import check_dataset
    check_dataset({"train_y": mnist.train_y.numpy(), "test_y": mnist.test_y.numpy()}, "mnist5k", "mine.npz")
    smoke = repbench.load_dataset("synthetic").limit(300, 100)   # the smoke preset's share
    check_dataset({"train_y": smoke.train_y.numpy(), "test_y": smoke.test_y.numpy()}, "synthetic", "mine.npz")


def test_evaluate_takes_a_model_object_with_encode_as_well_as_a_callable(tmp_path):
    data = make_synthetic(300, 200)

    class Pixels:  # the shape most representation libraries give a model: encode(images) -> array
        def encode(self, images):
            return images.float().flatten(1).numpy() / 255

    battery = {"metrics": ("intrinsic_dim", "linear_probe"), "probe_seeds": 1}
    by_object = repbench.evaluate(Pixels(), data, preset="smoke", battery=battery, results_dir=tmp_path)
    by_callable = repbench.evaluate(Pixels().encode, data, preset="smoke", battery=battery, results_dir=None)
    assert by_object["learner"] == "pixels" and by_object["status"] == "FINISHED"
    assert by_object["metrics"] == by_callable["metrics"] and by_object["metrics"]["linear_probe"] > 50
    with pytest.raises(repbench.RepbenchError, match="evaluate takes a callable or an object with encode"):
        repbench.evaluate(object(), data, preset="smoke", results_dir=None)
