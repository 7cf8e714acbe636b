"""`train`: a minimal masked training loop with callbacks, atomic checkpoints and exact resume.

Pruned weights are zeroed before the first step and their gradients are zeroed after every
backward pass (one fused multiply over the masked weights), so neither momentum nor weight decay
can move them: they stay exactly 0.0 with no per-forward hook. The data order of epoch e depends
only on (seed, e); a run with ``run_dir`` checkpoints atomically and, started again, continues
from its last checkpoint to the same result as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset as TorchDataset, TensorDataset

from ..data import Dataset, get as get_dataset
from ..errors import DataError, RunError
from ..hparams import Step, TrainingHparams, training_defaults
from ..io import atomic_write
from ..mask import Mask, prunable_weights

__all__ = ["train", "evaluate", "TrainResult", "TrainState", "Callback", "resolve_device", "versions"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto": CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def versions() -> dict[str, str]:
    """The versions a result was produced with."""
    import numba

    from .. import __version__

    return {"pathnet": __version__, "torch": torch.__version__, "numba": numba.__version__,
            "python": platform.python_version(), "cuda": torch.version.cuda or "none"}


def as_dataset(data: Any) -> Dataset:
    if isinstance(data, str):
        return get_dataset(data)
    if isinstance(data, Dataset):
        return data
    raise DataError(f"training needs a dataset name or a pathnet.data.Dataset, got {type(data).__name__}")


def batches(dataset: TorchDataset, batch_size: int, order: torch.Tensor | None = None) -> Iterator:
    """(x, y) batches in `order` (default: as stored); tensor datasets are sliced, not collated."""
    n = len(dataset)
    order = torch.arange(n) if order is None else order
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors[:2]
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield x[idx], y[idx]
    else:
        yield from DataLoader(dataset, batch_size=batch_size, sampler=order.tolist())


def evaluate(model: nn.Module, dataset: TorchDataset, device: torch.device | str = "cpu", batch_size: int = 512,
             max_batches: int | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` on `dataset`, in eval mode."""
    was_training = model.training
    model.eval()
    loss = correct = seen = 0
    with torch.no_grad():
        for i, (x, y) in enumerate(batches(dataset, batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = model(x)
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
    model.train(was_training)
    return loss / seen, correct / seen


@dataclass
class TrainState:
    """What callbacks see (and may read from) during training."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    hparams: TrainingHparams
    data: Dataset
    device: torch.device
    step: int  # iterations done
    total: int  # iterations to do in all
    per_epoch: int
    run_dir: Path | None
    history: list[dict] = field(default_factory=list)
    seed: int = 0
    stop: bool = False  # a callback may end training early

    @property
    def epoch(self) -> float:
        return self.step / self.per_epoch


class Callback:
    """Hooks into :func:`train`; override what you need."""

    def on_train_start(self, state: TrainState) -> None: ...

    def on_step_end(self, state: TrainState) -> None: ...

    def on_epoch_end(self, state: TrainState) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...


@dataclass
class TrainResult:
    """History per epoch, final test metrics, the trained weights and what produced them."""

    history: list[dict]
    test_accuracy: float
    test_loss: float
    state_dict: dict[str, torch.Tensor]
    mask: Mask | None
    hparams: TrainingHparams
    steps: int
    seconds: float
    device: str
    seed: int
    versions: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"test_accuracy": self.test_accuracy, "test_loss": self.test_loss, "steps": self.steps,
                "seconds": self.seconds, "device": self.device, "seed": self.seed, "hparams": self.hparams.to_dict(),
                "mask": dict(self.mask.meta) if self.mask is not None else None, "versions": self.versions,
                "history": self.history}


def _lr_factor(h: TrainingHparams, step: int, total: int, per_epoch: int) -> float:
    warmup = Step.parse(h.warmup, per_epoch).iteration
    factor = min(1.0, (step + 1) / warmup) if warmup else 1.0
    if h.schedule == "multistep":
        factor *= h.gamma ** sum(step >= Step.parse(m, per_epoch).iteration for m in h.milestones)
    elif h.schedule == "cosine":
        factor *= 0.5 * (1 + math.cos(math.pi * step / max(1, total)))
    return factor


def _optimizer(model: nn.Module, h: TrainingHparams) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if h.optimizer == "sgd":
        return torch.optim.SGD(params, lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)
    cls = torch.optim.Adam if h.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=h.lr, weight_decay=h.weight_decay)


def _checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoint.pt"


def _save_checkpoint(state: TrainState) -> None:
    payload = {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(), "step": state.step,
               "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available()
               else [], "history": state.history, "hparams": state.hparams.to_dict(), "seed": state.seed}
    atomic_write(_checkpoint_path(state.run_dir), lambda tmp: torch.save(payload, tmp))


def _write_metrics(state: TrainState) -> None:
    if not state.history:
        return
    keys = list(state.history[0])
    csv = "\n".join([",".join(keys)] + [",".join(str(row.get(k, "")) for k in keys) for row in state.history]) + "\n"
    atomic_write(state.run_dir / "metrics.csv", lambda tmp: Path(tmp).write_text(csv))
    atomic_write(state.run_dir / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(state.history, indent=1)))


def _progress(enabled: bool | None, total: int, initial: int):
    from tqdm.auto import tqdm

    enabled = sys.stderr.isatty() if enabled is None else enabled
    return tqdm(total=total, initial=initial, disable=not enabled, unit="it", desc="train", leave=False)


def train(model: nn.Module, mask: Mask | None = None, data: Any = "digits", *, epochs: int | None = None,
          steps: int | str | None = None, hparams: TrainingHparams | None = None, device: str = "auto", seed: int = 0,
          callbacks: Sequence[Callback] = (), run_dir: str | os.PathLike | None = None, progress: bool | None = None,
          amp: bool = False, start_step: int | str = 0, eval_every: str = "1ep", checkpoint_every: str = "1ep",
          **overrides) -> TrainResult:
    """Train `model` in place under `mask` on `data` and return what happened.

    Length: `epochs`, `steps` ("500it", "2ep") or the hparams' duration. Any field of
    :class:`~pathnet.hparams.TrainingHparams` (lr, momentum, weight_decay, batch_size, optimizer,
    schedule, milestones, gamma, warmup) can be passed as a keyword. `start_step` begins part-way
    through the schedule (IMP's rewinding); `eval_every` and `checkpoint_every` are steps.
    """
    t0 = time.perf_counter()
    ds = as_dataset(data)
    model_name = getattr(model, "pathnet_name", None)
    h = (hparams or training_defaults(model_name, ds.name)).with_(**overrides)
    if epochs is not None:
        h = h.with_(duration=f"{int(epochs)}ep")
    if steps is not None:
        h = h.with_(duration=str(steps))
    dev = resolve_device(device)
    per_epoch = math.ceil(len(ds.train) / h.batch_size)
    total = Step.parse(h.duration, per_epoch).iteration
    start = Step.parse(start_step, per_epoch).iteration
    eval_at = max(1, Step.parse(eval_every, per_epoch).iteration)
    ckpt_at = max(1, Step.parse(checkpoint_every, per_epoch).iteration)
    model.to(dev)
    weights = prunable_weights(model)
    if mask is not None:
        mask.apply(model)  # checks names and shapes too
        masked = [(weights[k], m.to(dev, weights[k].dtype)) for k, m in mask.items() if not bool(m.all())]
    else:
        masked = []
    optimizer = _optimizer(model, h)
    state = TrainState(model, optimizer, h, ds, dev, start, total, per_epoch,
                       Path(run_dir) if run_dir is not None else None, seed=seed)
    torch.manual_seed(seed)
    if state.run_dir is not None and _checkpoint_path(state.run_dir).is_file():
        ckpt = torch.load(_checkpoint_path(state.run_dir), map_location=dev, weights_only=False)
        if ckpt["hparams"] != h.to_dict() or ckpt["seed"] != seed:
            raise RunError(f"{state.run_dir} holds a run with other hyperparameters or seed; use another run_dir "
                           "or delete its checkpoint.pt to start over")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state.step, state.history = ckpt["step"], ckpt["history"]
        resume_rng = ckpt["rng"], ckpt["cuda_rng"]
    else:
        resume_rng = None
    for cb in callbacks:
        cb.on_train_start(state)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if amp and dev.type == "cuda"
                else contextlib.nullcontext())
    running = {"loss": 0.0, "correct": 0, "seen": 0}
    model.train()
    with _progress(progress, total, state.step) as bar:
        while state.step < total and not state.stop:
            epoch, offset = divmod(state.step, per_epoch)
            order = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            stream = batches(ds.train, h.batch_size, order)
            for _ in range(offset):  # resuming mid-epoch: skip what was already seen
                next(stream)
            if resume_rng is not None:  # the RNG as it was at the checkpoint (after those batches)
                torch.set_rng_state(resume_rng[0])
                if resume_rng[1]:
                    torch.cuda.set_rng_state_all(resume_rng[1])
                resume_rng = None
            for x, y in stream:
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                for group in optimizer.param_groups:
                    group["lr"] = h.lr * _lr_factor(h, state.step, total, per_epoch)
                with autocast:
                    out = model(x)
                    loss = F.cross_entropy(out, y)
                optimizer.zero_grad(set_to_none=False)
                loss.backward()
                if masked:
                    torch._foreach_mul_([p.grad for p, _ in masked], [m for _, m in masked])
                optimizer.step()
                state.step += 1
                running["loss"] += float(loss.detach()) * len(y)
                running["correct"] += int((out.detach().argmax(1) == y).sum())
                running["seen"] += len(y)
                bar.update(1)
                for cb in callbacks:
                    cb.on_step_end(state)
                if state.step % eval_at == 0 or state.step == total:
                    test_loss, test_acc = evaluate(model, ds.test, dev)
                    state.history.append({
                        "step": state.step, "epoch": round(state.epoch, 4),
                        "train_loss": running["loss"] / max(1, running["seen"]),
                        "train_accuracy": running["correct"] / max(1, running["seen"]),
                        "test_loss": test_loss, "test_accuracy": test_acc,
                        "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t0, 3)})
                    running = {"loss": 0.0, "correct": 0, "seen": 0}
                    bar.set_postfix(test_acc=f"{test_acc:.3f}")
                    for cb in callbacks:
                        cb.on_epoch_end(state)
                if state.run_dir is not None and (state.step % ckpt_at == 0 or state.step == total):
                    _save_checkpoint(state)
                    _write_metrics(state)
                if state.step >= total or state.stop:
                    break
    for cb in callbacks:
        cb.on_train_end(state)
    test_loss, test_acc = (state.history[-1]["test_loss"], state.history[-1]["test_accuracy"]) if state.history \
        else evaluate(model, ds.test, dev)
    result = TrainResult(state.history, test_acc, test_loss, {k: v.detach().cpu().clone()
                                                              for k, v in model.state_dict().items()},
                         mask, h, state.step, round(time.perf_counter() - t0, 3), str(dev), seed, versions())
    if state.run_dir is not None:
        atomic_write(state.run_dir / "result.json",
                     lambda tmp: Path(tmp).write_text(json.dumps(result.to_dict(), indent=1, default=str)))
    return result
