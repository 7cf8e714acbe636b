"""The ``pathnet`` command: a thin layer over the Python API.

Masks are read and written as safetensors; reports print as tables and can be saved as JSON or
CSV. A user mistake (bad argument, missing file, pathnet error) prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import time
from pathlib import Path

from .errors import PathnetError

ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _options(pairs: list[str]) -> dict:
    """KEY=VALUE pairs, values read as Python literals when they are (numbers, booleans, tuples)."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PathnetError(f"--option takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _model_and_data(args):
    from . import data, models

    ds = data.get(args.data, root=args.data_root)
    shape = tuple(args.input_shape) if args.input_shape else ds.input_shape
    model = models.get(args.model, num_classes=ds.num_classes, input_shape=shape, seed=args.seed)
    return model, ds, shape


def _emit(payload: dict, args, table: str) -> None:
    print(table)
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps(payload, indent=1, default=str))
    if getattr(args, "csv", None) and "layers" in payload:
        keys = list(payload["layers"][0])
        lines = [",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in payload["layers"]]
        Path(args.csv).write_text("\n".join(lines) + "\n")


# -- subcommands ----------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from .demo import run_demo, table

    t0 = time.perf_counter()
    print(f"pathnet demo → {args.out} (tickets at {args.density:.0%}, trained briefly; device {args.device})")
    rows = run_demo(args.out, density=args.density, epochs=args.epochs, device=args.device, seed=args.seed)
    print("\n" + table(rows))
    print(f"\nχ-Jaccard vs LT: chance-corrected Jaccard to the one-shot lottery ticket (magnitude of the trained "
          f"dense net); 0 = chance.\nwrote {args.out}/demo.csv, demo.json, demo.png in {time.perf_counter() - t0:.0f} s")
    return 0


def cmd_prune(args) -> int:
    from .pruning import prune

    model, ds, shape = _model_and_data(args)
    options = _options(args.option)
    if args.method == "phew":
        options.setdefault("progress", sys.stderr.isatty())  # a bar once a ticket takes over a second
    mask = prune(model, args.method, args.density, data=ds, input_shape=shape, seed=args.seed, **options)
    mask.save(args.out)
    print(f"{mask!r} → {args.out}")
    return 0


def cmd_analyze(args) -> int:
    from .mask import Mask
    from .metrics import analyze

    model, _, shape = _model_and_data(args)
    rep = analyze(Mask.load(args.mask), model, shape, level=args.level, spectral=args.spectral)
    _emit(rep.to_dict(), args, str(rep))
    return 0


def cmd_compare(args) -> int:
    from .mask import Mask
    from .similarity import compare

    a, b = Mask.load(args.mask_a), Mask.load(args.mask_b)
    model, shape = (None, None)
    if args.model:
        model, _, shape = _model_and_data(args)
    cmp = compare(a, b, model, shape, baseline=args.baseline, seed=args.seed)
    _emit(cmp.to_dict(), args, str(cmp))
    return 0


def cmd_compact(args) -> int:
    from safetensors.torch import save_file

    from .compact import compact
    from .io import atomic_write
    from .mask import Mask

    model, _, shape = _model_and_data(args)
    small, mask, rep = compact(model, Mask.load(args.mask), shape)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise PathnetError(f"--out {args.out!r} is a file; give a directory for the compacted model")
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in small.state_dict().items()}
    atomic_write(out / "weights.safetensors", lambda tmp: save_file(state, tmp))
    mask.save(out / "mask.safetensors")
    payload = {**rep.to_dict(), "model": args.model, "input_shape": list(shape), "source_mask": str(args.mask),
               "seed": args.seed}
    atomic_write(out / "compaction.json", lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1)))
    rows = [f"{r.name:24s} units {r.units_before:>6} → {r.units_after:<6} inputs {r.inputs_before:>6} → "
            f"{r.inputs_after:<6}" for r in rep.layers]
    print("\n".join(rows) + f"\nparameters {rep.params_before:,} → {rep.params_after:,} (×{rep.param_ratio:.3f}), "
          f"multiply-adds {rep.flops_before:,} → {rep.flops_after:,} (×{rep.flop_ratio:.3f}); "
          f"{rep.units_folded} constant units folded into biases, {rep.units_kept_constant} kept\n"
          f"wrote {out}/weights.safetensors, mask.safetensors, compaction.json")
    return 0


