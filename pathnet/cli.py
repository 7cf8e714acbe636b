"""The ``pathnet`` command: a thin layer over the Python API.

Every subcommand turns a user mistake (a pathnet error) into a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time

from .errors import PathnetError


def _demo(args: argparse.Namespace) -> int:
    """Load an offline dataset and a model, read the model as a layered DAG, print its layers."""
    from . import data, models
    from .graph import to_dag

    t0 = time.perf_counter()
    ds = data.get(args.data)
    model = models.get(args.model, num_classes=ds.num_classes, input_shape=ds.input_shape, seed=args.seed)
    dag = to_dag(model, ds.input_shape)
    print(f"{ds!r}  (loaded in {time.perf_counter() - t0:.1f} s)")
    print(f"{args.model}: {dag!r}\n")
    print(dag.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pathnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the offline demo", description=_demo.__doc__)
    demo.add_argument("--data", default="mnist5k", help="offline dataset (default: mnist5k)")
    demo.add_argument("--model", default="lenet300", help="model from pathnet.models (default: lenet300)")
    demo.add_argument("--seed", type=int, default=0, help="initialisation seed (default: 0)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except PathnetError as e:
        print(f"pathnet {args.command}: error: {e}", file=sys.stderr)
        return 2
