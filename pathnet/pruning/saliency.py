"""Saliency tickets: a score per weight, then exact top-k (optionally over several rounds).

Every criterion is a *score function* ``f(model, batches, **options) -> {name: scores}`` whose
higher scores are kept: magnitude |θ|; SNIP |θ ⊙ ∂L/∂θ| (Lee et al. 2019); GraSP θ ⊙ Hg with
logits / T (Wang et al. 2020: removing the largest −θ ⊙ Hg is keeping the largest θ ⊙ Hg);
SynFlow |θ ⊙ ∂R/∂θ| with R the summed output of the |θ| network on an all-ones input, in float64
with BN in eval mode, over 100 rounds of exponentially shrinking density (Tanaka et al. 2020);
and the data-dependent mixes of Lévai & Zombori (2020), |θ|^a · |∂L/∂θ|^b. Scores are taken on a
copy of the model: the caller's weights, buffers and random state are left as they were.

Options that reproduce the reference implementations: ``bn_mode="eval"`` (every data-driven
criterion: BatchNorm uses its running statistics while scoring, Synaptic-Flow's default; "train",
the default, uses batch statistics as Synaptic-Flow's ``--prune-train-mode``); GraSP's
``reinit_linear`` and ``splits`` (the official GraSP code re-initialises every Linear weight, xavier
normal, in the scoring copy and scores the class-balanced batch in two halves with their own BN
statistics); SynFlow's ``count="floor_pruned"`` (each round keeps N − int((1 − d)·N), Synaptic-Flow's
count, instead of round(d·N)).
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data import sample_batches
from ..errors import DataError, OptionError
from ..mask import Mask, prunable_weights
from ..options import Opt, Options
from . import METHODS, Method, register, with_dense
from .threshold import keep_top, schedule

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


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
    with torch.no_grad():  # in place on the fresh gradients: one pass over the weights instead of three
        return {k: g.mul_(weights[k]).abs_() for k, g in zip(weights, grads)}


# -- the methods: one registered object each, with its options ---------------------------------------

BN_MODE = Opt(str, "train", "BatchNorm statistics while scoring: the batch's (train) or the running ones (eval, "
              "Synaptic-Flow's default; train is its --prune-train-mode)", choices=("train", "eval"))


def _scoring_options(iterations: int, data: bool, per_class: int | None = None) -> Options:
    out = Options(
        scope=Opt(str, "global", "rank all weights together or keep the same fraction per layer",
                  choices=("global", "layerwise")),
        iterations=Opt(int, iterations, "pruning rounds of shrinking density, re-scored each round", min=1),
        schedule_kind=Opt(str, "exponential", "the rounds' densities: d^(k/n) or linear",
                          choices=("exponential", "linear")))
    if data:
        out = out | Options(samples=Opt(int, 128, "training examples scored", min=1),
                            per_class=Opt(int, per_class, "examples per class instead of samples (a "
                                          "class-balanced batch)", min=1, nullable=True),
                            bn_mode=BN_MODE)
    return out


class ScoreMethod(Method):
    """Keep the top scores of ``score(model, batches, **method options)`` (higher is kept), over
    `iterations` rounds of shrinking density; also IMP's `criterion`."""

    prepare = None  # once, on the working copy (SynFlow: the |θ| network in float64)

    def setup(self, work: nn.Module, **options) -> nn.Module:
        """Once, on the scoring copy (inside the seeded random state), before the first round."""
        return self.prepare(work) if self.prepare is not None else work

    def score(self, model: nn.Module, batches, **options) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def find(self, model, density, *, data=None, input_shape=None, seed=0, current: Mask | None = None,
             exclude: tuple[str, ...] = (), **options) -> Mask:
        return _prune_by_scores(self, model, density, data=data, input_shape=input_shape, seed=seed, current=current,
                                exclude=exclude, **options)


@register
class Magnitude(ScoreMethod):
    name, summary = "magnitude", "the largest |θ|"
    options = _scoring_options(1, data=False)

    def score(self, model, batches):
        return magnitude_scores(model)


@register
class Snip(ScoreMethod):
    name, summary = "snip", "the largest |θ ⊙ ∂L/∂θ| (Lee et al. 2019)"
    needs_data = True
    options = _scoring_options(1, data=True)

    def score(self, model, batches, bn_mode="train"):
        return snip_scores(model, batches)


@register
class Grasp(ScoreMethod):
    name, summary = "grasp", "the largest θ ⊙ Hg: removes the largest −θ ⊙ Hg (Wang et al. 2020)"
    needs_data = True
    options = _scoring_options(1, data=True, per_class=10) | Options(
        temperature=Opt(float, 200.0, "logits are divided by this", above=0),
        reinit_linear=Opt(bool, False, "re-initialise every Linear weight (xavier normal, from the seed) in the "
                          "scoring copy and score those weights (the official GraSP code's default)"),
        splits=Opt(int, 1, "score the examples in this many consecutive parts, each with its own BN batch "
                   "statistics, summing gradients and Hessian-gradient products (the official GraSP code: 2)", min=1))

    def setup(self, work, reinit_linear=False, **options):
        if reinit_linear:
            for m in work.modules():  # module order, one draw each, from the seeded random state
                if isinstance(m, nn.Linear):
                    nn.init.xavier_normal_(m.weight)
        return work

    def score(self, model, batches, temperature=200.0, reinit_linear=False, splits=1, bn_mode="train"):
        return grasp_scores(model, split_batches(batches, splits), temperature)


