"""`imp`: iterative magnitude pruning with weight rewinding (Frankle et al. 2020, "Stabilizing
the Lottery Ticket Hypothesis").

Level 0 trains dense from θ0 and keeps the state at step k (weights and BN statistics). Level L
keeps the top (1 − rate) of the weights level L−1 kept, scored by `criterion` (magnitude by
default; any score of pathnet.pruning.saliency) on the weights at the end of training, at the
rewind point or at initialisation; rewinds every weight and buffer to step k, applies the mask
and retrains from step k to the end of the same schedule. With `run_dir` each level writes its
mask, checkpoints and result; a killed run resumes at the level and step it reached. With
`deterministic=True`, scoring and every level's training run in :func:`deterministic_mode`.
`exclude=` (names, globs or presets such as "output", open_lth's default of never pruning the
classifier) keeps those weights dense through every level; each level's density counts the others.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import HparamError, check_int, check_seed
from ..hparams import Step, TrainingHparams, step_problem
from ..io import atomic_write, write_json
from ..mask import Mask
from ..options import Opt, Options
from ..pruning import COMMON_OPTIONS, METHODS, resolve_exclude
from ..pruning.saliency import ScoreMethod, score_method
from ..run import bound, check_run_dir, model_identity
from .loop import (Callback, TrainState, _hparams, as_dataset, check_finite, deterministic_mode, log_line,
                   progress_mode, resolve_device, train)

__all__ = ["imp", "IMPResult", "IMP_OPTIONS"]


@dataclass
class IMPResult:
    """Per level L: the mask (density (1 − rate)^L), test accuracy and training summary."""

    masks: list[Mask]
    accuracy: list[float]
    results: list[dict[str, Any]]
    rewind_step: int
    rewind_state: dict[str, torch.Tensor]
    init_state: dict[str, torch.Tensor]
    final_states: list[dict[str, torch.Tensor]]

    @property
    def densities(self) -> list[float]:
        return [m.density for m in self.masks]


class _CaptureAt(Callback):
    """Keeps (and saves) a copy of the model's state when training reaches the step `rewind`."""

    def __init__(self, rewind: str | int, path: Path | None):
        self.rewind, self.path, self.step, self.state = rewind, path, None, None

    def _take(self, state: TrainState) -> None:
        self.state = {k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()}
        if self.path is not None:
            payload = {"step": self.step, "state": self.state}
            atomic_write(self.path, lambda tmp: torch.save(payload, tmp))

    def on_train_start(self, state: TrainState) -> None:
        self.step = Step.parse(self.rewind, state.per_epoch).iteration
        if self.step >= state.total:
            raise HparamError(f"rewind step {self.rewind} ({self.step} iterations) is not before the end of "
                              f"training ({state.total} iterations)")
        if state.step == self.step == 0:
            self._take(state)

    def on_step_end(self, state: TrainState) -> None:
        if state.step == self.step:
            self._take(state)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


#: IMP's own options (also what a sweep's [options.imp] table may set)
IMP_OPTIONS = Options(
    rewind=Opt(str, "0it", "the step every level rewinds to (weights and BN statistics), e.g. 0it, 500it, 1ep",
               check=step_problem),
    criterion=Opt(str, "magnitude", "the score each level keeps the top of",
                  choices=tuple(n for n in METHODS.names() if isinstance(METHODS[n], ScoreMethod))),
    score_at=Opt(str, "end", "the weights scored: at the end of training, at the rewind step or at init",
                 choices=("end", "rewind", "init")),
    samples=Opt(int, 128, "examples a data-dependent criterion scores", min=1),
    exclude=COMMON_OPTIONS["exclude"])

_TRAIN_ARGS = set(inspect.signature(train).parameters) - {"model", "mask", "data", "overrides", "seed", "run_dir",
                                                          "start_step", "deterministic", "overwrite"}
_HPARAMS = {f.name for f in fields(TrainingHparams)}


class _Resumed(Callback):
    def on_train_start(self, state: TrainState) -> None:
        self.at = (state.resumed_from, state.total) if state.resumed_from is not None else None


