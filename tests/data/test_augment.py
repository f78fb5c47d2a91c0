"""CIFAR-10's augmentation: random crop (pad 4) and horizontal flip, applied to training batches and never at
test time; `--no-augment` turns it off and is a different run."""
import json
import pickle

import numpy as np
import torch
from click.testing import CliRunner

from repbench.data.augment import crop_flip
from repbench.cli import cli
from repbench.learners.train import evaluate

from repbench.testing import tiny


def is_crop_of(out: torch.Tensor, img: torch.Tensor, pad: int = 4) -> bool:
    padded = torch.nn.functional.pad(img, (pad,) * 4)
    h, w = img.shape[1:]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            if torch.equal(out, crop) or torch.equal(out, crop.flip(2)):
                return True
    return False


def test_crop_flip_gives_shifted_and_flipped_crops():
    x = torch.randint(0, 256, (64, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = crop_flip(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert all(is_crop_of(out[k], x[k]) for k in range(len(x)))
    assert sum(torch.equal(out[k], x[k]) for k in range(len(x))) < 16  # most images move
    assert torch.equal(out, crop_flip(x, torch.Generator().manual_seed(1)))  # the generator decides
    assert not torch.equal(out, crop_flip(x, torch.Generator().manual_seed(2)))


def test_training_batches_are_augmented_and_the_test_set_is_not():
    learner = tiny("lpvae", image_shape=(3, 16, 16), h=1, epochs=2, batch_size=10)
    g = torch.Generator().manual_seed(0)
    train_x = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8, generator=g)
    test_x = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8, generator=g)
    seen = []

    def recording(batch, generator):
        seen.append(len(batch))
        return crop_flip(batch, generator)
    learner.fit(train_x, test_x, augment=recording, progress=False)
    assert seen == [10] * 8  # every training batch of both epochs, nothing else
    # the logged test loss is that of the untouched test images
    again = evaluate(learner.module, learner.loss, test_x, 500) / (3 * 16 * 16 * np.log(2))
    assert abs(again - learner.history[-1]["test_loss"]) < 1e-6


def write_cifar10(root, n=4, seed=0):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    g = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": g.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                         b"labels": g.integers(0, 10, size=n).tolist()}, f)


def test_cifar10_runs_augment_unless_told_not_to(tmp_path):
    write_cifar10(tmp_path / "data")
    base = ["run", "--model", "lpvae", "--h", "1", "--dataset", "cifar10", "--preset", "smoke", "--quiet",
            "--grid", "0", "--metrics", "bpd", "--data-root", str(tmp_path / "data"),
            "--results-dir", str(tmp_path / "results")]
    for extra in ([], ["--no-augment"]):
        result = CliRunner().invoke(cli, base + extra, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    folders = sorted((tmp_path / "results" / "runs").iterdir())
    assert len(folders) == 2  # two configurations, two run folders
    augment = sorted(json.loads((f / "run.json").read_text())["params"]["augment"] for f in folders)
    assert augment == ["crop_flip", "none"]
    metrics = [json.loads((f / "metrics.json").read_text()) for f in folders]
    assert all(0 < m["metrics"]["bpd"] < 12 for m in metrics)
