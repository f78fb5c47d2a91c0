"""Datasets: the embedded default, generated data, and each on-disk format on small files written here."""
import gzip
import pickle

import numpy as np
import pytest
import torch

from repbench.data.datasets import DATASETS, FASHION_MNIST_DEBIAN, load_dataset, read_idx
from repbench.errors import RepbenchError


def write_idx(path, array: np.ndarray, gz=False):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def fake_images(n, shape, seed):
    g = np.random.default_rng(seed)
    return g.integers(0, 256, size=(n, *shape), dtype=np.uint8), g.integers(0, 10, size=n)


def write_idx_set(folder, n_train=30, n_test=10, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    (tx, ty), (vx, vy) = fake_images(n_train, (28, 28), 0), fake_images(n_test, (28, 28), 1)
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{ext}", tx, gz)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", ty, gz)
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", vx, gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", vy, gz)
    return tx, ty, vx, vy


def test_mnist5k_is_real_balanced_and_fixed():
    d = load_dataset("mnist5k")
    assert d.train_x.shape == (4000, 1, 28, 28) and d.test_x.shape == (1000, 1, 28, 28)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert torch.bincount(d.test_y).tolist() == [100] * 10
    assert torch.bincount(d.train_y).tolist() == [400] * 10
    assert d.train_x.float().mean() > 20  # real digits: dark background, bright strokes
    again = load_dataset("mnist5k")
    assert torch.equal(d.test_x, again.test_x) and torch.equal(d.train_y, again.train_y)


def test_limit_is_a_fixed_subset():
    d = load_dataset("mnist5k")
    a, b = d.limit(100, 50), d.limit(100, 50)
    assert a.train_x.shape[0] == 100 and a.test_x.shape[0] == 50
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert len(set(a.train_y.tolist())) == 10


def test_synthetic_has_its_structure():
    d = load_dataset("synthetic")
    assert d.image_shape == (1, 12, 12) and d.num_classes == 10
    x, y = d.train_x.float(), d.train_y
    horizontal = x[y < 5].std(dim=3).mean()  # rows are flat for horizontal bars
    assert horizontal < x[y >= 5].std(dim=3).mean()


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    write_idx(path, arr, gz)
    assert np.array_equal(read_idx(path), arr)


def test_mnist_in_torchvision_layout(tmp_path):
    tx, ty, vx, vy = write_idx_set(tmp_path / "MNIST" / "raw")
    d = load_dataset("mnist", root=tmp_path)
    assert torch.equal(d.train_x[:, 0], torch.from_numpy(tx)) and d.train_y.tolist() == ty.tolist()
    assert torch.equal(d.test_x[:, 0], torch.from_numpy(vx)) and d.test_y.tolist() == vy.tolist()


def test_fashion_mnist_from_a_folder_of_gzipped_idx(tmp_path):
    tx, *_ = write_idx_set(tmp_path / "fashion-mnist", gz=True)
    d = load_dataset("fashion-mnist", root=tmp_path)
    assert torch.equal(d.train_x[:, 0], torch.from_numpy(tx))


@pytest.mark.skipif(not FASHION_MNIST_DEBIAN.exists(),
                    reason="real Fashion-MNIST absent: apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist(tmp_path):
    d = load_dataset("fashion-mnist", root=tmp_path)
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(d.test_y).tolist() == [1000] * 10


def write_cifar10(root) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    g = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = g.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        labels = g.integers(0, 10, size=4).tolist()
        batches[name] = (data, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels, b"filenames": []}, f)
    return batches


def test_cifar10_python_pickles(tmp_path):
    batches = write_cifar10(tmp_path)
    d = load_dataset("cifar10", root=tmp_path)
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (4, 3, 32, 32)
    # CIFAR rows are 1024 red, then green, then blue values, row-major
    assert d.train_x[0, 1, 0, 5] == batches["data_batch_1"][0][0, 1024 + 5]
    assert d.test_y.tolist() == batches["test_batch"][1]


def write_svhn(root) -> np.ndarray:
    from scipy.io import savemat
    g = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        x = g.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [2], [3], [4], [5]][:n], dtype=np.uint8)
        savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
        if split == "test":
            test_x = x
    return test_x


def test_svhn_mat_files(tmp_path):
    test_x = write_svhn(tmp_path)
    d = load_dataset("svhn", root=tmp_path)
    assert d.train_x.shape == (6, 3, 32, 32) and d.train_y.tolist() == [0, 1, 2, 3, 4, 5]
    assert d.test_x[2, 1, 4, 7] == test_x[4, 7, 1, 2]


@pytest.mark.parametrize("name", ["mnist", "cifar10", "svhn"])
def test_missing_data_says_how_to_get_it(tmp_path, name):
    with pytest.raises(RepbenchError, match="not found.*--download"):
        load_dataset(name, root=tmp_path)


def test_corrupt_file_is_a_clear_error(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_idx_set(folder)
    (folder / "train-images-idx3-ubyte").write_bytes(b"garbage")
    with pytest.raises(RepbenchError, match="cannot read IDX"):
        load_dataset("mnist", root=tmp_path)


def test_unknown_dataset_lists_what_exists():
    with pytest.raises(RepbenchError, match="unknown dataset 'mnsit'; did you mean 'mnist'.*available:"):
        load_dataset("mnsit")


# dataset -> a small copy of its on-disk format written under a data root (None: it needs no files). A dataset
# registered without an entry here fails the test below until it brings one.
FIXTURES = {
    "mnist5k": None,
    "synthetic": None,
    "mnist": lambda root: write_idx_set(root / "MNIST" / "raw"),
    "fashion-mnist": lambda root: write_idx_set(root / "fashion-mnist", gz=True),
    "cifar10": write_cifar10,
    "svhn": write_svhn,
}


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_registered_dataset_loads_as_it_declares(tmp_path, name):
    """Each dataset of the registry, from its own format: uint8 images of the declared shape (run folders are
    found by that shape without loading), labels from 0 to num_classes - 1 beside them, and a description."""
    assert name in FIXTURES, f"dataset '{name}' has no fixture in {__file__}: add one"
    spec = DATASETS.get(name)
    assert spec.description
    if FIXTURES[name] is not None:
        FIXTURES[name](tmp_path)
    d = load_dataset(name, root=tmp_path)
    for x, y in ((d.train_x, d.train_y), (d.test_x, d.test_y)):
        assert x.dtype == torch.uint8 and tuple(x.shape[1:]) == spec.image_shape and len(x) == len(y) > 0
        assert 0 <= int(y.min()) and int(y.max()) < d.num_classes
