"""Saliency tickets: a score per weight, then exact top-k (optionally over several rounds).

Every criterion is a *score function* ``f(model, batches, **options) -> {name: scores}`` whose
higher scores are kept: magnitude |θ|; SNIP |θ ⊙ ∂L/∂θ| (Lee et al. 2019); GraSP θ ⊙ Hg with
logits / T (Wang et al. 2020: removing the largest −θ ⊙ Hg is keeping the largest θ ⊙ Hg);
SynFlow |θ ⊙ ∂R/∂θ| with R the summed output of the |θ| network on an all-ones input, in float64
with BN in eval mode, over 100 rounds of exponentially shrinking density (Tanaka et al. 2020);
and the data-dependent mixes of Lévai & Zombori (2020), |θ|^a · |∂L/∂θ|^b. Scores are taken on a
copy of the model: the caller's weights, buffers and random state are left as they were.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data import sample_batches
from ..errors import DataError, GraphError
from ..mask import Mask, prunable_weights
from ..registry import Registry
from . import register
from .threshold import keep_top, schedule

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Criterion:
    """A score function and how to run it."""

    score: Callable[..., dict[str, torch.Tensor]]
    needs_data: bool = True
    iterations: int = 1  # default number of pruning rounds
    prepare: Callable[[nn.Module], nn.Module] | None = None  # once, on the working copy


#: name → Criterion
CRITERIA: Registry[Criterion] = Registry("score criterion")


def _device_batches(model: nn.Module, batches: Batches):
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    return [(x.to(device, dtype), y.to(device)) for x, y in batches]


def loss_gradients(model: nn.Module, batches: Batches, temperature: float = 1.0,
                   create_graph: bool = False) -> dict[str, torch.Tensor]:
    """∂L/∂θ for every prunable weight, L = Σ over batches of the mean cross-entropy of logits / T."""
    weights = prunable_weights(model)
    total = None
    for x, y in _device_batches(model, batches):
        loss = F.cross_entropy(model(x) / temperature, y)
        grads = torch.autograd.grad(loss, list(weights.values()), create_graph=create_graph)
        total = grads if total is None else tuple(a + b for a, b in zip(total, grads))
    return dict(zip(weights, total))


def magnitude_scores(model: nn.Module, batches=None) -> dict[str, torch.Tensor]:
    return {k: w.detach().abs() for k, w in prunable_weights(model).items()}


def snip_scores(model: nn.Module, batches: Batches) -> dict[str, torch.Tensor]:
    """|θ ⊙ ∂L/∂θ| (connection sensitivity)."""
    weights = prunable_weights(model)
    return {k: (g * weights[k]).detach().abs() for k, g in loss_gradients(model, batches).items()}


def gradient_blend_scores(model: nn.Module, batches: Batches, a: float = 1.0, b: float = 1.0) -> dict[str, torch.Tensor]:
    """|θ|^a · |∂L/∂θ|^b (Lévai & Zombori's mixes of magnitude and loss gradient)."""
    weights = prunable_weights(model)
    return {k: weights[k].detach().abs() ** a * g.detach().abs() ** b
            for k, g in loss_gradients(model, batches).items()}


def hessian_gradient(model: nn.Module, batches: Batches, temperature: float = 200.0) -> dict[str, torch.Tensor]:
    """Hg: the Hessian of L (logits / T) times its gradient g, by double backpropagation."""
    weights = prunable_weights(model)
    g = {k: v.detach() for k, v in loss_gradients(model, batches, temperature).items()}
    hg = {k: torch.zeros_like(w) for k, w in weights.items()}
    for x, y in _device_batches(model, batches):  # Σ_b ∇(g · ∇L_b) = H g
        loss = F.cross_entropy(model(x) / temperature, y)
        grads = torch.autograd.grad(loss, list(weights.values()), create_graph=True)
        z = sum((gi * g[k]).sum() for k, gi in zip(weights, grads))
        for k, h in zip(weights, torch.autograd.grad(z, list(weights.values()))):
            hg[k] += h
    return hg


def grasp_scores(model: nn.Module, batches: Batches, temperature: float = 200.0) -> dict[str, torch.Tensor]:
    """θ ⊙ Hg: keeping the largest is removing the largest GraSP scores −θ ⊙ Hg."""
    weights = prunable_weights(model)
    return {k: (weights[k] * h).detach() for k, h in hessian_gradient(model, batches, temperature).items()}


def linearized(model: nn.Module) -> nn.Module:
    """A float64 copy with every parameter and buffer replaced by its absolute value, BN in eval mode."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    return net


def synflow_scores(model: nn.Module, batches=None, *, input_shape: Sequence[int]) -> dict[str, torch.Tensor]:
    """|θ ⊙ ∂R/∂θ|, R = Σ output of `model` (already linearized) on one all-ones input."""
    weights = prunable_weights(model)
    p = next(model.parameters())
    r = model(torch.ones((1, *input_shape), dtype=p.dtype, device=p.device)).sum()
    grads = torch.autograd.grad(r, list(weights.values()))
    return {k: (g * weights[k]).detach().abs() for k, g in zip(weights, grads)}


CRITERIA.register("magnitude")(Criterion(magnitude_scores, needs_data=False))
CRITERIA.register("snip")(Criterion(snip_scores))
CRITERIA.register("grasp")(Criterion(grasp_scores))
CRITERIA.register("synflow")(Criterion(synflow_scores, needs_data=False, iterations=100, prepare=linearized))
CRITERIA.register("magnitude_gradient")(Criterion(gradient_blend_scores))
CRITERIA.register("blend")(Criterion(gradient_blend_scores))


def prune_by_scores(model: nn.Module, criterion: str, density: float, *, data=None, input_shape=None, seed: int = 0,
                    scope: str = "global", iterations: int | None = None, schedule_kind: str = "exponential",
                    samples: int = 128, per_class: int | None = None, current: Mask | None = None,
                    **options) -> Mask:
    """Score with `criterion` and keep the top weights, over `iterations` rounds of shrinking density
    (each round re-scores the network with the previous round's mask applied)."""
    crit = CRITERIA[criterion]
    batches = None
    if crit.needs_data:
        if data is None:
            raise DataError(f"{criterion} scores weights with the loss on data: pass data= (a dataset name such "
                            "as 'digits', a Dataset, a DataLoader or an (x, y) pair of tensors)")
        batches = sample_batches(data, samples, per_class=per_class, seed=seed)
    if criterion == "synflow":
        if input_shape is None:
            if data is None:
                raise GraphError("synflow feeds an all-ones input: pass input_shape=(C, H, W) (or data=)")
            input_shape = tuple(sample_batches(data, 1, seed=seed)[0][0].shape[1:])
        options["input_shape"] = tuple(input_shape)
    rounds = crit.iterations if iterations is None else iterations
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout and the like draw from here, not from the caller's stream
        work = copy.deepcopy(model).train()
        if crit.prepare is not None:
            work = crit.prepare(work)
        mask = current
        densities = schedule(density, rounds, schedule_kind)
        densities[-1] = density  # exactly, whatever the rounding of the schedule
        for d in densities:
            if mask is not None:
                mask.apply(work)
            mask = keep_top(crit.score(work, batches, **options), d, scope=scope, current=mask, seed=seed)
    meta = {"method": criterion, "density": density, "seed": seed, "scope": scope, "iterations": rounds,
            "schedule": schedule_kind, "dtype": str(next(work.parameters()).dtype).replace("torch.", "")}
    if batches is not None:
        meta.update(samples=sum(len(y) for _, y in batches), per_class=per_class)
    meta.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()})
    return mask.with_meta(**meta)


def _method(criterion: str, **defaults):
    def finder(model, density, *, data=None, input_shape=None, seed=0, **options):
        return prune_by_scores(model, criterion, density, data=data, input_shape=input_shape, seed=seed,
                               **{**defaults, **options})
    finder.__doc__ = f"{criterion} ticket (see pathnet.pruning.saliency)."
    return finder


register("magnitude")(_method("magnitude"))
register("snip")(_method("snip"))
register("grasp")(_method("grasp", per_class=10, temperature=200.0))
register("synflow")(_method("synflow"))
register("magnitude_gradient")(_method("magnitude_gradient", a=1.0, b=1.0))
register("blend")(_method("blend"))
