"""Source separation on the 10,000 blended test images: per-source quality and speed.

For the "average" baseline (both sources predicted as the mixture itself) and each
separation model (the shipped one, and run folders given with --run): per-source PSNR of
the 8-bit estimates `blendae separate` writes, computed by its own inference path (PSNR of
the set's MSE, and the mean of per-image PSNRs), SSIM, and images per second at batch
1000. Writes a bar chart. The last line is exactly `separation-psnr C M` (shipped model,
set PSNR in dB, CIFAR then digit).

    python -m benchmarks.separation [--limit 10000] [--run runs/X ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.common import header
from blendae.data import load_blended
from blendae.evaluation.metrics import separation_scores
from blendae.evaluation.plots import comparison_rows, plot_rows, plt
from blendae.files import atomic_write
from blendae.separate import BATCH, SHIPPED, Separator, load_separator, separate_tensors


def to_u8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def baseline(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sources predicted as the mixture (the digit as its gray mean)."""
    return to_u8(x), to_u8(x.mean(dim=1, keepdim=True))


def images_per_second(separator: Separator, x: torch.Tensor, rounds: int = 3) -> float:
    """Best of `rounds` passes over x with `blendae separate`'s inference (8-bit output)."""
    separate_tensors(separator, x[:BATCH])  # warm-up
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        separate_tensors(separator, x)
        best = max(best, len(x) / (time.perf_counter() - t0))
    return best


def plot(rows: dict[str, dict[str, float]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(rows)
    width = 0.38
    for k, (key, label) in enumerate((("cifar", "CIFAR-10 image"), ("mnist", "digit"))):
        values = [rows[n][f"psnr_{key}"] for n in names]
        bars = ax.bar(
            [i + (k - 0.5) * width for i in range(len(names))], values, width, label=label
        )
        ax.bar_label(bars, fmt="%.1f")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("test PSNR of the set (dB)")
    ax.set_title("separating the 10,000 test blends")
    ax.legend()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=10_000, help="first N test blends")
    parser.add_argument("--run", action="append", default=[], help="a separation run folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mirror", help="dataset mirror (default: $BLENDAE_MIRROR)")
    parser.add_argument("--plot", type=Path, default=Path("docs/separation.png"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(header("separation of the blended test images (unit preset)"))

    splits = load_blended("unit", mirror=args.mirror, progress=False, sources=True)
    assert splits.sources is not None
    x = splits.test[: args.limit]
    truth = {"cifar": splits.sources["test"].cifar[: args.limit]}
    truth["mnist"] = splits.sources["test"].mnist[: args.limit]
    rows = {"average": separation_scores(*baseline(x), truth)}
    speeds = {"average": float("nan")}
    for name in [SHIPPED, *args.run]:
        separator = load_separator(None if name == SHIPPED else name)
        rows[name] = separation_scores(*separate_tensors(separator, x), truth)
        speeds[name] = images_per_second(separator, x)
    print(f"{len(x):,} test blends; estimates rounded to 8 bits; {args.threads} threads")
    print(
        f"{'model':>12} {'CIFAR dB':>9} {'digit dB':>9} {'per-image':>17} {'SSIM':>13} {'img/s':>8}"
    )
    for name, r in rows.items():
        print(
            f"{name:>12} {r['psnr_cifar']:9.2f} {r['psnr_mnist']:9.2f} "
            f"{r['psnr_cifar_per_image']:8.2f} {r['psnr_mnist_per_image']:8.2f} "
            f"{r['ssim_cifar']:6.4f} {r['ssim_mnist']:6.4f} {speeds[name]:8.0f}"
        )
    plot(rows, args.plot)
    examples = args.plot.with_name(args.plot.stem + "-examples.png")
    shown = {"x": x[:8], "cifar": truth["cifar"][:8], "mnist": truth["mnist"][:8]}
    shipped_model = load_separator(None).model
    plot_rows(comparison_rows(shipped_model, shown, "unit"), examples, "the shipped separator")
    print(f"wrote {args.plot} and {examples}")
    shipped = rows[SHIPPED]
    print(f"separation-psnr {shipped['psnr_cifar']:.2f} {shipped['psnr_mnist']:.2f}")


if __name__ == "__main__":
    main()