def _train_kwargs(args) -> dict:
    kw = {k: getattr(args, k) for k in ("lr", "momentum", "weight_decay", "batch_size", "optimizer")
          if getattr(args, k) is not None}
    if args.epochs is not None:
        kw["epochs"] = args.epochs
    return {**kw, "deterministic": args.deterministic}


def cmd_train(args) -> int:
    from .mask import Mask
    from .training import train

    model, ds, _ = _model_and_data(args)
    mask = Mask.load(args.mask) if args.mask else None
    res = train(model, mask, ds, seed=args.seed, device=args.device, run_dir=args.run_dir, **_train_kwargs(args))
    rows = [f"epoch {h['epoch']:>6.2f}  train loss {h['train_loss']:.4f}  test acc {h['test_accuracy']:.4f}"
            for h in res.history]
    _emit(res.to_dict(), args, "\n".join(rows) + f"\nfinal test accuracy {res.test_accuracy:.4f} ({res.device})")
    return 0


def cmd_imp(args) -> int:
    from .training import imp

    model, ds, _ = _model_and_data(args)
    res = imp(model, ds, levels=args.levels, rate=args.rate, rewind=args.rewind, criterion=args.criterion,
              score_at=args.score_at, run_dir=args.run_dir, seed=args.seed, device=args.device, **_train_kwargs(args))
    rows = [f"level {i:>2}  density {m.density:.4f}  test acc {a:.4f}" for i, (m, a) in
            enumerate(zip(res.masks, res.accuracy))]
    _emit({"densities": res.densities, "accuracy": res.accuracy, "rewind_step": res.rewind_step}, args,
          "\n".join(rows))
    return 0


def cmd_instability(args) -> int:
    import torch

    from .mask import Mask
    from .training import instability

    model, ds, _ = _model_and_data(args)
    state = None
    if args.rewind_state:
        saved = torch.load(args.rewind_state, map_location="cpu", weights_only=True)
        state = saved.get("state", saved)
    mask = Mask.load(args.mask) if args.mask else None
    res = instability(model, mask, ds, rewind_state=state, seeds=tuple(args.seeds), alphas=args.alphas,
                      start_step=args.start_step, device=args.device, **_train_kwargs(args))
    rows = [f"α {a:.3f}  test error {e:.4f}" for a, e in zip(res.alphas, res.test_error)]
    verdict = "stable" if res.stable else "unstable"
    _emit(res.to_dict(), args, "\n".join(rows) + f"\nbarrier {res.barrier:+.4f} → {verdict}")
    return 0


def cmd_sweep(args) -> int:
    from .sweep import load_grid, run_sweep

    cells, overrides = load_grid(args.grid)
    rows = run_sweep(cells, args.run_dir, backend=args.backend, address=args.address, gpus_per_cell=args.gpus_per_cell,
                     device=args.device, data_root=args.data_root, train_overrides=overrides,
                     deterministic=args.deterministic)
    print(f"{len(rows)} cells → {args.run_dir}/results.csv")
    for r in rows:
        print(f"  {r['model']:9} {r['dataset']:9} {r['method']:12} {r['density']:<7g} seed {r['seed']}  "
              f"acc {r['test_accuracy']:.4f}  log10 paths {r['log10_paths']:.2f}")
    return 0


