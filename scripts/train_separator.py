"""Train the zoo's `separate` model: UNetSeparator on unit-preset CIFAR-10/MNIST blends.

The recorded recipe (issue #11). Run from the repository root with the venv active:

    BLENDAE_MIRROR=/path/to/mirror python scripts/train_separator.py OUT_DIR

Writes OUT_DIR/separate.safetensors (float16 weights, the model's state_dict keys) and
OUT_DIR/separate.json (architecture, recipe, validation curve, final test metrics). The
validation split is the last `--val` of the 50,000 training pairs; the test set is
evaluated once, after training. One torch thread throughout, as it was measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from pytorch_msssim import ssim
from safetensors.torch import load_file, save_file
from torch import Tensor

from blendae.data import fetch, resolve_cache, resolve_mirror
from blendae.data.blend import mnist_to_rgb32
from blendae.data.formats import read_cifar, read_mnist
from blendae.models.separation import UNetSeparator

TRAIN_PAIRS = 50_000


def load_sources(mirror: str | None, cache: str | None) -> dict[str, tuple[Tensor, Tensor]]:
    """{"train", "test"}: (CIFAR (N, 3, 32, 32), digit (N, 1, 32, 32)), float32 in [0, 1]."""
    root = resolve_cache(cache)
    files = {
        **fetch("mnist", mirror=mirror, cache=root),
        **fetch("cifar10-binary", mirror=mirror, cache=root),
    }
    out = {}
    for split in ("train", "test"):
        cifar, _ = read_cifar(files, split, "binary")
        digits, _ = read_mnist(files, split)
        n = len(cifar)  # train pairs MNIST train[:50000] with the 50,000 CIFAR images
        out[split] = (
            torch.from_numpy(cifar).float().div_(255),
            mnist_to_rgb32(digits[:n])[:, :1].contiguous(),
        )
    return out


def blend(cifar: Tensor, digit: Tensor) -> Tensor:
    """The unit-preset blend (c + d) / 2, channels-last (measured faster on CPU)."""
    return ((cifar + digit) / 2).contiguous(memory_format=torch.channels_last)


def psnr(mse: Tensor) -> Tensor:
    return 10 * torch.log10(255**2 / mse.clamp(min=1e-10))


@torch.no_grad()
def evaluate(model: UNetSeparator, cifar: Tensor, digit: Tensor, full: bool = False) -> dict:
    """Per-source PSNR (0–255, estimates rounded to uint8) and, if `full`, SSIM and mixture error.

    psnr_* is the PSNR of the set-mean MSE; psnr_*_mean_per_image the mean of per-image PSNRs.
    References: CIFAR's own uint8 pixels; the digit's float pixels (bilinear resize), 1 channel.
    """
    model.eval()
    per_image: dict[str, list[Tensor]] = {"cifar": [], "mnist": []}
    ssims: dict[str, list[Tensor]] = {"cifar": [], "mnist": []}
    mix_err = 0.0
    for i in range(0, len(cifar), 1000):
        c, d = cifar[i : i + 1000], digit[i : i + 1000]
        m = blend(c, d)
        sources = model(m)["sources"]
        for name, ref in (("cifar", c), ("mnist", d)):
            est8 = (sources[name] * 255).round()
            per_image[name].append((est8 - ref * 255).pow(2).mean((1, 2, 3)))
            if full:
                ssims[name].append(ssim(est8, ref * 255, data_range=255, size_average=False))
        if full:
            c8, d8 = ((sources[k] * 255).round() for k in ("cifar", "mnist"))
            mix_err = max(mix_err, ((c8 + d8) / 2 - m * 255).abs().max().item())
    model.train()
    out = {}
    for name, parts in per_image.items():
        mse = torch.cat(parts)
        out[f"psnr_{name}"] = psnr(mse.mean()).item()
        out[f"psnr_{name}_mean_per_image"] = psnr(mse).mean().item()
        if full:
            out[f"ssim_{name}"] = torch.cat(ssims[name]).mean().item()
    if full:
        out["max_mixture_error_gray_levels"] = mix_err
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder for separate.safetensors and separate.json")
    p.add_argument("--mirror", default=None, help="dataset mirror (default: $BLENDAE_MIRROR)")
    p.add_argument("--cache", default=None, help="cache root (default: $BLENDAE_CACHE)")
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--convs", type=int, default=2)
    p.add_argument("--epochs", type=int, default=45)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--val", type=int, default=5000, help="last VAL training pairs held out")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)

    data = load_sources(resolve_mirror(a.mirror), a.cache)
    cifar, digit = data["train"]
    n = TRAIN_PAIRS - a.val
    train_c, train_d, val_c, val_d = cifar[:n], digit[:n], cifar[n:], digit[n:]

    model_args = {"widths": a.widths, "convs": a.convs}
    model = UNetSeparator(**model_args).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    steps_per_epoch = n // a.batch_size
    total = a.epochs * steps_per_epoch
    gen = torch.Generator().manual_seed(a.seed)
    history = []
    t0, c0 = time.perf_counter(), time.process_time()
    step = 0
    for epoch in range(1, a.epochs + 1):
        # Fresh random pairs every epoch: a blend of any CIFAR image with any digit is as
        # valid a training example as the fixed i-with-i pairs, so the data never repeats.
        order_c, order_d = torch.randperm(n, generator=gen), torch.randperm(n, generator=gen)
        for b in range(steps_per_epoch):
            batch = slice(b * a.batch_size, (b + 1) * a.batch_size)
            c, d = train_c[order_c[batch]], train_d[order_d[batch]]
            warm = min(1.0, (step + 1) / a.warmup_steps)
            for group in opt.param_groups:
                group["lr"] = a.lr * warm * 0.5 * (1 + math.cos(math.pi * step / total))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
                estimate = model(blend(c, d))["sources"]["mnist"]
            # ĉ − c = d − d̂ in every channel, so this one loss is the loss on both sources.
            loss = (estimate.float() - d).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        val = evaluate(model, val_c, val_d)
        history.append({"epoch": epoch, "seconds": time.perf_counter() - t0, **val})
        print(json.dumps(history[-1]), flush=True)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0

    a.out.mkdir(parents=True, exist_ok=True)
    weights = a.out / "separate.safetensors"
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, weights)
    test_c, test_d = data["test"]
    test_fp32 = evaluate(model, test_c, test_d, full=True)
    shipped = UNetSeparator(**model_args).to(memory_format=torch.channels_last)
    shipped.load_state_dict({k: v.float() for k, v in load_file(weights).items()})
    test = evaluate(shipped, test_c, test_d, full=True)
    record = {
        "name": "separate",
        "model": "unet-sep",
        "model_class": UNetSeparator.__name__,
        "model_args": model_args,
        "preset": UNetSeparator.preset,
        "torch": torch.__version__,
        "training": {
            "train_pairs": f"first {n:,} of the 50,000 training pairs (CIFAR-10 train with "
            "MNIST train[:50000]), randomly re-paired every epoch",
            "validation_pairs": f"last {a.val:,} training pairs, image i with digit i",
            "optimizer": "Adam",
            "lr": a.lr,
            "lr_schedule": f"linear warmup {a.warmup_steps} steps, cosine to 0 over all steps",
            "batch_size": a.batch_size,
            "epochs": a.epochs,
            "steps": total,
            "loss": "MSE of the 1-channel digit estimate (equals the CIFAR error per channel)",
            "autocast": "bfloat16" if a.bf16 else None,
            "memory_format": "channels_last",
            "seed": a.seed,
            "threads": torch.get_num_threads(),
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
        },
        "validation": history,
        "test": {
            **test,
            "weights": "float16 safetensors reloaded into float32",
            "psnr_cifar_before_float16": test_fp32["psnr_cifar"],
            "psnr_mnist_before_float16": test_fp32["psnr_mnist"],
            "pixels": "0–255; estimates rounded to uint8; digit on its 1 channel (3 identical "
            "channels give the same PSNR and SSIM); SSIM: pytorch_msssim.ssim, data_range=255; "
            "mixture error: max |(ĉ + d̂) / 2 − 255·m| over the test pixels, ĉ and d̂ rounded",
            "pairs": "the 10,000 test pairs, image i with digit i",
        },
    }
    (a.out / "separate.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["test"], indent=2))


if __name__ == "__main__":
    main()
