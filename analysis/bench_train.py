"""Benchmark: time per training step of pathnet's masked training vs dense vs torch.nn.utils.prune.

Every variant trains through ``pn.train`` (the real loop: batches sliced on the device, lr set,
callbacks) on CIFAR-shaped random data resident on the device: dense (no mask), pathnet's masking
(gradients multiplied by the mask after backward, one fused kernel) and PyTorch's own pruning (a
forward pre-hook recomputing weight = weight_orig · mask on every forward). Models VGG-16 and
ResNet-20, batch 128 and 512, fp32 and (on CUDA) bf16 autocast.

A step is timed from the end of the previous step to its own end: CUDA events on CUDA (no
synchronisation while training), perf_counter on the CPU (synchronous there). Each variant first
runs an untimed warm-up; then the variants take turns in chunks of --chunk steps (round robin, so
drift and background load hit them alike) until each has --steps timed steps. Printed: median and
interquartile range of the step time, images per second at the median, the overhead over dense,
and peak memory (CUDA: torch.cuda.max_memory_allocated during the variant's steps, with every
variant's weights resident; CPU: the process's peak resident set, ru_maxrss, once at the end).

    OMP_WAIT_POLICY=PASSIVE python analysis/bench_train.py [--device auto] [--steps 200] [--chunk 25]
        [--models vgg16 resnet20] [--batch-sizes 128 512] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.utils.prune as tprune  # noqa: E402

import pathnet as pn  # noqa: E402
from pathnet.training import Callback  # noqa: E402
from pathnet.training.loop import resolve_device  # noqa: E402


class StepClock(Callback):
    """The end of every step: a CUDA event (read after the chunk) or perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda, self.marks = device.type == "cuda", []

    def on_step_end(self, state):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def step_ms(self) -> list[float]:
        """Milliseconds of every step after the first (whose start was not marked)."""
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        return [1000 * (b - a) for a, b in zip(self.marks, self.marks[1:])]


class Variant:
    """One model under one way of masking, trained chunk by chunk."""

    def __init__(self, label: str, model: torch.nn.Module, mask: pn.Mask | None, device: torch.device):
        self.label, self.model, self.mask, self.device = label, model, mask, device
        self.times: list[float] = []
        self.peak = 0

    def run(self, data, steps: int, batch_size: int, amp: bool, timed: bool) -> None:
        clock = StepClock(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        pn.train(self.model, self.mask, data, steps=f"{steps}it", batch_size=batch_size, device=str(self.device),
                 callbacks=[clock], progress=False, amp=amp, lr=0.01, eval_every=f"{steps}it",
                 checkpoint_every=f"{steps}it")
        if timed:
            self.times += clock.step_ms()
            if self.device.type == "cuda":
                self.peak = max(self.peak, torch.cuda.max_memory_allocated())


def variants(model_name: str, density: float, device: torch.device) -> list[Variant]:
    build = lambda: pn.models.get(model_name, seed=0)  # noqa: E731
    mask = pn.prune(build(), "random", density, seed=0)
    hooked = build()
    for name, module in hooked.named_modules():
        if f"{name}.weight" in mask:
            tprune.custom_from_mask(module, "weight", mask[f"{name}.weight"])
    return [Variant("dense", build(), None, device), Variant("pathnet mask", build(), mask, device),
            Variant("torch.nn.utils.prune", hooked, None, device)]


def bench(model_name: str, batch_size: int, amp: bool, args, device: torch.device) -> None:
    data = pn.data.get("synthetic", train_size=batch_size * args.chunk, test_size=batch_size)
    runs = variants(model_name, args.density, device)
    for v in runs:
        v.run(data, args.warmup, batch_size, amp, timed=False)
    while min(len(v.times) for v in runs) < args.steps:  # round robin
        for v in runs:
            v.run(data, args.chunk, batch_size, amp, timed=True)
    dense = statistics.median(runs[0].times)
    print(f"\n{model_name}, batch {batch_size}, {'bf16 autocast' if amp else 'fp32'}, density {args.density}, "
          f"{len(runs[0].times)} timed steps per variant")
    print(f"{'variant':22} {'median ms':>10} {'IQR ms':>8} {'images/s':>9} {'vs dense':>9}"
          + (f" {'peak MiB':>9}" if device.type == "cuda" else ""))
    for v in runs:
        q1, _, q3 = statistics.quantiles(v.times, n=4)
        med = statistics.median(v.times)
        print(f"{v.label:22} {med:>10.2f} {q3 - q1:>8.2f} {1000 * batch_size / med:>9.0f} "
              f"{100 * (med / dense - 1):>+8.1f}%" + (f" {v.peak / 2**20:>9.0f}" if device.type == "cuda" else ""),
              flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet20"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per variant (at least 200 on CUDA)")
    parser.add_argument("--chunk", type=int, default=25, help="steps per turn of the round robin")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps per variant first")
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cuda" and args.steps < 200:
        parser.error("--steps must be at least 200 on CUDA")
    if args.chunk < 2 or args.warmup < 1:
        parser.error("--chunk must be at least 2 and --warmup at least 1")
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    print(f"{name}; torch {torch.__version__}; {torch.get_num_threads()} CPU thread(s) "
          f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}); timer: "
          f"{'CUDA events' if device.type == 'cuda' else 'perf_counter'}")
    for model_name in args.models:
        for batch_size in args.batch_sizes:
            for amp in (False, True) if device.type == "cuda" else (False,):
                bench(model_name, batch_size, amp, args, device)
    if device.type == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        print(f"\npeak resident memory of the process (ru_maxrss): {peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
