"""`train`: a short masked training loop; evaluation, checkpoints, logs and progress are callbacks.

Pruned weights are zeroed before the first step and their gradients are zeroed after every
backward pass (one fused multiply over the masked weights), so neither momentum nor weight decay
can move them: they stay exactly 0.0 with no per-forward hook. The data order of epoch e depends
only on (seed, e); a run with ``run_dir`` checkpoints atomically and, started again on any device,
continues from its last checkpoint to the same result as an uninterrupted run.

A step never waits for the device: tensor datasets are copied to it once, the training loss and
accuracy are summed there, and they are read only when the model is evaluated. With
``deterministic=True`` two runs with the same seed give bit-identical weights and history (on the
CPU, and on CUDA with ops that have deterministic kernels).
"""

from __future__ import annotations

import contextlib
import csv
import io
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
from ..errors import DataError, HparamError, RunError
from ..hparams import Step, TrainingHparams, training_defaults
from ..io import atomic_write
from ..mask import Mask, prunable_weights

__all__ = ["train", "evaluate", "TrainResult", "TrainState", "Callback", "Evaluate", "Checkpoint", "MetricsWriter",
           "Progress", "DeviceData", "deterministic_mode", "resolve_device", "versions"]


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


# -- data on the device ----------------------------------------------------------------------

