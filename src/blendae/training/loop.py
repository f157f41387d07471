"""The training loop, top to bottom: setup → data → model → optimizer → resume → epochs.

Two protocols share everything but the inner step:
- `minibatch` (default): a fresh shuffle every epoch, Adam steps on mini-batches.
- `seed-fullbatch`: the study's loader wrapped the whole training tensor as one item, so
  each "epoch" was ONE Adam step on the gradient of the full 50,000-image MSE. We replay
  that exactly; the full batch is pushed through in chunks whose gradients are summed,
  which is the same step (up to float summation order) in a fraction of the memory.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from blendae.config import RunConfig
from blendae.data import load_blended, to_pixels
from blendae.errors import BlendaeError
from blendae.evaluation.metrics import evaluate
from blendae.files import atomic_write_text, ensure_dir
from blendae.models.registry import build_model, get_spec
from blendae.training import distributed
from blendae.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

log = logging.getLogger("blendae")

METRICS = "metrics.jsonl"
CONFIG = "config.json"
FULLBATCH_CHUNK = 2500  # images per forward/backward in seed-fullbatch; only memory depends on it


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The shuffle of epoch `epoch` depends only on (seed, epoch): resuming needs no RNG replay."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def lr_at(config: RunConfig, step: int, total_steps: int) -> float:
    """Learning rate at optimizer step `step` (0-based); cosine decays to lr/100."""
    if config.lr_schedule == "constant":
        return config.lr
    progress = min(step / max(total_steps, 1), 1.0)
    return config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def compute_loss(
    model: nn.Module, kind: str, x: Tensor, lmbda: float
) -> tuple[Tensor, dict[str, float]]:
    """MSE for autoencoders; λ·distortion + rate for codec models."""
    if kind == "codec":
        from blendae.codec.rd import rate_distortion_loss

        return rate_distortion_loss(model(x), x, lmbda)
    return F.mse_loss(model(x).float(), x), {}


def use_bf16(config: RunConfig, kind: str, device: torch.device) -> bool:
    """Whether training steps run under bf16 autocast.

    Only mini-batches, and only where bf16 pays off: CUDA, and CPUs with native bf16 dot
    products (AVX512-BF16, AMX; elsewhere bf16 is emulated and slower than float32).
    seed-fullbatch stays float32 to replay the study's arithmetic; codec models stay
    float32 on CPU until their rate term (likelihoods of noisy latents, 8-bit mantissas
    in bf16) is checked in bf16.
    """
    if not config.bf16 or config.protocol != "minibatch":
        return False
    if device.type == "cuda":
        return True
    cpu_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return cpu_bf16 and kind == "autoencoder"


def make_optimizer(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam, with torch's fused kernel where it has one (CPU, CUDA).

    Same algorithm, one kernel over all parameters instead of a loop of small ops per
    tensor: several times faster on CPU (`benchmarks/train_throughput.py` prints both).
    """
    return torch.optim.Adam(model.parameters(), lr=lr, fused=device.type in ("cpu", "cuda"))


def match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded Adam moments their parameter's strides (checkpoints store them contiguous).

    The fused kernel walks a parameter and its moments as flat memory, so a channels-last
    weight with contiguous moments would pair up the wrong elements.
    """
    for param, slots in optimizer.state.items():
        for key, value in slots.items():
            if isinstance(value, Tensor) and value.shape == param.shape:
                slots[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def forward_backward(
    model: nn.Module,
    kind: str,
    x: Tensor,
    *,
    lmbda: float,
    weight: float = 1.0,
    amp: bool,
    memory_format: torch.memory_format,
) -> tuple[float, dict[str, float]]:
    """Forward and backward on x, loss scaled by `weight`; returns the unscaled loss."""
    x = x.contiguous(memory_format=memory_format)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss, stats = compute_loss(model, kind, x, lmbda)
    (loss * weight).backward()
    return loss.item(), stats  # .item() is a sync point; once per step is cheap here


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    kind: str,
    x: Tensor,
    *,
    lmbda: float,
    amp: bool,
    memory_format: torch.memory_format,
) -> tuple[float, dict[str, float]]:
    """One mini-batch optimizer step: the loop's inner step, which benchmarks time as is."""
    optimizer.zero_grad(set_to_none=True)
    result = forward_backward(model, kind, x, lmbda=lmbda, amp=amp, memory_format=memory_format)
    optimizer.step()
    return result


