"""The ``pathnet`` command: a thin layer over the Python API.

Masks are read and written as safetensors; reports print as tables and can be saved as JSON or
CSV. A user mistake (bad argument, missing file, pathnet error) prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from .errors import DataError, HparamError, OptionError, PathnetError

ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage too)
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _arg_type(opt, name: str):
    """An argparse type that coerces and checks with the declaration `opt` (one line on a bad value)."""
    from .errors import OptionError

    def convert(text: str):
        try:
            return opt.coerce(name, text)
        except OptionError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = opt.type.__name__ if opt.type is not tuple else (opt.item or str).__name__
    return convert


def _number_at_least(low: float, name: str):
    """An argparse type for a finite number ≥ `low` (one line on a bad value)."""
    def number(text: str) -> float:
        value = float(text)  # not a number: argparse says "invalid float value"
        if not low <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"{name} takes a number ≥ {low:g}, got {text!r}")
        return value
    number.__name__ = "float"
    return number


def _int_at_least(low: int, high: int | None = None, name: str = "value"):
    from .options import Opt

    return _arg_type(Opt(int, None, "", min=low, max=high), name)


def _options(pairs: list[str]) -> dict:
    """KEY=VALUE pairs as strings: the method's declared options coerce and check them."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OptionError(f"--option takes KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _layer_options(args, options: dict) -> dict:
    """--exclude (repeatable, each a comma list) and --density-of merged into the method options."""
    for flag, key, value in (("--exclude", "exclude", ",".join(args.exclude) if args.exclude else None),
                             ("--density-of", "density_of", args.density_of)):
        if value is not None:
            if key in options:
                raise OptionError(f"give {key} as {flag} or as --option {key}=..., not both")
            options[key] = value
    return options


def _writable(path: str | None, what: str) -> None:
    """An output file that can be written: not a folder, and no file where a folder must be."""
    if not path:
        return
    p = Path(path)
    if p.is_dir():
        raise PathnetError(f"{what} {path!r} is a directory; give a file name")
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise PathnetError(f"{what} {path!r} cannot be written: {str(parent)!r} is a file, not a folder")


def _load_mask(path: str):
    from .mask import Mask

    return Mask.load(path)


def _model_and_data(args, needs_data: bool):
    """The model (built for the data's inputs, or --input-shape, or the model's default) and the dataset
    (None when --data is not given and the command does not need it)."""
    import torch

    from . import data, models

    models.MODELS[args.model]  # an unknown name fails before any data is read
    ds = None
    if args.data is None:
        if needs_data:
            raise DataError(f"pathnet {args.command} needs --data: a dataset name ({', '.join(data.names())}); "
                            "torchvision sets also need --data-root")
        shape = tuple(args.input_shape) if args.input_shape else models.default_input_shape(args.model)
        num_classes = 10
    else:
        ds = data.get(args.data, root=args.data_root, download=args.download)
        shape = tuple(args.input_shape) if args.input_shape else ds.input_shape
        if args.input_shape and needs_data and shape != tuple(ds.input_shape):
            raise DataError(f"--input-shape {' '.join(map(str, shape))} does not match --data {args.data}, whose inputs "
                            f"have shape {tuple(ds.input_shape)}; drop --input-shape (the data's shape is used)")
        num_classes = ds.num_classes
    hint = (f"give --data with inputs {args.model} takes, or --input-shape (e.g. "
            f"{' '.join(map(str, models.default_input_shape(args.model)))})")
    try:
        model = models.get(args.model, num_classes=num_classes, input_shape=shape, seed=args.seed)
        with torch.no_grad():
            model.eval()(torch.zeros(2, *shape))
        model.train()
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        source = f"--data {args.data}" if args.data and not args.input_shape else "--input-shape"
        raise DataError(f"{args.model} does not take inputs of shape {shape} (from {source}): {first}; {hint}") \
            from None
    return model, ds, shape


def _emit(payload: dict, args, table: str, rows: list[dict] | None = None) -> None:
    """Print the table; write the JSON payload and the CSV rows where asked."""
    from .io import write_csv, write_json

    print(table)
    if getattr(args, "json", None):
        write_json(args.json, payload)
    if getattr(args, "csv", None):
        write_csv(args.csv, rows if rows is not None else payload.get("layers", []))


