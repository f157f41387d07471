"""One `RunConfig` per run: every knob, saved as `config.json` in the run folder."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from blendae import models
from blendae.data.spec import MIX, PAIRINGS, PRESET_NAMES, STUDY, check_augments, parse_spec
from blendae.errors import BlendaeError
from blendae.models.names import DEFAULT_MODEL

PROTOCOLS = ("minibatch", "seed-fullbatch")
LR_SCHEDULES = ("constant", "cosine")
DEVICES = ("cpu", "cuda")
# Options that may differ when a run is resumed: they change how, not what, is trained.
RESUMABLE = ("epochs", "device", "mirror", "cache", "tensorboard", "data_source", "clip_grad")


@dataclass
class RunConfig:
    """Every setting of a training run; `config.json` in the run folder holds a copy.

    The run folder itself is not a setting: it is wherever the run lives (it can be
    copied or moved and resumed there).
    """

    # data
    data: str = STUDY  # --data SPEC: a source or a blend of two (blendae.data.spec)
    # normalization: "seed" (the study's, its data only), "unit" ([0, 1]) or "data" (each
    # source's training-split mean/std); None: "seed" for the study's data, else "data"
    preset: str | None = None
    size: int = 32  # training images are size × size (a multiple of 16)
    channels: int | None = None  # None: 1 for a gray source alone, else 3 (RGB)
    augment: list[str] = field(default_factory=list)  # per source, before blending
    pairing: str = "fixed"  # blends: image i with image i, or partners re-drawn every epoch
    split: list[int] = field(default_factory=lambda: [90, 5, 5])  # folders: train/val/test %
    mirror: str | None = None  # folder or URL serving the official files + SHA256SUMS
    cache: str | None = None  # None: BLENDAE_CACHE, else the platform cache folder
    limit_train: int | None = None  # use the first N training images (quick runs, tests)
    limit_test: int | None = None
    # hold out the last N training images as a validation set: each epoch is then scored
    # on it instead of the test set (choosing λ, epochs or a model never looks at the test)
    val: int | None = None
    # model
    model: str = DEFAULT_MODEL  # a name in blendae.models.registry
    model_args: dict[str, Any] = field(default_factory=dict)  # constructor keyword arguments
    # λ of the rate–distortion loss λ·255²·MSE + bpp; codec models need one, others none
    lmbda: float | None = None
    # start from the trained weights of this run folder (fine-tuning a model that extends
    # it, e.g. adding a context model); tensors it lacks keep their initialization
    init_from: str | None = None
    # optimisation
    protocol: str = "minibatch"  # "seed-fullbatch" replays the study: one full-batch step per epoch
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    lr_schedule: str = "constant"  # "constant" (the study's) or "cosine" (decay to lr/100)
    seed: int = 0  # seeds model init and the per-epoch shuffles
    # clip the gradient's norm to this before each step (None: no clipping); the cure for a
    # run that collapsed (resumable): codec models at high λ need it for long schedules
    clip_grad: float | None = None
    device: str = "cpu"
    channels_last: bool = True  # faster convolutions on CPU (oneDNN) and GPU (cuDNN); same math
    # bf16 autocast for the minibatch protocol on CUDA and on CPUs with AVX512-BF16/AMX
    # (~1.3x faster steps here, same test PSNR); seed-fullbatch always runs in float32.
    bf16: bool = True
    eval_batch_size: int = 1000
    tensorboard: bool = True  # event files in RUN/tensorboard/ when the package is installed
    # Where the data came from the last time this run trained: the mirror and cache after
    # resolving --mirror/--cache and the environment. A record for people; never read back.
    data_source: dict[str, str | None] = field(default_factory=dict)
    fullbatch_chunk: int = 2500  # images per forward/backward in seed-fullbatch: memory only

    def __post_init__(self) -> None:
        if isinstance(self.data, str) and self.data:
            self.data = str(parse_spec(self.data))  # canonical: folders as absolute paths
        if self.preset is None:  # a mixture's parts share one space, so not per-source data
            mixture = isinstance(self.data, str) and self.data.startswith(MIX)
            self.preset = "seed" if self.data == STUDY else "unit" if mixture else "data"
        self.augment = (
            list(self.augment) if isinstance(self.augment, list | tuple) else self.augment
        )
        self.split = list(self.split) if isinstance(self.split, list | tuple) else self.split

    def validate(self) -> None:
        """Raise `BlendaeError` naming the first bad value."""
        parse_spec(self.data)
        choices = {
            "preset": PRESET_NAMES,
            "pairing": PAIRINGS,
            "model": tuple(models.MODELS),  # the registry (torch) only now: not at import
            "protocol": PROTOCOLS,
            "lr_schedule": LR_SCHEDULES,
            "device": DEVICES,
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise BlendaeError(
                    f"unknown {name.replace('_', ' ')} {getattr(self, name)!r}; "
                    f"choose one of {', '.join(valid)}"
                )
        if not isinstance(self.model_args, dict):
            raise BlendaeError(
                f"model_args must be a JSON object of constructor arguments, got "
                f"{self.model_args!r}"
            )
        if self.init_from is not None and not (isinstance(self.init_from, str) and self.init_from):
            raise BlendaeError(
                f"init_from must be the path of a run folder, got {self.init_from!r}"
            )
        for name in ("epochs", "batch_size", "eval_batch_size", "fullbatch_chunk"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_data(self)
        for name in ("limit_train", "limit_test", "val"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        _check_int("seed", self.seed, minimum=0, maximum=2**63 - 1)
        for name in ("lr", "lmbda", "clip_grad"):
            value = getattr(self, name)
            if value is not None and not _positive_finite(value):
                raise BlendaeError(f"--{_flag(name)} must be a finite number > 0, got {value!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """A config from saved values, migrating older files, then validated."""
        if not isinstance(values, dict):
            raise BlendaeError(f"a run config must be a JSON object, got {type(values).__name__}")
        values = dict(values)
        values.pop("out", None)  # before 0.2 the folder was recorded; it is where the file is
        if values.pop("codec", None) is False:  # before 0.2 λ was kept but unused without it
            values["lmbda"] = None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise BlendaeError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        config = cls(**values)
        config.validate()
        return config


def _check_data(config: RunConfig) -> None:
    """The data options: size, channels, augmentations and split."""
    _check_int("size", config.size, minimum=16, maximum=4096)
    if config.size % 16:
        raise BlendaeError(f"--size must be a multiple of 16, got {config.size}")
    if config.channels not in (None, 1, 3):
        raise BlendaeError(f"--channels must be 1 or 3, got {config.channels!r}")
    if not isinstance(config.augment, list) or not all(isinstance(a, str) for a in config.augment):
        raise BlendaeError(f"--augment must be a list of names, got {config.augment!r}")
    check_augments(config.augment)
    split = config.split
    if (
        not isinstance(split, list)
        or len(split) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in split)
        or sum(split) != 100
        or split[0] < 1
    ):
        raise BlendaeError(
            f"--split must be three whole percentages train/val/test summing to 100 with "
            f"train > 0, e.g. 90/5/5; got {split!r}"
        )
    if config.preset == "seed" and config.data != STUDY:
        raise BlendaeError(
            f"preset 'seed' is the study's normalization of {STUDY}; for --data "
            f"{config.data} use --preset data or unit"
        )


def _flag(name: str) -> str:
    return {"lmbda": "lambda"}.get(name, name.replace("_", "-"))


def _positive_finite(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value > 0
        and (math.isfinite(value))
    )


def _check_int(name: str, value: Any, *, minimum: int, maximum: int = 2**31 - 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise BlendaeError(
            f"--{_flag(name)} must be a whole number from {minimum} to {maximum}, got {value!r}"
        )