def check_out_dir(out: Path, resume: bool) -> None:
    """Refuse to mix a new run into a folder that holds something already."""
    if resume:
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BlendaeError(
            f"output folder {out} is not empty; pass --resume to continue that run, "
            "or choose another --out"
        )


def write_metrics(out: Path, metrics: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl from the run's history, so it always matches the checkpoint."""
    atomic_write_text(out / METRICS, "".join(json.dumps(m) + "\n" for m in metrics))


def train(
    config: RunConfig,
    *,
    resume: bool = False,
    command: str = "",
    progress: bool = True,
    stop: Callable[[nn.Module, int], bool] | None = None,
) -> list[dict[str, Any]]:
    """Train (or resume) the run in `config.out`; returns the per-epoch metrics.

    `stop(model, step)` is asked on rank 0 after every optimizer step (time-to-quality
    benchmarks); True ends the run at once, without evaluating or saving that epoch.
    """
    # ---- setup -------------------------------------------------------------------------
    config.validate()
    out = Path(config.out)
    if distributed.is_main_process():  # other ranks would see rank 0's first files
        check_out_dir(out, resume)
    ctx = distributed.setup(config.device)
    try:
        return _train(
            config, out, ctx, resume=resume, command=command, progress=progress, stop=stop
        )
    finally:
        distributed.teardown(ctx)


def _train(
    config: RunConfig,
    out: Path,
    ctx: distributed.DistContext,
    *,
    resume: bool,
    command: str,
    progress: bool,
    stop: Callable[[nn.Module, int], bool] | None,
) -> list[dict[str, Any]]:
    device = ctx.device
    torch.manual_seed(config.seed)

    # ---- data --------------------------------------------------------------------------
    splits = load_blended(config.preset, mirror=config.mirror, cache=config.cache)
    x_train = splits.train[: config.limit_train].to(device)  # (N, 3, 32, 32)
    x_test = splits.test[: config.limit_test].to(device)
    n_train = len(x_train)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format

    # ---- model and optimizer -------------------------------------------------------------
    spec = get_spec(config.model)
    amp = use_bf16(config, spec.kind, device)
    model = build_model(config.model, **config.model_args).to(device, memory_format=memory_format)
    optimizer = make_optimizer(model, config.lr, device)
    metrics: list[dict[str, Any]] = []
    start_epoch = 1
    if resume:
        ckpt = load_checkpoint(out)
        model.load_state_dict(ckpt.model)
        optimizer.load_state_dict(ckpt.optimizer)
        match_param_layout(optimizer)
        torch.set_rng_state(ckpt.rng["torch"])
        metrics = ckpt.state["metrics"]
        start_epoch = ckpt.state["epoch"] + 1
        # The run's story: the command that started it, then each one that resumed it.
        history = [*ckpt.state["commands"], command]
    else:
        history = [command]
    machine = {  # what the epochs' `seconds` were measured on
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "world_size": ctx.world_size,
        "bf16": amp,
        "torch": torch.__version__,
    }
    ddp_model: nn.Module = model
    if ctx.enabled:
        ddp_model = DistributedDataParallel(model)

    if config.protocol == "seed-fullbatch":
        steps_per_epoch = 1
    else:
        if config.batch_size % ctx.world_size:
            raise BlendaeError(
                f"--batch-size {config.batch_size} must be divisible by the "
                f"{ctx.world_size} processes"
            )
        steps_per_epoch = math.ceil(
            (n_train // ctx.world_size) / (config.batch_size // ctx.world_size)
        )
    total_steps = steps_per_epoch * config.epochs

    if ctx.is_main:
        ensure_dir(out)
        atomic_write_text(out / CONFIG, config.to_json())
    distributed.barrier(ctx)

    # ---- epochs --------------------------------------------------------------------------
    for epoch in range(start_epoch, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        step = (epoch - 1) * steps_per_epoch
        stat_sums: dict[str, float] = {}
        if config.protocol == "seed-fullbatch":
            # One Adam step on the mean loss over the whole (rank's share of the) set.
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, step, total_steps)
            optimizer.zero_grad(set_to_none=True)
            shard = x_train[ctx.rank :: ctx.world_size]
            loss_sum = 0.0
            for i in range(0, len(shard), FULLBATCH_CHUNK):
                chunk = shard[i : i + FULLBATCH_CHUNK]
                # DDP averages gradients over ranks, so scale by world size to get the global mean.
                w = len(chunk) * ctx.world_size / n_train
                loss, stats = forward_backward(
                    ddp_model,
                    spec.kind,
                    chunk,
                    lmbda=config.lmbda,
                    weight=w,
                    amp=amp,
                    memory_format=memory_format,
                )
                loss_sum += loss * len(chunk)
                for k, v in stats.items():
                    stat_sums[k] = stat_sums.get(k, 0.0) + v * len(chunk)
            optimizer.step()
            seen = len(shard)
            stopped = _ask_stop(stop, model, step + 1, ctx)
        else:
            perm = torch.randperm(n_train, generator=epoch_generator(config.seed, epoch))
            per_rank = n_train // ctx.world_size
            perm = perm[ctx.rank * per_rank : (ctx.rank + 1) * per_rank].to(device)
            local_bs = config.batch_size // ctx.world_size
            loss_sum, seen, stopped = 0.0, 0, False
            bar = tqdm(
                range(0, per_rank, local_bs),
                desc=f"epoch {epoch}/{config.epochs}",
                leave=False,
                disable=not (progress and ctx.is_main),
            )
            for i in bar:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(config, step, total_steps)
                xb = x_train[perm[i : i + local_bs]]  # (B, 3, 32, 32)
                loss, stats = train_step(
                    ddp_model,
                    optimizer,
                    spec.kind,
                    xb,
                    lmbda=config.lmbda,
                    amp=amp,
                    memory_format=memory_format,
                )
                step += 1
                loss_sum += loss * len(xb)
                seen += len(xb)
                for k, v in stats.items():
                    stat_sums[k] = stat_sums.get(k, 0.0) + v * len(xb)
                if _ask_stop(stop, model, step, ctx):
                    stopped = True
                    break
        if stopped:
            break
        train_loss = distributed.all_sum(loss_sum, ctx) / distributed.all_sum(seen, ctx)
        train_stats = {
            f"train_{k}": distributed.all_sum(v, ctx) / distributed.all_sum(seen, ctx)
            for k, v in stat_sums.items()
        }

        # ---- evaluation, metrics and checkpoint (rank 0) ----------------------------------
        if ctx.is_main:
            model.eval()
            result = evaluate(
                lambda x: model(x.contiguous(memory_format=memory_format)),  # float32, as evaluate
                x_test,
                lambda x: to_pixels(x, config.preset),
                batch_size=config.eval_batch_size,
                device=device,
            )
            record = {
                "epoch": epoch,
                "train_loss": train_loss,
                **result,
                **train_stats,
                "seconds": time.perf_counter() - t0,
            }
            metrics.append(record)
            log.info(
                "epoch %d/%d  train %.4f  test %.4f  psnr %.2f dB  ssim %.4f  %.1fs",
                epoch,
                config.epochs,
                train_loss,
                result["test_loss"],
                result["test_psnr"],
                result["test_ssim"],
                record["seconds"],
            )
            if epoch == config.epochs and hasattr(model, "update"):
                model.update()  # freeze the codec's integer tables before the final save
            save_checkpoint(
                out,
                Checkpoint(
                    model=model.state_dict(),
                    optimizer=optimizer.state_dict(),
                    rng={"torch": torch.get_rng_state()},
                    state={
                        "epoch": epoch,
                        "config": config.__dict__,
                        "metrics": metrics,
                        "commands": history,
                        "machine": machine,
                    },
                ),
            )
            write_metrics(out, metrics)
        distributed.barrier(ctx)
    return metrics


def _ask_stop(
    stop: Callable[[nn.Module, int], bool] | None,
    model: nn.Module,
    step: int,
    ctx: distributed.DistContext,
) -> bool:
    """Rank 0 asks `stop`; every rank gets its answer (a collective only when there is a hook)."""
    if stop is None:
        return False
    verdict = ctx.is_main and stop(model, step)
    return distributed.all_sum(float(verdict), ctx) > 0
