"""Training throughput: a tutorial PyTorch loop against blendae's own training step.

(a) the loop most tutorials teach: a per-sample `Dataset`, `DataLoader(batch_size=32,
shuffle=True)`, the seed model in NCHW float32, Adam; (b) `blendae.training.loop.train_step`,
the very function `blendae train` calls, with the loop's defaults (channels-last, bf16
autocast where the CPU has bf16 dot products, fused Adam) and its batch selection (one
tensor indexed by a shuffled permutation), at batch 32 (the default, which blendae
recommends) and at 256, the kernels' throughput ceiling. A float32 matrix product is
timed in every round as the machine's practical peak (and a bf16 one, the ceiling of
(b)'s bf16 kernels), so contention from other processes hits runs and peaks alike. The
last line is `ratio R`, with R the median over rounds of (b)/(a) at batch 32.

    python -m benchmarks.train_throughput            # ~3 minutes
    python -m benchmarks.train_throughput --quick    # < 60 s
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from statistics import median

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import header, interleaved, matmul_gflops, train_flops_per_image
from blendae.config import RunConfig
from blendae.data import load_blended
from blendae.models import DEFAULT_MODEL, build_model
from blendae.training.loop import make_optimizer, train_step, use_bf16
from blendae.training.losses import objective_for

# blendae recommends its default batch (32): at 128 or 256 the kernels run faster, but on
# 10,000 images x 3 epochs the seed model ends 3.5-6.8 dB lower in test PSNR (lr scaled
# up or not), more than the speed buys back. 256 is measured as the throughput ceiling.
RECOMMENDED_BATCH = RunConfig().batch_size
LARGE_BATCH = 256


class ImageDataset(Dataset[Tensor]):
    """The tutorial's per-sample dataset: one image per `__getitem__`, collated per batch."""

    def __init__(self, x: Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Tensor:
        return self.x[i]


def tutorial_runner(x_train: Tensor) -> Callable[[int], float]:
    """(a): returns run(steps) -> images/s of the tutorial loop."""
    model = build_model("seed")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(ImageDataset(x_train), batch_size=32, shuffle=True)
    batches: Iterator[Tensor] = iter(())

    def run(steps: int) -> float:
        nonlocal batches
        n = 0
        t0 = time.perf_counter()
        for _ in range(steps):
            xb = next(batches, None)
            if xb is None:  # a new epoch: a new shuffle, as in the tutorial
                batches = iter(loader)
                xb = next(batches)
            optimizer.zero_grad()
            loss = F.mse_loss(model(xb)["x_hat"], xb)
            loss.backward()
            optimizer.step()
            n += len(xb)
        return n / (time.perf_counter() - t0)

    return run


def blendae_runner(x_train: Tensor, batch_size: int) -> Callable[[int], float]:
    """(b): returns run(steps) -> images/s of blendae's `train_step` with `train`'s defaults."""
    config = RunConfig(model="seed", batch_size=batch_size)
    device = torch.device(config.device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = build_model("seed").to(device, memory_format=memory_format)
    amp = use_bf16(config, model, device)
    objective = objective_for(model, "seed", config.lmbda, config.preset)  # as `train`
    optimizer = make_optimizer(model, config.lr, device)  # as `train`
    perm = torch.randperm(len(x_train))
    pos = 0

    def run(steps: int) -> float:
        nonlocal perm, pos
        n = 0
        t0 = time.perf_counter()
        for _ in range(steps):
            if pos + batch_size > len(perm):
                perm, pos = torch.randperm(len(x_train)), 0
            xb = x_train[perm[pos : pos + batch_size]]  # as the loop selects a batch
            pos += batch_size
            train_step(model, optimizer, {"x": xb}, objective, amp=amp, memory_format=memory_format)
            n += len(xb)
        return n / (time.perf_counter() - t0)

    return run


def adam_step_ms(model_name: str, fused: bool, steps: int = 200) -> float:
    """Milliseconds per Adam step on the model's parameters (random gradients), per-tensor
    loop (`torch.optim.Adam`'s CPU default) or fused: what `make_optimizer`'s choice saves."""
    model = build_model(model_name)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    for _ in range(5):
        optimizer.step()
    t0 = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - t0) / steps * 1e3


def timed(run: Callable[[int], float], seconds: float) -> Callable[[], float]:
    """Calibrate a step count that takes about `seconds`, then return a zero-argument run."""
    run(3)  # warm-up: oneDNN picks and caches kernels for these shapes
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds / 2:  # bounded in time, however slow a step is
        run(1)
        steps += 1
    steps = max(3, round(2 * steps))
    return lambda: run(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (< 60 s)")
    parser.add_argument("--rounds", type=int, help="timed rounds (default: 3 quick, 7 full)")
    parser.add_argument("--seconds", type=float, help="seconds per run per round")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=LARGE_BATCH,
        help="a larger batch also measured for (b): the throughput ceiling of the kernels",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads (default: torch's choice, one per core); 1 steadies timings "
        "when other processes share the cores",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = args.rounds or (3 if args.quick else 7)
    seconds = args.seconds or (1.0 if args.quick else 4.0)

    print(header("training throughput: tutorial loop (a) vs blendae's train_step (b)"))
    x_train = load_blended("seed").train  # (50000, 3, 32, 32) float32, the study's preset
    flops = train_flops_per_image(build_model("seed"))
    amp = use_bf16(RunConfig(model="seed"), build_model("seed"), torch.device("cpu"))
    print(
        f"data: real blended training set {tuple(x_train.shape)}; model seed, "
        f"{flops / 1e6:.2f} MFLOP per image per training step (conv MACs x2, x3 fwd+bwd)\n"
        f"(b) uses channels-last, bf16 autocast {'on' if amp else 'off'}; "
        f"{rounds} rounds of ~{seconds:g} s per run, interleaved; medians over rounds"
    )
    torch.manual_seed(0)
    bs = args.batch_size
    runs = {
        "(a) tutorial loop, batch 32": timed(tutorial_runner(x_train), seconds),
        f"(b) blendae step, batch {RECOMMENDED_BATCH}": timed(
            blendae_runner(x_train, RECOMMENDED_BATCH), seconds
        ),
        f"(b) blendae step, batch {bs}": timed(blendae_runner(x_train, bs), seconds),
        "fp32 matmul peak": lambda: matmul_gflops(torch.float32, seconds=min(seconds, 1.0)),
        "bf16 matmul peak": lambda: matmul_gflops(torch.bfloat16, seconds=min(seconds, 1.0)),
    }
    rates = interleaved(runs, rounds)
    peaks = rates.pop("fp32 matmul peak")
    peak = median(peaks)
    bf16_peak = median(rates.pop("bf16 matmul peak"))

    print(f"\n{'run':32s} {'images/s':>9s} {'min':>7s} {'max':>7s} {'GFLOP/s':>8s} {'% peak':>7s}")
    for name, values in rates.items():
        # % of peak per round (the peak timed in that same round), then the median
        pct = median([100 * v * flops / 1e9 / p for v, p in zip(values, peaks, strict=True)])
        print(
            f"{name:32s} {median(values):9.0f} {min(values):7.0f} {max(values):7.0f} "
            f"{median(values) * flops / 1e9:8.1f} {pct:6.1f}%"
        )
    print(
        f"fp32 matmul peak (1024^3, every round): median {peak:.1f} GFLOP/s "
        f"[{min(peaks):.1f}-{max(peaks):.1f}]; bf16 matmul (the ceiling of (b)'s bf16 kernels): "
        f"median {bf16_peak:.1f} GFLOP/s"
    )
    names = list(rates)
    ratios = [b / a for a, b in zip(rates[names[0]], rates[names[1]], strict=True)]
    ratios_big = [b / a for a, b in zip(rates[names[0]], rates[names[2]], strict=True)]
    print(
        f"ratio (b)/(a) at batch 32 per round: {', '.join(f'{r:.2f}' for r in ratios)}\n"
        f"ratio (b, batch {bs})/(a): median {median(ratios_big):.2f}"
    )
    for name in ("seed", DEFAULT_MODEL):
        print(
            f"Adam step, {name} model: {adam_step_ms(name, fused=False):.2f} ms per-tensor "
            f"(the tutorial's), {adam_step_ms(name, fused=True):.2f} ms fused (blendae's)"
        )
    print(f"ratio {median(ratios):.2f}")


if __name__ == "__main__":
    main()
