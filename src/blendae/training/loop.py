"""The training loop, top to bottom: folder → model → optimizer → resume → epochs.

Two protocols share everything but the inner step:
- `minibatch` (default): a fresh shuffle every epoch, Adam steps on mini-batches.
- `seed-fullbatch`: the study's loader wrapped the whole training tensor as one item, so
  each "epoch" was ONE Adam step on the gradient of the full 50,000-image MSE. We replay
  that exactly; the full batch is pushed through in chunks whose gradients are summed,
  which is the same step (up to float summation order) in a fraction of the memory.

The data comes in as a `blendae.data.Data` (any `--data` spec; a `BlendedSplits` is the
study's): evaluation tensors, and a training set that makes each batch from image indices.
The run folder is read and written only through `blendae.runs`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from blendae import runs
from blendae.config import RunConfig
from blendae.data import BlendedSplits, Data, Space, to_pixels
from blendae.data.mix import TrainSet
from blendae.errors import BlendaeError
from blendae.evaluation.metrics import measure
from blendae.evaluation.plots import comparison_rows, grid_image
from blendae.models import CompressionModel, SeparationModel, build_model
from blendae.models.calibrate import calibrate
from blendae.models.hyperprior import MeanScaleHyperprior
from blendae.training import distributed
from blendae.training.losses import Objective, objective_for
from blendae.training.tensorboard import TensorBoardLogger, tensorboard_available

log = logging.getLogger("blendae")

StopHook = Callable[[nn.Module, int], bool]
COLLAPSE_DB = 10.0  # a test PSNR this far below the run's best stops it: training collapsed
ESTIMATE_STEPS = 5  # training steps timed (on a copy) for the first whole-run estimate
# A finished hyperprior codec's exact decoders are calibrated on this many pixels of training
# images (384 of 32×32: 16 s for a gained model, 22–27 s for a fixed-rate one, on 2 cores), a
# variable-rate one's spread over these qualities.
CALIBRATION_PIXELS = 384 * 32 * 32
CALIBRATION_QUALITIES = (0, 20, 40, 60, 80, 100)


# ---- small pure helpers -------------------------------------------------------------------
def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The shuffle of epoch `epoch` depends only on (seed, epoch): resuming needs no RNG replay."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def lr_at(config: RunConfig, step: int, total_steps: int) -> float:
    """Learning rate at optimizer step `step` (0-based); cosine decays to lr/100."""
    if config.lr_schedule == "constant":
        return config.lr
    progress = min(step / max(total_steps, 1), 1.0)
    return config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def use_bf16(config: RunConfig, model: nn.Module, device: torch.device) -> bool:
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
    return cpu_has_bf16() and not isinstance(model, CompressionModel)


def cpu_has_bf16() -> bool:
    """Native bf16 dot products on this CPU (AVX512-BF16 or AMX)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def make_optimizer(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam, with torch's fused kernel where it has one (CPU, CUDA).

    Same algorithm, one kernel over all parameters instead of a loop of small ops per
    tensor: several times faster on CPU (`benchmarks/train_throughput.py` prints both).
    Parameters a model names in its `lr_scale` ({name: factor}) form their own group, at
    that factor times every learning rate of the schedule.
    """
    scales: dict[str, float] = getattr(model, "lr_scale", {})
    groups: dict[float, list[nn.Parameter]] = {1.0: []}  # the unscaled group first
    for name, param in model.named_parameters():
        groups.setdefault(scales.get(name, 1.0), []).append(param)
    return torch.optim.Adam(
        [{"params": ps, "lr": lr * s, "lr_scale": s} for s, ps in groups.items() if ps],
        lr=lr,
        fused=device.type in ("cpu", "cuda"),
    )


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
    batch: dict[str, Tensor],
    objective: Objective,
    *,
    weight: float = 1.0,
    amp: bool,
    memory_format: torch.memory_format,
) -> tuple[float, dict[str, float]]:
    """Forward and backward on a batch, loss scaled by `weight`; returns the unscaled loss."""
    x = batch["x"].contiguous(memory_format=memory_format)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss, stats = objective(model(x), batch)
    (loss * weight).backward()
    return loss.item(), stats  # .item() is a sync point; once per step is cheap here


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, Tensor],
    objective: Objective,
    *,
    amp: bool,
    memory_format: torch.memory_format,
    clip_grad: float | None = None,
) -> tuple[float, dict[str, float]]:
    """One mini-batch optimizer step: the loop's inner step, which benchmarks time as is."""
    optimizer.zero_grad(set_to_none=True)
    result = forward_backward(model, batch, objective, amp=amp, memory_format=memory_format)
    optimizer_step(model, optimizer, clip_grad)
    return result


def optimizer_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, clip_grad: float | None
) -> None:
    """The optimizer step, after clipping the gradient's norm to `clip_grad` if given."""
    if clip_grad is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    optimizer.step()