def cmd_figures(args) -> int:
    if not ANALYSIS.is_dir():
        raise PathnetError(f"pathnet figures runs the scripts in the repository's analysis/ folder, not found at "
                           f"{ANALYSIS}; run it from a checkout of pathnet")
    scripts = sorted(ANALYSIS.glob("fig_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("fig_") in args.only]
    extra = (["--quick"] if args.quick else []) + (["--data-root", args.data_root] if args.data_root else []) \
        + (["--out", args.out] if args.out else []) + (["--runs", args.runs] if args.runs else [])
    for script in scripts:
        print(f"→ {script.stem}", flush=True)
        if subprocess.run([sys.executable, str(script), *extra]).returncode:
            raise PathnetError(f"{script.name} failed (its output is above)")
    return 0


# -- parser ---------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    p.add_argument("--model", required=model_required,
                   help="model name from pathnet.models (e.g. lenet300, vgg16, resnet20)")
    p.add_argument("--data", default="digits", help="dataset name from pathnet.data (default: digits)")
    p.add_argument("--data-root", help="folder with torchvision datasets (cifar10, mnist, ...)")
    p.add_argument("--input-shape", type=int, nargs="+", help="input shape without batch (default: the dataset's)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, pruning and data order (default: 0)")


def _training(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, help="training epochs (default: the recipe for model and data)")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--momentum", type=float, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, help="weight decay")
    p.add_argument("--batch-size", type=int, help="batch size")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), help="optimiser (default: sgd)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: CUDA when present)")
    _deterministic(p)


def _deterministic(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms only: the same seed gives "
                   "bit-identical results (slower; recorded in the result, a resume must match)")


