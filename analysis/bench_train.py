"""Benchmark: per-step time of masked training vs dense vs torch.nn.utils.prune.

Same model (VGG-16, CIFAR shapes), same synthetic batches, same loop (``pn.train``): dense (no
mask), pathnet's masking (gradients multiplied by the mask after backward), and PyTorch's own
pruning (a forward pre-hook recomputing weight = weight_orig · mask on every forward). Reports
the median step time after warm-up and the overhead over dense. Runs on the GPU when present.

    OMP_WAIT_POLICY=PASSIVE python analysis/bench_train.py [--steps 12] [--batch-size 32] [--device auto]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.utils.prune as tprune  # noqa: E402

import pathnet as pn  # noqa: E402
from pathnet.training import Callback  # noqa: E402
from pathnet.training.loop import resolve_device  # noqa: E402


class StepTimer(Callback):
    def __init__(self, device):
        self.device, self.times = device, []

    def on_step_end(self, state):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def step_time(model, mask, data, steps, batch_size, device, amp) -> float:
    timer = StepTimer(device)
    pn.train(model, mask, data, steps=f"{steps}it", batch_size=batch_size, device=str(device), callbacks=[timer],
             progress=False, amp=amp, eval_every=f"{10 * steps}it", checkpoint_every=f"{10 * steps}it")
    diffs = [b - a for a, b in zip(timer.times, timer.times[1:])][2:]  # skip warm-up
    return statistics.median(diffs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    data = pn.data.get("synthetic", train_size=args.batch_size * (args.steps + 1), test_size=args.batch_size)
    model = lambda: pn.models.get(args.model, seed=0)  # noqa: E731
    mask = pn.prune(model(), "random", args.density, seed=0)
    dense = step_time(model(), None, data, args.steps, args.batch_size, device, args.amp)
    masked = step_time(model(), mask, data, args.steps, args.batch_size, device, args.amp)
    hooked_model = model()
    for name, module in hooked_model.named_modules():
        if f"{name}.weight" in mask:
            tprune.custom_from_mask(module, "weight", mask[f"{name}.weight"])
    hooked = step_time(hooked_model, None, data, args.steps, args.batch_size, device, args.amp)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"{args.model}, batch {args.batch_size}, density {args.density}, {name}{', bf16 autocast' * args.amp}\n")
    print(f"{'variant':28} {'ms/step':>9} {'vs dense':>9}")
    for label, t in [("dense", dense), ("pathnet masked", masked), ("torch.nn.utils.prune", hooked)]:
        print(f"{label:28} {1000 * t:>9.2f} {100 * (t / dense - 1):>+8.1f}%")


if __name__ == "__main__":
    main()
