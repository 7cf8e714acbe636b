"""Typed hyperparameters (open_lth style): dataclasses with defaults per model and dataset, a
``Step`` type for "2ep" / "500it", and a run directory named by a hash of the non-default values.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .errors import HparamError
from .options import Opt, Options

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
        m = _STEP.fullmatch(str(text))
        if not m or (m.group(1) is None and m.group(2) is None):
            raise HparamError(f"cannot read the step {text!r}: write epochs and/or iterations, e.g. '2ep', '500it', "
                              "'1ep100it'")
        return cls(int(m.group(1) or 0) * iterations_per_epoch + int(m.group(2) or 0))

    def __str__(self) -> str:
        return f"{self.iteration}it"


_STEP = re.compile(r"\s*(?:(\d+)\s*ep)?\s*(?:(\d+)\s*it)?\s*")


def step_problem(text: Any) -> str | None:
    """What is wrong with `text` as a step ("2ep", "500it", "1ep100it"), or None."""
    if isinstance(text, (Step, int)) and not isinstance(text, bool):
        return None if int(getattr(text, "iteration", text)) >= 0 else "a step is ≥ 0"
    m = _STEP.fullmatch(str(text))
    if not m or (m.group(1) is None and m.group(2) is None):
        return "write a step in epochs and/or iterations, e.g. '2ep', '500it', '1ep100it'"
    return None


def _h(opt: Opt):
    """A TrainingHparams field whose default, type, allowed values and help come from `opt`."""
    return field(default=opt.default, metadata={"opt": opt})


@dataclass(frozen=True)
class TrainingHparams:
    """How to train: optimiser, learning-rate schedule, length, batch size.

    Each field declares its type, allowed values and help (an :class:`~pathnet.options.Opt` in the
    field's metadata); the CLI's training options and all validation come from there.
    """

    optimizer: str = _h(Opt(str, "sgd", "optimiser", choices=("sgd", "adam", "adamw")))
    lr: float = _h(Opt(float, 0.1, "peak learning rate", above=0))
    momentum: float = _h(Opt(float, 0.9, "SGD momentum", min=0))
    weight_decay: float = _h(Opt(float, 1e-4, "weight decay (L2)", min=0))
    batch_size: int = _h(Opt(int, 128, "examples per step", min=1))
    duration: str = _h(Opt(str, "160ep", "training length, a step such as 160ep or 5000it", check=step_problem))
    schedule: str = _h(Opt(str, "multistep", "learning-rate schedule", choices=("multistep", "cosine", "constant")))
    milestones: tuple[str, ...] = _h(Opt(tuple, ("80ep", "120ep"), "steps where multistep multiplies the lr by gamma",
                                        item=str, check=step_problem))
    gamma: float = _h(Opt(float, 0.1, "multistep's lr factor at each milestone", above=0))
    warmup: str = _h(Opt(str, "0it", "linear lr warm-up length, a step", check=step_problem))

    def __post_init__(self):
        checked = self.options().validate({f.name: getattr(self, f.name) for f in fields(self)}, where="")
        for k, v in checked.items():
            object.__setattr__(self, k, v)
        if Step.parse(self.duration, 1).iteration < 1:
            raise HparamError(f"duration={self.duration!r} is not allowed: training needs at least one step")

    @classmethod
    def options(cls) -> Options:
        """Every field's declaration (type, default, allowed values, help)."""
        return Options(**{f.name: f.metadata["opt"] for f in fields(cls)})

    def with_(self, **changes) -> TrainingHparams:
        known = [f.name for f in fields(self)]
        unknown = [k for k in changes if k not in known]
        if unknown:
            raise HparamError(f"unknown training hyperparameters {unknown}; known: {', '.join(known)}")
        return replace(self, **{k: (tuple(v) if k == "milestones" and isinstance(v, list) else v)
                                for k, v in changes.items()})

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
