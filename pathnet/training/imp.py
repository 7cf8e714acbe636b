"""`imp`: iterative magnitude pruning with weight rewinding (Frankle et al. 2020, "Stabilizing
the Lottery Ticket Hypothesis").

Level 0 trains dense from θ0 and keeps the state at step k (weights and BN statistics). Level L
keeps the top (1 − rate) of the weights level L−1 kept, scored by `criterion` (magnitude by
default; any score of pathnet.pruning.saliency) on the weights at the end of training, at the
rewind point or at initialisation; rewinds every weight and buffer to step k, applies the mask
and retrains from step k to the end of the same schedule. With `run_dir` each level writes its
mask, checkpoints and result; a killed run resumes at the level and step it reached. With
`deterministic=True`, scoring and every level's training run in :func:`deterministic_mode`.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import HparamError
from ..hparams import Step
from ..mask import Mask
from ..pruning.saliency import prune_by_scores
from ..io import atomic_write
from .loop import Callback, TrainState, as_dataset, deterministic_mode, train

__all__ = ["imp", "IMPResult"]


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


def imp(model: nn.Module, data: Any = "digits", *, levels: int = 3, rate: float = 0.2, rewind: str | int = "0it",
        criterion: str = "magnitude", score_at: str = "end", run_dir: str | os.PathLike | None = None, seed: int = 0,
        samples: int = 128, deterministic: bool = False, **train_kwargs) -> IMPResult:
    """Run `levels` rounds of IMP with rewinding to `rewind` (a step: "0it", "500it", "1ep")."""
    if not 0 < rate < 1:
        raise HparamError(f"rate is the fraction of remaining weights pruned per level: in (0, 1), got {rate}")
    if score_at not in ("end", "rewind", "init"):
        raise HparamError(f"score_at must be 'end', 'rewind' or 'init', got {score_at!r}")
    with deterministic_mode(deterministic):
        ds = as_dataset(data)
        root = Path(run_dir) if run_dir is not None else None
        init_state = _cpu_state(model)
        user_callbacks = tuple(train_kwargs.pop("callbacks", ()))
        masks: list[Mask] = [Mask.ones(model).with_meta(method="imp", level=0, density=1.0)]
        results, accuracy, finals = [], [], []
        rewind_state, k = None, 0
        for level in range(levels + 1):
            level_dir = root / f"level_{level:02d}" if root is not None else None
            if level > 0:
                mask_path = level_dir / "mask.safetensors" if level_dir is not None else None
                if mask_path is not None and mask_path.is_file():
                    mask = Mask.load(mask_path)
                else:
                    scored = copy.deepcopy(model)
                    scored.load_state_dict({"end": finals[-1] if finals else init_state, "rewind": rewind_state,
                                            "init": init_state}[score_at])
                    mask = prune_by_scores(scored, criterion, (1 - rate) ** level, data=ds.train, seed=seed,
                                           current=masks[-1], iterations=1, samples=samples)
                    mask = mask.with_meta(method="imp", level=level, criterion=criterion, score_at=score_at, rate=rate,
                                          density=mask.density)
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
            result = train(model, masks[level], ds, seed=seed, run_dir=level_dir, start_step=k if level else 0,
                           callbacks=user_callbacks + ((capture,) if capture else ()), deterministic=deterministic,
                           **train_kwargs)
            if capture is not None:
                k, rewind_state = capture.step, capture.state
            results.append(result.to_dict())
            accuracy.append(result.test_accuracy)
            finals.append(result.state_dict)
    if root is not None:
        summary = {"levels": levels, "rate": rate, "rewind_step": k, "criterion": criterion, "score_at": score_at,
                   "deterministic": deterministic, "densities": [m.density for m in masks], "accuracy": accuracy}
        atomic_write(root / "imp.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    return IMPResult(masks, accuracy, results, k, rewind_state, init_state, finals)