def _progress(args) -> bool | None:
    return False if getattr(args, "quiet", False) else None


# -- subcommands ----------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from .demo import run_demo, table

    t0 = time.perf_counter()
    if not args.quiet:
        print(f"pathnet demo → {args.out} (tickets at {args.density:.0%}, trained briefly; device {args.device})")
    rows = run_demo(args.out, density=args.density, epochs=args.epochs, device=args.device, seed=args.seed,
                    progress=not args.quiet)
    print("\n" + table(rows))
    print(f"\nχ-Jaccard vs LT: chance-corrected Jaccard to the one-shot lottery ticket (magnitude of the trained "
          f"dense net); 0 = chance.\nwrote {args.out}/demo.csv, demo.json, demo.png in {time.perf_counter() - t0:.0f} s")
    return 0


def cmd_methods(args) -> int:
    from .pruning import describe_methods

    print(describe_methods())
    return 0


def cmd_prune(args) -> int:
    from .pruning import METHODS, prune

    method = METHODS[args.method]
    options = _layer_options(args, _options(args.option))
    method.check(args.density, seed=args.seed, options=options, data=True, input_shape=(1,))
    _writable(args.out, "--out")
    model, ds, shape = _model_and_data(args, needs_data=method.needs_data)
    if method.name == "phew" and "progress" not in options:
        options["progress"] = sys.stderr.isatty() and not args.quiet  # a bar once a ticket takes over a second
    mask = prune(model, args.method, args.density, data=ds, input_shape=shape, seed=args.seed, **options)
    mask.save(args.out)
    print(f"{mask!r} → {args.out}")
    return 0


def cmd_analyze(args) -> int:
    from .metrics import analyze

    _writable(args.json, "--json")
    _writable(args.csv, "--csv")
    mask = _load_mask(args.mask)
    model, _, shape = _model_and_data(args, needs_data=False)
    rep = analyze(mask, model, shape, level=args.level, spectral=args.spectral)
    _emit(rep.to_dict(), args, str(rep))
    return 0


def cmd_compare(args) -> int:
    from .similarity import compare

    _writable(args.json, "--json")
    _writable(args.csv, "--csv")
    a, b = _load_mask(args.mask_a), _load_mask(args.mask_b)
    model, shape = (None, None)
    if args.model:
        model, _, shape = _model_and_data(args, needs_data=False)
    cmp = compare(a, b, model, shape, baseline=args.baseline, seed=args.seed)
    _emit(cmp.to_dict(), args, str(cmp))
    return 0


def cmd_compact(args) -> int:
    from safetensors.torch import save_file

    from .compact import compact
    from .io import atomic_write, write_json

    out = Path(args.out)
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise PathnetError(f"--out {args.out!r} cannot be used: {str(p)!r} is a file; give a directory for the "
                               "compacted model")
    mask = _load_mask(args.mask)
    model, _, shape = _model_and_data(args, needs_data=False)
    small, mask, rep = compact(model, mask, shape)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in small.state_dict().items()}
    atomic_write(out / "weights.safetensors", lambda tmp: save_file(state, tmp))
    mask.save(out / "mask.safetensors")
    payload = {**rep.to_dict(), "model": args.model, "input_shape": list(shape), "source_mask": str(args.mask),
               "seed": args.seed}
    write_json(out / "compaction.json", payload)
    rows = [f"{r.name:24s} units {r.units_before:>6} → {r.units_after:<6} inputs {r.inputs_before:>6} → "
            f"{r.inputs_after:<6}" for r in rep.layers]
    print("\n".join(rows) + f"\nparameters {rep.params_before:,} → {rep.params_after:,} (×{rep.param_ratio:.3f}), "
          f"multiply-adds {rep.flops_before:,} → {rep.flops_after:,} (×{rep.flop_ratio:.3f}); "
          f"{rep.units_folded} constant units folded into biases, {rep.units_kept_constant} kept\n"
          f"wrote {out}/weights.safetensors, mask.safetensors, compaction.json")
    return 0


