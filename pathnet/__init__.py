"""pathnet: sparse neural networks as graphs — lottery tickets, path metrics and masked training."""

from . import data, errors, models
from .graph import Block, Layer, LayeredDAG, to_dag
from .mask import Mask, prunable_weights

__version__ = "0.1.0"

__all__ = ["Mask", "LayeredDAG", "Layer", "Block", "to_dag", "prunable_weights", "models", "data", "errors",
           "__version__"]

from .metrics import Report, analyze  # noqa: E402
from .pruning import METHODS, prune  # noqa: E402
from .similarity import Comparison, compare  # noqa: E402
from .training import imp, instability, train  # noqa: E402
from .compact import CompactReport, compact  # noqa: E402

__all__ += ["prune", "METHODS", "analyze", "Report", "compare", "Comparison", "train", "imp", "instability", "compact",
            "CompactReport"]
