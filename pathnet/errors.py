"""Errors for user mistakes: each message says what was wrong and how to fix it.

Every class subclasses both a pathnet base and the matching builtin (`ValueError` or
`TypeError`), so ``except ValueError`` keeps working for callers who do not know pathnet.
"""


class PathnetError(Exception):
    """Base of every error pathnet raises on purpose."""


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


class RegistryError(PathnetError, ValueError):
    """An unknown name asked of a registry (models, datasets, methods)."""


def check_density(density: float) -> float:
    """Return `density` as a float, or raise DensityError if it is not in (0, 1]."""
    try:
        d = float(density)
    except (TypeError, ValueError):
        raise DensityError(f"density must be a number in (0, 1], got {density!r}") from None
    if not 0.0 < d <= 1.0:  # also rejects NaN
        hint = " (density is the fraction of weights KEPT; for 95% sparsity pass 0.05)" if 1 < d <= 100 else ""
        raise DensityError(f"density must be in (0, 1], got {density!r}{hint}")
    return d