def imp(model: nn.Module, data: Any = "digits", *, levels: int = 3, rate: float = 0.2, rewind: str | int = "0it",
        criterion: str = "magnitude", score_at: str = "end", run_dir: str | os.PathLike | None = None, seed: int = 0,
        samples: int = 128, deterministic: bool = False, criterion_options: dict | None = None,
        overwrite: bool = False, progress: bool | None = None, exclude=(), **train_kwargs) -> IMPResult:
    """Run `levels` rounds of IMP with rewinding to `rewind` (a step: "0it", "500it", "1ep").

    Every argument is checked before the dense training starts; `criterion_options` are the
    criterion's declared options (``pathnet methods``). With `run_dir` the run is bound to its
    arguments (``manifest.json``; more or fewer levels may be asked on a rerun) and locked; `overwrite`
    clears it first. `progress`: tqdm bars on a terminal, else one line per level (False: silent).
    """
    levels = check_int("levels", levels, min=1)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 1:
        raise HparamError(f"rate={rate!r} is not allowed: the fraction of remaining weights pruned per level is a "
                          "number in (0, 1)")
    if isinstance(rewind, int) and not isinstance(rewind, bool) and rewind >= 0:
        rewind = f"{rewind}it"
    opts = IMP_OPTIONS.validate({"rewind": rewind, "criterion": criterion, "score_at": score_at, "samples": samples,
                                 "exclude": exclude}, where="imp ")
    method = score_method(criterion)
    given = dict(criterion_options or {})
    if "samples" in method.options:
        given.setdefault("samples", opts["samples"])
    given.setdefault("iterations", 1)
    if opts["exclude"] and given.get("exclude"):
        raise HparamError("give exclude= to imp() or in criterion_options, not both")
    given["exclude"] = resolve_exclude(model, given.get("exclude") or opts["exclude"])
    crit_opts = method.check_options(given)
    opts["exclude"] = crit_opts["exclude"] = list(crit_opts["exclude"])
    if not opts["exclude"]:  # the manifest of a run without exclusion stays as it was
        del opts["exclude"]
        crit_opts = {k: v for k, v in crit_opts.items() if k not in COMMON_OPTIONS}
    seed = check_seed(seed)
    if not isinstance(deterministic, bool) or not isinstance(overwrite, bool):
        raise HparamError(f"deterministic and overwrite must be True or False, got {deterministic!r}, {overwrite!r}")
    mode = progress_mode(progress)
    unknown = [k for k in train_kwargs if k not in _TRAIN_ARGS and k not in _HPARAMS]
    if unknown:
        raise HparamError(f"imp() got an unknown argument {unknown[0]!r}; it takes IMP's arguments, train()'s "
                          f"({', '.join(sorted(_TRAIN_ARGS))}) and training hyperparameters ({', '.join(_HPARAMS)})")
    ds = as_dataset(data)
    overrides = {k: v for k, v in train_kwargs.items() if k in _HPARAMS}
    h = _hparams(model, ds, train_kwargs.get("hparams"), train_kwargs.get("epochs"), train_kwargs.get("steps"),
                 overrides)
    resolve_device(train_kwargs.get("device", "auto"))
    per_epoch = math.ceil(len(ds.train) / h.batch_size)
    total, k_rewind = Step.parse(h.duration, per_epoch).iteration, Step.parse(opts["rewind"], per_epoch).iteration
    if k_rewind >= total:
        raise HparamError(f"rewind step {rewind} ({k_rewind} iterations) is not before the end of training "
                          f"({total} iterations)")
    root = check_run_dir(run_dir) if run_dir is not None else None
    check_finite(model)
    manifest = {"kind": "imp", **model_identity(model), "data": ds.name, "levels": levels, "rate": float(rate),
                **opts, "criterion_options": crit_opts, **h.to_dict(), "seed": seed, "deterministic": deterministic,
                "pathnet": __version__}
    with (bound(root, manifest, overwrite=overwrite, extendable=("levels",)) if root is not None
          else contextlib.nullcontext()):
        return _imp(model, ds, levels, float(rate), opts, method, crit_opts, root, seed, deterministic, mode,
                    train_kwargs)


def _imp(model, ds, levels, rate, opts, method, crit_opts, root, seed, deterministic, mode, train_kwargs) -> IMPResult:
    rewind, score_at = opts["rewind"], opts["score_at"]
    train_kwargs = dict(train_kwargs)
    with deterministic_mode(deterministic):
        init_state = _cpu_state(model)
        user_callbacks = tuple(train_kwargs.pop("callbacks", ()))
        masks: list[Mask] = [Mask.ones(model).with_meta(method="imp", level=0, density=1.0)]
        results, accuracy, finals = [], [], []
        rewind_state, k = None, 0
        for level in range(levels + 1):
            t0 = time.perf_counter()
            level_dir = root / f"level_{level:02d}" if root is not None else None
            if level > 0:
                mask_path = level_dir / "mask.safetensors" if level_dir is not None else None
                if mask_path is not None and mask_path.is_file():
                    mask = Mask.load(mask_path)
                else:
                    scored = copy.deepcopy(model)
                    scored.load_state_dict({"end": finals[-1] if finals else init_state, "rewind": rewind_state,
                                            "init": init_state}[score_at])
                    mask = method.ticket(scored, (1 - rate) ** level, data=ds.train, seed=seed,
                                         current=masks[-1], **crit_opts)
                    mask = mask.with_meta(method="imp", level=level, criterion=method.name, score_at=score_at,
                                          rate=rate, density=mask.density,
                                          **({"exclude": opts["exclude"]} if "exclude" in opts else {}))
                    if mask_path is not None:
                        mask.save(mask_path)
                masks.append(mask)
                model.load_state_dict(rewind_state)
            capture = None
            if level == 0:
                saved = root / "rewind.pt" if root is not None else None
                if saved is not None and saved.is_file():
                    payload = torch.load(saved, map_location="cpu", weights_only=True)
                    k, rewind_state = payload["step"], payload["state"]
                else:
                    capture = _CaptureAt(rewind, saved)
            resumed = _Resumed()
            result = train(model, masks[level], ds, seed=seed, run_dir=level_dir, start_step=k if level else 0,
                           callbacks=user_callbacks + (resumed,) + ((capture,) if capture else ()),
                           deterministic=deterministic, progress=mode == "bar", **train_kwargs)
            if capture is not None:
                k, rewind_state = capture.step, capture.state
            results.append(result.to_dict())
            accuracy.append(result.test_accuracy)
            finals.append(result.state_dict)
            if mode == "lines":
                if getattr(resumed, "at", None):
                    log_line(f"imp level {level}: resumed from step {resumed.at[0]} of {resumed.at[1]}")
                log_line(f"imp level {level}/{levels}  density {masks[level].density:.4f}  test acc "
                         f"{result.test_accuracy:.4f}  {time.perf_counter() - t0:.1f} s")
    if root is not None:
        summary = {"levels": levels, "rate": rate, "rewind_step": k, "criterion": method.name, "score_at": score_at,
                   "deterministic": deterministic, "densities": [m.density for m in masks], "accuracy": accuracy}
        write_json(root / "imp.json", summary)
    return IMPResult(masks, accuracy, results, k, rewind_state, init_state, finals)
