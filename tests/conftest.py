import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_mask(model, density, seed=0):
    """An independent random mask (Bernoulli per weight), built without pathnet's pruning code."""
    import pathnet as pn

    g = torch.Generator().manual_seed(seed)
    return pn.Mask({k: torch.rand(w.shape, generator=g) < density for k, w in pn.prunable_weights(model).items()})