def _train_kwargs(args) -> dict:
    """Training hyperparameters given on the command line (every TrainingHparams field has its option)."""
    from .hparams import TrainingHparams

    kw = {k: getattr(args, k) for k in TrainingHparams.options() if getattr(args, k, None) is not None}
    if args.epochs is not None:
        if "duration" in kw:
            raise HparamError(f"give --epochs ({args.epochs}) or --duration ({kw['duration']}), not both")
        kw["epochs"] = args.epochs
    return {**kw, "deterministic": args.deterministic}


def _check_training_outputs(args) -> None:
    from .training.loop import resolve_device

    resolve_device(args.device)
    _writable(args.json, "--json")
    _writable(args.csv, "--csv")
    if getattr(args, "run_dir", None):
        from .run import check_run_dir

        check_run_dir(args.run_dir)


def cmd_train(args) -> int:
    from .training import train

    _check_training_outputs(args)
    mask = _load_mask(args.mask) if args.mask else None
    model, ds, _ = _model_and_data(args, needs_data=True)
    res = train(model, mask, ds, seed=args.seed, device=args.device, run_dir=args.run_dir, overwrite=args.overwrite,
                progress=_progress(args), **_train_kwargs(args))
    rows = [f"epoch {h['epoch']:>6.2f}  train loss {h['train_loss']:.4f}  test acc {h['test_accuracy']:.4f}"
            for h in res.history]
    _emit(res.to_dict(), args, "\n".join(rows) + f"\nfinal test accuracy {res.test_accuracy:.4f} ({res.device})",
          res.history)
    return 0


def cmd_imp(args) -> int:
    from .training import imp

    _check_training_outputs(args)
    model, ds, _ = _model_and_data(args, needs_data=True)
    res = imp(model, ds, levels=args.levels, rate=args.rate, rewind=args.rewind, criterion=args.criterion,
              score_at=args.score_at, criterion_options=_layer_options(args, _options(args.option)),
              run_dir=args.run_dir, seed=args.seed,
              device=args.device, overwrite=args.overwrite, progress=_progress(args), **_train_kwargs(args))
    rows = [f"level {i:>2}  density {m.density:.4f}  test acc {a:.4f}" for i, (m, a) in
            enumerate(zip(res.masks, res.accuracy))]
    table = [{"level": i, "density": m.density, "kept": m.num_kept, "test_accuracy": a,
              "test_loss": r["test_loss"], "steps": r["steps"], "seconds": r["seconds"]}
             for i, (m, a, r) in enumerate(zip(res.masks, res.accuracy, res.results))]
    _emit({"densities": res.densities, "accuracy": res.accuracy, "rewind_step": res.rewind_step, "levels": table},
          args, "\n".join(rows), table)
    return 0


