import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def _devices() -> list[str]:
    """PATHNET_TEST_DEVICES (comma-separated, e.g. "cpu,cuda"); default: the CPU, and CUDA when present."""
    listed = [d.strip() for d in os.environ.get("PATHNET_TEST_DEVICES", "").split(",") if d.strip()]
    return listed or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=_devices())
def device(request) -> str:
    """Each device the tests run on; CUDA ones skip where there is none."""
    if torch.device(request.param).type == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_mask(model, density, seed=0):
    """An independent random mask (Bernoulli per weight), built without pathnet's pruning code."""
    import pathnet as pn

    g = torch.Generator().manual_seed(seed)
    return pn.Mask({k: torch.rand(w.shape, generator=g) < density for k, w in pn.prunable_weights(model).items()})
