"""How much of each source the reconstruction autoencoders' latents keep: probes on frozen encoders.

Each test image is a blend m = (c + d) / 2 of a CIFAR-10 image c and an MNIST digit d (gray
copied to RGB), both in [0, 1] (the `unit` preset). The `seed` and the default `conv`
autoencoders are trained to reconstruct m (`blendae.training.loop.train`, cosine lr), then
frozen; their encoders give a 64×4×4 latent y per blend. Two heads are fitted on the
training latents to predict the two sources separately, c (3 channels) and d (1 gray
channel, copied to 3 for scoring):

- linear: the best linear map from the flattened latent to both sources (ridge
  regression in closed form; its penalty chosen per source on a validation split);
- conv: three stride-2 transposed convolutions 4×4 → 32×32, the seed decoder's shape with
  4 output channels, trained with Adam on c and d (the epoch with the lowest validation
  error kept).

The same heads on the mixture's own pixels (m rearranged losslessly to 192×4×4 by
pixel-unshuffle, so the conv head sees the same 4×4 grid) show what the latent adds or
loses against the input. The validation split is the last `--val` training pairs; the
test pairs (the 10,000 CIFAR-10 with the 10,000 MNIST test images) are scored once.
PSNR is in pixel space (0–255, predictions clamped to [0, 1]): of the mean MSE over the
set ("set") and the mean of per-image PSNRs ("img", capped at 100 dB as in evaluation).

    python -m benchmarks.latent_probe --epochs 1 --head-epochs 1 --limit-train 5000 \
        --limit-test 1000 --val 1000 --out /tmp/latent_probe.png
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import header
from blendae.config import RunConfig
from blendae.data import BlendedSplits, fetch, load_blended, resolve_cache, resolve_mirror
from blendae.data.blend import mnist_to_rgb32
from blendae.data.formats import read_cifar, read_mnist
from blendae.errors import BlendaeError
from blendae.evaluation import plots  # noqa: F401  # selects matplotlib's file-only backend
from blendae.evaluation.metrics import psnr_per_image
from blendae.files import atomic_write
from blendae.runs import load_model
from blendae.training.loop import train

MODELS = ("seed", "conv")
SOURCES = ("CIFAR", "MNIST")
RIDGE_ALPHAS = tuple(10.0**k for k in range(-8, 1))  # × the mean eigenvalue of XᵀX
_CHUNK = 2_500  # images per encoder / solver chunk: bounds temporary memory


# ---- data: the blends and their two sources ---------------------------------------------------
def sources(files: dict[str, Path], split: str) -> Tensor:
    """(N, 4, 32, 32) float32 in [0, 1]: CIFAR-10 image i (3 channels), MNIST digit i (gray).

    Paired as `blendae.data.blend` pairs them: train the 50,000 CIFAR-10 images with MNIST
    train[:50,000], test the 10,000 with the 10,000.
    """
    cifar, _ = read_cifar(files, split)
    mnist, _ = read_mnist(files, split)
    y = torch.empty((len(cifar), 4, 32, 32))
    for i in range(0, len(cifar), _CHUNK):
        part = slice(i, i + _CHUNK)
        y[part, :3] = torch.as_tensor(cifar[part]).float().div_(255)
        y[part, 3:] = mnist_to_rgb32(mnist[part])[:, :1]
    return y


def check_blend(m: Tensor, y: Tensor) -> None:
    """The cached blends must be (c + d) / 2 of the sources built here, pair by pair."""
    err = (m - (y[:, :3] + y[:, 3:]) / 2).abs().max().item()
    if err > 1e-6:
        raise BlendaeError(f"the cached unit blend differs from (c + d) / 2 by {err:.2e}")


# ---- scoring ----------------------------------------------------------------------------------
def pixel_psnr(x_hat: Tensor, x: Tensor) -> tuple[float, float]:
    """(PSNR of the set's mean MSE, mean per-image PSNR) of images in [0, 1], at 0–255;
    x_hat is clamped to [0, 1] first."""
    p, p_hat = x * 255, x_hat.clamp(0, 1) * 255
    mse = (p.double() - p_hat.double()).pow(2).mean().item()
    per_image = psnr_per_image(p, p_hat).clamp(max=100.0).mean().item()
    return 10 * math.log10(255**2 / mse), per_image


def psnrs(y_hat: Tensor, y: Tensor) -> dict[str, tuple[float, float]]:
    """`pixel_psnr` per source of (N, 4, 32, 32) [c, d] stacks (d's one channel stands for
    its three equal RGB channels, which give the same numbers)."""
    return {
        name: pixel_psnr(y_hat[:, ch], y[:, ch])
        for name, ch in zip(SOURCES, (slice(0, 3), slice(3, 4)), strict=True)
    }


# ---- features: frozen latents, or the mixture's pixels on the same 4×4 grid -------------------
@torch.no_grad()
def encode(encoder: nn.Module, m: Tensor) -> Tensor:
    """Latents of the blends m (N, 3, 32, 32) → (N, C, h, w), in chunks."""
    return torch.cat([encoder(m[i : i + _CHUNK]) for i in range(0, len(m), _CHUNK)])


def pixel_grid(m: Tensor, size: int) -> Tensor:
    """The mixture itself, rearranged losslessly: (N, 3, 32, 32) → (N, 3·(32/size)², size, size)."""
    return F.pixel_unshuffle(m, 32 // size)


# ---- head (a): the best linear map, ridge in closed form --------------------------------------
def ridge_probe(
    x: Tensor, y: Tensor, xv: Tensor, yv: Tensor, xt: Tensor
) -> tuple[Tensor, dict[str, float]]:
    """Fit y ≈ x W + b on (x, y), choose the ridge penalty per source on (xv, yv), predict xt.

    x: (N, ...) features, y: (N, 4, 32, 32) targets. The Gram matrix is summed in float64 and
    diagonalised once, so every penalty costs one matrix product. Returns the test
    predictions (Nt, 4, 32, 32) and the chosen α (penalty / mean eigenvalue) per source.
    """
    x, xv, xt, yf, yvf = x.flatten(1), xv.flatten(1), xt.flatten(1), y.flatten(1), yv.flatten(1)
    mx, my = x.mean(0, dtype=torch.float64).float(), yf.mean(0, dtype=torch.float64).float()
    gram = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    cross = torch.zeros(x.shape[1], yf.shape[1], dtype=torch.float64)
    for i in range(0, len(x), _CHUNK):  # float32 products per chunk, float64 sums
        xc = x[i : i + _CHUNK] - mx
        gram += (xc.T @ xc).double()
        cross += (xc.T @ (yf[i : i + _CHUNK] - my)).double()
    s, v = torch.linalg.eigh(gram)  # gram = v diag(s) vᵀ
    s = s.clamp(min=0)
    q = (v.T @ cross).float()  # (F, 4096): the solution for penalty λ is v diag(1/(s+λ)) q
    v = v.float()
    pv = (xv - mx) @ v  # (Nv, F)
    per_pixel = 32 * 32
    cols = {"CIFAR": slice(0, 3 * per_pixel), "MNIST": slice(3 * per_pixel, 4 * per_pixel)}
    best: dict[str, tuple[float, float]] = {}  # source → (validation MSE, α)
    for alpha in RIDGE_ALPHAS:
        scale = (1 / (s + alpha * s.mean())).float()
        pred = (pv * scale) @ q + my  # (Nv, 4096)
        for name, c in cols.items():
            mse = (pred[:, c].clamp(0, 1) - yvf[:, c]).pow(2).mean().item()
            if name not in best or mse < best[name][0]:
                best[name] = (mse, alpha)
    pt = (xt - mx) @ v
    y_hat = torch.empty(len(xt), yf.shape[1])
    for name, c in cols.items():
        scale = (1 / (s + best[name][1] * s.mean())).float()
        y_hat[:, c] = (pt * scale) @ q[:, c] + my[c]
    return y_hat.view(-1, 4, 32, 32), {name: a for name, (_, a) in best.items()}


# ---- head (b): a small conv decoder, trained ---------------------------------------------------
def conv_head(c_in: int, size: int, width: int = 64) -> nn.Sequential:
    """Stride-2 transposed convolutions size → 32 (three for 4×4), widths halving from
    `width`, LeakyReLU between: the seed decoder's shape with 4 outputs (c: 3, d: 1)."""
    stages = round(math.log2(32 // size))
    if size * 2**stages != 32:
        raise BlendaeError(f"a latent of {size}×{size} does not upsample to 32×32 by 2^k")
    layers: list[nn.Module] = []
    prev = c_in
    for i in range(stages):
        last = i == stages - 1
        out = 4 if last else width >> i
        layers.append(nn.ConvTranspose2d(prev, out, 4, stride=2, padding=1))
        if not last:
            layers.append(nn.LeakyReLU())
        prev = out
    return nn.Sequential(*layers)


def source_loss(y_hat: Tensor, y: Tensor) -> Tensor:
    """MSE of c plus MSE of d: both sources weigh the same."""
    return F.mse_loss(y_hat[:, :3], y[:, :3]) + F.mse_loss(y_hat[:, 3:], y[:, 3:])


@torch.no_grad()
def predict(head: nn.Module, x: Tensor) -> Tensor:
    return torch.cat([head(x[i : i + _CHUNK]) for i in range(0, len(x), _CHUNK)])


def conv_probe(
    x: Tensor,
    y: Tensor,
    xv: Tensor,
    yv: Tensor,
    xt: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> tuple[Tensor, int]:
    """Train `conv_head` on (x, y) with Adam (cosine lr), keep the epoch with the lowest
    validation loss, predict xt. Returns the predictions and the epoch kept."""
    torch.manual_seed(seed)
    head = conv_head(x.shape[1], x.shape[-1])
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 100)
    best = (math.inf, 0, {k: t.clone() for k, t in head.state_dict().items()})
    for epoch in range(1, epochs + 1):
        head.train()
        for idx in torch.randperm(len(x)).split(batch_size):
            loss = source_loss(head(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        head.eval()
        val = source_loss(predict(head, xv).clamp(0, 1), yv).item()
        if val < best[0]:
            best = (val, epoch, {k: t.clone() for k, t in head.state_dict().items()})
    head.load_state_dict(best[2])
    head.eval()
    return predict(head, xt), best[1]


# ---- the autoencoders --------------------------------------------------------------------------
def autoencoder(
    name: str, run: Path | None, args: argparse.Namespace, splits: BlendedSplits, tmp: Path
) -> nn.Module:
    """The trained model `name`: loaded from `run`, or trained now into `tmp`."""
    if run is None:
        config = RunConfig(
            model=name,
            preset="unit",
            mirror=args.mirror,
            cache=args.cache,
            epochs=args.epochs,
            limit_train=args.limit_train,
            limit_test=args.limit_test,
            lr_schedule="cosine",  # a settled last epoch
            tensorboard=False,
        )
        run = tmp / name
        t0 = time.perf_counter()
        last = train(config, run, splits, progress=False)[-1]
        print(
            f"trained {name}: {args.epochs} epochs, test PSNR {last['test_psnr']:.2f} dB, "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    config, model = load_model(run)
    if config.preset != "unit":
        raise BlendaeError(
            f"{run} was trained on the {config.preset!r} preset; the probe needs blends of "
            "[0, 1] sources: train it with --preset unit"
        )
    if not isinstance(getattr(model, "encoder", None), nn.Module):
        raise BlendaeError(f"{run} holds a {config.model!r} model with no `encoder` to probe")
    return model


# ---- the report -------------------------------------------------------------------------------
def plot(
    rows: list[tuple[str, str, dict[str, tuple[float, float]]]], title: str, out: Path
) -> None:
    """Grouped bars: set PSNR of c and of d for every (head, input)."""
    import matplotlib.pyplot as plt

    labels = [f"{head}\n{inp}" if head != "average" else "average\n(m, m)" for head, inp, _ in rows]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.38
    for k, (src, colour) in enumerate(zip(SOURCES, ("tab:blue", "tab:orange"), strict=True)):
        xs = [i + (k - 0.5) * width for i in range(len(rows))]
        vals = [r[2][src][0] for r in rows]
        bars = ax.bar(xs, vals, width, label=f"{src} source", color=colour)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("test PSNR of the source (dB)")
    ax.set_title(title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda t: fig.savefig(t, format="png", dpi=120, bbox_inches="tight"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", default=None, help="dataset mirror (default $BLENDAE_MIRROR)")
    parser.add_argument("--cache", default=None, help="cache folder (default $BLENDAE_CACHE)")
    parser.add_argument("--epochs", type=int, default=3, help="autoencoder epochs (cosine lr)")
    parser.add_argument("--head-epochs", type=int, default=6, help="conv head epochs")
    parser.add_argument("--head-batch", type=int, default=64)
    parser.add_argument("--head-lr", type=float, default=2e-3)
    parser.add_argument("--limit-train", type=int, default=None, help="first N training pairs")
    parser.add_argument("--limit-test", type=int, default=None, help="first N test pairs")
    parser.add_argument("--val", type=int, default=5000, help="last N training pairs: validation")
    parser.add_argument("--seed-run", type=Path, default=None, help="a trained seed run folder")
    parser.add_argument("--conv-run", type=Path, default=None, help="a trained conv run folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("docs/latent_probe.png"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    print(header("source probes on frozen autoencoder latents, preset unit"))
    mirror, cache = resolve_mirror(args.mirror), resolve_cache(args.cache)
    args.mirror, args.cache = mirror, str(cache)
    files = {
        **fetch("mnist", mirror=mirror, cache=cache, progress=False),
        **fetch("cifar10-binary", mirror=mirror, cache=cache, progress=False),
    }
    splits = load_blended("unit", mirror=mirror, cache=cache, progress=False)
    m, mt = splits.train[: args.limit_train], splits.test[: args.limit_test]
    y, yt = sources(files, "train")[: len(m)], sources(files, "test")[: len(mt)]
    check_blend(m, y)
    check_blend(mt, yt)
    if not 0 < args.val < len(m):
        raise BlendaeError(f"--val {args.val} must be between 1 and {len(m) - 1} training pairs")
    fit, val = slice(0, len(m) - args.val), slice(len(m) - args.val, len(m))
    print(
        f"pairs: {fit.stop:,} fit, {args.val:,} validation, {len(mt):,} test; autoencoders "
        f"{args.epochs} epochs on {len(m):,} blends; conv head {args.head_epochs} epochs",
        flush=True,
    )

    rows: list[tuple[str, str, dict[str, tuple[float, float]]]] = []
    rows.append(("average", "(m, m)", psnrs(torch.cat([mt, mt[:, :1]], 1), yt)))
    recon: dict[str, tuple[float, float]] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="blendae-probe-") as tmp:
        features: dict[str, tuple[Tensor, Tensor]] = {}
        for name, run in zip(MODELS, (args.seed_run, args.conv_run), strict=True):
            model = autoencoder(name, run, args, splits, Path(tmp))
            with torch.no_grad():
                x_hat = torch.cat(
                    [model(mt[i : i + _CHUNK])["x_hat"] for i in range(0, len(mt), _CHUNK)]
                )
            recon[name] = pixel_psnr(x_hat, mt)
            features[f"{name} latent"] = (encode(model.encoder, m), encode(model.encoder, mt))
    size = features["seed latent"][0].shape[-1]
    features = {"mixture pixels": (pixel_grid(m, size), pixel_grid(mt, size)), **features}

    for inp, (x, xt) in features.items():
        t0 = time.perf_counter()
        y_hat, alphas = ridge_probe(x[fit], y[fit], x[val], y[val], xt)
        rows.append(("linear", inp, psnrs(y_hat, yt)))
        t1 = time.perf_counter()
        y_hat, kept = conv_probe(
            x[fit],
            y[fit],
            x[val],
            y[val],
            xt,
            epochs=args.head_epochs,
            batch_size=args.head_batch,
            lr=args.head_lr,
            seed=0,
        )
        rows.append(("conv head", inp, psnrs(y_hat, yt)))
        notes.append(
            f"{inp} {tuple(x.shape[1:])}: ridge α CIFAR {alphas['CIFAR']:.0e}, "
            f"MNIST {alphas['MNIST']:.0e} ({t1 - t0:.0f} s); conv head kept epoch {kept} "
            f"({time.perf_counter() - t1:.0f} s)"
        )
        print(notes[-1], flush=True)

    rows.sort(key=lambda r: ("average", "linear", "conv head").index(r[0]))
    print(
        "\nautoencoders' reconstruction of m, test: "
        + ", ".join(f"{k} {s:.2f} dB set / {i:.2f} dB img" for k, (s, i) in recon.items())
    )
    print("\n| head | input | CIFAR set | CIFAR img | MNIST set | MNIST img |")
    print("| --- | --- | --- | --- | --- | --- |")
    for head, inp, r in rows:
        c, d = r["CIFAR"], r["MNIST"]
        print(f"| {head} | {inp} | {c[0]:.2f} | {c[1]:.2f} | {d[0]:.2f} | {d[1]:.2f} |")
    title = (
        "sources read from frozen autoencoder latents, test set PSNR\n"
        f"autoencoders {args.epochs} epochs on {len(m):,} blends, reconstruction of m: "
        + ", ".join(f"{k} {s:.1f} dB" for k, (s, _) in recon.items())
        + f"; heads fitted on {fit.stop:,} pairs, {len(mt):,} test pairs"
    )
    plot(rows, title, args.out)
    print(f"\nwrote {args.out}; {time.perf_counter() - t_start:.0f} s in all")
    conv = {inp: r for head, inp, r in rows if head == "conv head"}
    summary = (
        f"{k} {conv[f'{k} latent']['CIFAR'][0]:.2f} {conv[f'{k} latent']['MNIST'][0]:.2f}"
        for k in MODELS
    )
    print("latent-probe " + " ".join(summary))


if __name__ == "__main__":
    main()
