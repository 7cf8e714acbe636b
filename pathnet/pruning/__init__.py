"""Ticket finders: ``prune(model, method, density, ...) -> Mask`` and the registry ``METHODS``.

Every method keeps exactly ``round(density · N)`` of the N prunable weights and is
deterministic given the model's weights and ``seed``.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..errors import check_density
from ..registry import Registry
from ..mask import Mask

#: name → finder ``f(model, density, *, data, input_shape, seed, **options) -> Mask``
METHODS: Registry[Callable[..., Mask]] = Registry("pruning method")
register = METHODS.register


def budget(num_weights: int, density: float) -> int:
    """The number of weights a ticket of `density` keeps: round(density · N), at least 1."""
    return max(1, int(round(check_density(density) * num_weights)))


def prune(model: nn.Module, method: str, density: float, *, data: Any = None, input_shape=None, seed: int = 0,
          **options) -> Mask:
    """A ticket of `model` keeping exactly round(density · N) weights, found by `method`."""
    finder = METHODS[method]
    check_density(density)
    return finder(model, density, data=data, input_shape=input_shape, seed=seed, **options)


from . import phew, random, saliency  # noqa: E402,F401  (they register their methods)
from .random import shuffle_global, shuffle_layerwise  # noqa: E402,F401
from .threshold import keep_top, schedule  # noqa: E402,F401
