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
    ytr, yte = labels(600), labels(200)
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
