"""What the integer-exact decoder costs in quality, and in time, against the float one.

For every shipped model, on the last 1,000 training images (the validation split the zoo
was chosen on): the same quantized latents decoded by the float networks h_s, the context
and g_s and by their exact counterparts (what `decompress` runs), PSNR of each against the
originals and of one against the other, and the synthesis speed of each at batch 64.

Then the one-kernel path of the exact convolutions (0.10; `models/exact.py`), side by
side with the two weight digits that 0.3–0.9 always summed, in interleaved rounds: how
many images each layer runs on one kernel, the synthesis speed, and `decompress_batch`
over the 1,000 images' files (the general model at its default quality and 100, the
zoo's q3), with the same pixels checked.

    python -m benchmarks.exact_cost [--threads 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from benchmarks.common import header, interleaved
from blendae import codec
from blendae.data import load_blended, to_pixels
from blendae.models.exact import ExactConv


def psnr(a: Tensor, b: Tensor) -> float:
    mse = (a.clamp(0, 1) - b.clamp(0, 1)).pow(2).mean().item()
    return 10 * math.log10(1 / max(mse, 1e-20))


def per_second(fn, x: Tensor, repeats: int = 10) -> float:
    fn(x)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return repeats * len(x) / (time.perf_counter() - start)


@contextmanager
def two_digits() -> Iterator[None]:
    """Every exact convolution sums both weight digits, as 0.3–0.9 did for every image."""
    fits = ExactConv.fits
    ExactConv.fits = lambda self, a: False  # type: ignore[method-assign]
    try:
        yield
    finally:
        ExactConv.fits = fits  # type: ignore[method-assign]


@contextmanager
def counting(model: torch.nn.Module, counts: dict[str, list[int]]) -> Iterator[None]:
    """Count, per exact convolution of `model`, the images of the calls on one kernel, and
    all its images."""
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, ExactConv):
            fits = module.fits

            def record(a: Tensor, name: str = name, fits: Callable = fits) -> bool:
                ok = fits(a)
                seen = counts.setdefault(name, [0, 0])
                seen[0], seen[1] = seen[0] + ok * len(a), seen[1] + len(a)
                return ok

            module.fits = record  # type: ignore[method-assign]
            hooks.append(module)
    try:
        yield
    finally:
        for module in hooks:
            del module.fits


def one_kernel_speed(name: str, quality: int | None, images: list[np.ndarray], rounds: int) -> None:
    """Decoding `images`' files with and without the one-kernel path, interleaved."""
    files = codec.compress_batch(images, name, quality)
    model = codec.load_codec(name).model
    counts: dict[str, list[int]] = {}
    with counting(model, counts):
        fast = codec.decompress_batch(files, name)
    with two_digits():
        slow = codec.decompress_batch(files, name)
    same = all(np.array_equal(a, b) for a, b in zip(fast, slow, strict=True))

    def rate(digits: bool) -> float:
        start = time.perf_counter()
        if digits:
            with two_digits():
                codec.decompress_batch(files, name)
        else:
            codec.decompress_batch(files, name)
        return len(files) / (time.perf_counter() - start)

    runs = {"one kernel": lambda: rate(False), "two digits": lambda: rate(True)}
    rates = interleaved(runs, rounds)
    one, two = (statistics.median(rates[k]) for k in ("one kernel", "two digits"))
    share = ", ".join(f"{k.replace('_exact.layers.', '')} {a}/{n}" for k, (a, n) in counts.items())
    label = name if quality is None else f"{name} q{quality}"
    print(
        f"{label}: decompress_batch {one:.0f} vs {two:.0f} img/s with two digits always "
        f"({one / two:.2f}x, medians of {rounds}; same pixels: {same})\n"
        f"  images on one kernel per layer: {share}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(header("the exact decoder against the float one"))
    x = load_blended("unit", progress=False).train[-1000:]
    x = x.contiguous(memory_format=torch.channels_last)
    for name in codec.zoo_entries():
        model = codec.load_codec(name).model
        with torch.inference_mode():
            z_hat = model.entropy_bottleneck(model.h_a(model.g_a(x)))[0]
            y = model.g_a(x)
            # The means (with the context: the anchors' first) from each kind of network.
            y_hat = model._mean_scale(y, model.h_s_exact(z_hat), model._coded, exact=True)[0]
            y_float = model._mean_scale(
                y, model.h_s(z_hat), lambda v, m: torch.round(v - m) + m, exact=False
            )[0]
            exact = model.g_s_exact(y_hat)
            floating = model.g_s(y_float.contiguous(memory_format=torch.channels_last))
            batch = y_hat[:64].contiguous(memory_format=torch.channels_last)
            exact_speed = per_second(model.g_s_exact, batch)
            float_speed = per_second(model.g_s, batch)
            with two_digits():
                digits_speed = per_second(model.g_s_exact, batch)
        print(
            f"{name}: float {psnr(floating, x):.3f} dB, exact {psnr(exact, x):.3f} dB "
            f"(exact vs float {psnr(exact, floating):.1f} dB); synthesis {float_speed:.0f} "
            f"vs {exact_speed:.0f} img/s ({float_speed / exact_speed:.1f}x; two digits "
            f"always: {digits_speed:.0f} img/s)"
        )
    pixels = to_pixels(x, "unit").round().clamp(0, 255).to(torch.uint8)
    images = list(pixels.permute(0, 2, 3, 1).numpy())
    print()
    general = codec.load_codec("general")
    for name, quality in [("general", general.quality), ("general", 100), ("q3", None)]:
        one_kernel_speed(name, quality, images, args.rounds)


if __name__ == "__main__":
    main()