class DeviceData:
    """Tensor datasets copied to `device` once (for as long as this object lives); other datasets
    are returned as they are and their batches moved one by one."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._moved: dict[int, tuple[TorchDataset, TorchDataset]] = {}  # id → (the dataset, its copy)

    def __call__(self, dataset: TorchDataset) -> TorchDataset:
        if not isinstance(dataset, TensorDataset):
            return dataset
        if id(dataset) not in self._moved:  # the dataset is kept with its copy, so its id stays its own
            self._moved[id(dataset)] = dataset, TensorDataset(*(t.to(self.device) for t in dataset.tensors))
        return self._moved[id(dataset)][1]


def batches(dataset: TorchDataset, batch_size: int, order: torch.Tensor | None = None) -> Iterator:
    """(x, y) batches in `order` (default: as stored); tensor datasets are sliced where they live, not collated."""
    n = len(dataset)
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors[:2]
        order = order.to(x.device) if order is not None else None
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size] if order is not None else slice(i, i + batch_size)
            yield x[idx], y[idx]
    else:
        order = torch.arange(n) if order is None else order
        yield from DataLoader(dataset, batch_size=batch_size, sampler=order.tolist())


def evaluate(model: nn.Module, dataset: TorchDataset, device: torch.device | str = "cpu", batch_size: int = 512,
             max_batches: int | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` on `dataset`, in eval mode; one host read at the end."""
    was_training = model.training
    model.eval()
    loss = correct = seen = 0
    with torch.no_grad():
        for i, (x, y) in enumerate(batches(dataset, batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = model(x)
            loss = loss + F.cross_entropy(out.float(), y, reduction="sum")
            correct = correct + (out.argmax(1) == y).sum()
            seen += len(y)
    model.train(was_training)
    return float(loss) / seen, int(correct) / seen


# -- state and callbacks -----------------------------------------------------------------------

@dataclass
class Running:
    """Training loss and accuracy summed on the device since the last evaluation (read only then)."""

    loss: torch.Tensor | float = 0.0
    correct: torch.Tensor | int = 0
    seen: int = 0

    def add(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        self.loss = self.loss + loss.detach() * len(y)
        self.correct = self.correct + (out.detach().argmax(1) == y).sum()
        self.seen += len(y)

    def read(self) -> tuple[float, float]:
        """(mean loss, accuracy); waits for the device."""
        return float(self.loss) / max(1, self.seen), int(self.correct) / max(1, self.seen)

    def to_list(self) -> list:
        return [float(self.loss), int(self.correct), self.seen]


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
    deterministic: bool = False
    loss: torch.Tensor | None = None  # the last batch's mean loss (on the device: float() waits for it)
    running: Running = field(default_factory=Running)
    callbacks: list[Callback] = field(default_factory=list, repr=False)

    @property
    def epoch(self) -> float:
        return self.step / self.per_epoch

    def fire(self, hook: str) -> None:
        """Call `hook` on every callback, in order."""
        for cb in self.callbacks:
            getattr(cb, hook)(self)


class Callback:
    """Hooks into :func:`train`; override what you need.

    After each step: ``on_step_end`` (an evaluation due at this step fires ``on_eval`` from inside
    it), then ``on_epoch_end`` when the step ends an epoch. Your callbacks run before the built-in
    ones (Evaluate, Progress, MetricsWriter, Checkpoint), so a checkpoint holds what they did.
    """

    def on_train_start(self, state: TrainState) -> None:
        """Training is about to start (resuming: from the checkpoint's step, weights and history)."""

    def on_epoch_start(self, state: TrainState) -> None:
        """An epoch begins (not fired when a resume starts mid-epoch)."""

    def on_step_end(self, state: TrainState) -> None: ...

    def on_eval(self, state: TrainState) -> None:
        """``state.history[-1]`` is the evaluation just made."""

    def on_epoch_end(self, state: TrainState) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...


def _due(state: TrainState, every: int) -> bool:
    return state.step % every == 0 or state.step == state.total


class Evaluate(Callback):
    """Every `every` steps and at the end: test loss and accuracy, appended to the history with the
    training loss and accuracy since the previous row; then ``on_eval``."""

    def __init__(self, test: TorchDataset, every: int, batch_size: int = 512):
        self.test, self.every, self.batch_size, self.t0 = test, every, batch_size, time.perf_counter()

    def on_train_start(self, state: TrainState) -> None:
        self.t0 = time.perf_counter()

    def on_step_end(self, state: TrainState) -> None:
        if _due(state, self.every):
            self.row(state)

    def on_train_end(self, state: TrainState) -> None:
        if state.running.seen:  # stopped early, between evaluations
            self.row(state)

    def row(self, state: TrainState) -> None:
        test_loss, test_acc = evaluate(state.model, self.test, state.device, self.batch_size)
        train_loss, train_acc = state.running.read()
        state.history.append({"step": state.step, "epoch": round(state.epoch, 4), "train_loss": train_loss,
                              "train_accuracy": train_acc, "test_loss": test_loss, "test_accuracy": test_acc,
                              "lr": state.optimizer.param_groups[0]["lr"],
                              "seconds": round(time.perf_counter() - self.t0, 3)})
        state.running = Running()
        state.fire("on_eval")


class MetricsWriter(Callback):
    """The history as ``metrics.csv`` and ``metrics.json`` in `run_dir`, rewritten (atomically) at each evaluation."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def on_eval(self, state: TrainState) -> None:
        keys = list(dict.fromkeys(k for row in state.history for k in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(state.history)
        atomic_write(self.run_dir / "metrics.csv", lambda tmp: Path(tmp).write_text(text.getvalue()))
        atomic_write(self.run_dir / "metrics.json",
                     lambda tmp: Path(tmp).write_text(json.dumps(state.history, indent=1)))


class Progress(Callback):
    """A tqdm bar of steps with the last test accuracy (shown on a terminal unless `enabled` says otherwise)."""

    def __init__(self, enabled: bool | None = None):
        self.enabled, self.bar = (sys.stderr.isatty() if enabled is None else enabled), None

    def on_train_start(self, state: TrainState) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.total, initial=state.step, disable=not self.enabled, unit="it", desc="train",
                        leave=False)

    def on_step_end(self, state: TrainState) -> None:
        self.bar.update(1)

    def on_eval(self, state: TrainState) -> None:
        self.bar.set_postfix(test_acc=f"{state.history[-1]['test_accuracy']:.3f}")

    def on_train_end(self, state: TrainState) -> None:
        self.bar.close()


class Checkpoint(Callback):
    """``checkpoint.pt`` in `run_dir`, saved atomically every `every` steps and at the end; :meth:`restore`
    reads it back onto the run's device.

    The file holds only tensors, lists, dicts, numbers and strings (it loads with
    ``torch.load(..., weights_only=True)``): weights, optimizer state, step, history, the running
    training sums, the RNG states (CPU; CUDA per device, as CPU uint8 tensors) and what identifies
    the run (hyperparameters, seed, deterministic), which a resume must match.

    :func:`train` calls :meth:`restore` before any ``on_train_start`` (every callback sees the resumed
    run) and :meth:`resume_rng` once the batches are back in place; it is the last callback, so a
    checkpoint holds what the others did at its step (at an epoch's end, after ``on_epoch_end``).
    """

    def __init__(self, run_dir: Path, every: int):
        self.path, self.every, self.saved_at, self.rng = run_dir / "checkpoint.pt", every, None, None

    def save(self, state: TrainState) -> None:
        cuda = ([torch.cuda.get_rng_state(i).cpu() for i in range(torch.cuda.device_count())]
                if torch.cuda.is_initialized() else [])  # CUDA unused: its RNG is where manual_seed put it
        payload = {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(), "step": state.step,
                   "history": state.history, "running": state.running.to_list(), "rng": torch.get_rng_state(),
                   "cuda_rng": cuda, "hparams": state.hparams.to_dict(), "seed": state.seed,
                   "deterministic": state.deterministic}
        atomic_write(self.path, lambda tmp: torch.save(payload, tmp))
        self.saved_at = state.step

    def restore(self, state: TrainState) -> bool:
        """Continue `state` from the checkpoint, if there is one (the RNG follows in :meth:`resume_rng`)."""
        if not self.path.is_file():
            return False
        try:
            ckpt = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # not a checkpoint, or one that would need unpickling arbitrary objects
            raise RunError(f"{self.path} is not a readable checkpoint ({type(e).__name__}); delete it to start "
                           "over") from None
        there = {**ckpt["hparams"], "seed": ckpt["seed"], "deterministic": ckpt.get("deterministic", False)}
        here = {**state.hparams.to_dict(), "seed": state.seed, "deterministic": state.deterministic}
        diff = [f"{k}={there.get(k)!r} there, {v!r} here" for k, v in here.items() if there.get(k) != v]
        if diff:
            raise RunError(f"{self.path.parent} holds a run with other hyperparameters ({'; '.join(diff)}); use "
                           "another run_dir or delete its checkpoint.pt to start over")
        state.model.load_state_dict(ckpt["model"])
        state.optimizer.load_state_dict(ckpt["optimizer"])  # casts its state to the parameters' device
        state.step, state.history = ckpt["step"], ckpt["history"]
        state.running = Running(*ckpt.get("running", (0.0, 0, 0)))
        self.rng, self.saved_at = (ckpt["rng"], ckpt["cuda_rng"]), state.step
        return True

    def resume_rng(self) -> None:
        """Once after :meth:`restore`: the RNG as it was at the checkpoint. The loop calls it when the
        batches are back where they were (skipping them may draw random augmentations)."""
        if self.rng is not None:
            torch.set_rng_state(self.rng[0])
            for i, s in enumerate(self.rng[1][:torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)
            self.rng = None

    def _save_if_due(self, state: TrainState) -> None:
        if _due(state, self.every) and self.saved_at != state.step:
            self.save(state)

    def on_step_end(self, state: TrainState) -> None:
        if state.step % state.per_epoch:  # at an epoch's end: after on_epoch_end (below)
            self._save_if_due(state)

    def on_epoch_end(self, state: TrainState) -> None:
        self._save_if_due(state)

    def on_train_end(self, state: TrainState) -> None:
        if self.saved_at != state.step:  # stopped early
            self.save(state)


# -- determinism ---------------------------------------------------------------------------------

_NOT_DETERMINISTIC = "does not have a deterministic implementation"


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True):
    """Within: deterministic algorithms only (torch.use_deterministic_algorithms, cuDNN without
    benchmarking), CUBLAS_WORKSPACE_CONFIG=:4096:8 unless set; the previous settings come back after.

    cuBLAS reads CUBLAS_WORKSPACE_CONFIG when the process first uses it: if CUDA matmuls ran before,
    set it in the environment before starting Python. An op with no deterministic kernel raises
    HparamError naming it.
    """
    if not enabled:
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    set_env = "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    if set_env:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    except RuntimeError as e:
        if _NOT_DETERMINISTIC not in str(e):
            raise
        op = str(e).split(_NOT_DETERMINISTIC)[0].strip()
        raise HparamError(f"deterministic=True, but {op} has no deterministic implementation in torch "
                          f"{torch.__version__} on this device; train without deterministic=True") from None
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]
        if set_env:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


# -- the loop ------------------------------------------------------------------------------------

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
    deterministic: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"test_accuracy": self.test_accuracy, "test_loss": self.test_loss, "steps": self.steps,
                "seconds": self.seconds, "device": self.device, "seed": self.seed, "deterministic": self.deterministic,
                "hparams": self.hparams.to_dict(), "mask": dict(self.mask.meta) if self.mask is not None else None,
                "versions": self.versions, "history": self.history}


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


def _prepare(model: nn.Module, mask: Mask | None, dev: torch.device, channels_last: bool | None):
    """The model on the device (channels-last for conv nets on CUDA unless told otherwise); the masked
    weights and their masks, laid out like the weights so that one fused multiply masks every gradient."""
    if channels_last is None:
        channels_last = dev.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())
    model.to(dev, memory_format=torch.channels_last) if channels_last else model.to(dev)
    if mask is None:
        return channels_last, [], []
    mask.apply(model)  # checks names and shapes too
    weights = prunable_weights(model)
    masked = [k for k, m in mask.items() if not bool(m.all())]
    return channels_last, [weights[k] for k in masked], [torch.empty_like(weights[k]).copy_(mask[k]) for k in masked]


def _hparams(model: nn.Module, ds: Dataset, hparams: TrainingHparams | None, epochs, steps,
             overrides: dict) -> TrainingHparams:
    h = (hparams or training_defaults(getattr(model, "pathnet_name", None), ds.name)).with_(**overrides)
    if epochs is not None:
        h = h.with_(duration=f"{int(epochs)}ep")
    return h.with_(duration=str(steps)) if steps is not None else h


def _epoch_batches(train_set: TorchDataset, batch_size: int, per_epoch: int, seed: int, step: int) -> Iterator:
    """The batches of the epoch holding `step`, in the order (seed, epoch) gives, from `step` on."""
    epoch, offset = divmod(step, per_epoch)
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    stream = batches(train_set, batch_size, order)
    for _ in range(offset):  # resuming mid-epoch: skip what was already seen
        next(stream)
    return stream


def train(model: nn.Module, mask: Mask | None = None, data: Any = "digits", *, epochs: int | None = None,
          steps: int | str | None = None, hparams: TrainingHparams | None = None, device: str = "auto", seed: int = 0,
          callbacks: Sequence[Callback] = (), run_dir: str | os.PathLike | None = None, progress: bool | None = None,
          amp: bool = False, start_step: int | str = 0, eval_every: str = "1ep", checkpoint_every: str = "1ep",
          deterministic: bool = False, channels_last: bool | None = None, compile: bool = False,
          **overrides) -> TrainResult:
    """Train `model` in place under `mask` on `data` and return what happened.

    Length: `epochs`, `steps` ("500it", "2ep") or the hparams' duration. Any field of
    :class:`~pathnet.hparams.TrainingHparams` (lr, momentum, weight_decay, batch_size, optimizer,
    schedule, milestones, gamma, warmup) can be passed as a keyword. `start_step` begins part-way
    through the schedule (IMP's rewinding); `eval_every` and `checkpoint_every` are steps. `amp`:
    bf16 autocast on CUDA; `deterministic`: see :func:`deterministic_mode` (recorded, and checked
    on resume); `channels_last`: None = on for conv nets on CUDA; `compile`: torch.compile the model.
    """
    t0 = time.perf_counter()
    ds = as_dataset(data)
    h = _hparams(model, ds, hparams, epochs, steps, overrides)
    dev = resolve_device(device)
    per_epoch = math.ceil(len(ds.train) / h.batch_size)
    total = Step.parse(h.duration, per_epoch).iteration
    eval_at, ckpt_at = (max(1, Step.parse(s, per_epoch).iteration) for s in (eval_every, checkpoint_every))
    with deterministic_mode(deterministic):
        channels_last, masked, masks = _prepare(model, mask, dev, channels_last)
        state = TrainState(model, _optimizer(model, h), h, ds, dev, Step.parse(start_step, per_epoch).iteration,
                           total, per_epoch, Path(run_dir) if run_dir is not None else None, seed=seed,
                           deterministic=deterministic)
        on_device = DeviceData(dev)  # train and test tensors copied to the device once
        saver = Checkpoint(state.run_dir, ckpt_at) if state.run_dir is not None else None
        state.callbacks = [*callbacks, Evaluate(on_device(ds.test), eval_at), Progress(progress),
                           *((MetricsWriter(state.run_dir), saver) if saver else ())]
        torch.manual_seed(seed)
        if saver is not None:
            saver.restore(state)  # before any callback sees the state
        forward = torch.compile(model) if compile else model
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if amp and dev.type == "cuda"
                    else contextlib.nullcontext())
        optimizer, train_set = state.optimizer, on_device(ds.train)
        state.fire("on_train_start")
        model.train()
        while state.step < total and not state.stop:
            stream = _epoch_batches(train_set, h.batch_size, per_epoch, seed, state.step)
            if saver is not None:
                saver.resume_rng()  # now that the batches are where they were at the checkpoint
            if state.step % per_epoch == 0:
                state.fire("on_epoch_start")
            for x, y in stream:
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                if channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                for group in optimizer.param_groups:
                    group["lr"] = h.lr * _lr_factor(h, state.step, total, per_epoch)
                with autocast:
                    out = forward(x)
                    loss = F.cross_entropy(out, y)
                optimizer.zero_grad(set_to_none=False)
                loss.backward()
                if masked:
                    torch._foreach_mul_([w.grad for w in masked], masks)
                optimizer.step()
                state.loss = loss.detach()
                state.running.add(state.loss, out, y)  # summed on the device: no waiting here
                state.step += 1
                state.fire("on_step_end")
                if state.step % per_epoch == 0:
                    state.fire("on_epoch_end")
                if state.step >= total or state.stop:
                    break
        state.fire("on_train_end")
        last = state.history[-1] if state.history and state.history[-1]["step"] == state.step else None
        test_loss, test_acc = (last["test_loss"], last["test_accuracy"]) if last else evaluate(model, ds.test, dev)
    weights = {k: v.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
               for k, v in model.state_dict().items()}  # contiguous even from channels-last (safetensors needs it)
    result = TrainResult(state.history, test_acc, test_loss, weights, mask, h, state.step,
                         round(time.perf_counter() - t0, 3), str(dev), seed, versions(), deterministic)
    if state.run_dir is not None:
        atomic_write(state.run_dir / "result.json",
                     lambda tmp: Path(tmp).write_text(json.dumps(result.to_dict(), indent=1, default=str)))
    return result
