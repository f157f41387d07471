"""Test PSNR against latent size for the default model: how much the bottleneck costs.

Trains the registry's default model (constructor defaults, only `latent_channels` varied;
the latent is latent_channels×4×4 values per 3×32×32 image) with the default protocol on
the `unit` preset, the lr decayed by a cosine so that the last epoch has settled, and
plots the final test PSNR against the number of latent values into `docs/latent_psnr.png`.
All sizes get the same epochs and training images, which the title states: on a 2-core
CPU the sweep is short, so read it for the trend.

    python -m benchmarks.latent_sweep --epochs 2 --limit-train 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import header
from blendae.config import RunConfig
from blendae.data import load_blended
from blendae.evaluation import plots  # noqa: F401  # selects matplotlib's file-only backend
from blendae.files import atomic_write
from blendae.models import DEFAULT_MODEL
from blendae.training.loop import train

LATENT_CHANNELS = (8, 16, 32, 64, 128)
LATENT_HW = 4 * 4  # the default model downsamples 32×32 by 2^3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit-train", type=int, default=None, help="first N training images")
    parser.add_argument("--limit-test", type=int, default=None, help="first N test images")
    parser.add_argument("--latents", type=int, nargs="+", default=list(LATENT_CHANNELS))
    parser.add_argument("--out", type=Path, default=Path("docs/latent_psnr.png"))
    args = parser.parse_args()

    print(header(f"test PSNR vs latent size, model {DEFAULT_MODEL}, preset unit"))
    rows: list[tuple[int, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="blendae-sweep-") as tmp:
        for channels in args.latents:
            config = RunConfig(
                model=DEFAULT_MODEL,
                model_args={"latent_channels": channels},
                preset="unit",
                epochs=args.epochs,
                limit_train=args.limit_train,
                limit_test=args.limit_test,
                lr_schedule="cosine",  # a settled last epoch: short constant-lr runs jump ±2 dB
            )
            t0 = time.perf_counter()
            splits = load_blended(config.preset, mirror=config.mirror, cache=config.cache)
            last = train(config, Path(tmp) / f"latent{channels}", splits, progress=False)[-1]
            rows.append((channels, last["test_psnr"], last["test_ssim"], time.perf_counter() - t0))
            print(
                f"latent {channels:4d}x4x4 = {channels * LATENT_HW:5d} values: "
                f"PSNR {last['test_psnr']:.2f} dB, SSIM {last['test_ssim']:.4f}, "
                f"{rows[-1][3]:.0f} s",
                flush=True,
            )

    import matplotlib.pyplot as plt

    n_train = args.limit_train or 50_000
    values = [c * LATENT_HW for c, *_ in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(values, [r[1] for r in rows], "o-")
    for v, (c, psnr, *_) in zip(values, rows, strict=True):
        ax.annotate(f"{c}×4×4", (v, psnr), textcoords="offset points", xytext=(4, -12))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("latent values per 3×32×32 image (3,072 inputs)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title(
        f"{DEFAULT_MODEL} model, unit preset: {args.epochs} epochs (cosine lr) "
        f"on {n_train:,} training images"
    )
    ax.grid(alpha=0.3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda t: fig.savefig(t, format="png", dpi=120, bbox_inches="tight"))
    print(f"\n{'latent':>12s} {'values':>7s} {'PSNR dB':>8s} {'SSIM':>7s} {'seconds':>8s}")
    for (c, psnr, ssim, sec), v in zip(rows, values, strict=True):
        print(f"{c:6d}x4x4 {v:7d} {psnr:8.2f} {ssim:7.4f} {sec:8.0f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
