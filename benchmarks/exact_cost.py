"""What the integer-exact decoder costs in quality, and in time, against the float one.

For every shipped model, on the last 1,000 training images (the validation split the zoo
was chosen on): the same quantized latents decoded by the float networks h_s, the context
and g_s and by their exact counterparts (what `decompress` runs), PSNR of each against the
originals and of one against the other, and the synthesis speed of each at batch 64.

    python -m benchmarks.exact_cost [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import Tensor

from benchmarks.common import header
from blendae import codec
from blendae.data import load_blended


def psnr(a: Tensor, b: Tensor) -> float:
    mse = (a.clamp(0, 1) - b.clamp(0, 1)).pow(2).mean().item()
    return 10 * math.log10(1 / max(mse, 1e-20))


def per_second(fn, x: Tensor, repeats: int = 10) -> float:
    fn(x)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return repeats * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
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
        print(
            f"{name}: float {psnr(floating, x):.3f} dB, exact {psnr(exact, x):.3f} dB "
            f"(exact vs float {psnr(exact, floating):.1f} dB); synthesis {float_speed:.0f} "
            f"vs {exact_speed:.0f} img/s ({float_speed / exact_speed:.1f}x)"
        )


if __name__ == "__main__":
    main()
