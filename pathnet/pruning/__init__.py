"""Ticket finders: ``prune(model, method, density, ...) -> Mask`` and the registry ``METHODS``.

Each method is one registered :class:`Method` object that declares its options (an
:class:`~pathnet.options.Options`): ``prune()``, IMP's ``criterion=``, ``pathnet prune --option``,
``pathnet methods`` and sweeps' ``[options.<method>]`` tables all validate from that declaration,
before any work. Every method keeps exactly ``round(density · N)`` of the N prunable weights and is
deterministic given the model's weights and ``seed``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import DataError, DensityError, GraphError, check_density, check_input_shape, check_seed
from ..mask import Mask
from ..options import Options
from ..registry import Registry

__all__ = ["prune", "METHODS", "Method", "register", "budget", "describe_methods"]


class Method:
    """A ticket finder: `name`, declared `options`, what it needs, and :meth:`find`.

    Subclasses set `name`, `options`, `needs_data` (scores with the loss on data) and
    `needs_input_shape` (traces or feeds the model: `input_shape`, or data to read it from), and
    implement ``find(model, density, *, data, input_shape, seed, **options)`` where `options` are
    already validated (every declared option present).
    """

    name: str = ""
    summary: str = ""
    options: Options = Options()
    needs_data: bool = False
    needs_input_shape: bool = False
    shape_from_data: bool = False  # the input shape may be read from the data instead

    def check_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """Every option of this method: `options` validated (OptionError on an unknown key or bad value)."""
        return self.options.validate(options, where=f"{self.name} option ")

    def check(self, density, *, data=None, input_shape=None, seed: int = 0, options: dict | None = None) -> dict:
        """All checks that need no work: density, seed, input shape, options, needed inputs. Returns the options."""
        check_density(density)
        check_seed(seed)
        if input_shape is not None:
            check_input_shape(input_shape)
        opts = self.check_options(options)
        if self.needs_data and data is None:
            raise DataError(f"{self.name} scores weights with the loss on data: pass data= (a dataset name such "
                            "as 'digits', a Dataset, a DataLoader or an (x, y) pair of tensors)")
        if self.needs_input_shape and input_shape is None and (data is None or not self.shape_from_data):
            raise GraphError(f"{self.name} traces the model and needs input_shape, e.g. input_shape=(3, 32, 32)"
                             + (" (or data= to read it from)" if self.shape_from_data else ""))
        return opts

    def find(self, model: nn.Module, density: float, *, data=None, input_shape=None, seed: int = 0,
             **options) -> Mask:
        raise NotImplementedError

    def __call__(self, model: nn.Module, density: float, *, data=None, input_shape=None, seed: int = 0,
                 **options) -> Mask:
        """Check everything, then find the ticket (what :func:`prune` does)."""
        opts = self.check(density, data=data, input_shape=input_shape, seed=seed, options=options)
        shape = check_input_shape(input_shape) if input_shape is not None else None
        return self.find(model, float(density), data=data, input_shape=shape, seed=int(seed), **opts)

    def describe(self) -> str:
        needs = [w for w, on in (("data", self.needs_data), ("input_shape", self.needs_input_shape)) if on]
        head = f"{self.name}: {self.summary}" + (f" (needs {', '.join(needs)})" if needs else "")
        return head + "\n" + self.options.describe("    ")

    def __repr__(self) -> str:
        return f"<pruning method {self.name!r}: options {', '.join(self.options) or 'none'}>"


#: name → Method
METHODS: Registry[Method] = Registry("pruning method")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: register one instance of `cls` under ``cls.name``."""
    METHODS.register(cls.name)(cls())
    return cls


def budget(num_weights: int, density: float) -> int:
    """The number of weights a ticket of `density` keeps: round(density · N), which must be ≥ 1."""
    d = check_density(density)
    n = int(round(d * num_weights))
    if n < 1:
        raise DensityError(f"density {density!r} keeps round({d:g} · {num_weights:,}) = 0 weights; the smallest "
                           f"density that keeps one is {0.5 / num_weights:.3g}")
    return n


def prune(model: nn.Module, method: str, density: float, *, data: Any = None, input_shape=None, seed: int = 0,
          **options) -> Mask:
    """A ticket of `model` keeping exactly round(density · N) weights, found by `method` (a name of
    :data:`METHODS`); `options` are the method's declared options (``pathnet methods`` lists them),
    all checked before any work."""
    return METHODS[method](model, density, data=data, input_shape=input_shape, seed=seed, **options)


def describe_methods() -> str:
    """Every method with its options (type, default, help, allowed values): ``pathnet methods``."""
    return "\n".join(METHODS[name].describe() for name in METHODS.names())


from . import phew, random, saliency  # noqa: E402,F401  (they register their methods)
from .random import shuffle_global, shuffle_layerwise  # noqa: E402,F401
from .threshold import keep_top, schedule  # noqa: E402,F401
