"""`instability`: linear mode connectivity of a ticket (Frankle et al. 2020).

Two copies start from the same rewound state and train with different data order (and dropout)
noise; the error is measured at evenly spaced points on the line between the two trained
networks (mask applied; BN statistics recomputed on a few training batches at each point). The
barrier is the largest error on the path minus the mean of the two endpoint errors; a ticket is
*stable* when it is below 2%. With `deterministic=True`, training and the measurements run in
:func:`~pathnet.training.loop.deterministic_mode`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import HparamError, check_int, check_seed
from ..hparams import TrainingHparams
from ..mask import Mask
from .loop import (DeviceData, TrainResult, _hparams, as_dataset, batches, deterministic_mode, evaluate,
                   resolve_device, train)

__all__ = ["instability", "Instability", "interpolate"]

STABLE_BELOW = 0.02


@dataclass
class Instability:
    alphas: list[float]
    test_error: list[float]
    train_error: list[float]
    barrier: float  # on the test set
    train_barrier: float
    endpoints: tuple[TrainResult, TrainResult]

    @property
    def stable(self) -> bool:
        return self.barrier < STABLE_BELOW

    def to_dict(self) -> dict[str, Any]:
        return {"alphas": self.alphas, "test_error": self.test_error, "train_error": self.train_error,
                "barrier": self.barrier, "train_barrier": self.train_barrier, "stable": self.stable,
                "endpoint_accuracy": [e.test_accuracy for e in self.endpoints],
                "deterministic": self.endpoints[0].deterministic}


def interpolate(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """(1 − α)·a + α·b for floating-point entries; integer buffers (BN counters) from a."""
    return {k: (1 - alpha) * v + alpha * b[k] if v.is_floating_point() else v.clone() for k, v in a.items()}


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _recompute_bn(model: nn.Module, dataset, device, n_batches: int, batch_size: int) -> None:
    """Reset BN running statistics and average them over the first `n_batches` training batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(batches(dataset, batch_size)):
            if i >= n_batches:
                break
            model(x.to(device))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum


def instability(model: nn.Module, mask: Mask | None, data: Any = "digits", *, rewind_state: dict | None = None,
                seeds: Sequence[int] = (0, 1), alphas: int = 30, start_step: int | str = 0, bn_batches: int = 4,
                train_subset: int = 1000, device: str = "auto", deterministic: bool = False,
                **train_kwargs) -> Instability:
    """Train two copies from `rewind_state` (default: the model's current state) with data-order seeds
    `seeds`, then measure the error along the line between them. Every argument is checked before
    either copy trains."""
    ds = as_dataset(data)
    dev = resolve_device(device)
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__") or len(seeds) != 2:
        raise HparamError(f"seeds={seeds!r} is not allowed: give two different data-order seeds, e.g. (0, 1)")
    seeds = tuple(check_seed(s) for s in seeds)
    if seeds[0] == seeds[1]:
        raise HparamError(f"seeds={seeds!r} is not allowed: two copies with the same seed train identically (barrier "
                          "0 by construction); give two different seeds, e.g. (0, 1)")
    alphas = check_int("alphas", alphas, min=3)
    bn_batches = check_int("bn_batches", bn_batches, min=1)
    train_subset = check_int("train_subset", train_subset, min=1)
    if mask is not None and not isinstance(mask, Mask):
        raise HparamError(f"mask must be a pathnet.Mask or None, got {type(mask).__name__}")
    if rewind_state is not None:
        if not isinstance(rewind_state, dict) or not all(isinstance(v, torch.Tensor) for v in rewind_state.values()):
            raise HparamError("rewind_state must be a state dict (parameter name → tensor), e.g. an IMP run's "
                              "rewind_state")
        missing = set(model.state_dict()) - set(rewind_state)
        if missing:
            raise HparamError(f"rewind_state lacks {len(missing)} of the model's entries (e.g. {sorted(missing)[0]!r}); "
                              "was it saved from another model?")
    overrides = {k: v for k, v in train_kwargs.items() if k in {f.name for f in fields(TrainingHparams)}}
    _hparams(model, ds, train_kwargs.get("hparams"), train_kwargs.get("epochs"), train_kwargs.get("steps"), overrides)
    start = {k: v.detach().clone() for k, v in (rewind_state or model.state_dict()).items()}
    with deterministic_mode(deterministic):
        ends = []
        for seed in seeds:
            copy_ = copy.deepcopy(model)
            copy_.load_state_dict(start)
            ends.append(train(copy_, mask, ds, seed=seed, start_step=start_step, device=device,
                              deterministic=deterministic, **train_kwargs))
        probe = copy.deepcopy(model).to(dev)
        on_device = DeviceData(dev)  # each set copied once for all the points
        test, train_set = on_device(ds.test), on_device(ds.train)
        subset = torch.utils.data.Subset(ds.train, range(min(train_subset, len(ds.train))))
        train_part = on_device(_as_tensors(subset))
        a, b = ({k: v.to(dev) for k, v in end.state_dict.items()} for end in ends)
        grid = np.linspace(0.0, 1.0, alphas).tolist()
        test_err, train_err = [], []
        bn = _has_batchnorm(probe)
        for alpha in grid:
            probe.load_state_dict(interpolate(a, b, alpha))
            if mask is not None:
                mask.apply(probe)
            if bn:
                _recompute_bn(probe, train_set, dev, bn_batches, train_kwargs.get("batch_size", 128))
            test_err.append(1 - evaluate(probe, test, dev)[1])
            train_err.append(1 - evaluate(probe, train_part, dev)[1])

    def barrier(err):
        return float(max(err) - (err[0] + err[-1]) / 2)

    return Instability(grid, test_err, train_err, barrier(test_err), barrier(train_err), tuple(ends))


def _as_tensors(subset) -> torch.utils.data.Dataset:
    """A Subset of a TensorDataset as a TensorDataset (so evaluation slices instead of collating)."""
    base = subset.dataset
    if isinstance(base, torch.utils.data.TensorDataset):
        idx = torch.as_tensor(list(subset.indices))
        return torch.utils.data.TensorDataset(*(t[idx] for t in base.tensors))
    return subset
