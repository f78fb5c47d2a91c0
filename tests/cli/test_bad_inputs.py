"""Bad input, through the real command line: one line on stderr, the expected exit code, no traceback, and no
run left RUNNING in the run folders or in MLflow."""
import gzip
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from repbench.cli import cli

SMOKE = ["--preset", "smoke", "--dataset", "synthetic", "-q", "--grid", "0"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A results folder with one finished vae run (copied per case, so cases cannot disturb each other)."""
    results = tmp_path_factory.mktemp("finished")
    out = CliRunner().invoke(cli, ["run", "--model", "vae", *SMOKE, "--metrics", "bpd,intrinsic_dim",
                                   "--iw-samples", "2", "--results-dir", str(results)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return results


def suite_file(tmp: Path, body: str) -> str:
    path = tmp / "suite.yaml"
    path.write_text("name: bad\ndatasets: [synthetic]\npresets: [smoke]\n" + body)
    return str(path)


def raw_suite(tmp: Path, text: str) -> str:
    path = tmp / "suite.yaml"
    path.write_text(text)
    return str(path)


def truncated_idx(tmp: Path, run=None) -> str:
    folder = tmp / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / (stem + ".gz")).write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x05" * 3)[:20])
    return str(tmp / "data")


def truncated_cifar(tmp: Path, run=None) -> str:
    folder = tmp / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"\x80\x04\x95truncated")
    return str(tmp / "data")


def swapped_checkpoint(tmp: Path, run: Path) -> str:
    """The run's checkpoint replaced by one of another learner."""
    from repbench.testing import tiny
    from repbench.data.datasets import make_synthetic
    tiny("pca", d=4).fit(make_synthetic().train_x).save(run / "checkpoint.pt")
    return run.name


def other_seed_checkpoint(tmp: Path, run: Path) -> str:
    """The run's checkpoint replaced by the same learner's with another seed (same shapes)."""
    from repbench.testing import tiny
    from repbench.data.datasets import make_synthetic
    tiny("vae", seed=5, epochs=1).fit(make_synthetic().train_x, progress=False).save(run / "checkpoint.pt")
    return run.name


def few_features(tmp: Path) -> str:
    """20 / 10 rows of 2 classes: not the splits of any dataset."""
    import numpy as np
    path = tmp / "few.npz"
    np.savez(path, train=np.ones((20, 2)), train_y=np.arange(20) % 2, test=np.ones((10, 2)), test_y=np.arange(10) % 2)
    return str(path)


def results_file(tmp: Path, run=None) -> str:
    (tmp / "afile").write_text("not a folder")
    return str(tmp / "afile")


def corrupt_baseline(tmp: Path, run=None) -> str:
    (tmp / "base.json").write_text("{not json")
    return suite_file(tmp, "learners: [vae]\nbaseline: {file: base.json, tolerance: {bpd: 0.1}}\n")


def bad_paper(tmp: Path, text: str) -> str:
    (tmp / "paper.yaml").write_text(text)
    return str(tmp / "paper.yaml")


# The suite the `finished` run belongs to: its run measured bpd with these settings (iw_samples 2).
GATED = "learners: [vae]\nmetrics: [bpd]\nbattery: {iw_samples: 2}\n"


def gated(tmp: Path, body: str = "thresholds: [{metric: bpd, max: 20}]\n") -> str:
    return suite_file(tmp, GATED + body)


def with_baseline(content) -> callable:
    """A suite gated by a baseline file with this content (a dict is written as JSON)."""
    def setup(tmp: Path, run=None) -> str:
        (tmp / "base.json").write_text(content if isinstance(content, str) else json.dumps(content))
        return gated(tmp, "baseline: {file: base.json, tolerance: {bpd: 0.1}}\n")
    return setup


def entry(**metrics) -> dict:
    return {"learner": "vae", "dataset": "synthetic", "preset": "smoke", "metrics": metrics}


def edited_record(change) -> callable:
    """The finished run's metrics.json edited by hand (`change` maps its text to the new text)."""
    def setup(tmp: Path, run: Path) -> str:
        path = run / "metrics.json"
        path.write_text(change(path.read_text()))
        return gated(tmp)
    return setup


def features(tmp: Path, name: str = "f.npz", **arrays) -> str:
    """A features file of 40 / 20 rows in 4 classes, with `arrays` replacing the generated ones."""
    import numpy as np
    rng = np.random.default_rng(0)
    base = {"train": rng.normal(size=(40, 4)), "train_y": np.arange(40) % 4, "test": rng.normal(size=(20, 4)),
            "test_y": np.arange(20) % 4, **arrays}
    np.savez(tmp / name, **base)
    return str(tmp / name)


def truncated_features(tmp: Path, run=None) -> str:
    path = Path(features(tmp))
    path.write_bytes(path.read_bytes()[:600])
    return str(path)


def npy_features(tmp: Path, run=None) -> str:
    import numpy as np
    np.save(tmp / "f.npy", np.zeros((40, 4)))
    return str(tmp / "f.npy")


# (id, argv (with {results}, {tmp}, {run} filled in), exit code, words in the one line, setup(tmp, run) -> {x})
CASES = [
    # ---- run: names and options
    ("unknown-learner", ["run", "--model", "lpvea"], 2, r"unknown learner 'lpvea'; did you mean 'lpvae'", None),
    ("unknown-dataset", ["run", "--dataset", "nope"], 2, r"unknown dataset 'nope'", None),
    ("negative-h", ["run", "--model", "lpvae", "--h", "-1"], 2, r"h must be an integer >= 0", None),
    ("fpvae-h", ["run", "--model", "fpvae", "--h", "2"], 2, r"learner 'fpvae' takes no option 'h'", None),
    ("vae-h1", ["run", "--model", "vae", "--h", "1"], 2, r"learner 'vae' takes no option 'h'", None),
    ("typo-option", ["run", "-o", "widht=3"], 2, r"did you mean 'width'", None),
    ("word-for-int", ["run", "-o", "width=wide"], 2, r"width' expects int, got 'wide'", None),
    ("no-equals", ["run", "-o", "novalue"], 2, r"--option expects KEY=VALUE", None),
    ("negative-epochs", ["run", "-o", "epochs=-1"], 2, r"epochs must be an integer >= 1, got -1", None),
    ("zero-epochs", ["run", "--epochs", "0"], 2, r"epochs must be an integer >= 1", None),
    ("batch-of-one", ["run", "-o", "batch_size=1"], 2, r"batch_size must be an integer >= 2", None),
    ("no-training-images", ["run", "-o", "train_limit=0"], 2, r"train_limit must be an integer >= 2", None),
    ("zero-width", ["run", "-o", "width=0"], 2, r"width must be an integer >= 2", None),
    ("zero-z", ["run", "-o", "z_dim=0"], 2, r"z_dim must be an integer >= 1", None),
    ("even-kernel", ["run", "--model", "fpvae", "-o", "full_kernel=4"], 2, r"full_kernel must be an odd", None),
    ("negative-lr", ["run", "-o", "lr=-1"], 2, r"lr must be a number > 0, got -1", None),
    ("nan-lr", ["run", "-o", "lr=nan"], 2, r"lr must be a number > 0, got nan", None),
    ("fractional-epochs", ["run", "-o", "epochs=1.5"], 2, r"'epochs' expects int, got 1.5", None),
    ("bool-epochs", ["run", "-o", "epochs=true"], 2, r"'epochs' expects int, got True", None),
    ("negative-beta", ["run", "--model", "beta-vae", "-o", "beta=-1"], 2, r"beta must be a number >= 0", None),
    ("pca-d0", ["run", "--model", "pca", "-o", "d=0"], 2, r"needs d >= 1", None),
    ("negative-seed", ["run", "--seed", "-3"], 2, r"--seed must be an integer from 0", None),
    ("report-suite-tag", ["report", "--suite", "{x}", "--tag", "suite=a"], 2, r"--tag filters runs without --suite",
     lambda t, r: suite_file(t, "learners: [vae]\n")),
    ("h-twice", ["run", "--model", "lpvae", "--h", "3", "-o", "h=2"], 2, r"--h 3 and -o h=2 disagree", None),
    ("unknown-preset", ["run", "--preset", "huge"], 2, r"Invalid value for '--preset'", None),
    ("unknown-command", ["runn"], 2, r"No such command 'runn'", None),
    ("unknown-flag", ["run", "--colour"], 2, r"No such option '--colour'", None),
    # ---- run: battery settings, checked before any training
    ("zero-probe-seeds", ["run", "--probe-seeds", "0"], 2, r"probe_seeds must be an integer >= 1", None),
    ("empty-metrics", ["run", "--metrics", ","], 2, r"no metric chosen", None),
    ("unknown-metric", ["run", "--metrics", "bpdd"], 2, r"unknown metric 'bpdd'", None),
    ("zero-iw", ["run", "--iw-samples", "0"], 2, r"iw_samples must be an integer >= 1", None),
    ("one-iw", ["run", "--iw-samples", "1"], 2, r"iw_samples must be an integer >= 2 for bpd_iw", None),
    ("zero-probe-epochs", ["run", "--probe-epochs", "0"], 2, r"nonlinear_epochs must be an integer >= 1", None),
    ("bad-linear-method", ["run", "--linear-method", "ridge"], 2, r"Invalid value for '--linear-method'", None),
    ("bad-probe-protocol", ["run", "--probe-protocol", "grid"], 2, r"Invalid value for '--probe-protocol'", None),
    ("zero-knn-k", ["run", "--knn-k", "0"], 2, r"knn_k must be an integer >= 1", None),
    ("bad-knn-distance", ["run", "--knn-distance", "manhattan"], 2, r"Invalid value for '--knn-distance'", None),
    ("knn-k-over-label-counts", ["run", "--knn-k", "200"], 2,
     r"knn_k \(200\) must be at most the smallest of label_counts \(100\)", None),
    ("knn-k-over-training", ["run", "--model", "vae", *SMOKE, "--seed", "1", "--metrics", "knn_probe", "--knn-k",
                             "301"], 2,
     r"knn_k \(301\) is more than the 300 training images of synthetic that knn_probe votes among", None),
    ("eval-knn-k-over-training", ["eval", "--run", "{run}", "--metrics", "rep_types", "--knn-k", "301"], 2,
     r"knn_k \(301\) is more than the 300 training images of synthetic that rep_types votes among", None),
    ("suite-bad-probe-protocol", ["suite", "{x}"], 2, r"unknown probe_protocol 'grid'; use fixed, tuned",
     lambda t, r: suite_file(t, "learners: [vae]\nbattery: {probe_protocol: grid}\n")),
    ("features-not-the-dataset", ["eval", "--features", "{x}", "--dataset", "synthetic"], 2,
     r"does not hold synthetic's splits: its 20 / 10 rows", lambda t, r: few_features(t)),
    ("negative-grid", ["run", "--grid", "-1"], 2, r"--grid must be >= 0", None),
    # ---- run: devices, folders, data
    ("unknown-device", ["run", "--device", "tpu"], 2, r"unknown device 'tpu'", None),
    ("bad-cuda-index", ["run", "--device", "cuda:x"], 2, r"unknown device 'cuda:x'", None),
    ("resume-nothing", ["run", *SMOKE, "--resume"], 2, r"no interrupted run", None),
    ("results-is-a-file", ["run", *SMOKE, "--results-dir", "{x}"], 2, r"is a file, not a folder", results_file),
    ("missing-mnist", ["run", "--dataset", "mnist", "--data-root", "{tmp}"], 2, r"dataset 'mnist' not found", None),
    ("truncated-idx", ["run", "--dataset", "fashion-mnist", "--preset", "smoke", "--data-root", "{x}"], 2,
     r"cannot read IDX file .*train-images", truncated_idx),
    ("truncated-cifar", ["run", "--dataset", "cifar10", "--preset", "smoke", "--data-root", "{x}"], 2,
     r"cannot read CIFAR-10", truncated_cifar),
    # ---- eval
    ("eval-neither", ["eval"], 2, r"give exactly one of --run RUN_ID, --checkpoint PATH and --features FILE.npz", None),
    ("eval-no-such-run", ["eval", "--run", "nosuchrun"], 2, r"no run 'nosuchrun'", None),
    ("eval-run-path-not-a-run", ["eval", "--run", "{tmp}/"], 2,
     r"is not a run folder \(it has no run.json\); runs are under .*results/runs", None),
    ("eval-run-path-elsewhere", ["eval", "--run", "{tmp}/other/runs/{run}"], 2,
     r"other/runs/.* is a run of another results folder than .*/results: give --results-dir .*/other$",
     lambda t, r: shutil.copytree(r, t / "other" / "runs" / r.name) and ""),
    ("eval-missing-checkpoint", ["eval", "--checkpoint", "{tmp}/none.pt"], 2, r"does not exist", None),
    ("eval-other-dataset", ["eval", "--run", "{run}", "--dataset", "mnist5k"], 2, r"was trained on synthetic", None),
    ("eval-swapped-learner", ["eval", "--run", "{x}"], 2, r"holds learner 'pca', not 'vae'", swapped_checkpoint),
    ("eval-other-seed", ["eval", "--run", "{x}"], 2, r"holds a vae with another seed", other_seed_checkpoint),
    ("eval-unknown-metric", ["eval", "--run", "{run}", "--metrics", "nope"], 2, r"unknown metric 'nope'", None),
    # ---- suite files
    ("suite-missing", ["suite", "{tmp}/none.yaml"], 2, r"suite file .*none.yaml does not exist", None),
    ("suite-only-unknown", ["suite", "{x}", "--only", "lpvae-h3"], 2,
     r"--only lpvae-h3: suite 'bad' has no such learner; its learners: lpvae-h2, vae",
     lambda t, r: suite_file(t, "learners: [vae, {name: lpvae, options: {h: 2}}]\n")),
    ("suite-unknown-key", ["suite", "{x}"], 2, r"unknown key 'colour' in the suite",
     lambda t, r: suite_file(t, "learners: [vae]\ncolour: red\n")),
    ("suite-nameless-learner", ["suite", "{x}"], 2, r"a learner entry needs a name",
     lambda t, r: suite_file(t, "learners: [{options: {h: 1}}]\n")),
    ("suite-text-seeds", ["suite", "{x}"], 2, r"'seeds' must be a list of integers",
     lambda t, r: suite_file(t, "learners: [vae]\nseeds: [one]\n")),
    ("suite-negative-seed", ["suite", "{x}"], 2, r"'seeds' must be a list of integers from 0 to 2\^31 - 1",
     lambda t, r: suite_file(t, "learners: [{name: vae, seeds: [0, -1]}]\n")),
    ("suite-options-list", ["suite", "{x}"], 2, r"options of learner 'lpvae' must be a mapping",
     lambda t, r: suite_file(t, "learners: [{name: lpvae, options: [h, 1]}]\n")),
    ("suite-text-threshold", ["suite", "{x}"], 2, r"min of the threshold on bpd must be a number",
     lambda t, r: suite_file(t, "learners: [vae]\nthresholds: [{metric: bpd, min: low}]\n")),
    ("suite-unknown-threshold-metric", ["suite", "{x}"], 2, r"names metric 'accuracy', which the battery",
     lambda t, r: suite_file(t, "learners: [vae]\nthresholds: [{metric: accuracy, min: 1}]\n")),
    ("suite-unknown-tolerance-metric", ["suite", "{x}"], 2, r"baseline tolerance names metric 'bpdd'",
     lambda t, r: suite_file(t, "learners: [vae]\nbaseline: {file: b.json, tolerance: {bpdd: 1}}\n")),
    ("suite-negative-tolerance", ["suite", "{x}"], 2, r"tolerance of bpd must be >= 0",
     lambda t, r: suite_file(t, "learners: [vae]\nbaseline: {file: b.json, tolerance: {bpd: -1}}\n")),
    ("suite-unknown-learner", ["suite", "{x}"], 2, r"suite.yaml: learner 'vea': unknown learner 'vea'",
     lambda t, r: suite_file(t, "learners: [vea]\n")),
    ("suite-bad-option", ["suite", "{x}"], 2, r"suite.yaml: learner 'vae': width must be an integer >= 2",
     lambda t, r: suite_file(t, "learners: [{name: vae, options: {width: 0}}]\n")),
    ("suite-unknown-dataset", ["suite", "{x}"], 2, r"suite.yaml: unknown dataset 'digits'",
     lambda t, r: raw_suite(t, "name: x\nlearners: [vae]\ndatasets: [digits]\n")),
    ("suite-unknown-preset", ["suite", "{x}"], 2, r"suite.yaml: unknown preset 'huge'",
     lambda t, r: raw_suite(t, "name: x\nlearners: [vae]\npresets: [huge]\n")),
    ("suite-bad-battery", ["suite", "{x}"], 2, r"suite.yaml: battery: probe_seeds must be an integer >= 1",
     lambda t, r: suite_file(t, "learners: [vae]\nbattery: {probe_seeds: 0}\n")),
    ("suite-unknown-battery-metric", ["suite", "{x}"], 2, r"unknown metric 'bogus'",
     lambda t, r: suite_file(t, "learners: [vae]\nmetrics: [bogus]\n")),
    ("suite-bad-yaml", ["suite", "{x}"], 2, r"not valid YAML", lambda t, r: suite_file(t, "learners: [vae\n")),
    ("suite-is-a-folder", ["suite", "{tmp}"], 2, r"is not a file", None),
    ("suite-zero-jobs", ["suite", "benchmarks/smoke.yaml", "--jobs", "0"], 2, r"Invalid value for '--jobs'", None),
    ("suite-unknown-device", ["suite", "benchmarks/smoke.yaml", "--device", "tpu"], 2, r"unknown device 'tpu'",
     None),
    # ---- suites on a Ray cluster
    ("ray-local-store", ["suite", "benchmarks/smoke.yaml", "--ray", "auto"], 2,
     r"--ray needs an MLflow tracking server as the shared record .*start `mlflow server", None),
    ("ray-unreachable-server", ["suite", "benchmarks/smoke.yaml", "--ray", "auto", "--tracking-uri",
                                "http://127.0.0.1:9"], 2, r"no MLflow server answers at http://127.0.0.1:9", None),
    ("ray-cpus-without-ray", ["suite", "benchmarks/smoke.yaml", "--cpus-per-cell", "2"], 2,
     r"--cpus-per-cell applies to cells run on a Ray cluster: add --ray ADDRESS", None),
    ("ray-with-jobs", ["suite", "benchmarks/smoke.yaml", "--ray", "auto", "--jobs", "2"], 2, r"leave out --jobs",
     None),
    ("ray-with-device", ["suite", "benchmarks/smoke.yaml", "--ray", "auto", "--device", "cpu"], 2,
     r"uses the device Ray gives it", None),
    ("ray-no-cpus", ["suite", "benchmarks/smoke.yaml", "--ray", "auto", "--cpus-per-cell", "0"], 2,
     r"Invalid value for '--cpus-per-cell'", None),
    ("ray-negative-gpus", ["suite", "benchmarks/smoke.yaml", "--ray", "auto", "--gpus-per-cell", "-1"], 2,
     r"Invalid value for '--gpus-per-cell'", None),
    ("ray-suite-key", ["suite", "{x}"], 2, r"ray: cpus_per_cell must be > 0",
     lambda t, r: suite_file(t, "learners: [vae]\nray: {cpus_per_cell: -2}\n")),
    ("ray-suite-unknown-key", ["suite", "{x}"], 2, r"unknown key 'nodes' in ray",
     lambda t, r: suite_file(t, "learners: [vae]\nray: {nodes: 4}\n")),
    ("ray-suite-every", ["suite", "{x}"], 2, r"ray: checkpoint_every must be an integer >= 1",
     lambda t, r: suite_file(t, "learners: [vae]\nray: {checkpoint_every: 0.5}\n")),
    # ---- report, check, ui
    ("report-tag-no-equals", ["report", "--tag", "suite"], 2, r"--tag expects KEY=VALUE, got 'suite'", None),
    ("report-tag-quote", ["report", "--tag", "suite=a'b"], 2, r"quotes are not allowed", None),
    ("report-format", ["report", "--format", "docx"], 2, r"Invalid value for '--format'", None),
    ("report-missing-suite", ["report", "--suite", "{tmp}/none.yaml"], 2, r"does not exist", None),
    ("report-no-runs", ["report", "--suite", "{x}"], 2, r"no finished runs of suite '.+' under .+; run it first: "
     r"`repbench suite .+suite.yaml --results-dir .+`",
     lambda t, r: suite_file(t, "learners: [lpvae]\n")),
    ("report-no-experiment", ["report", "--experiment", "nope"], 2, r"no MLflow experiment 'nope'", None),
    ("report-mistyped-folder", ["report", "--results-dir", "{tmp}/typo"], 2,
     r"no MLflow store at .*typo/mlflow.db: nothing has run there \(check --results-dir", None),
    ("report-unreachable", ["report", "--tracking-uri", "http://127.0.0.1:9"], 2,
     r"no MLflow server answers at http://127.0.0.1:9", None),
    ("report-paper-missing", ["report", "--paper", "{tmp}/none.yaml"], 2, r"cannot read paper numbers", None),
    ("report-paper-not-a-list", ["report", "--paper", "{x}"], 2, r"expected a list of entries",
     lambda t, r: bad_paper(t, "dataset: cifar10\n")),
    ("report-paper-text-value", ["report", "--paper", "{x}"], 2, r"value that is not a number",
     lambda t, r: bad_paper(t, "- {dataset: a, learner: b, metric: bpd, value: high, source: c}\n")),
    ("check-missing-suite", ["check", "{tmp}/none.yaml"], 2, r"does not exist", None),
    ("check-corrupt-baseline", ["check", "{x}"], 2, r"is corrupt or not a repbench baseline", corrupt_baseline),
    ("check-write-no-baseline", ["check", "{x}", "--write-baseline"], 2, r"names no baseline file",
     lambda t, r: suite_file(t, "learners: [vae]\n")),
    ("ui-bad-port", ["ui", "--port", "0"], 2, r"Invalid value for '--port'", None),
    # ---- issue 29, class 2: a gate that gates nothing is an error
    ("gate-threshold-unknown-learner", ["check", "{x}"], 2,
     r"the threshold on bpd names learner 'lpvae-h9', which the suite does not have \(its learners: vae\)",
     lambda t, r: gated(t, "thresholds: [{learner: lpvae-h9, metric: bpd, max: 20}]\n")),
    ("gate-threshold-unknown-dataset", ["check", "{x}"], 2, r"names dataset 'mnist', which the suite does not have",
     lambda t, r: gated(t, "thresholds: [{dataset: mnist, metric: bpd, max: 20}]\n")),
    ("gate-threshold-unknown-preset", ["check", "{x}"], 2, r"names preset 'quick', which the suite does not have",
     lambda t, r: gated(t, "thresholds: [{preset: quick, metric: bpd, max: 20}]\n")),
    ("gate-threshold-unmeasured-metric", ["check", "{x}"], 2,
     r"the threshold on linear_probe applies to no learner, dataset and preset of the suite that measures "
     r"linear_probe \(its metrics: bpd\)", lambda t, r: gated(t, "thresholds: [{metric: linear_probe, min: 20}]\n")),
    ("gate-threshold-label-count", ["suite", "{x}"], 2, r"threshold on linear_probe.labels_600 applies to no",
     lambda t, r: suite_file(t, "learners: [vae]\nmetrics: [label_efficiency]\nbattery: {label_counts: [100]}\n"
                                "thresholds: [{metric: linear_probe.labels_600, min: 20}]\n")),
    ("gate-tolerance-unmeasured-metric", ["check", "{x}"], 2,
     r"the baseline tolerance names metric 'linear_probe', which the suite does not measure",
     lambda t, r: gated(t, "baseline: {file: b.json, tolerance: {linear_probe: 1}}\n")),
    ("gate-baseline-without-tolerance", ["check", "{x}"], 2, r"baseline needs both a file and a tolerance",
     lambda t, r: gated(t, "baseline: {file: b.json}\n")),
    ("gate-tolerance-without-file", ["check", "{x}"], 2, r"baseline needs both a file and a tolerance",
     lambda t, r: gated(t, "baseline: {tolerance: {bpd: 0.1}}\n")),
    ("gate-no-learners", ["check", "{x}"], 2, r"'learners' is empty", lambda t, r: suite_file(t, "learners: []\n")),
    ("gate-repeated-key", ["check", "{x}"], 2, r"not valid YAML \(key 'thresholds' is repeated at line 8\)",
     lambda t, r: gated(t, "thresholds: [{metric: bpd, max: 20}]\nthresholds: [{metric: bpd, min: 1}]\n")),
    ("gate-repeated-nested-key", ["suite", "{x}"], 2, r"key 'probe_seeds' is repeated",
     lambda t, r: suite_file(t, "learners: [vae]\nbattery: {probe_seeds: 1, probe_seeds: 2}\n")),
    ("gate-nothing", ["check", "{x}"], 2, r"has no thresholds and no baseline: `check` would gate nothing",
     lambda t, r: gated(t, "")),
    ("gate-empty-baseline", ["check", "{x}"], 2, r"baseline .*base.json holds no results, so it would gate nothing",
     with_baseline({"suite": "bad", "results": []})),
    ("gate-other-suites-baseline", ["check", "{x}"], 2, r"was written for suite 'smoke', not 'bad': give this "
     r"suite a file of its own \(`baseline: \{file: ...\}` in .+\), then `repbench check .+ --write-baseline`",
     with_baseline({"suite": "smoke", "results": [entry(bpd=9.1)]})),
    ("gate-threshold-glob-matches-nothing", ["check", "{x}"], 2, r"names learner 'lp\*', which the suite does not have",
     lambda t, r: gated(t, "thresholds: [{learner: 'lp*', metric: bpd, max: 20}]\n")),
    # ---- class 4: every file repbench reads is checked, and a bad one is one line
    ("baseline-text-value", ["check", "{x}"], 2, r"base.json: bpd of vae \(synthetic/smoke\) is '9.1', not a number",
     with_baseline({"suite": "bad", "results": [entry(bpd="9.1")]})),
    ("baseline-edited-mean", ["check", "{x}"], 2, r"the mean of bpd of vae \(synthetic/smoke\) disagrees with its",
     with_baseline({"suite": "bad", "results": [{**entry(bpd=9.1), "seeds": {"bpd": [8.0]}}]})),
    ("metrics-json-text-value", ["check", "{x}"], 2, r"metrics.json: the value of 'bpd' is 'low', not a number",
     edited_record(lambda text: re.sub(r'"bpd": [0-9.]+', '"bpd": "low"', text))),
    ("metrics-json-truncated", ["report", "--suite", "{x}"], 2,
     r"metrics.json is unreadable or truncated \(.*\); measure it again \(`repbench eval --run vae-synthetic-smoke-s0-",
     edited_record(lambda text: text[:len(text) // 2])),
    ("metrics-json-not-a-record", ["check", "{x}"], 2, r"metrics.json is not a repbench record",
     edited_record(lambda text: "[1, 2]")),
    ("metrics-json-settings-text", ["check", "{x}"], 2, r"metrics.json: the settings of 'bpd' are 'x', not a mapping",
     edited_record(lambda text: json.dumps({**json.loads(text), "measured_with": {"bpd": "x"}}))),
    ("metrics-json-not-utf8", ["report", "--suite", "{x}"], 2, r"metrics.json is unreadable or truncated \(.*utf-8",
     lambda t, r: (r / "metrics.json").write_bytes(b"\xff" + (r / "metrics.json").read_bytes()) and gated(t)),
    ("features-truncated", ["eval", "--features", "{x}"], 2, r"cannot read features file", truncated_features),
    ("features-npy", ["eval", "--features", "{x}"], 2, r"cannot read features file .*f.npy: it holds one ndarray",
     npy_features),
    ("features-negative-labels", ["eval", "--features", "{x}"], 2, r"'train_y' has negative labels \(-1\)",
     lambda t, r: features(t, train_y=__import__("numpy").arange(40) % 4 - 1)),
    ("features-one-class", ["eval", "--features", "{x}"], 2, r"'train_y' has a single class \(3\)",
     lambda t, r: features(t, train_y=__import__("numpy").full(40, 3))),
    ("features-huge-values", ["eval", "--features", "{x}"], 2, r"'test' has values as large as 1e\+300",
     lambda t, r: features(t, test=__import__("numpy").full((20, 4), 1e300))),
    # a suite's bad features file is refused before any cell trains (rc 2), not after (a failed cell, rc 1)
    ("suite-features-negative-labels", ["suite", "{x}", "-q"], 2, r"'train_y' has negative labels \(-1\)",
     lambda t, r: suite_file(t, "learners: [{name: lpvae, options: {h: 1}}]\nmetrics: [linear_probe]\n"
                                f"features: [{{name: mine, file: {features(t, train_y=__import__('numpy').arange(40) % 4 - 1)}, "
                                f"dataset: external}}]\n")),
    ("eval-checkpoint-other-image-size", ["eval", "--checkpoint", "{x}", "--dataset", "mnist5k"], 2,
     r"holds a vae of images \(1, 12, 12\); dataset mnist5k has images \(1, 28, 28\)",
     lambda t, r: str(r / "checkpoint.pt")),
    ("report-figures-is-a-file", ["report", "--suite", "{x}", "--figures", "{tmp}/suite.yaml"], 2,
     r"--figures .*suite.yaml is a file, not a folder", lambda t, r: gated(t)),
    ("report-figure-is-a-folder", ["report", "--suite", "{x}", "--figure", "{tmp}"], 2,
     r"--figure .* is a folder", lambda t, r: gated(t)),
    ("report-html-out-is-a-file", ["report", "--suite", "{x}", "--format", "html", "--out", "{tmp}/suite.yaml"], 2,
     r"--out .*suite.yaml is a file, not a folder", lambda t, r: gated(t)),
    ("report-paper-not-utf8", ["report", "--suite", "{x}", "--paper", "{tmp}/paper.yaml"], 2,
     r"paper.yaml: not UTF-8 text \(byte 12\)",
     lambda t, r: (t / "paper.yaml").write_bytes(b"- {dataset: \xe9, learner: vae}\n") and gated(t)),
    # ---- class 5: promises about tracking are kept or not made
    ("tracking-uri-scheme", ["run", *SMOKE, "--tracking-uri", "ftp://host/store"], 2,
     r"Invalid value for '--tracking-uri': tracking URI 'ftp://host/store': MLflow cannot use the scheme ftp:", None),
    ("tracking-uri-scheme-report", ["report", "--tracking-uri", "mlflow+x://h"], 2, r"cannot use the scheme mlflow:",
     None),
    ("experiment-empty", ["run", *SMOKE, "--experiment", ""], 2, r"the experiment name is empty", None),
    ("experiment-blank-report", ["report", "--experiment", "  "], 2, r"the experiment name is empty", None),
    ("experiment-too-long", ["eval", "--run", "{run}", "--experiment", "e" * 300], 2,
     r"the experiment name has 300 characters; MLflow keeps at most 256", None),
    ("tracking-uri-blank", ["run", *SMOKE, "--tracking-uri", " "], 2, r"tracking URI ' ': MLflow cannot use it", None),
    # ---- class 6: names cannot leave their folder
    ("features-name-separator", ["eval", "--features", "{x}", "--name", "../../outside"], 2,
     r"--name '../../outside' cannot name a run folder", lambda t, r: features(t)),
    ("features-name-hidden", ["eval", "--features", "{x}", "--name", ".hidden"], 2, r"cannot name a run folder",
     lambda t, r: features(t)),
    ("features-dataset-separator", ["eval", "--features", "{x}", "--dataset", "a/b"], 2,
     r"--dataset 'a/b' cannot name a run folder", lambda t, r: features(t)),
    ("features-file-name-dotdot", ["eval", "--features", "{x}"], 2,
     r"the features file's name \(give --name\) '..f' cannot name a run folder",
     lambda t, r: features(t, name="..f.npz")),
    ("features-name-too-long", ["eval", "--features", "{x}", "--name", "n" * 101], 2,
     r"--name 'n{101}' cannot name a run folder: use up to 100", lambda t, r: features(t)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(case, finished, tmp_path, monkeypatch):
    name, argv, code, pattern, setup = case
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    results = tmp_path / "results"
    shutil.copytree(finished, results)
    run = next((results / "runs").iterdir())
    extra = setup(tmp_path, run) if setup else ""
    before = sorted(p.name for p in tmp_path.iterdir())
    runs_before = sorted(p.name for p in (results / "runs").iterdir())
    args = [a.format(results=results, tmp=tmp_path, run=run.name, x=extra) for a in argv]
    if "--results-dir" not in args and args[0] in ("run", "eval", "suite", "report", "check", "ui"):
        args += ["--results-dir", str(results)]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == code, (out.exit_code, out.output, out.exception)
    assert "Traceback" not in out.output and (out.exception is None or isinstance(out.exception, SystemExit)), \
        out.exception
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert_nothing_left_running(results)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written outside the results folder
    if (results / "runs").exists():  # and no run folder for a run that never started
        assert sorted(p.name for p in (results / "runs").iterdir()) == runs_before


def assert_nothing_left_running(results: Path) -> None:
    for state in results.glob("runs/*/run.json"):
        assert json.loads(state.read_text())["status"] != "RUNNING", state
    if (results / "mlflow.db").exists():
        from mlflow.tracking import MlflowClient
        client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert all(r.info.status != "RUNNING" for r in runs)


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


def test_an_unknown_malloc_mode_is_one_line_before_any_command(monkeypatch):
    monkeypatch.setenv("REPBENCH_MALLOC", "jemalloc")  # read at import; preloading is how jemalloc is chosen
    out = CliRunner().invoke(cli, ["ls"])
    assert out.exit_code == 2 and out.stderr.strip() == \
        "error: REPBENCH_MALLOC must be 'tuned' or 'system', got 'jemalloc'", out.stderr


@pytest.fixture(scope="module")
def fitted_vae():
    from repbench.testing import tiny
    from repbench.data.datasets import make_synthetic
    return tiny("vae", epochs=1, train_limit=100).fit(make_synthetic().train_x[:100], progress=False)


def _images(*shape):
    import torch
    return torch.zeros(shape, dtype=torch.uint8)


def _unfitted(name="vae", **options):
    from repbench.testing import tiny
    return tiny(name, **options)


def _battery(learner, data="synthetic"):
    from repbench.data.datasets import make_synthetic
    from repbench.measure import run_battery
    return run_battery(learner, make_synthetic() if data == "synthetic" else data, progress=False)


def _evaluate(encode, tmp, **kw):
    import repbench
    return repbench.evaluate(encode, dataset="synthetic", preset="smoke", results_dir=tmp / "results", **kw)


# Issue 29, class 6: the Python API refuses what it cannot do, naming what is wrong
# (id, call(tmp, fitted learner), the message; nothing may be written under tmp)
API_CASES = [
    ("posterior-unfitted", lambda t, f: _unfitted().posterior(_images(2, 1, 12, 12)),
     r"learner 'vae' is not fitted: call fit\(train_x\) or load\(path\) first"),
    ("elbo-unfitted", lambda t, f: _unfitted("lpvae", h=1).elbo_terms(_images(2, 1, 12, 12)),
     r"learner 'lpvae' is not fitted"),
    ("m2-posterior-unfitted", lambda t, f: _unfitted("m2").posterior(_images(2, 1, 12, 12)),
     r"learner 'm2' is not fitted"),
    ("save-unfitted", lambda t, f: _unfitted().save(t / "m.pt"), r"learner 'vae' is not fitted: .* before save"),
    ("posterior-wrong-shape", lambda t, f: f.posterior(_images(2, 1, 28, 28)),
     r"learner 'vae' takes images \[N, 1, 12, 12\] as a torch tensor, got \[2, 1, 28, 28\]"),
    ("posterior-not-a-tensor", lambda t, f: f.posterior([[0, 1]]), r"as a torch tensor, got list"),
    ("elbo-wrong-shape", lambda t, f: f.elbo_terms(_images(12, 12)), r"takes images \[N, 1, 12, 12\].*got \[12, 12\]"),
    ("battery-of-nothing", lambda t, f: _battery(None), r"run_battery needs a trained learner, or learner None with"),
    ("battery-of-a-number", lambda t, f: _battery(42), r"run_battery takes a repbench Learner .*got int"),
    ("battery-data-by-name", lambda t, f: _battery(f, "synthetic-by-name"),
     r"run_battery takes the data as an ImageData .*got str"),
    ("evaluate-name-leaves-folder", lambda t, f: _evaluate(lambda x: x.flatten(1).float(), t, name="../../x"),
     r"name '../../x' cannot name a run folder"),
    ("evaluate-dataset-a-number", lambda t, f: __import__("repbench").evaluate(
        lambda x: x.flatten(1).float(), dataset=7, results_dir=t / "results"),
     r"dataset must be a dataset name or an ImageData, got int"),
    ("evaluate-batch-size-zero", lambda t, f: _evaluate(lambda x: x.flatten(1).float(), t, batch_size=0),
     r"batch_size must be a positive integer, got 0"),
    ("evaluate-only-image-metrics", lambda t, f: _evaluate(lambda x: x.flatten(1).float(), t,
                                                           battery={"metrics": ["bpd"]}),
     r"none of the metrics bpd can score bare representations; choose among .*\bknn_probe\b"),
    ("evaluate-knn-k-over-training", lambda t, f: _evaluate(lambda x: x.flatten(1).float(), t,
                                                            battery={"metrics": ["knn_probe"], "knn_k": 301}),
     r"knn_k \(301\) is more than the 300 training images of synthetic"),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_the_api_refuses_what_it_cannot_do(case, fitted_vae, tmp_path):
    from repbench.errors import RepbenchError
    name, call, pattern = case
    with pytest.raises(RepbenchError, match=pattern):
        call(tmp_path, fitted_vae)
    assert not list(tmp_path.iterdir()) and not list(tmp_path.parent.glob("x*"))