def check_model(model: nn.Module, name: str, sample: Tensor) -> None:
    """Run one image through a freshly built model: arguments that build a model unable to
    take this data (e.g. `in_channels: 1`) fail here, as one clear error, before any file
    is written."""
    try:
        with torch.no_grad():
            out = model(sample)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise BlendaeError(
            f"model {name!r} with these --model-args cannot take {tuple(sample.shape[1:])} "
            f"images: {first}"
        ) from exc
    if out["x_hat"].shape != sample.shape:
        raise BlendaeError(
            f"model {name!r} with these --model-args returns {tuple(out['x_hat'].shape[1:])} "
            f"images for {tuple(sample.shape[1:])} inputs"
        )


# ---- the state of one training session -----------------------------------------------------
@dataclass
class Session:
    """Everything the epochs share: set up once by `_start`, then advanced epoch by epoch."""

    config: RunConfig
    run_dir: Path
    ctx: distributed.DistContext
    model: nn.Module
    ddp_model: nn.Module
    optimizer: torch.optim.Optimizer
    objective: Objective
    amp: bool
    memory_format: torch.memory_format
    steps_per_epoch: int
    start_epoch: int
    space: Space  # the data's input space: pixels for PSNR, SSIM and image grids
    metrics: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)  # commands, machine
    tensorboard: TensorBoardLogger | None = None  # rank 0, when on and installed
    collapsed: str = ""  # rank 0's message when test PSNR collapsed (the epoch is not saved)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.config.epochs

    def set_lr(self, step: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.config, step, self.total_steps) * group.get("lr_scale", 1.0)


@dataclass
class EpochSums:
    """Loss and statistics summed over the images one rank saw in an epoch."""

    loss: float = 0.0
    seen: int = 0
    stats: dict[str, float] = field(default_factory=dict)
    stopped: bool = False

    def add(self, loss: float, stats: dict[str, float], n: int) -> None:
        self.loss += loss * n
        self.seen += n
        for k, v in stats.items():
            self.stats[k] = self.stats.get(k, 0.0) + v * n


def _check_finite_loss(loss: float, epoch: int, step: int, s: Session) -> None:
    """Stop at the first non-finite loss; the checkpoint on disk is the last good epoch's."""
    if not math.isfinite(loss):
        kept = f"the checkpoint of epoch {s.metrics[-1]['epoch']}" if s.metrics else "no checkpoint"
        raise BlendaeError(
            f"training diverged: loss {loss} at epoch {epoch}, step {step}; {kept} is kept; "
            "try a lower --lr (or --lr-schedule cosine)"
        )


# ---- the two protocols' epochs ---------------------------------------------------------------
def _fullbatch_epoch(s: Session, train: TrainSet, epoch: int, stop: StopHook | None) -> EpochSums:
    """One Adam step on the mean loss over the whole (rank's share of the) training set."""
    sums = EpochSums()
    step = (epoch - 1) * s.steps_per_epoch
    s.set_lr(step)
    s.optimizer.zero_grad(set_to_none=True)
    n_train = len(train)
    shard = torch.arange(s.ctx.rank, n_train, s.ctx.world_size)
    for i in range(0, len(shard), s.config.fullbatch_chunk):
        chunk = train.batch(shard[i : i + s.config.fullbatch_chunk], epoch, i)
        n = len(chunk["x"])
        # DDP averages gradients over ranks, so scale by world size to get the global mean.
        weight = n * s.ctx.world_size / n_train
        loss, stats = forward_backward(
            s.ddp_model,
            chunk,
            s.objective,
            weight=weight,
            amp=s.amp,
            memory_format=s.memory_format,
        )
        _check_finite_loss(loss, epoch, step + 1, s)
        sums.add(loss, stats, n)
    optimizer_step(s.model, s.optimizer, s.config.clip_grad)
    sums.stopped = _ask_stop(stop, s.model, step + 1, s.ctx)
    return sums


