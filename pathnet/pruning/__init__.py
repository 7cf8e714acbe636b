"""Ticket finders: ``prune(model, method, density, ...) -> Mask`` and the registry ``METHODS``.

Each method is one registered :class:`Method` object that declares its options (an
:class:`~pathnet.options.Options`): ``prune()``, IMP's ``criterion=``, ``pathnet prune --option``,
``pathnet methods`` and sweeps' ``[options.<method>]`` tables all validate from that declaration,
before any work. Every method keeps exactly ``round(density · N)`` of the N prunable weights and is
deterministic given the model's weights and ``seed``.

Every method also takes the :data:`COMMON_OPTIONS`, declared once here: ``exclude`` (weights kept
dense: names, globs or the presets of :data:`EXCLUDE_PRESETS`) and ``density_of`` (whether the
density counts only the weights not excluded, the default, or all of them). Excluded weights are
all True in the mask and outside the budget: the method keeps round(density · N_prunable) of the
others (``density_of="all"``: round(density · N_all) − N_excluded of them).
"""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import nn

from ..errors import DataError, DensityError, GraphError, OptionError, check_density, check_input_shape, check_seed
from ..mask import Mask, prunable_weights
from ..options import Opt, Options
from ..registry import Registry

__all__ = ["prune", "METHODS", "Method", "register", "budget", "describe_methods", "COMMON_OPTIONS",
           "EXCLUDE_PRESETS", "resolve_exclude", "with_dense"]


def _first(names: list[str]) -> list[str]:
    return names[:1]


def _output(names: list[str]) -> list[str]:
    return names[-1:]


def _embeddings_and_head(names: list[str]) -> list[str]:
    return [n for i, n in enumerate(names) if i == 0 or i == len(names) - 1 or "embed" in n.lower()]


#: preset → the weights it names, from the prunable weights in registration order
EXCLUDE_PRESETS = {
    "output": (_output, "the classifier: the last prunable weight, which feeds the outputs (open_lth never prunes it)"),
    "first": (_first, "the first prunable weight (the input layer or stem)"),
    "embeddings_and_head": (_embeddings_and_head, "a transformer's patch/conv embedding (the first weight and any "
                            "weight named *embed*) and its head (the last)"),
}

#: options every method takes (declared once: prune(), --option/--exclude, sweeps and pathnet methods see them)
COMMON_OPTIONS = Options(
    exclude=Opt(tuple, (), "weights kept dense and outside the budget: names, globs such as 'features.0.*' or "
                f"presets ({', '.join(EXCLUDE_PRESETS)})", item=str),
    density_of=Opt(str, "prunable", "the density counts the weights not excluded (prunable) or all weights, the "
                   "dense excluded ones included (all)", choices=("prunable", "all")))


def resolve_exclude(model: nn.Module, exclude) -> list[str]:
    """The prunable weight names `exclude` (names, fnmatch globs, presets; a string or a list) selects, in
    registration order. OptionError for an entry that selects nothing, listing examples of valid names."""
    items = COMMON_OPTIONS["exclude"].coerce("exclude", exclude if exclude is not None else ())
    names = list(prunable_weights(model))
    chosen: set[str] = set()
    for item in items:
        if item in EXCLUDE_PRESETS:
            hit = EXCLUDE_PRESETS[item][0](names)
        else:
            hit = [n for n in names if n == item or fnmatch.fnmatchcase(n, item)]
        if not hit:
            shown = ", ".join(repr(n) for n in names[:3]) + (f", … ({len(names)} in all)" if len(names) > 3 else "")
            raise OptionError(f"exclude={item!r} matches no prunable weight of {type(model).__name__}; give weight "
                              f"names or globs (it has {shown}) or a preset ({', '.join(EXCLUDE_PRESETS)})")
        chosen.update(hit)
    return [n for n in names if n in chosen]


