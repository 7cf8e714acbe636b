"""`compare`: how alike two tickets are — by weights, by units and by paths.

Weight-level measures need only the masks. Unit- and path-level measures need the topology
(a model and input shape, or a DAG), except for a plain chain of Linear masks. Every similarity
is 1 for identical masks; *chance-corrected* Jaccard is 0 for two independent random masks
with the same per-layer densities, so a value can be read against what density allocation alone
explains. ``baseline=k`` also compares k random masks with `mask_a`'s per-layer counts to `mask_b`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from scipy.stats import wasserstein_distance
from torch import nn

from .errors import ArgumentTypeError, OptionError
from .graph import LayeredDAG, chain_dag, to_dag
from .mask import Mask, count
from .metrics import Report, _finite, log10_paths
from .pruning.threshold import layer_counts_mask

__all__ = ["compare", "Comparison", "LayerSimilarity", "overlap_measures", "random_like"]

_GLOBAL = ("jaccard", "dice", "overlap", "hamming", "chance_jaccard")


def overlap_measures(a: np.ndarray | torch.Tensor, b, n: int | None = None) -> dict[str, float]:
    """Jaccard, Dice, overlap coefficient, normalised Hamming and chance-corrected Jaccard of two
    boolean arrays (or of count tuples: pass a = (|A|, |B|, |A∩B|) and n)."""
    if n is None:
        a, b = np.asarray(a, dtype=bool).ravel(), np.asarray(b, dtype=bool).ravel()
        n, ka, kb, both = a.size, int(a.sum()), int(b.sum()), int(np.count_nonzero(a & b))
    else:
        ka, kb, both = a
    return _measures([(n, ka, kb, both)])


def _measures(parts: Sequence[tuple[int, int, int, int]]) -> dict[str, float]:
    """The measures pooled over layers given (n, |A|, |B|, |A∩B|) per layer.

    The chance level of Jaccard is E|A∩B| / E|A∪B| for masks drawn independently with the same
    per-layer counts (E|A∩B| = |A|·|B|/n per layer); chance-corrected = (J − E) / (1 − E).
    """
    n = sum(p[0] for p in parts)
    ka, kb, both = (sum(p[i] for p in parts) for i in (1, 2, 3))
    union = ka + kb - both
    jaccard = both / union if union else 1.0
    e_both = sum(k1 * k2 / m for m, k1, k2, _ in parts if m)
    e_union = ka + kb - e_both
    expected = e_both / e_union if e_union else 1.0
    return {
        "jaccard": jaccard,
        "dice": 2 * both / (ka + kb) if ka + kb else 1.0,
        "overlap": both / min(ka, kb) if min(ka, kb) else float(ka == kb),
        "hamming": (union - both) / n if n else 0.0,
        "chance_jaccard": (jaccard - expected) / (1 - expected) if expected < 1 else float(jaccard == 1.0),
    }


@dataclass(frozen=True)
class LayerSimilarity:
    """One prunable weight: overlap of the two masks (and of their effective masks and units)."""

    name: str
    weights: int
    density_a: float
    density_b: float
    jaccard: float
    dice: float
    overlap: float
    hamming: float
    chance_jaccard: float
    effective_jaccard: float | None = None
    effective_chance_jaccard: float | None = None
    unit_jaccard: float | None = None  # of the layer's units on some input→output path
    degree_wasserstein: float | None = None  # between the units' kept in-degree distributions


@dataclass
class Comparison:
    """What :func:`compare` measured. ``to_dict()`` gives it all, JSON-ready."""

    jaccard: float
    dice: float
    overlap: float
    hamming: float
    chance_jaccard: float
    density_profile_l1: float  # mean |density_a − density_b| over layers
    layers: list[LayerSimilarity]
    effective: dict[str, float] | None = None  # the five measures on the effective masks
    path_jaccard: float | None = None  # paths of A∧B / paths of A∨B
    path_retained_a: float | None = None  # share of A's paths that use only B's weights
    path_retained_b: float | None = None
    degree_wasserstein: float | None = None  # mean over layers
    baseline: dict[str, dict[str, float]] | None = None  # measure → {"mean", "std", "samples"}

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))

    def __str__(self) -> str:
        head = ("layer", "dens. a", "dens. b", "jaccard", "chance-corr.", "eff. jaccard", "unit jaccard")
        fmt = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
        rows = [head] + [(r.name, fmt(r.density_a), fmt(r.density_b), fmt(r.jaccard), fmt(r.chance_jaccard),
                          fmt(r.effective_jaccard), fmt(r.unit_jaccard)) for r in self.layers]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        summary = f"jaccard {self.jaccard:.4f} · chance-corrected {self.chance_jaccard:.4f}"
        if self.path_jaccard is not None:
            summary += (f" · path jaccard {self.path_jaccard:.3g} · A's paths kept in B {self.path_retained_a:.3g}"
                        f" · B's in A {self.path_retained_b:.3g}")
        if self.baseline:
            base = self.baseline["chance_jaccard"]
            summary += f" · random baseline chance-corrected {base['mean']:.4f} ± {base['std']:.4f}"
        return "\n".join(lines + [summary])


def random_like(mask: Mask, seed: int = 0) -> Mask:
    """A random mask with exactly the per-layer kept counts of `mask` (positions uniform, seeded)."""
    return layer_counts_mask({k: count(m) for k, m in mask.items()}, {k: tuple(m.shape) for k, m in mask.items()},
                             seed, {"method": "random_like", "seed": seed})


def _has_topology(mask: Mask, model, dag) -> bool:
    if model is not None or dag is not None:
        return True
    shapes = [tuple(m.shape) for m in mask.values()]
    return all(len(s) == 2 for s in shapes) and all(b[1] == a[0] for a, b in zip(shapes, shapes[1:]))


def compare(mask_a: Mask, mask_b: Mask, model: nn.Module | None = None, input_shape: Sequence[int] | None = None,
            *, dag: LayeredDAG | None = None, baseline: int = 0, seed: int = 0) -> Comparison:
    """Similarity of two masks of the same network (see the module docstring)."""
    for m in (mask_a, mask_b):
        if not isinstance(m, Mask):
            raise ArgumentTypeError(f"compare expects pathnet.Mask objects, got {type(m).__name__}")
    if isinstance(baseline, bool) or not isinstance(baseline, int) or baseline < 0:
        raise OptionError(f"baseline must be a whole number of random masks ≥ 0 (0: none), got {baseline!r}")
    mask_a.check_compatible(mask_b)
    topology = _has_topology(mask_a, model, dag)
    if topology and dag is None:  # the topology only: every measure applies its own mask to it
        dag = to_dag(model, input_shape) if model is not None else chain_dag(mask_a)
    result = _compare(mask_a, mask_b, dag if topology else None)
    if baseline:
        samples = [_compare(random_like(mask_a, seed + i), mask_b, dag if topology else None) for i in range(baseline)]
        result.baseline = {}
        for key in (*_GLOBAL, "path_jaccard", "path_retained_a", "path_retained_b"):
            values = [getattr(s, key) for s in samples if getattr(s, key) is not None]
            if values:
                result.baseline[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)),
                                        "samples": len(values)}
    return result


def _parts(a: Mask, b: Mask) -> list[tuple[int, int, int, int]]:
    return [(m.numel(), count(m), count(b[k]), int(np.count_nonzero(np.logical_and(m.numpy(), b[k].numpy()))))
            for k, m in a.items()]


def _compare(a: Mask, b: Mask, dag: LayeredDAG | None) -> Comparison:
    parts = _parts(a, b)
    rows = [dict(name=k, weights=n, density_a=ka / n, density_b=kb / n, **_measures([(n, ka, kb, both)]))
            for k, (n, ka, kb, both) in zip(a, parts)]
    out = Comparison(**_measures(parts), layers=[],
                     density_profile_l1=float(np.mean([abs(r["density_a"] - r["density_b"]) for r in rows])))
    if dag is not None:
        # one masked graph at a time, transient ones first, keeping only what the measures read: the peak
        # is one masked graph over what the caller holds (vgg16-224: 3.65 → 2.9 GB)
        log_and, log_or = log10_paths(dag.with_mask(a & b)), log10_paths(dag.with_mask(a | b))
        (eff_a, paths_a, on_a, index), (eff_b, paths_b, on_b, _) = (_summary(dag, m) for m in (a, b))
        eff_parts = _parts(eff_a, eff_b)
        out.effective = _measures(eff_parts)
        out.path_jaccard = _ratio(log_and, log_or)
        out.path_retained_a = _ratio(log_and, paths_a)
        out.path_retained_b = _ratio(log_and, paths_b)
        eff_by_name = dict(zip(eff_a, eff_parts))
        for row in rows:
            if row["name"] not in eff_by_name:
                continue  # a weight no path crosses (dag.constant_params): weight measures only
            eff = _measures([eff_by_name[row["name"]]])
            row["effective_jaccard"], row["effective_chance_jaccard"] = eff["jaccard"], eff["chance_jaccard"]
            layer = index[row["name"]]
            ua, ub = np.isfinite(on_a[layer]), np.isfinite(on_b[layer])
            row["unit_jaccard"] = overlap_measures(ua, ub)["jaccard"]
            row["degree_wasserstein"] = float(wasserstein_distance(_in_degrees(a[row["name"]]),
                                                                   _in_degrees(b[row["name"]])))
        out.degree_wasserstein = float(np.mean([r["degree_wasserstein"] for r in rows if "degree_wasserstein" in r]))
    out.layers = [LayerSimilarity(**r) for r in rows]
    return out


def _summary(dag: LayeredDAG, mask: Mask) -> tuple[Mask, float, list[np.ndarray], dict[str, int]]:
    """What compare reads of a mask's Report: effective mask, log10 paths, per-unit path counts and each
    weight's layer index (the Report itself, with its masked graph, is dropped on return)."""
    rep = Report(dag.with_mask(mask))
    return (rep.effective_mask, rep.log10_paths, rep.unit_path_counts(),
            {r.param: r.index for r in rep.layers if r.param})


def _ratio(log10_num: float, log10_den: float) -> float:
    """10**(num − den), with 0/0 read as 1 (two masks without paths agree on them) and x/0 as 0."""
    if not math.isfinite(log10_den):
        return 1.0 if not math.isfinite(log10_num) else 0.0
    return 10.0 ** (log10_num - log10_den) if math.isfinite(log10_num) else 0.0


def _in_degrees(mask: torch.Tensor) -> np.ndarray:
    """Kept weights feeding each output unit (row) of a weight."""
    return mask.reshape(mask.shape[0], -1).sum(1).numpy().astype(np.float64)