def _outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", help="also write the full result as JSON to this file")
    p.add_argument("--csv", help="also write the per-layer rows as CSV to this file")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pathnet", description="Sparse networks as graphs: lottery tickets, path metrics, "
                                                 "masked training.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("demo", help="the offline demo: six ticket finders on two networks",
                       description="PHEW, SynFlow, SNIP, GraSP, random and magnitude tickets on LeNet-300-100/mnist5k"
                                   " and Conv-2/MNIST-1D: analysed, trained briefly, compared with a lottery ticket.")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--density", type=float, default=0.05, help="ticket density (default: 0.05)")
    p.add_argument("--epochs", type=int, help="training epochs (default: 5 for LeNet, 8 for Conv-2)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: CUDA when present)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.set_defaults(run=cmd_demo)

    p = sub.add_parser("prune", help="find a ticket and save its mask", description="Find a ticket of a freshly "
                       "initialised registry model and save the mask (safetensors).")
    p.add_argument("method", help="pruning method (phew, synflow, snip, grasp, magnitude, random, erk, ...)")
    p.add_argument("density", type=float, help="fraction of weights kept, in (0, 1]")
    _common(p)
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="method option, e.g. bias=uniform")
    p.add_argument("--out", default="mask.safetensors", help="where to save the mask (default: mask.safetensors)")
    p.set_defaults(run=cmd_prune)

    p = sub.add_parser("analyze", help="path structure of a mask", description="Paths, effective density, "
                       "widths and bottlenecks of a saved mask.")
    p.add_argument("mask", help="mask file (.safetensors or .pt)")
    _common(p)
    p.add_argument("--level", choices=("unit", "spatial"), default="unit", help="graph level (default: unit)")
    p.add_argument("--spectral", action="store_true", help="add spectral gaps per layer")
    _outputs(p)
    p.set_defaults(run=cmd_analyze)

    p = sub.add_parser("compare", help="similarity of two masks", description="Weight, unit and path similarity "
                       "of two masks of the same network (path measures need --model unless the masks are an MLP's).")
    p.add_argument("mask_a", help="first mask file (the one random baselines imitate)")
    p.add_argument("mask_b", help="second mask file")
    _common(p, model_required=False)
    p.add_argument("--baseline", type=int, default=0, help="also compare K random masks with A's layer counts")
    _outputs(p)
    p.set_defaults(run=cmd_compare)

    p = sub.add_parser("train", help="train a model under a mask", description="Train a registry model (under a "
                       "saved mask, if given); pruned weights stay exactly zero.")
    _common(p)
    p.add_argument("--mask", help="mask file (default: dense)")
    p.add_argument("--run-dir", help="checkpoint here and resume from here")
    _training(p)
    _outputs(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("imp", help="iterative magnitude pruning with rewinding", description="IMP with weight "
                       "rewinding (Frankle et al. 2020); resumable with --run-dir.")
    _common(p)
    p.add_argument("--levels", type=int, default=3, help="pruning levels (default: 3)")
    p.add_argument("--rate", type=float, default=0.2, help="fraction of remaining weights pruned per level")
    p.add_argument("--rewind", default="0it", help="rewind step, e.g. 0it, 500it, 1ep (default: 0it)")
    p.add_argument("--criterion", default="magnitude", help="score: magnitude, snip, magnitude_gradient, ...")
    p.add_argument("--score-at", choices=("end", "rewind", "init"), default="end", help="weights to score")
    p.add_argument("--run-dir", help="checkpoint here and resume from here")
    _training(p)
    _outputs(p)
    p.set_defaults(run=cmd_imp)

    p = sub.add_parser("instability", help="error barrier between two noisy copies",
                       description="Train two copies from the same state with different data order and measure "
                                   "the error along the line between them.")
    _common(p)
    p.add_argument("--mask", help="mask file (default: dense)")
    p.add_argument("--rewind-state", help="state to start from (e.g. an IMP run's rewind.pt); default: init")
    p.add_argument("--start-step", default="0it", help="where in the schedule the state is (default: 0it)")
    p.add_argument("--seeds", type=int, nargs=2, default=(0, 1), help="data-order seeds (default: 0 1)")
    p.add_argument("--alphas", type=int, default=30, help="points on the line (default: 30)")
    _training(p)
    _outputs(p)
    p.set_defaults(run=cmd_instability)

    p = sub.add_parser("sweep", help="run a grid of prune→analyze→train cells",
                       description="Run a TOML grid (see pathnet.sweep) locally or on Ray; finished cells are "
                                   "skipped on rerun.")
    p.add_argument("grid", help="grid file (TOML)")
    p.add_argument("--run-dir", default="runs/sweep", help="results folder (default: runs/sweep)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="where cells run (default: local)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--gpus-per-cell", type=float, default=0, help="GPUs Ray gives each cell (default: 0)")
    p.add_argument("--device", default="auto", help="device inside each cell (default: auto)")
    p.add_argument("--data-root", help="folder with torchvision datasets")
    _deterministic(p)
    p.set_defaults(run=cmd_sweep)

    p = sub.add_parser("compact", help="a ticket as a smaller dense network", description="Drop the units no "
                       "input→output path uses: a smaller dense model with the same function (weights as "
                       "safetensors; rebuild it with pathnet.compact on the same model and mask).")
    p.add_argument("mask", help="mask file (.safetensors or .pt)")
    _common(p)
    p.add_argument("--out", default="compacted", help="directory for weights, mask and report (default: compacted)")
    p.set_defaults(run=cmd_compact)

    p = sub.add_parser("figures", help="regenerate figures/ with the analysis scripts",
                       description="Run analysis/fig_*.py (full mode unless --quick).")
    p.add_argument("--quick", action="store_true", help="tiny versions, seconds each")
    p.add_argument("--only", nargs="+", help="figure names, e.g. paths_vs_density width_profiles")
    p.add_argument("--data-root", help="run on CIFAR-10 from this folder instead of offline data")
    p.add_argument("--out", help="where the PNGs and CSVs go (default: the checkout's figures/)")
    p.add_argument("--runs", help="where finished work is kept for resuming (default: runs/figures)")
    p.set_defaults(run=cmd_figures)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (PathnetError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"pathnet {args.command}: error: {e}", file=sys.stderr)
        return 2
