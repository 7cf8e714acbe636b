"""Typed hyperparameters (open_lth style): dataclasses with defaults per model and dataset, a
``Step`` type for "2ep" / "500it", and a run directory named by a hash of the non-default values.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import HparamError

__all__ = ["Step", "TrainingHparams", "training_defaults", "run_name"]


@dataclass(frozen=True, order=True)
class Step:
    """A point in training given in epochs and/or iterations: "2ep", "500it", "1ep100it"."""

    iteration: int

    @classmethod
    def parse(cls, text: str | int | Step, iterations_per_epoch: int) -> Step:
        if isinstance(text, Step):
            return text
        if isinstance(text, int):
            return cls(text)
        m = re.fullmatch(r"\s*(?:(\d+)\s*ep)?\s*(?:(\d+)\s*it)?\s*", str(text))
        if not m or (m.group(1) is None and m.group(2) is None):
            raise HparamError(f"cannot read the step {text!r}: write epochs and/or iterations, e.g. '2ep', '500it', "
                              "'1ep100it'")
        return cls(int(m.group(1) or 0) * iterations_per_epoch + int(m.group(2) or 0))

    def __str__(self) -> str:
        return f"{self.iteration}it"


@dataclass(frozen=True)
class TrainingHparams:
    """How to train: optimiser, learning-rate schedule, length, batch size."""

    optimizer: str = "sgd"  # "sgd" | "adam" | "adamw"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 128
    duration: str = "160ep"  # how long: a Step
    schedule: str = "multistep"  # "multistep" | "cosine" | "constant"
    milestones: tuple[str, ...] = ("80ep", "120ep")  # for multistep
    gamma: float = 0.1
    warmup: str = "0it"  # linear warm-up

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise HparamError(f"optimizer must be 'sgd', 'adam' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("multistep", "cosine", "constant"):
            raise HparamError(f"schedule must be 'multistep', 'cosine' or 'constant', got {self.schedule!r}")
        if not self.lr > 0 or self.batch_size < 1:
            raise HparamError(f"lr must be > 0 and batch_size ≥ 1 (got lr={self.lr}, batch_size={self.batch_size})")

    def with_(self, **changes) -> TrainingHparams:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise HparamError(f"unknown training hyperparameters {sorted(unknown)}; known: {sorted(known)}")
        return replace(self, **{k: (tuple(v) if k == "milestones" else v) for k, v in changes.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_OFFLINE = {"digits", "mnist1d", "mnist5k", "synthetic"}


def training_defaults(model: str | None = None, dataset: str | None = None) -> TrainingHparams:
    """open_lth's recipes for CIFAR ResNets/VGGs and MNIST LeNet; short cosine runs for the offline sets."""
    if dataset in _OFFLINE:
        return TrainingHparams(lr=0.05, weight_decay=5e-4, batch_size=64, duration="15ep", schedule="cosine",
                               milestones=())
    if model == "lenet300" or dataset in ("mnist", "fashion_mnist"):
        return TrainingHparams(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=128, duration="40ep",
                               schedule="constant", milestones=())
    return TrainingHparams()


def run_name(*objects: Any, defaults: tuple[Any, ...] | None = None) -> str:
    """A short stable hash of the values that differ from `defaults` (all values if none given)."""
    payload = []
    for i, obj in enumerate(objects):
        values = asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj
        base = defaults[i] if defaults else None
        if base is not None:
            base_values = asdict(base) if hasattr(base, "__dataclass_fields__") else base
            values = {k: v for k, v in values.items() if base_values.get(k) != v}
        payload.append(values)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]
