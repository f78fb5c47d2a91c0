"""Third-party learners: the conformance check, the example plugin installed and run from the CLI, broken plugins."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import repbench
from repbench.registry import PluginWarning, Registry
from repbench.testing import check_learner

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "repbench-example-plugin"


@pytest.mark.parametrize("name", repbench.list_learners())
def test_every_registered_learner_conforms(name):
    dims = check_learner(lambda **kw: repbench.create_learner(name, preset="smoke", epochs=1, **kw))
    assert dims["mean"] >= 1


def test_conformance_check_catches_a_broken_learner():
    class Forgetful(repbench.create_learner("pca", preset="smoke").__class__):
        def fit(self, *a, **k):
            super().fit(*a, **k)
            return None  # breaks the scikit-learn contract
    with pytest.raises(AssertionError, match="fit must return self"):
        check_learner(lambda **kw: Forgetful(preset="smoke", **kw))


def fake_distribution(tmp_path: Path, entry_points: str, modules: dict[str, str]) -> Path:
    """A real installed-distribution layout (dist-info with entry_points.txt) in a folder for sys.path."""
    info = tmp_path / "fakeplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[repbench.learners]\n" + entry_points)
    for name, code in modules.items():
        (tmp_path / f"{name}.py").write_text(code)
    return tmp_path


def test_broken_and_duplicate_plugins_warn_and_the_rest_works(tmp_path, monkeypatch):
    fake_distribution(tmp_path, "broken = fake_broken:Learner\nvae = fake_dup:VAE\nfine = fake_dup:Fine\n", {
        "fake_broken": "raise ImportError('this plugin needs a package that is not installed')\n",
        "fake_dup": "from repbench_models.vae import VAE as _V\nclass VAE(_V):\n    pass\nclass Fine(_V):\n"
                    "    name = 'fine'\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("learner", entry_point_group="repbench.learners")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = registry.names()
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert any("'broken'" in m and "fake_broken:Learner" in m and "failed to import" in m for m in messages)
    assert any("'vae'" in m and "already registered" in m for m in messages)
    assert {"vae", "lpvae", "fpvae", "fine"} <= set(names) and "broken" not in names
    assert "fakeplugin" not in registry.origin("vae")  # the first registration stays


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(EXAMPLE)], check=True, capture_output=True, timeout=300)
    return target


def test_example_plugin_installed_lists_and_runs(installed_example, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_example), os.environ.get("PYTHONPATH", "")])}
    ls = subprocess.run([sys.executable, "-m", "repbench.cli", "ls"], env=env, capture_output=True, text=True,
                        timeout=120)
    assert ls.returncode == 0 and "linear-ae" in ls.stdout and "repbench-example-plugin" in ls.stdout
    run = subprocess.run([sys.executable, "-m", "repbench.cli", "run", "--model", "linear-ae", "--preset", "smoke",
                          "--dataset", "synthetic", "-q", "--results-dir", str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "linear_probe" in run.stdout and "n/a" in run.stdout  # bpd does not apply to it
    check = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(EXAMPLE / "test_plugin.py")], env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout[-2000:]


def test_a_plugin_registered_under_another_name_than_its_class_is_refused(tmp_path, monkeypatch):
    """Such a plugin would train but could never be reloaded: its checkpoint names the class's name."""
    from repbench.learners.learner import _check_learner_class
    fake_distribution(tmp_path, "other-name = fake_named:Named\nlikes = fake_named:Liar\n", {
        "fake_named": "from repbench_models.vae import VAE\nclass Named(VAE):\n    name = 'named'\n"
                      "from repbench_models.baselines import PCA\nclass Liar(PCA):\n    name = 'likes'\n"
                      "    abilities = ('likelihood',)\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("learner", entry_point_group="repbench.learners", check=_check_learner_class)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = registry.names()
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert "other-name" not in names and "likes" not in names and "vae" in names
    assert any("'other-name'" in m and "class's name 'named'" in m for m in messages), messages
    assert any("'likes'" in m and "declares 'likelihood' but has no posterior, elbo_terms" in m for m in messages)


@pytest.fixture
def known_plugin():
    """The known-answer learner (a direct `repbench.Learner` subclass, no torch module) in the registry."""
    from known import KnownCode
    repbench.LEARNERS.register(KnownCode.name, KnownCode, origin="tests")
    yield KnownCode
    repbench.LEARNERS._items.pop(KnownCode.name), repbench.LEARNERS._origin.pop(KnownCode.name)


def test_a_plain_learner_runs_end_to_end_through_the_cli(known_plugin, tmp_path):
    import json
    from click.testing import CliRunner
    from mlflow.tracking import MlflowClient
    from repbench.cli import cli
    args = ["run", "--model", "known-code", "--preset", "smoke", "--dataset", "synthetic", "-q", "--results-dir",
            str(tmp_path), "-o", "std=0.5"]
    out = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    (folder,) = (tmp_path / "runs").iterdir()
    record = json.loads((folder / "metrics.json").read_text())
    assert record["metrics"]["bpd"] > 8.0 and record["metrics"]["intrinsic_dim"] >= 1  # uniform likelihood + KL
    state = json.loads((folder / "run.json").read_text())
    assert state["status"] == "FINISHED" and (folder / "checkpoint.pt").exists()
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(state["mlflow_run_id"]).info.status == "FINISHED"
    again = CliRunner().invoke(cli, ["eval", "--run", folder.name, "--metrics", "linear_probe", "--results-dir",
                                     str(tmp_path), "-q"], catch_exceptions=False)
    assert again.exit_code == 0 and "linear_probe" in again.output, again.output


def test_conformance_check_names_the_check_that_broke():
    from known import KnownCode

    class Unsaveable(KnownCode):
        def load(self, path):
            self.options = {**self.options, "scale": 5.0}
            return self
    with pytest.raises(AssertionError, match=r"check_learner \[save_load\]: save/load changed the representation"):
        check_learner(lambda **kw: Unsaveable(preset="smoke", **kw))
    check_learner(lambda **kw: KnownCode(preset="smoke", **kw))  # the honest one passes every check