def with_dense(mask: Mask, model: nn.Module, names) -> Mask:
    """`mask` completed with the weights `names` of `model` all kept, entries in the model's order."""
    weights = prunable_weights(model)
    dense = set(names)
    return Mask({k: (torch.ones(w.shape, dtype=torch.bool) if k in dense else mask[k]) for k, w in weights.items()
                 if k in dense or k in mask}, mask.meta)


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

    @property
    def all_options(self) -> Options:
        """The method's own options and the :data:`COMMON_OPTIONS` (exclude, density_of)."""
        return self.options | COMMON_OPTIONS

    def check_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """Every option of this method and the common ones: `options` validated (OptionError on an unknown
        key or bad value)."""
        if isinstance(options, dict):
            unknown = [k for k in options if k not in self.all_options]
            if unknown:
                own = ", ".join(self.options) if self.options else "none (it takes no options of its own)"
                raise OptionError(f"unknown {self.name} option {unknown[0]!r}; valid: {own}; every method also takes "
                                  f"{', '.join(COMMON_OPTIONS)}")
        return self.all_options.validate(options, where=f"{self.name} option ")

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
             exclude: tuple[str, ...] = (), **options) -> Mask:
        """The ticket keeping round(density · N) of the N weights not in `exclude` (resolved names), which
        are all kept."""
        raise NotImplementedError

    def ticket(self, model: nn.Module, density: float, *, data=None, input_shape=None, seed: int = 0,
               exclude=(), density_of: str = "prunable", **options) -> Mask:
        """:meth:`find` with the common options applied: `exclude` resolved on `model` (before any work),
        the budget counted as `density_of` says, the exclusion recorded in the metadata. `options` are the
        method's own (validated) and what find() takes besides (IMP's `current`)."""
        names = resolve_exclude(model, exclude)
        if not names:
            return self.find(model, density, data=data, input_shape=input_shape, seed=seed, **options)
        sizes = {k: w.numel() for k, w in prunable_weights(model).items()}
        n_all, n_out = sum(sizes.values()), sum(sizes[k] for k in names)
        if n_out == n_all:
            raise OptionError(f"exclude={list(exclude)!r} excludes every prunable weight of {type(model).__name__}; "
                              "leave at least one layer to prune")
        inner = density
        if density_of == "all":
            keep = budget(n_all, density) - n_out
            if keep < 1:
                raise DensityError(f"density {density!r} of all {n_all:,} weights keeps {budget(n_all, density):,}, "
                                   f"no more than the {n_out:,} excluded weights kept dense; ask for more or use "
                                   "density_of='prunable'")
            inner = keep / (n_all - n_out)  # round(inner · N_prunable) == keep
        mask = self.find(model, inner, data=data, input_shape=input_shape, seed=seed, exclude=tuple(names), **options)
        if any(not bool(mask[k].all()) for k in names):  # every method's contract; a bug if broken
            raise RuntimeError(f"{self.name} pruned an excluded weight")
        return mask.with_meta(density=float(density), exclude=names, density_of=density_of)

    def __call__(self, model: nn.Module, density: float, *, data=None, input_shape=None, seed: int = 0,
                 **options) -> Mask:
        """Check everything, then find the ticket (what :func:`prune` does)."""
        opts = self.check(density, data=data, input_shape=input_shape, seed=seed, options=options)
        shape = check_input_shape(input_shape) if input_shape is not None else None
        return self.ticket(model, float(density), data=data, input_shape=shape, seed=int(seed), **opts)

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
    """Every method with its options (type, default, help, allowed values), then the options every method
    takes: ``pathnet methods``."""
    presets = "\n".join(f"    {k}: {v[1]}" for k, v in EXCLUDE_PRESETS.items())
    return "\n".join(METHODS[name].describe() for name in METHODS.names()) + \
        "\nevery method also takes:\n" + COMMON_OPTIONS.describe("    ") + "\n  exclude presets:\n" + presets


from . import phew, random, saliency  # noqa: E402,F401  (they register their methods)
from .random import shuffle_global, shuffle_layerwise  # noqa: E402,F401
from .threshold import keep_top, schedule  # noqa: E402,F401
