"""Ticket finders: ``prune(model, method, density, ...) -> Mask`` and the registry ``METHODS``.

Every method keeps exactly ``round(density · N)`` of the N prunable weights and is
deterministic given the model's weights and ``seed``.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..errors import RegistryError, check_density
from ..mask import Mask

#: name → finder ``f(model, density, *, data, input_shape, seed, **options) -> Mask``
METHODS: dict[str, Callable[..., Mask]] = {}


def register(name: str):
    """Decorator adding a ticket finder to :data:`METHODS`."""
    def add(finder):
        METHODS[name] = finder
        return finder
    return add


def budget(num_weights: int, density: float) -> int:
    """The number of weights a ticket of `density` keeps: round(density · N), at least 1."""
    return max(1, int(round(check_density(density) * num_weights)))


def prune(model: nn.Module, method: str, density: float, *, data: Any = None, input_shape=None, seed: int = 0,
          **options) -> Mask:
    """A ticket of `model` keeping exactly round(density · N) weights, found by `method`."""
    if method not in METHODS:
        raise RegistryError(f"unknown pruning method {method!r}; choose one of {', '.join(sorted(METHODS))}")
    check_density(density)
    return METHODS[method](model, density, data=data, input_shape=input_shape, seed=seed, **options)


from . import phew  # noqa: E402,F401  (registers its methods)
