"""Errors for user mistakes: each message says what was wrong and how to fix it.

Every class subclasses both a pathnet base and the matching builtin (`ValueError` or
`TypeError`), so ``except ValueError`` keeps working for callers who do not know pathnet.
"""


class PathnetError(Exception):
    """Base of every error pathnet raises on purpose."""


class ArgumentTypeError(PathnetError, TypeError):
    """An argument of the wrong type (a model that is not an nn.Module, a mask that is not a Mask)."""


class MaskError(PathnetError, ValueError):
    """A mask that does not fit its model: unknown names, wrong shapes, non-binary values."""


class DensityError(PathnetError, ValueError):
    """A density outside (0, 1]."""


class WeightError(PathnetError, ValueError):
    """Weights that cannot be used as they are (NaN or infinite values)."""


class GraphError(PathnetError, ValueError):
    """A model that cannot be read as a layered DAG: untraceable or unsupported operations."""


class UnsupportedLayerError(GraphError, TypeError):
    """A module with weights that pathnet does not know how to turn into edges."""


class MemoryLimitError(PathnetError, MemoryError):
    """Not enough memory for what was asked; the message names the largest part and the estimated need."""


class DataError(PathnetError, ValueError):
    """A dataset that cannot be loaded: unknown name, missing root directory."""


class HparamError(PathnetError, ValueError):
    """A hyperparameter that cannot be used as given (unknown name, bad value, unreadable step)."""


class RunError(PathnetError, ValueError):
    """A run directory that cannot be resumed as asked (it holds another run)."""


class ClusterError(PathnetError, ConnectionError):
    """A Ray cluster that cannot be reached, or that has no node able to run a cell."""


class RegistryError(PathnetError, ValueError):
    """An unknown name asked of a registry (models, datasets, methods)."""


class OptionError(HparamError):
    """An option that a method or command does not take, or a value it does not allow."""


class DivergenceError(PathnetError, FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the step and the learning rate."""


def check_density(density: float) -> float:
    """Return `density` as a float, or raise DensityError if it is not in (0, 1]."""
    if isinstance(density, (bool, str, bytes)):
        raise DensityError(f"density must be a number in (0, 1], got {density!r}")
    try:
        d = float(density)
    except (TypeError, ValueError):
        raise DensityError(f"density must be a number in (0, 1], got {density!r}") from None
    if not 0.0 < d <= 1.0:  # also rejects NaN
        hint = " (density is the fraction of weights KEPT; for 95% sparsity pass 0.05)" if 1 < d <= 100 else ""
        raise DensityError(f"density must be in (0, 1], got {density!r}{hint}")
    return d


def check_int(name: str, value, *, min: int | None = None, max: int | None = None, error=HparamError) -> int:
    """`value` as an int (not a bool, not 1.5) within [min, max], or `error` saying what is allowed."""
    import numbers

    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok and isinstance(value, float) and value.is_integer():
        ok, value = True, int(value)
    bounds = " ".join(filter(None, (f"≥ {min}" if min is not None else "", f"≤ {max}" if max is not None else "")))
    if not ok or (min is not None and value < min) or (max is not None and value > max):
        raise error(f"{name} must be an integer{' ' + bounds if bounds else ''}, got {value!r}")
    return int(value)


def check_seed(seed) -> int:
    """A seed: an integer in [0, 2**63)."""
    return check_int("seed", seed, min=0, max=2**63 - 1)


def check_input_shape(shape) -> tuple[int, ...]:
    """An input shape without the batch axis: a tuple of positive integers, e.g. (3, 32, 32)."""
    import numbers

    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise GraphError(f"input_shape must be a tuple of positive integers such as (3, 32, 32), got {shape!r}")
    dims = tuple(shape)
    if not dims or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in dims):
        raise GraphError(f"input_shape must be a tuple of positive integers such as (3, 32, 32), got {shape!r}")
    return tuple(int(d) for d in dims)