def _load_state(path: str) -> dict:
    import torch

    p = Path(path)
    if not p.is_file():
        raise PathnetError(f"--rewind-state {path!r}: no such file")
    try:
        saved = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or one that would need unpickling arbitrary objects
        raise PathnetError(f"--rewind-state {path!r} is not a readable torch state ({type(e).__name__}); give an IMP "
                           "run's rewind.pt or a saved state dict") from None
    state = saved.get("state", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PathnetError(f"--rewind-state {path!r} holds no state dict of tensors; give an IMP run's rewind.pt")
    return state


def cmd_instability(args) -> int:
    from .training import instability

    _check_training_outputs(args)
    state = _load_state(args.rewind_state) if args.rewind_state else None
    mask = _load_mask(args.mask) if args.mask else None
    model, ds, _ = _model_and_data(args, needs_data=True)
    res = instability(model, mask, ds, rewind_state=state, seeds=tuple(args.seeds), alphas=args.alphas,
                      start_step=args.start_step, device=args.device, progress=_progress(args), **_train_kwargs(args))
    rows = [f"α {a:.3f}  test error {e:.4f}" for a, e in zip(res.alphas, res.test_error)]
    verdict = "stable" if res.stable else "unstable"
    table = [{"alpha": a, "test_error": e, "train_error": t} for a, e, t in
             zip(res.alphas, res.test_error, res.train_error)]
    _emit(res.to_dict(), args, "\n".join(rows) + f"\nbarrier {res.barrier:+.4f} → {verdict}", table)
    return 0


def _sweep_command(args, run_dir) -> str:
    """The `pathnet sweep` command that resumes this sweep (without --overwrite, which would clear it)."""
    import shlex

    words = ["pathnet", "sweep", args.grid, "--run-dir", str(run_dir)]
    defaults = {"backend": "local", "address": None, "gpus_per_cell": 0, "cpus_per_cell": 1, "max_concurrent": None,
                "device": "auto", "data_root": None, "cell_storage": None, "checkpoint_every": "1ep"}
    for name, default in defaults.items():
        value = getattr(args, name)
        if value != default:
            words += [f"--{name.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(words + (["--deterministic"] if args.deterministic else []) + (["--quiet"] if args.quiet else []))


def cmd_sweep(args) -> int:
    from .sweep import SweepInterrupted, load_grid, run_sweep

    cells, overrides = load_grid(args.grid)
    try:
        rows = run_sweep(cells, args.run_dir, backend=args.backend, address=args.address,
                         gpus_per_cell=args.gpus_per_cell, cpus_per_cell=args.cpus_per_cell,
                         max_concurrent=args.max_concurrent, device=args.device, data_root=args.data_root,
                         cell_storage=args.cell_storage, checkpoint_every=args.checkpoint_every,
                         train_overrides=overrides, deterministic=args.deterministic, overwrite=args.overwrite,
                         progress=_progress(args))
    except SweepInterrupted as e:  # one line: what is kept, and the command that resumes
        print(f"pathnet sweep: interrupted: {e.done} of {e.total} cells done in {e.run_dir} (unfinished cells "
              f"resume from their last checkpoint); to resume, run: {_sweep_command(args, e.run_dir)}", file=sys.stderr)
        return 130
    print(f"{len(rows)} cells → {Path(args.run_dir).resolve()}/results.csv")
    for r in rows:
        print(f"  {r['model']:9} {r['dataset']:9} {r['method']:12} {r['density']:<7g} seed {r['seed']}  "
              f"acc {r['test_accuracy']:.4f}  log10 paths {r['log10_paths']:.2f}")
    return 0


def cmd_convert(args) -> int:
    from .mask import Mask

    _writable(args.out, "OUT")
    mask = Mask.load(args.input)
    path = mask.export(args.out, args.to)
    print(f"{mask!r} → {path} ({args.to})")
    return 0


def cmd_figures(args) -> int:
    if not ANALYSIS.is_dir():
        raise PathnetError(f"pathnet figures runs the scripts in the repository's analysis/ folder, not found at "
                           f"{ANALYSIS}; run it from a checkout of pathnet")
    scripts = sorted(ANALYSIS.glob("fig_*.py"))
    if args.claims:
        if args.only:
            raise PathnetError("--claims runs analysis/claims.py alone; leave out --only")
        scripts = [ANALYSIS / "claims.py"]
    elif args.only:
        names = [s.stem.removeprefix("fig_") for s in scripts]
        unknown = [n for n in args.only if n not in names]
        if unknown:
            raise PathnetError(f"--only {unknown[0]!r} is not a figure; choose from {', '.join(names)}")
        scripts = [s for s in scripts if s.stem.removeprefix("fig_") in args.only]
    extra = (["--quick"] if args.quick else []) + (["--data-root", args.data_root] if args.data_root else []) \
        + (["--out", args.out] if args.out else []) + (["--runs", args.runs] if args.runs else [])
    for script in scripts:
        print(f"→ {script.stem}", flush=True)
        if subprocess.run([sys.executable, str(script), *extra]).returncode:
            raise PathnetError(f"{script.name} failed (its output is above)")
    return 0


# -- parser ---------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser, model_required: bool = True, data_help: str = "") -> None:
    p.add_argument("--model", required=model_required,
                   help="model name from pathnet.models (e.g. lenet300, vgg16, resnet20)")
    p.add_argument("--data", help="dataset name from pathnet.data (digits, mnist5k, mnist1d, synthetic, cifar10, ...)"
                   + data_help)
    p.add_argument("--data-root", help="folder with torchvision datasets (cifar10, mnist, ...)")
    p.add_argument("--download", action="store_true", help="download a torchvision dataset into --data-root if it "
                   "is not there")
    p.add_argument("--input-shape", type=_int_at_least(1, name="input_shape"), nargs="+",
                   help="input shape without batch (default: the dataset's, else the model's)")
    _seed(p)


def _seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=_int_at_least(0, 2**63 - 1, "seed"), default=0,
                   help="seed for initialisation, pruning and data order, in [0, 2^63) (default: 0)")


def _training(p: argparse.ArgumentParser) -> None:
    """--epochs, then one option per TrainingHparams field (type, allowed values and help from its declaration)."""
    from .hparams import TrainingHparams

    g = p.add_argument_group("training hyperparameters (default: the recipe for model and data)")
    g.add_argument("--epochs", type=_int_at_least(1, name="epochs"), help="training epochs (sets --duration)")
    for name, opt in TrainingHparams.options().items():
        shown = " ".join(opt.default) if isinstance(opt.default, tuple) else opt.default
        kw = dict(nargs="*") if opt.type is tuple else {}
        g.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_arg_type(opt, name),
                       metavar=(opt.item or str).__name__.upper() if opt.type is tuple else None, **kw,
                       help=f"{opt.help}: {opt.allowed()} (recipe's, else {shown})")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: CUDA when present)")
    _deterministic(p)


