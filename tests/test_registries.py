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
