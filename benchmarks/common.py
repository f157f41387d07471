"""Shared benchmark helpers: the machine header, FLOPs counted from layers, matmul peak.

Benchmarks print what they ran on and compare things measured in the same run, because
this project's reference machine has 2 shared cores and absolute timings drift.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor, nn

import blendae
from blendae.training.loop import cpu_has_bf16

T = TypeVar("T")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(title: str) -> str:
    """Lines naming the machine and versions, so every printed number has its context."""
    bf16 = cpu_has_bf16()
    lines = [
        f"# {title}",
        f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, "
        f"torch threads {torch.get_num_threads()}, CPU bf16 dot products: {bf16}",
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"blendae {blendae.__version__}, {torch.backends.cpu.get_cpu_capability()}",
    ]
    if torch.cuda.is_available():
        lines.append(f"cuda: {torch.cuda.get_device_name()}")
    return "\n".join(lines)


def count_macs(model: nn.Module, x: Tensor) -> int:
    """Multiply-accumulates of one forward pass on x, counted from each conv/linear layer.

    Conv2d: every output value costs (C_in/groups)·k_h·k_w MACs. ConvTranspose2d: every
    input value is scattered to (C_out/groups)·k_h·k_w outputs. Linear: in·out per row.
    Elementwise layers are ignored (they are memory-bound and well under 1 % of the MACs).
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.ConvTranspose2d):
            kh, kw = module.kernel_size
            total += inputs[0].numel() * (module.out_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


def train_flops_per_image(model: nn.Module, image_shape: tuple[int, ...] = (3, 32, 32)) -> float:
    """FLOPs of one training step per image: 2 per MAC, ×3 for forward + backward."""
    return 2.0 * 3 * count_macs(model, torch.zeros(1, *image_shape))


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 1024, seconds: float = 1.0) -> float:
    """Best GFLOP/s of an n×n matrix product over ~`seconds`: this machine's practical peak."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def interleaved(
    runs: dict[str, Callable[[], T]], rounds: int, alternate: bool = False
) -> dict[str, list[T]]:
    """Call each run once per round, in turn, so load from other processes hits all alike;
    `alternate`: each round in the other order than the last (where a run's place in the
    round moved its speed, as for subprocesses started one after the other here).

    Each run returns its result (e.g. a rate in images/s); the result lists one per round.
    """
    results: dict[str, list[T]] = {name: [] for name in runs}
    for i in range(rounds):
        order = list(runs.items())
        for name, run in order[::-1] if alternate and i % 2 else order:
            results[name].append(run())
    return results