def _deterministic(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms only: the same seed gives "
                   "bit-identical results (slower; recorded in the result, a resume must match)")


def _run_dir(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--run-dir", default=default, help="checkpoint here and resume from here; the directory is bound "
                   "to the run's arguments" + (f" (default: {default})" if default else ""))
    p.add_argument("--overwrite", action="store_true", help="clear --run-dir first when it holds a run with other "
                   "arguments")


def _outputs(p: argparse.ArgumentParser, rows: str = "the per-layer rows") -> None:
    p.add_argument("--json", help="also write the full result as JSON to this file")
    p.add_argument("--csv", help=f"also write {rows} as CSV to this file")


def _layer_selection(p: argparse.ArgumentParser) -> None:
    from .pruning import COMMON_OPTIONS, EXCLUDE_PRESETS

    p.add_argument("--exclude", action="append", metavar="NAMES",
                   help="weights kept dense and outside the budget: names, globs (e.g. 'features.0.*') or presets "
                   f"({', '.join(EXCLUDE_PRESETS)}); repeat it or give a comma list")
    p.add_argument("--density-of", choices=COMMON_OPTIONS["density_of"].choices,
                   help="the density counts the weights not excluded (prunable, default) or all weights")


def _general(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    p.add_argument("--debug", action="store_true", help="on an unexpected error, show the traceback")


def build_parser() -> argparse.ArgumentParser:
    from .pruning import describe_methods

    parser = _Parser(prog="pathnet", description="Sparse networks as graphs: lottery tickets, path metrics, "
                                                 "masked training.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def add(name, **kw):
        p = sub.add_parser(name, **kw)
        _general(p)
        return p

    p = add("demo", help="the offline demo: six ticket finders on two networks",
            description="PHEW, SynFlow, SNIP, GraSP, random and magnitude tickets on LeNet-300-100/mnist5k"
                        " and Conv-2/MNIST-1D: analysed, trained briefly, compared with a lottery ticket.")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--density", type=float, default=0.05, help="ticket density, in (0, 1] (default: 0.05)")
    p.add_argument("--epochs", type=_int_at_least(1, name="epochs"),
                   help="training epochs (default: 5 for LeNet, 8 for Conv-2)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: CUDA when present)")
    _seed(p)
    p.set_defaults(run=cmd_demo)

    p = add("methods", help="list the pruning methods and their options",
            description="Every pruning method with its options (type, default, what is allowed), as --option "
                        "KEY=VALUE of pathnet prune and [options.<method>] of a sweep take them.")
    p.set_defaults(run=cmd_methods)

    p = add("prune", help="find a ticket and save its mask", description="Find a ticket of a freshly "
            "initialised registry model and save the mask (safetensors).",
            epilog="methods and their options (--option KEY=VALUE):\n" + describe_methods(),
            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", help="pruning method (see below, or pathnet methods)")
    p.add_argument("density", type=float, help="fraction of weights kept, in (0, 1]")
    _common(p, data_help="; needed by methods that score with data (snip, grasp, magnitude_gradient)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="method option, e.g. bias=uniform "
                   "(see below)")
    _layer_selection(p)
    p.add_argument("--out", default="mask.safetensors", help="where to save the mask (default: mask.safetensors)")
    p.set_defaults(run=cmd_prune)

    p = add("analyze", help="path structure of a mask", description="Paths, effective density, "
            "widths and bottlenecks of a saved mask.")
    p.add_argument("mask", help="mask file (.safetensors or .pt)")
    _common(p, data_help="; only its input shape is used")
    p.add_argument("--level", choices=("unit", "spatial"), default="unit", help="graph level (default: unit)")
    p.add_argument("--spectral", action="store_true", help="add spectral gaps per layer")
    _outputs(p)
    p.set_defaults(run=cmd_analyze)

    p = add("compare", help="similarity of two masks", description="Weight, unit and path similarity "
            "of two masks of the same network (path measures need --model unless the masks are an MLP's).")
    p.add_argument("mask_a", help="first mask file (the one random baselines imitate)")
    p.add_argument("mask_b", help="second mask file")
    _common(p, model_required=False, data_help="; only its input shape is used")
    p.add_argument("--baseline", type=_int_at_least(0, name="baseline"), default=0,
                   help="also compare K ≥ 0 random masks with A's layer counts")
    _outputs(p)
    p.set_defaults(run=cmd_compare)

    p = add("train", help="train a model under a mask", description="Train a registry model (under a "
            "saved mask, if given); pruned weights stay exactly zero.")
    _common(p, data_help="; required")
    p.add_argument("--mask", help="mask file (default: dense)")
    _run_dir(p)
    _training(p)
    _outputs(p, "the history (one row per evaluation)")
    p.set_defaults(run=cmd_train)

    p = add("imp", help="iterative magnitude pruning with rewinding", description="IMP with weight "
            "rewinding (Frankle et al. 2020); resumable with --run-dir.")
    _common(p, data_help="; required")
    p.add_argument("--levels", type=_int_at_least(1, name="levels"), default=3, help="pruning levels, ≥ 1 (default: 3)")
    p.add_argument("--rate", type=float, default=0.2, help="fraction of remaining weights pruned per level, in (0, 1)")
    p.add_argument("--rewind", default="0it", help="rewind step, e.g. 0it, 500it, 1ep (default: 0it)")
    p.add_argument("--criterion", default="magnitude", help="score: magnitude, snip, grasp, synflow, "
                   "magnitude_gradient (default: magnitude)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="criterion option (see pathnet methods)")
    _layer_selection(p)
    p.add_argument("--score-at", choices=("end", "rewind", "init"), default="end", help="weights to score")
    _run_dir(p)
    _training(p)
    _outputs(p, "one row per level (density, kept, test accuracy)")
    p.set_defaults(run=cmd_imp)

    p = add("instability", help="error barrier between two noisy copies",
            description="Train two copies from the same state with different data order and measure "
                        "the error along the line between them.")
    _common(p, data_help="; required")
    p.add_argument("--mask", help="mask file (default: dense)")
    p.add_argument("--rewind-state", help="state to start from (e.g. an IMP run's rewind.pt); default: init")
    p.add_argument("--start-step", default="0it", help="where in the schedule the state is (default: 0it)")
    p.add_argument("--seeds", type=_int_at_least(0, 2**63 - 1, "seeds"), nargs=2, default=(0, 1),
                   help="two different data-order seeds (default: 0 1)")
    p.add_argument("--alphas", type=_int_at_least(3, name="alphas"), default=30,
                   help="points on the line, ≥ 3 (default: 30)")
    _training(p)
    _outputs(p, "one row per point on the line (alpha, test and train error)")
    p.set_defaults(run=cmd_instability)

    p = add("sweep", help="run a grid of prune→analyze→train cells",
            description="Run a TOML grid (see pathnet.sweep) locally or on Ray; finished cells are "
                        "skipped on rerun.")
    p.add_argument("grid", help="grid file (TOML)")
    _run_dir(p, "runs/sweep")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="where cells run (default: local)")
    p.add_argument("--address", help="a running Ray cluster's HOST:PORT, as `ray start --head` prints it (default: "
                   "start a local Ray instance)")
    p.add_argument("--cpus-per-cell", type=_number_at_least(0, "--cpus-per-cell"), default=1,
                   help="CPUs Ray gives each cell (default: 1)")
    p.add_argument("--gpus-per-cell", type=_number_at_least(0, "--gpus-per-cell"), default=0,
                   help="GPUs Ray gives each cell (default: 0)")
    p.add_argument("--max-concurrent", type=_int_at_least(1, name="max-concurrent"),
                   help="at most this many cells at once on Ray (default: as many as the cluster fits)")
    p.add_argument("--device", default="auto", help="device inside each cell (default: auto)")
    p.add_argument("--data-root", help="folder with torchvision datasets; on a cluster it must exist at this path on "
                   "every node")
    p.add_argument("--checkpoint-every", default="1ep", help="a cell's training checkpoints this often, e.g. 1ep, "
                   "200it; a retried or rerun cell resumes from its last checkpoint (default: 1ep)")
    p.add_argument("--cell-storage", help="keep unfinished cells' checkpoints here (a folder at the same path on every "
                   "node, e.g. a bucket mount) instead of sending them to the run dir through Ray")
    _deterministic(p)
    p.set_defaults(run=cmd_sweep)

    p = add("compact", help="a ticket as a smaller dense network", description="Drop the units no "
            "input→output path uses: a smaller dense model with the same function (weights as "
            "safetensors; rebuild it with pathnet.compact on the same model and mask).")
    p.add_argument("mask", help="mask file (.safetensors or .pt)")
    _common(p, data_help="; only its input shape is used")
    p.add_argument("--out", default="compacted", help="directory for weights, mask and report (default: compacted)")
    p.set_defaults(run=cmd_compact)

    from .mask import FORMATS

    p = add("convert", help="convert a mask file between formats",
            description="Read a mask in any known layout (pathnet safetensors or .pt, open_lth mask.pth or "
                        "mask_* buffers, Synaptic-Flow / torch prune *_mask buffers) and write it as --to.",
            epilog="formats:\n" + "\n".join(f"  {k}: {v}" for k, v in FORMATS.items()),
            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="IN", help="mask file (.safetensors, .pt or .pth)")
    p.add_argument("out", metavar="OUT", help="file to write (.safetensors or .pt for pathnet; .pt or .pth for the "
                   "others)")
    p.add_argument("--to", choices=tuple(FORMATS), default="pathnet", help="format of OUT (default: pathnet)")
    p.set_defaults(run=cmd_convert)

    p = add("figures", help="regenerate figures/ with the analysis scripts",
            description="Run analysis/fig_*.py (full mode unless --quick), or with --claims analysis/claims.py: "
                        "whether the papers' headline claims hold, with paired tests over seeds.")
    p.add_argument("--claims", action="store_true", help="test the papers' claims (analysis/claims.py) instead")
    p.add_argument("--quick", action="store_true", help="tiny versions, seconds each")
    p.add_argument("--only", nargs="+", help="figure names, e.g. paths_vs_density width_profiles")
    p.add_argument("--data-root", help="run on CIFAR-10 from this folder instead of offline data")
    p.add_argument("--out", help="where the PNGs and CSVs go (default: the checkout's figures/)")
    p.add_argument("--runs", help="where finished work is kept for resuming (default: runs/figures, "
                   "runs/claims)")
    p.set_defaults(run=cmd_figures)
    return parser


_USER_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """The ``pathnet`` command. A user mistake (a PathnetError, or a file that cannot be read or written)
    prints one line and returns 2; anything else is a bug: one line saying so, status 1 (the traceback
    with --debug)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a bad argument (one line already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.run(args)
    except PathnetError as e:
        print(f"pathnet {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except _USER_OS_ERRORS as e:
        print(f"pathnet {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pathnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"pathnet {args.command}: internal error: {type(e).__name__}: {_one_line(e)[:300]} — this is a bug, "
              "please report it (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def entry() -> None:
    """The console script (and ``python -m pathnet``): :func:`main`, then exit with its status.

    A Ray connection that never answered leaves its thread inside Ray's C++ client, where nothing can
    stop it, and the interpreter's shutdown then aborts on it (SIGABRT instead of the status): in that
    case the process ends at once, its output flushed."""
    code = main()
    sweep = sys.modules.get(f"{__package__}.sweep")  # never imported: no connection was tried
    if sweep is not None and sweep.connection_stranded():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
