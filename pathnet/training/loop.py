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
from ..errors import (DataError, DivergenceError, HparamError, RunError, WeightError, check_int, check_seed)
from ..hparams import Step, TrainingHparams, training_defaults
from ..io import atomic_write, write_csv, write_json
from ..mask import Mask, prunable_weights
from ..run import bound, check_run_dir

__all__ = ["train", "evaluate", "TrainResult", "TrainState", "Callback", "Evaluate", "Checkpoint", "MetricsWriter",
           "Progress", "StopOnDivergence", "log_line", "progress_mode", "DeviceData", "deterministic_mode", "resolve_device", "versions"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto": CUDA when present, else the CPU. HparamError for a device that is not one, or not here."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise HparamError(f"device {device!r} is not a device pathnet trains on; use cpu, cuda, cuda:N, mps or auto")
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        have = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA"
        raise HparamError(f"device {device!r} is not available: this machine has {have}; use cpu or auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise HparamError(f"device {device!r} is not available here; use cpu or auto")
    return dev


def log_line(text: str) -> None:
    """One progress line to stderr (above a tqdm bar, if one is showing)."""
    from tqdm.auto import tqdm

    tqdm.write(text, file=sys.stderr)
    sys.stderr.flush()


def progress_mode(progress: bool | None) -> str:
    """"bar" (tqdm, on a terminal), "lines" (one line per epoch/level/cell, off a terminal) or "off"."""
    if progress is not None and not isinstance(progress, bool):
        raise HparamError(f"progress must be True, False or None (automatic), got {progress!r}")
    if progress is False:
        return "off"
    return "bar" if sys.stderr.isatty() else "lines"


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
    resumed_from: int | None = None  # the checkpoint's step, when this run resumed one

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
        write_csv(self.run_dir / "metrics.csv", state.history)
        write_json(self.run_dir / "metrics.json", state.history)


class Progress(Callback):
    """Progress on stderr: a tqdm bar of steps on a terminal; elsewhere (a log, nohup) one line per
    evaluation ("epoch 3/10  train loss 0.41  test acc 0.912  12.3 s"); "resumed from step N of M"
    when a run resumes. `enabled=False` is silent; None or True: bar or lines as stderr allows."""

    def __init__(self, enabled: bool | None = None, label: str = ""):
        self.mode = progress_mode(enabled)
        self.label, self.bar = label, None

    def on_train_start(self, state: TrainState) -> None:
        if self.mode == "off":
            return
        if state.resumed_from is not None:
            log_line(f"{self.label}resumed from step {state.step} of {state.total}")
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.total, initial=state.step, unit="it", desc=self.label.strip() or "train",
                            leave=False, file=sys.stderr)

    def on_step_end(self, state: TrainState) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_eval(self, state: TrainState) -> None:
        row = state.history[-1]
        if self.bar is not None:
            self.bar.set_postfix(test_acc=f"{row['test_accuracy']:.3f}")
        elif self.mode == "lines":
            log_line(f"{self.label}epoch {_num(state.epoch)}/{_num(state.total / state.per_epoch)}  train loss "
                     f"{row['train_loss']:.4f}  test acc {row['test_accuracy']:.4f}  {row['seconds']:.1f} s")

    def on_train_end(self, state: TrainState) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _num(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 1e-9 else f"{x:.2f}"


class StopOnDivergence(Callback):
    """Stops training with a DivergenceError (naming the step and the learning rate) once the loss is NaN
    or infinite, before any evaluation or checkpoint sees the broken weights. On the CPU every step is
    checked; on other devices the first bad step is kept on the device (no waiting) and read at the
    steps in `read_at` (evaluations, checkpoints) and at the end."""

    def __init__(self, *read_at: int):
        self.read_at, self.first = read_at, None

    def on_train_start(self, state: TrainState) -> None:
        self.first = None

    def on_step_end(self, state: TrainState) -> None:
        if state.device.type == "cpu":
            value = float(state.loss)
            if not math.isfinite(value):
                self._stop(state, state.step, value)
            return
        bad = ~torch.isfinite(state.loss)
        self.first = (torch.where(bad, state.step, 0) if self.first is None
                      else torch.where(bad & (self.first == 0), state.step, self.first))
        if any(_due(state, every) for every in self.read_at):
            self.check(state)

    def on_train_end(self, state: TrainState) -> None:
        self.check(state)

    def check(self, state: TrainState) -> None:
        if self.first is not None and int(self.first):
            self._stop(state, int(self.first), None)

    @staticmethod
    def _stop(state: TrainState, step: int, value: float | None) -> None:
        lr = state.hparams.lr * _lr_factor(state.hparams, step - 1, state.total, state.per_epoch)
        what = f"is {value}" if value is not None else "is NaN or infinite"
        raise DivergenceError(f"training diverged: the loss {what} at step {step} of {state.total} (lr {lr:g}); "
                              "lower the learning rate (lr=, --lr) or add warm-up (warmup=, --warmup)")


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
    if hparams is not None and not isinstance(hparams, TrainingHparams):
        raise HparamError(f"hparams must be a pathnet.hparams.TrainingHparams, got {type(hparams).__name__}")
    h = (hparams or training_defaults(getattr(model, "pathnet_name", None), ds.name)).with_(**overrides)
    if epochs is not None and steps is not None:
        raise HparamError(f"give epochs= ({epochs!r}) or steps= ({steps!r}), not both")
    if epochs is not None:
        h = h.with_(duration=f"{check_int('epochs', epochs, min=1)}ep")
    if steps is not None:
        if isinstance(steps, int) and not isinstance(steps, bool):
            steps = f"{check_int('steps', steps, min=1)}it"
        h = h.with_(duration=str(steps))
    return h


def check_finite(model: nn.Module) -> None:
    """WeightError naming the first parameter or buffer of `model` holding NaN or infinite values."""
    for k, v in model.state_dict().items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = "NaN" if bool(torch.isnan(v).any()) else "infinite"
            raise WeightError(f"the model's {k!r} holds {bad} values; training needs finite weights (re-initialise "
                              "the model or load another state)")


def _check_fits(model: nn.Module, dataset: TorchDataset, device: torch.device) -> None:
    """One forward pass on two examples in eval mode (no statistics or RNG touched), so a model built for
    other inputs fails here with one line instead of deep in the loop."""
    x = next(iter(batches(dataset, 2)))[0].to(device)
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"the model does not take this data's inputs of shape {tuple(x.shape[1:])} ({first}); build "
                        "it for that input shape or give other data") from None
    finally:
        model.train(was)


def _step_at_least(name: str, value, per_epoch: int, minimum: int) -> int:
    try:
        it = Step.parse(value, per_epoch).iteration
    except HparamError:
        raise HparamError(f"{name}={value!r} is not a step: write epochs and/or iterations, e.g. '2ep', '500it'") \
            from None
    if isinstance(value, bool) or it < minimum:
        raise HparamError(f"{name}={value!r} is not allowed: it must be a step of at least {minimum} iteration(s)")
    return it


def train_manifest(model: nn.Module, mask: Mask | None, ds: Dataset, h: TrainingHparams, *, seed: int,
                   deterministic: bool, start: int, eval_every: int, amp: bool) -> dict[str, Any]:
    """What determines a training run's result (a run dir's manifest.json)."""
    from .. import __version__
    from ..run import model_identity

    return {"kind": "train", **model_identity(model), "data": ds.name,
            "mask": mask.sha256() if mask is not None else None, **h.to_dict(), "seed": seed,
            "deterministic": deterministic, "start_step": start, "eval_every": eval_every, "amp": amp,
            "pathnet": __version__}


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
          overwrite: bool = False, **overrides) -> TrainResult:
    """Train `model` in place under `mask` on `data` and return what happened.

    Length: `epochs`, `steps` ("500it", "2ep") or the hparams' duration. Any field of
    :class:`~pathnet.hparams.TrainingHparams` (lr, momentum, weight_decay, batch_size, optimizer,
    schedule, milestones, gamma, warmup) can be passed as a keyword. `start_step` begins part-way
    through the schedule (IMP's rewinding); `eval_every` and `checkpoint_every` are steps. `amp`:
    bf16 autocast on CUDA; `deterministic`: see :func:`deterministic_mode` (recorded, and checked
    on resume); `channels_last`: None = on for conv nets on CUDA; `compile`: torch.compile the model.

    Every argument is checked before any work. With `run_dir`, the run is bound to its arguments
    (``manifest.json``: a rerun with other arguments raises RunError; `overwrite=True` clears the
    directory first) and locked against a second writer. A NaN or infinite loss stops training with
    DivergenceError; `progress`: see :class:`Progress` (False: silent).
    """
    t0 = time.perf_counter()
    ds = as_dataset(data)
    if not isinstance(model, nn.Module):
        raise HparamError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if mask is not None and not isinstance(mask, Mask):
        raise HparamError(f"mask must be a pathnet.Mask or None, got {type(mask).__name__}")
    seed = check_seed(seed)
    for name, flag in (("deterministic", deterministic), ("amp", amp), ("compile", compile), ("overwrite", overwrite)):
        if not isinstance(flag, bool):
            raise HparamError(f"{name} must be True or False, got {flag!r}")
    progress_mode(progress)
    h = _hparams(model, ds, hparams, epochs, steps, overrides)
    dev = resolve_device(device)
    per_epoch = math.ceil(len(ds.train) / h.batch_size)
    total = Step.parse(h.duration, per_epoch).iteration
    eval_at = _step_at_least("eval_every", eval_every, per_epoch, 1)
    ckpt_at = _step_at_least("checkpoint_every", checkpoint_every, per_epoch, 1)
    start = _step_at_least("start_step", start_step, per_epoch, 0)
    if start >= total:
        raise HparamError(f"start_step={start_step!r} ({start} iterations) is not before the end of training "
                          f"({h.duration}, {total} iterations)")
    root = check_run_dir(run_dir) if run_dir is not None else None
    check_finite(model)
    with deterministic_mode(deterministic):
        channels_last, masked, masks = _prepare(model, mask, dev, channels_last)
        on_device = DeviceData(dev)  # train and test tensors copied to the device once
        train_set = on_device(ds.train)
        _check_fits(model, train_set, dev)
        manifest = train_manifest(model, mask, ds, h, seed=seed, deterministic=deterministic, start=start,
                                  eval_every=eval_at, amp=amp)
        with (bound(root, manifest, overwrite=overwrite) if root is not None else contextlib.nullcontext()):
            state = TrainState(model, _optimizer(model, h), h, ds, dev, start, total, per_epoch, root, seed=seed,
                               deterministic=deterministic)
            saver = Checkpoint(root, ckpt_at) if root is not None else None
            progress_cb = Progress(progress)
            state.callbacks = [*callbacks, StopOnDivergence(eval_at, ckpt_at), Evaluate(on_device(ds.test), eval_at),
                               progress_cb, *((MetricsWriter(root), saver) if saver else ())]
            torch.manual_seed(seed)
            if saver is not None and saver.restore(state):  # before any callback sees the state
                state.resumed_from = state.step
            try:
                _loop(state, model, saver, train_set, compile, amp, channels_last, masked, masks)
            finally:
                progress_cb.close()
            last = state.history[-1] if state.history and state.history[-1]["step"] == state.step else None
            test_loss, test_acc = (last["test_loss"], last["test_accuracy"]) if last else evaluate(model, ds.test, dev)
            weights = {k: v.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
                       for k, v in model.state_dict().items()}  # contiguous even from channels-last (safetensors needs it)
            result = TrainResult(state.history, test_acc, test_loss, weights, mask, h, state.step,
                                 round(time.perf_counter() - t0, 3), str(dev), seed, versions(), deterministic)
            if root is not None:
                write_json(root / "result.json", result.to_dict())
    return result


def _loop(state: TrainState, model: nn.Module, saver: Checkpoint | None, train_set, compile: bool, amp: bool,
          channels_last: bool, masked: list, masks: list) -> None:
    """Steps until the end (or a callback's stop): forward, backward, mask the gradients, step, callbacks."""
    h, dev, total, per_epoch, seed = state.hparams, state.device, state.total, state.per_epoch, state.seed
    forward = torch.compile(model) if compile else model
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if amp and dev.type == "cuda"
                else contextlib.nullcontext())
    optimizer = state.optimizer
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
