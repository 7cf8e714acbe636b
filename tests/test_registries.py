import pytest
import torch

import pathnet as pn
from pathnet.errors import DataError, RegistryError

# parameter counts from the papers / reference implementations
EXPECTED_WEIGHTS = {"lenet300": 784 * 300 + 300 * 100 + 100 * 10, "vgg16": 14_715_584, "resnet20": 270_896,
                    "resnet32": 464_432, "resnet56": 851_504}


@pytest.mark.parametrize("name", sorted(set(pn.models.names()) - {"resnet18"}))
def test_models_build_and_run(name):
    model = pn.models.get(name, num_classes=7, seed=0)
    shape = pn.models.default_input_shape(name)
    out = model.eval()(torch.zeros(2, *shape))
    assert out.shape == (2, 7)
    if name in EXPECTED_WEIGHTS:
        weights = pn.prunable_weights(pn.models.get(name, num_classes=10))
        assert sum(w.numel() for w in weights.values()) == EXPECTED_WEIGHTS[name]


def test_models_are_seeded_and_fit_other_inputs():
    a, b = pn.models.get("conv2", seed=3), pn.models.get("conv2", seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    digits = pn.models.get("lenet300", input_shape=(1, 8, 8))
    assert digits(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    mnist1d = pn.models.get("vgg11", input_shape=(1, 40))
    assert mnist1d.eval()(torch.zeros(1, 1, 40)).shape == (1, 10)


def test_unknown_model_lists_choices():
    with pytest.raises(RegistryError, match="unknown model 'vgg17'.*vgg16"):
        pn.models.get("vgg17")


@pytest.mark.parametrize("name, n_train, n_test, shape", [
    ("digits", 1438, 359, (1, 8, 8)), ("mnist5k", 4000, 1000, (1, 28, 28)), ("mnist1d", 4000, 1000, (1, 40)),
    ("synthetic", 512, 256, (3, 32, 32))])
def test_offline_datasets(name, n_train, n_test, shape):
    ds = pn.data.get(name)
    assert (len(ds.train), len(ds.test), ds.input_shape, ds.num_classes) == (n_train, n_test, shape, 10)
    x, y = ds.train[0]
    assert tuple(x.shape) == shape and y.dtype == torch.long
    labels = torch.stack([ds.test[i][1] for i in range(len(ds.test))])
    assert set(labels.tolist()) == set(range(10))  # stratified: every class in the test split
    xs = torch.stack([ds.train[i][0] for i in range(min(len(ds.train), 1000))])
    assert abs(float(xs.mean())) < 0.5 and 0.5 < float(xs.std()) < 2  # standardised


def test_loader_order_depends_only_on_seed():
    ds = pn.data.get("digits")
    first = [y.tolist() for _, y in ds.loader("train", batch_size=64, seed=1)]
    again = [y.tolist() for _, y in ds.loader("train", batch_size=64, seed=1)]
    other = [y.tolist() for _, y in ds.loader("train", batch_size=64, seed=2)]
    assert first == again != other


def test_torchvision_sets_need_a_root(tmp_path):
    with pytest.raises(DataError, match="pass root=.*download=True"):
        pn.data.get("cifar10")
    with pytest.raises(DataError, match="does not exist"):
        pn.data.get("cifar10", root=tmp_path / "nowhere")
    with pytest.raises(DataError, match="not found under"):
        pn.data.get("mnist", root=tmp_path)
    with pytest.raises(RegistryError, match="unknown dataset 'imagenet'"):
        pn.data.get("imagenet")


def write_fake_mnist(root, n_train=40, n_test=20):
    """MNIST's raw idx files, tiny and random: torchvision reads them like the real ones."""
    import struct

    import numpy as np

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


def test_torchvision_datasets_run_through_the_whole_toolkit(tmp_path):
    write_fake_mnist(tmp_path)
    ds = pn.data.get("mnist", root=tmp_path)
    assert (len(ds.train), len(ds.test), ds.input_shape, ds.num_classes) == (40, 20, (1, 28, 28), 10)
    batches = pn.data.sample_batches(ds, per_class=2)
    assert sorted(batches[0][1].tolist()) == sorted(list(range(10)) * 2) and batches[0][0].shape == (20, 1, 28, 28)
    model = pn.models.get("lenet300", seed=0)
    mask = pn.prune(model, "snip", 0.1, data=ds, samples=16)
    result = pn.train(model, mask, ds, epochs=1, batch_size=16, progress=False)
    assert result.steps == 3 and 0 <= result.test_accuracy <= 1
    assert all(torch.count_nonzero(w.detach()[~mask[k]]) == 0 for k, w in pn.prunable_weights(model).items())