def _minibatch_epoch(
    s: Session, train: TrainSet, epoch: int, progress: bool, stop: StopHook | None
) -> EpochSums:
    """A fresh shuffle of (this rank's share of) the training set, one Adam step per batch."""
    sums = EpochSums()
    n_train, world = len(train), s.ctx.world_size
    per_rank, local_bs = n_train // world, s.config.batch_size // world
    perm = torch.randperm(n_train, generator=epoch_generator(s.config.seed, epoch))
    perm = perm[s.ctx.rank * per_rank : (s.ctx.rank + 1) * per_rank].to(s.ctx.device)
    step = (epoch - 1) * s.steps_per_epoch
    batches = tqdm(
        range(0, per_rank, local_bs),
        desc=f"epoch {epoch}/{s.config.epochs}",
        leave=False,
        # Bars on a terminal only: a log file would get megabytes of bar updates.
        disable=not (progress and s.ctx.is_main and sys.stderr.isatty()),
    )
    for i in batches:
        s.set_lr(step)
        idx = perm[i : i + local_bs]
        batch = train.batch(idx, epoch, step)  # "x": (B, C, S, S), sources if any
        loss, stats = train_step(
            s.ddp_model,
            s.optimizer,
            batch,
            s.objective,
            amp=s.amp,
            memory_format=s.memory_format,
            clip_grad=s.config.clip_grad,
        )
        step += 1
        _check_finite_loss(loss, epoch, step, s)
        sums.add(loss, stats, len(idx))
        if _ask_stop(stop, s.model, step, s.ctx):
            sums.stopped = True
            break
    return sums