@register
class Synflow(ScoreMethod):
    name, summary = "synflow", "the largest |θ ⊙ ∂R/∂θ| of the |θ| network on ones, float64 (Tanaka et al. 2020)"
    needs_input_shape, shape_from_data = True, True
    options = _scoring_options(100, data=False) | Options(
        count=Opt(str, "round", "weights each round keeps: round(d·N) (round) or N − int((1 − d)·N) (floor_pruned, "
                  "Synaptic-Flow's count)", choices=("round", "floor_pruned")))
    prepare = staticmethod(linearized)

    def score(self, model, batches, input_shape=(), count="round"):
        return synflow_scores(model, batches, input_shape=input_shape)


@register
class MagnitudeGradient(ScoreMethod):
    name, summary = "magnitude_gradient", "the largest |θ|^a · |∂L/∂θ|^b (Lévai & Zombori 2020)"
    needs_data = True
    options = _scoring_options(1, data=True) | Options(a=Opt(float, 1.0, "exponent of |θ|", min=0),
                                                       b=Opt(float, 1.0, "exponent of |∂L/∂θ|", min=0))

    def score(self, model, batches, a=1.0, b=1.0, bn_mode="train"):
        return gradient_blend_scores(model, batches, a, b)


METHODS.alias("blend", "magnitude_gradient")  # its old second name


def split_batches(batches: Batches, splits: int) -> Batches:
    """The examples of `batches`, in order, as `splits` consecutive parts (the first ones one larger when
    they do not divide evenly; as the official GraSP code cuts at N // 2 for two). 1: as given."""
    if splits == 1:
        return batches
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    if splits > len(y):
        raise OptionError(f"splits={splits} is not allowed: it must be at most the {len(y)} examples scored")
    cuts = [len(y) * i // splits for i in range(splits + 1)]
    return [(x[a:b], y[a:b]) for a, b in zip(cuts, cuts[1:])]


def set_bn_mode(model: nn.Module, bn_mode: str) -> nn.Module:
    """BatchNorm layers in eval mode (their running statistics) for "eval"; as they are for "train"."""
    if bn_mode == "eval":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    return model


def _check_fits(model: nn.Module, batches) -> None:
    """One forward pass on two examples, so a model built for other inputs fails here, in one line."""
    x = batches[0][0][:2]
    p = next(model.parameters())
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(x.to(p.device, p.dtype))
    except (RuntimeError, ValueError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"the model does not take this data's inputs of shape {tuple(x.shape[1:])} ({first}); "
                        "build it for that input shape") from None
    finally:
        model.train(was)


def _prune_by_scores(method: ScoreMethod, model: nn.Module, density: float, *, data=None, input_shape=None,
                     seed: int = 0, scope: str = "global", iterations: int = 1, schedule_kind: str = "exponential",
                     samples: int = 128, per_class: int | None = None, current: Mask | None = None,
                     exclude: tuple[str, ...] = (), **options) -> Mask:
    """Score with `method` and keep the top weights, over `iterations` rounds of shrinking density
    (each round re-scores the network with the previous round's mask applied). Options are validated.
    Weights in `exclude` are scored with the rest (the whole network) but never compete: they stay kept."""
    batches = None
    if method.needs_data:
        batches = sample_batches(data, samples, per_class=per_class, seed=seed)
        _check_fits(model, batches)
    if method.needs_input_shape:
        if input_shape is None:
            input_shape = tuple(sample_batches(data, 1, seed=seed)[0][0].shape[1:])
        options["input_shape"] = tuple(input_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout and the like draw from here, not from the caller's stream
        work = set_bn_mode(copy.deepcopy(model).train(), options.get("bn_mode", "train"))
        work = method.setup(work, **options)
        excluded = set(exclude)
        mask = None if current is None else Mask({k: m for k, m in current.items() if k not in excluded})
        densities = schedule(density, iterations, schedule_kind)
        densities[-1] = density  # exactly, whatever the rounding of the schedule
        for d in densities:
            if mask is not None:
                mask.apply(work)
            scores = {k: v for k, v in method.score(work, batches, **options).items() if k not in excluded}
            mask = keep_top(scores, d, scope=scope, current=mask, seed=seed, count=options.get("count", "round"))
        if excluded:
            mask = with_dense(mask, model, exclude)
    meta = {"method": method.name, "density": density, "seed": seed, "scope": scope, "iterations": iterations,
            "schedule": schedule_kind, "dtype": str(next(work.parameters()).dtype).replace("torch.", "")}
    if batches is not None:
        meta.update(samples=sum(len(y) for _, y in batches), per_class=per_class)
    meta.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()})
    return mask.with_meta(**meta)


def prune_by_scores(model: nn.Module, criterion: str, density: float, *, data=None, input_shape=None, seed: int = 0,
                    current: Mask | None = None, **options) -> Mask:
    """The ticket of the score method `criterion` (a ScoreMethod in METHODS), optionally inside `current`
    (weights it pruned stay pruned): what IMP prunes each level with. Options are checked first."""
    method = score_method(criterion)
    opts = method.check(density, data=data, input_shape=input_shape, seed=seed, options=options)
    return method.ticket(model, float(density), data=data, input_shape=input_shape, seed=seed, current=current,
                         **opts)


def score_method(name: str) -> ScoreMethod:
    """The score method `name` (RegistryError for an unknown name; OptionError for a method that does not score)."""
    method = METHODS[name]
    if not isinstance(method, ScoreMethod):
        scoring = [n for n in METHODS.names() if isinstance(METHODS[n], ScoreMethod)]
        raise OptionError(f"criterion {name!r} does not score weights; choose one of {', '.join(scoring)}")
    return method
