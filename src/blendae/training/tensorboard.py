"""TensorBoard event files for a run (rank 0 only): per-epoch scalars and image grids, and
the run's hyper-parameters with its final metrics for TensorBoard's HPARAMS tab.

Optional: needs the `tensorboard` package (pip install 'blendae[tensorboard]'). Steps are
epochs (1-based, as in metrics.jsonl). A resumed run opens the logger with the first epoch
it will train as `start_epoch`; events from that epoch on, written before the interruption,
are purged, so TensorBoard shows every epoch once.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from blendae.errors import BlendaeError

MISSING_EXTRA = (
    "TensorBoard logging needs the 'tensorboard' extra: pip install 'blendae[tensorboard]'"
)
HPARAM_PREFIX = "hparam/"  # final metrics, as the HPARAMS tab's metric columns

# metrics.jsonl keys with a name of their own; others are "train/..." and "test/..." by prefix.
_TAGS = {
    "train_loss": "loss/train",
    "test_loss": "loss/test",
    "seconds": "time/epoch_seconds",
}


def tensorboard_available() -> bool:
    """Whether the `tensorboard` package is installed (SummaryWriter needs it)."""
    return importlib.util.find_spec("tensorboard") is not None


def scalar_tag(key: str) -> str:
    """A metrics.jsonl key → a grouped TensorBoard tag: test_psnr_cifar → test/psnr_cifar."""
    if key in _TAGS:
        return _TAGS[key]
    split, _, name = key.partition("_")
    return f"{split}/{name}" if split in ("train", "test") and name else key


def _hparam_value(value: Any) -> bool | int | float | str:
    """What the hparams plugin accepts: numbers, booleans and strings; others as JSON."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def flat_hparams(
    hparams: Mapping[str, Any], prefix: str = ""
) -> dict[str, bool | int | float | str]:
    """Nested dicts flattened to "outer.inner" keys; lists and None as JSON text."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in hparams.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_hparams(value, prefix=f"{name}."))
        else:
            out[name] = _hparam_value(value)
    return out


class TensorBoardLogger:
    """Writes one run's TensorBoard events into `log_dir` (one writer, one folder)."""

    def __init__(self, log_dir: Path, hparams: dict[str, Any], start_epoch: int) -> None:
        if not tensorboard_available():
            raise BlendaeError(MISSING_EXTRA)
        from torch.utils.tensorboard import SummaryWriter  # needs the optional package

        self.hparams = flat_hparams(hparams)
        self.last_epoch = start_epoch - 1
        # purge_step: events at steps >= start_epoch from an earlier, interrupted session of
        # this run are hidden by TensorBoard's reader, so resumed epochs are not duplicated.
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=start_epoch)

    def log_epoch(
        self,
        record: dict[str, float],
        *,
        lr: float,
        images_per_second: float,
        grids: dict[str, Tensor],
    ) -> None:
        """One metrics.jsonl record as scalars at step record["epoch"], plus the grids.

        `grids`: name → uint8 (3, H, W) image, logged as "images/<name>".
        """
        step = int(record["epoch"])
        for key, value in record.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            self.writer.add_scalar(scalar_tag(key), float(value), step)
        self.writer.add_scalar("optim/lr", float(lr), step)
        self.writer.add_scalar("time/images_per_second", float(images_per_second), step)
        for name, grid in grids.items():
            self.writer.add_image(f"images/{name}", grid, step, dataformats="CHW")
        self.last_epoch = step
        self.writer.flush()

    def finish(self, final: dict[str, float]) -> None:
        """The hyper-parameters with the final metrics, in this run's folder (HPARAMS tab)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        metrics = {
            f"{HPARAM_PREFIX}{key}": float(value)
            for key, value in final.items()
            if key != "epoch"
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        }
        experiment, start, end = hparams_summary(self.hparams, metrics)
        for summary in (experiment, start, end):  # into the scalars' event file, as
            self.writer.file_writer.add_summary(summary)  # SummaryWriter.add_hparams does
        step = max(self.last_epoch, 0)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