def estimate_seconds(s: Session, train: TrainSet) -> float:
    """Rough time of the session's remaining training steps, from a few steps of a copy of
    the model and optimizer (the run itself, its RNG included, is left untouched)."""
    rng = torch.get_rng_state()
    model = copy.deepcopy(s.model)
    optimizer = make_optimizer(model, s.config.lr, s.ctx.device)
    batch = train.batch(
        torch.arange(min(len(train), s.config.batch_size // s.ctx.world_size)), 0, 0
    )
    seconds = 0.0
    for k in range(ESTIMATE_STEPS + 1):  # the first step warms up, untimed
        t0 = time.perf_counter()
        train_step(model, optimizer, batch, s.objective, amp=s.amp, memory_format=s.memory_format)
        seconds += (time.perf_counter() - t0) * (k > 0)
    torch.set_rng_state(rng)
    epochs_left = s.config.epochs - s.start_epoch + 1
    return seconds / ESTIMATE_STEPS * s.steps_per_epoch * epochs_left


def _ask_stop(
    stop: StopHook | None, model: nn.Module, step: int, ctx: distributed.DistContext
) -> bool:
    """Rank 0 asks `stop`; every rank gets its answer (a collective only when there is a hook)."""
    if stop is None:
        return False
    verdict = ctx.is_main and stop(model, step)
    return distributed.all_sum(float(verdict), ctx) > 0


# ---- set-up, bookkeeping and the loop ---------------------------------------------------------
def _start(
    config: RunConfig,
    run_dir: Path,
    ctx: distributed.DistContext,
    n_train: int,
    sample: Tensor,
    data: Data,
    *,
    resume: bool,
    command: str,
) -> Session:
    """Build the model and optimizer, restore them on resume, and write config.json."""
    device = ctx.device
    torch.manual_seed(config.seed)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = build_model(config.model, **runs.model_args(config, data.channels))
    if config.init_from and not resume:
        fresh = runs.init_from(model, Path(config.init_from))
        log.info("started from %s; new: %s", config.init_from, ", ".join(fresh) or "nothing")
    check_model(model, config.model, sample)
    objective = objective_for(model, config.model, config.lmbda, config.preset)
    model = model.to(device, memory_format=memory_format)
    optimizer = make_optimizer(model, config.lr, device)
    amp = use_bf16(config, model, device)
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
    s = Session(
        config,
        run_dir,
        ctx,
        model,
        model,
        optimizer,
        objective,
        amp,
        memory_format,
        steps_per_epoch,
        1,
        data.space,
    )
    s.state = _state(ctx, amp, data, command)
    if resume:
        ckpt = runs.load_checkpoint(run_dir)
        model.load_state_dict(ckpt.model)
        if "calibration" in ckpt.state:  # a finished codec trains on from its tracked ranges
            _restore_tracked_ranges(model, ckpt.state["calibration"], run_dir)
        optimizer.load_state_dict(ckpt.optimizer)
        match_param_layout(optimizer)
        torch.set_rng_state(ckpt.rng["torch"])
        s.metrics = ckpt.state["metrics"]
        s.start_epoch = ckpt.state["epoch"] + 1
        # The run's story: the command that started it, then each one that resumed it.
        s.state["commands"] = [*ckpt.state.get("commands", []), command]
    if ctx.enabled:
        s.ddp_model = DistributedDataParallel(model)
    if ctx.is_main:
        runs.save_config(run_dir, config)
        if config.tensorboard and tensorboard_available():
            hparams = dataclasses.asdict(config)
            s.tensorboard = TensorBoardLogger(run_dir / runs.TENSORBOARD, hparams, s.start_epoch)
        elif config.tensorboard:
            log.info("no TensorBoard events: pip install 'blendae[tensorboard]' to get them")
    distributed.barrier(ctx)
    return s


def _restore_tracked_ranges(model: nn.Module, record: Any, run_dir: Path) -> None:
    """Put back the ranges training had tracked before the run's end calibrated them."""
    try:
        ranges = record["trained_ranges"]
        names = {k for k in model.state_dict() if k.endswith(".amax")}
        if set(ranges) != names:
            raise ValueError(f"it names {len(ranges)} ranges, the model has {len(names)}")
        for name, value in ranges.items():
            if not (isinstance(value, float) and 0 <= value < math.inf):
                raise ValueError(f"range {name} is {value!r}")
            model.get_buffer(name).fill_(value)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BlendaeError(
            f"checkpoint {run_dir} is damaged (its calibration record: {exc}); delete it to "
            "start over"
        ) from exc


def _state(ctx: distributed.DistContext, amp: bool, data: Data, command: str) -> dict[str, Any]:
    """What the checkpoint records besides tensors: the commands, the machine the epochs'
    `seconds` were measured on, and the data (its input space and channels)."""
    machine = {
        "device": str(ctx.device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "world_size": ctx.world_size,
        "bf16": amp,
        "torch": torch.__version__,
    }
    return {
        "commands": [command],
        "machine": machine,
        "space": data.space.to_dict(),
        "channels": data.channels,
        "data": data.manifest,
    }


def _announce(s: Session, n_train: int, resume: bool, estimate: Callable[[], float]) -> None:
    """The first line of a session: finished, resuming, or what it trains and for how long."""
    config = s.config
    if s.start_epoch > config.epochs:
        log.info(
            "%s is finished (%d of %d epochs); to train it further, resume it with "
            "a larger --epochs",
            s.run_dir,
            s.start_epoch - 1,
            config.epochs,
        )
    elif resume:
        log.info("resuming %s at epoch %d of %d", s.run_dir, s.start_epoch, config.epochs)
    else:
        rough = (
            f"roughly {_duration(estimate())} of training steps"
            if config.protocol == "minibatch" and s.ctx.is_main
            else "one full-batch step per epoch"
        )
        log.info(
            "training %s on %s (%s preset) on %d images for %d epochs into %s: %s "
            "(evaluation adds to that); each epoch's line gives the ETA",
            config.model,
            config.data,
            config.preset,
            n_train,
            config.epochs,
            s.run_dir,
            rough,
        )


def _duration(seconds: float) -> str:
    """1h02m, 3m07s or 42s: a whole-run time at a glance."""
    m, sec = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


def _calibrate(s: Session, train: TrainSet) -> dict[str, Any]:
    """Choose the exact decoders' activation ranges on training images spread over the
    training set (`models.calibrate`): training sets each range from the largest value it
    saw, and one wild batch leaves it too wide for the common values. → what to record."""
    model = s.model
    h, w = train.batch(torch.arange(1), 0, 0)["x"].shape[-2:]
    count = min(len(train), max(16, CALIBRATION_PIXELS // (h * w)))
    x = train.batch(torch.linspace(0, len(train) - 1, count).round().long(), 0, 0)["x"]
    x = x.detach().float().cpu()
    qualities = CALIBRATION_QUALITIES if model.variable_rate else (None,)
    cases = [(x[i :: len(qualities)], q) for i, q in enumerate(qualities) if i < len(x)]
    t0 = time.perf_counter()
    result = calibrate(model, cases, pixels=lambda t: to_pixels(t, s.space))
    seconds = time.perf_counter() - t0
    log.info(
        "calibrated the exact decoders on %d training images in %.0f s: y's bits %+.2f %%, "
        "mean PSNR %.2f -> %.2f dB",
        count,
        seconds,
        100 * (2 ** (result.bits_after - result.bits_before) - 1),
        result.psnr_before,
        result.psnr_after,
    )
    return {
        "images": count,
        "qualities": list(qualities),
        "mean_log2_bits": [round(result.bits_before, 5), round(result.bits_after, 5)],
        "mean_psnr": [round(result.psnr_before, 4), round(result.psnr_after, 4)],
        "seconds": round(seconds, 1),
        # what training had tracked: a resumed run goes on from these, as an uninterrupted
        # one does (`_start`)
        "trained_ranges": result.ranges_before,
    }


def _end_epoch(
    s: Session,
    epoch: int,
    sums: EpochSums,
    test: dict[str, Tensor],
    train: TrainSet,
    seconds_from: float,
) -> None:
    """Reduce the epoch's sums, evaluate, log, and save metrics and checkpoint (rank 0)."""
    train_seconds = time.perf_counter() - seconds_from
    seen = distributed.all_sum(sums.seen, s.ctx)
    train_loss = distributed.all_sum(sums.loss, s.ctx) / seen
    train_stats = {
        f"train_{k}": distributed.all_sum(v, s.ctx) / seen for k, v in sums.stats.items()
    }
    if not s.ctx.is_main:
        return
    s.model.eval()
    result = measure(s.model, test, s.config, s.space, s.memory_format, s.ctx.device)
    record = {
        "epoch": epoch,
        "train_loss": train_loss,
        **result,
        **train_stats,
        "seconds": time.perf_counter() - seconds_from,
    }
    s.metrics.append(record)
    session = s.metrics[s.start_epoch - 1 :]  # the epochs this command trained
    per_epoch = sum(m["seconds"] for m in session) / len(session)
    log.info(
        "epoch %d/%d  train %.4f  %s %.4f  psnr %.2f dB  ssim %.4f  %.1fs  elapsed %s  ETA %s",
        epoch,
        s.config.epochs,
        train_loss,
        "test" if s.config.val is None else "val",
        result["test_loss"],
        result["test_psnr"],
        result["test_ssim"],
        record["seconds"],
        _duration(sum(m["seconds"] for m in session)),
        _duration(per_epoch * (s.config.epochs - epoch)),
    )
    if s.tensorboard is not None:
        shown = {k: v[:8] for k, v in test.items()}
        rows = comparison_rows(s.model, shown, s.space, s.memory_format)
        s.tensorboard.log_epoch(
            record,
            lr=s.optimizer.param_groups[0]["lr"],
            images_per_second=seen / train_seconds,
            grids={"examples": grid_image(rows)},
        )
    best = max(s.metrics[:-1], key=lambda m: m["test_psnr"], default=None)
    if best is not None and result["test_psnr"] < best["test_psnr"] - COLLAPSE_DB:
        s.metrics.pop()
        s.collapsed = (
            f"test PSNR collapsed from {best['test_psnr']:.2f} dB (epoch {best['epoch']}) to "
            f"{result['test_psnr']:.2f} dB at epoch {epoch}; the checkpoint of epoch "
            f"{epoch - 1} is kept; resume it with --clip-grad 1, or train again with a lower --lr"
        )
        return
    if epoch == s.config.epochs and isinstance(s.model, CompressionModel):
        # Freeze the codec's integer tables before the final save; they are made on the CPU.
        device = next(s.model.parameters()).device
        s.model.cpu().update()
        if isinstance(s.model, MeanScaleHyperprior):
            s.state["calibration"] = _calibrate(s, train)
        s.model.to(device)
    checkpoint = runs.Checkpoint(
        model=s.model.state_dict(),
        optimizer=s.optimizer.state_dict(),
        rng={"torch": torch.get_rng_state()},
        state={"epoch": epoch, "metrics": s.metrics, **s.state},
    )
    runs.save_checkpoint(s.run_dir, checkpoint)
    runs.write_metrics(s.run_dir, s.metrics)


def _split(
    data: Data, config: RunConfig, device: torch.device
) -> tuple[TrainSet, dict[str, Tensor]]:
    """(training set, evaluation tensors): the test split; with `val`, the data's own
    validation split (a folder's) or else the last `val` training images (the training set
    then ends before them)."""
    limit, seed = config.limit_train, config.seed
    if config.val is None:
        return data.train_set(limit, None, seed, device), data.tensors(
            "test", config.limit_test, device
        )
    if data.has_val_split:
        return data.train_set(limit, None, seed, device), data.tensors("val", config.val, device)
    n = data.length("train") - config.val
    if n < 1:
        raise BlendaeError(
            f"--val {config.val} leaves no training images (the split has {n + config.val})"
        )
    return data.train_set(limit, n, seed, device), data.tensors("train", None, device, start=n)


def plan_run(config: RunConfig, run_dir: Path, resume: bool, is_main: bool = True) -> bool:
    """Whether training continues a checkpoint, after checking the folder (rank 0 alone).

    A folder holding only a config (a run stopped before its first epoch ended) restarts
    from epoch 1, with or without --resume; one holding anything else needs --resume.
    """
    if runs.has_checkpoint(run_dir):
        if not resume:
            raise BlendaeError(
                f"{run_dir} holds a run already; pass --resume to continue it, or choose "
                "another --out"
            )
        if is_main:
            runs.check_resume(runs.load_config(run_dir), config)
        return True
    if is_main and run_dir.exists():
        if not run_dir.is_dir():
            raise BlendaeError(f"--out {run_dir} is a file; choose a folder")
        others = sorted(p.name for p in run_dir.iterdir() if not runs.is_restartable(p))
        if others:
            raise BlendaeError(
                f"output folder {run_dir} is not empty ({', '.join(others[:3])}) and holds no "
                "checkpoint to resume; choose another --out"
            )
    return False


def train(
    config: RunConfig,
    run_dir: Path,
    splits: Data | BlendedSplits,
    *,
    resume: bool = False,
    command: str = "",
    progress: bool = True,
    stop: StopHook | None = None,
) -> list[dict[str, Any]]:
    """Train (or resume) the run in folder `run_dir` on `splits`; returns per-epoch metrics.

    `stop(model, step)` is asked on rank 0 after every optimizer step (time-to-quality
    benchmarks); True ends the run at once, without evaluating or saving that epoch.
    """
    config.validate()
    plan_run(config, run_dir, resume, distributed.is_main_process())  # fail before the lock
    ctx = distributed.setup(config.device)
    try:
        with runs.lock(run_dir) if ctx.is_main else contextlib.nullcontext():
            continues = plan_run(config, run_dir, resume, ctx.is_main)  # again, under the lock
            if resume and not continues and ctx.is_main:
                log.info("%s has no checkpoint yet: starting it from epoch 1", run_dir)
            resume = continues
            data = Data.of(splits)
            train, test = _split(data, config, ctx.device)
            sample = train.batch(torch.arange(1), 0, 0)
            s = _start(
                config, run_dir, ctx, len(train), sample["x"].cpu(), data, resume=resume,
                command=command,
            )  # fmt: skip
            if isinstance(s.model, SeparationModel) and "cifar" not in sample:
                raise BlendaeError(
                    f"model {config.model!r} separates blends: train it on data with their "
                    "sources (load_data(..., sources=True))"
                )
            _announce(s, len(train), resume, lambda: estimate_seconds(s, train))
            for epoch in range(s.start_epoch, config.epochs + 1):
                t0 = time.perf_counter()
                s.model.train()
                if config.protocol == "seed-fullbatch":
                    sums = _fullbatch_epoch(s, train, epoch, stop)
                else:
                    sums = _minibatch_epoch(s, train, epoch, progress, stop)
                if sums.stopped:
                    break
                _end_epoch(s, epoch, sums, test, train, t0)
                if distributed.all_sum(float(bool(s.collapsed)), ctx) > 0:  # rank 0 decides
                    raise BlendaeError(s.collapsed or "test PSNR collapsed (see rank 0)")
                distributed.barrier(ctx)
            if s.tensorboard is not None:
                if s.metrics and s.metrics[-1]["epoch"] == config.epochs:
                    s.tensorboard.finish(s.metrics[-1])
                s.tensorboard.close()
            return s.metrics
    finally:
        distributed.teardown(ctx)
