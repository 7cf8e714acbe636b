"""Models as layered DAGs: the data model (``dag.py``), the tracer (``trace.py``) and the op handler
table (``ops.py``, where a new op or layer is registered)."""

from .dag import Block, ConvGeometry, Layer, LayeredDAG, SpatialOp, chain_dag
from .ops import HANDLERS, register_op
from .trace import DagBuilder, Units, clear_cache, to_dag

__all__ = ["Layer", "Block", "SpatialOp", "ConvGeometry", "LayeredDAG", "to_dag", "chain_dag", "register_op",
           "HANDLERS", "Units", "DagBuilder", "clear_cache"]
