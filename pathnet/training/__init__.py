"""Training tickets: the masked loop, IMP with rewinding, and instability analysis."""

from .imp import IMPResult, imp
from .loop import Callback, TrainResult, TrainState, evaluate, train
from .stability import Instability, instability

__all__ = ["train", "evaluate", "TrainResult", "TrainState", "Callback", "imp", "IMPResult", "instability",
           "Instability"]
