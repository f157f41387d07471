"""Any `--data` spec as a run's data: evaluation tensors and a training set of batches.

`load_data` owns the assembly: each source's images per split (`Images`), scaled to
[0, 1] at the run's size and channels, normalized by the preset (`normalize`), and, for
a blend, averaged two by two (image i with image i, or with a partner re-drawn every
epoch). The study's own blend under its presets, unaugmented, comes from the cached
tensors of `blend.load_blended`, so its runs see exactly the numbers blendae 0.5 did.
Training batches are made on the fly only when something changes per epoch
(augmentation, random pairing, random crops of a folder's images).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from blendae.data.blend import BlendedSplits, load_blended, resize_bilinear
from blendae.data.formats import OFFICIAL_COUNTS, Counts, read_cifar, read_mnist
from blendae.data.normalize import (
    UNIT,
    Norm,
    Space,
    channel_stats,
    space_of,
    study_space,
)
from blendae.data.presets import get_preset
from blendae.data.sources import fetch, resolve_cache, resolve_mirror
from blendae.data.spec import FOLDER, PAIRINGS, STUDY, DataSpec, check_augments, parse_spec
from blendae.data.transforms import augment
from blendae.errors import BlendaeError

log = logging.getLogger("blendae")

_CHUNK = 5_000  # images made per step when whole splits are materialized


class Images(Protocol):
    """One source's split: `get` returns float images (B, C, S, S) in [0, 1]."""

    channels: int

    def __len__(self) -> int: ...

    def get(self, idx: np.ndarray, rng: np.random.Generator | None) -> Tensor: ...


@dataclass
class TensorImages:
    """A builtin source's split held in memory: uint8 at its own size, else float."""

    images: Tensor  # (N, C, S, S)
    channels: int

    def __len__(self) -> int:
        return len(self.images)

    def get(self, idx: np.ndarray, rng: np.random.Generator | None) -> Tensor:
        x = self.images[torch.as_tensor(idx)]
        return x.float().div_(255) if x.dtype == torch.uint8 else x


@dataclass
class CropImages:
    """A folder's split in its uint8 cache: random crops (rng) or centre crops (None)."""

    store: Any  # blendae.data.folder.ImageStore
    size: int
    channels: int

    def __len__(self) -> int:
        return len(self.store)

    def get(self, idx: np.ndarray, rng: np.random.Generator | None) -> Tensor:
        return torch.from_numpy(self.store.crops(np.asarray(idx), self.size, rng)).float().div_(255)


@dataclass
class Source:
    """One source of a spec: its images per split and its training split's statistics."""

    name: str
    splits: dict[str, Images]
    stats: Norm
    channels: int


def _builtin(name: str, size: int, files: dict[str, Path], counts: Counts) -> Source:
    """cifar10, mnist or fashion-mnist at `size`: uint8 when no resize is needed."""
    images: dict[str, Tensor] = {}
    for split in ("train", "test"):
        if name == "cifar10":
            u8 = torch.from_numpy(read_cifar(files, split, "binary", counts=counts)[0])
        else:
            u8 = torch.from_numpy(read_mnist(files, split, counts=counts)[0]).unsqueeze(1)
        images[split] = u8
        if u8.shape[-1] != size:  # resized as the study resizes its digits (bilinear, [0, 1])
            images[split] = torch.empty((len(u8), u8.shape[1], size, size))
            for i in range(0, len(u8), _CHUNK):
                part = u8[i : i + _CHUNK].float().div_(255)
                images[split][i : i + _CHUNK] = resize_bilinear(part, size)
    channels = images["train"].shape[1]
    splits: dict[str, Images] = {k: TensorImages(v, channels) for k, v in images.items()}
    return Source(name, splits, channel_stats(images["train"]), channels)


def _folder(path: str, size: int, cache: Path, split: Sequence[int], progress: bool) -> Source:
    from blendae.data.folder import load_folder  # Pillow and the cache: only for folders

    folder = load_folder(path, cache=cache, size=size, split=tuple(split), progress=progress)
    splits: dict[str, Images] = {
        name: CropImages(folder.split(name), size, folder.channels)
        for name in ("train", "val", "test")
    }
    mean, std = folder.split("train").mean_std
    return Source(FOLDER + path, splits, Norm(tuple(mean), tuple(std)), folder.channels)


@dataclass
class TensorSet:
    """A training set held as tensors (one row per image): batches are rows."""

    tensors: dict[str, Tensor]

    def __len__(self) -> int:
        return len(self.tensors["x"])

    def batch(self, idx: Tensor, epoch: int, step: int) -> dict[str, Tensor]:
        return {k: v[idx] for k, v in self.tensors.items()}


@dataclass
class MixedSet:
    """A training set whose batches are made per step: crops, augmentation, pairing."""

    data: Data
    indices: Tensor  # which training images (of the first source) this set holds
    seed: int
    device: torch.device
    _partners: tuple[int, Tensor] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def _partner(self, epoch: int) -> Tensor:
        """The second source's image for each first-source image in this epoch."""
        if self._partners is None or self._partners[0] != epoch:
            n = len(self.data.sources[1].splits["train"])
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 500_009)
            self._partners = (epoch, torch.randperm(n, generator=g))
        return self._partners[1]

    def batch(self, idx: Tensor, epoch: int, step: int) -> dict[str, Tensor]:
        first = self.indices[idx.cpu()]
        second = None
        if self.data.spec.is_blend and self.data.pairing == "fixed":
            second = first
        elif self.data.spec.is_blend:
            partners = self._partner(epoch)
            second = partners[first % len(partners)]
        key = [self.seed, epoch, step]
        batch = self.data.make(
            "train",
            first,
            second,
            np.random.default_rng(key),
            torch.Generator().manual_seed(
                int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:7], "little")
            ),
        )
        return {k: v.to(self.device) for k, v in batch.items()}


TrainSet = TensorSet | MixedSet  # | UnionSet, defined below


@dataclass
class Data:
    """A spec's data: its sources, normalization and space, and how to batch it."""

    spec: DataSpec
    preset: str
    sources: list[Source]
    norms: list[Norm]
    space: Space
    channels: int
    augment: tuple[str, ...] = ()
    pairing: str = "fixed"
    with_sources: bool = False  # separation: each blend's two images as targets
    study: BlendedSplits | None = None  # the study's cached tensors
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, splits: Data | MixData | BlendedSplits) -> Data | MixData:
        """`splits` as a `Data` (a `BlendedSplits` holds the study's blends)."""
        if isinstance(splits, Data | MixData):
            return splits
        return cls(parse_spec(STUDY), splits.preset, [], [], study_space(splits.preset), 3,
                   with_sources=splits.sources is not None, study=splits,
                   manifest=splits.manifest)  # fmt: skip

    def length(self, split: str) -> int:
        if self.study is not None:
            return len(self.study.train if split == "train" else self.study.test)
        lengths = [len(s.splits[split]) for s in self.sources if split in s.splits]
        return min(lengths) if len(lengths) == len(self.sources) else 0

    @property
    def has_val_split(self) -> bool:
        """Whether the data has its own validation split (a folder alone)."""
        return self.study is None and self.length("val") > 0

    def make(
        self,
        split: str,
        first: Tensor,
        second: Tensor | None,
        rng: np.random.Generator | None,
        generator: torch.Generator | None,
    ) -> dict[str, Tensor]:
        """The batch of images `first` (and partners `second`): "x", and the sources."""
        images = []
        for source, idx in zip(self.sources, (first, second), strict=False):
            x = source.splits[split].get(idx.numpy(), rng)
            if generator is not None and self.augment:
                x = augment(x, self.augment, generator)
            images.append(x)
        normed = [self._normalize(x, norm) for x, norm in zip(images, self.norms, strict=True)]
        # The study's order, (second + first) / 2: the same floats as blendae 0.5's blends.
        batch = {"x": normed[0] if len(normed) == 1 else (normed[1] + normed[0]) / 2}
        if self.with_sources:
            batch |= {"cifar": images[0].expand(-1, 3, -1, -1), "mnist": images[1][:, :1]}
        return batch

    def _normalize(self, x: Tensor, norm: Norm) -> Tensor:
        x = x.expand(-1, self.channels, -1, -1)
        norm = norm.channels(self.channels)
        mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (x - mean) / std

    def tensors(
        self, split: str, limit: int | None, device: torch.device, start: int = 0
    ) -> dict[str, Tensor]:
        """Images `start` .. `start + limit` of a split, unaugmented, fixed pairs, centre
        crops: what evaluation (and an unchanging training set) sees."""
        if self.study is not None:
            full = self.study.tensors(split, None, torch.device("cpu"))
            stop = None if limit is None else start + limit
            return {k: v[start:stop].to(device) for k, v in full.items()}
        n = self.length(split)
        stop = n if limit is None else min(n, start + limit)
        parts: dict[str, list[Tensor]] = {}
        for i in range(start, stop, _CHUNK):
            idx = torch.arange(i, min(stop, i + _CHUNK))
            second = idx if self.spec.is_blend else None
            for k, v in self.make(split, idx, second, None, None).items():
                parts.setdefault(k, []).append(v)
        if not parts:
            raise BlendaeError(f"--data {self.spec}: its {split} split holds no images")
        return {k: torch.cat(v).to(device) for k, v in parts.items()}

    def train_set(
        self, limit: int | None, stop: int | None, seed: int, device: torch.device
    ) -> TrainSet:
        """The first `limit` training images before `stop` (a validation hold-out)."""
        if stop is None:
            first = len(self.sources[0].splits["train"]) if self.sources else 0
            stop = first if self.pairing == "random" else self.length("train")
        n = stop if limit is None else min(stop, limit)
        dynamic = self.augment or self.pairing == "random" or self._crops
        if not dynamic:
            return TensorSet(self.tensors("train", n, device))
        return MixedSet(self, torch.arange(n), seed, device)

    @property
    def _crops(self) -> bool:
        return any(isinstance(s.splits["train"], CropImages) for s in self.sources)


@dataclass
class UnionSet:
    """A mixture's training set: its parts' sets one after another; a batch's images are
    made by the parts they come from and concatenated."""

    parts: list[TrainSet]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def batch(self, idx: Tensor, epoch: int, step: int) -> dict[str, Tensor]:
        idx = idx.cpu()
        made: list[dict[str, Tensor]] = []
        start = 0
        for part in self.parts:
            mine = idx[(idx >= start) & (idx < start + len(part))] - start
            if len(mine):
                made.append(part.batch(mine, epoch, step))
            start += len(part)
        return {k: torch.cat([m[k] for m in made]) for k in made[0]}


@dataclass
class MixData:
    """A mixture's data (`mix:A,B,...`): the union of its parts' images, all in one space.

    A validation hold-out of n images takes each part's last images in proportion to its
    size, so every kind of image is scored; the test split is every part's test split."""

    spec: DataSpec
    preset: str
    parts: list[Data]
    space: Space
    channels: int
    manifest: dict[str, Any]
    has_val_split = False

    def length(self, split: str) -> int:
        return sum(p.length(split) for p in self.parts)

    def _held_out(self, n_train: int) -> list[int]:
        """Per part, how many of its last training images a hold-out leaves to validation."""
        total = self.length("train")
        held = total - n_train
        counts = [p.length("train") * held // total for p in self.parts]
        counts[-1] += held - sum(counts)
        return counts

    def tensors(
        self, split: str, limit: int | None, device: torch.device, start: int = 0
    ) -> dict[str, Tensor]:
        """Evaluation tensors: with `start` on the training split, the hold-out that
        `train_set(..., stop=start)` leaves out; else each part's first images, `limit` in
        all, shared in proportion to the parts' sizes."""
        if split == "train" and start:
            held = self._held_out(start)
            parts = [
                p.tensors(split, None, device, start=p.length(split) - k)
                for p, k in zip(self.parts, held, strict=True)
                if k
            ]
        else:
            total = self.length(split)
            share = [
                None if limit is None else max(1, limit * p.length(split) // total)
                for p in self.parts
            ]
            parts = [p.tensors(split, k, device) for p, k in zip(self.parts, share, strict=True)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def train_set(
        self, limit: int | None, stop: int | None, seed: int, device: torch.device
    ) -> UnionSet:
        held = self._held_out(stop) if stop is not None else [0] * len(self.parts)
        sizes = [p.length("train") - k for p, k in zip(self.parts, held, strict=True)]
        sets = []
        for i, (part, n) in enumerate(zip(self.parts, sizes, strict=True)):
            share = None if limit is None else max(1, limit * n // sum(sizes))
            sets.append(part.train_set(share, n, seed * 1009 + i, device))
        return UnionSet(sets)


def _channels(sources: list[Source], channels: int | None) -> int:
    gray = all(s.channels == 1 for s in sources)
    if channels is None:
        return 1 if gray and len(sources) == 1 else 3
    if channels == 1 and not gray:
        raise BlendaeError("--channels 1 needs gray sources; these images are in color")
    return channels


def _norms(preset: str, spec: DataSpec, sources: list[Source]) -> list[Norm]:
    if preset == "unit":
        return [UNIT for _ in sources]
    if preset == "data":
        return [s.stats for s in sources]
    if preset == "seed" and spec.is_study:
        p = get_preset("seed")
        return [Norm(p.cifar_mean, p.cifar_std), Norm(p.mnist_mean, p.mnist_std)]
    raise BlendaeError(
        f"preset {preset!r} is the study's normalization of its CIFAR-10/MNIST blends; "
        f"for --data {spec} use --preset data (statistics of the training split) or unit"
    )


def load_data(
    spec: str,
    *,
    preset: str,
    size: int = 32,
    channels: int | None = None,
    augment_ops: Sequence[str] = (),
    pairing: str = "fixed",
    split: Sequence[int] = (90, 5, 5),
    mirror: str | None = None,
    cache: str | Path | None = None,
    sources: bool = False,
    progress: bool = True,
    counts: Counts = OFFICIAL_COUNTS,
) -> Data:
    """The data of `spec` for a run (see the module docstring); files are fetched,
    verified and cached as `blendae prepare` does."""
    parsed = parse_spec(spec)
    if parsed.parts:
        return _load_mixture(parsed, preset, size, channels, augment_ops, pairing, split,
                             mirror, cache, sources, progress, counts)  # fmt: skip
    ops = check_augments(augment_ops)
    if pairing not in PAIRINGS:
        raise BlendaeError(f"--pairing {pairing!r}: choose one of {', '.join(PAIRINGS)}")
    if pairing == "random" and not parsed.is_blend:
        raise BlendaeError(f"--pairing random pairs two sources; --data {spec} has one")
    if sources and not parsed.is_blend:
        raise BlendaeError(f"separation needs a blend of two sources; --data {spec} has one")
    plain = not ops and pairing == "fixed" and size == 32 and channels in (None, 3)
    if parsed.is_study and preset in ("seed", "unit") and plain:
        kw = {"mirror": mirror, "cache": cache, "progress": progress, "counts": counts}
        study = load_blended(preset, sources=sources, **kw)
        return Data(parsed, preset, [], [], study_space(preset), 3, (), pairing, sources, study,
                    study.manifest)  # fmt: skip
    cache_dir, mirror = resolve_cache(cache), resolve_mirror(mirror)
    loaded = []
    for name in parsed.sources:
        if name.startswith(FOLDER):
            loaded.append(_folder(name[len(FOLDER) :], size, cache_dir, split, progress))
        else:
            dataset = "cifar10-binary" if name == "cifar10" else name
            files = fetch(dataset, mirror=mirror, cache=cache_dir, progress=progress)
            loaded.append(_builtin(name, size, files, counts))
    c = _channels(loaded, channels)
    if sources and loaded[1].channels != 1:
        raise BlendaeError(
            f"separation predicts a gray second source; {parsed.sources[1]} is in color"
        )
    norms = _norms(preset, parsed, loaded)
    manifest = {
        "data": str(parsed),
        "preset": preset,
        "size": size,
        "channels": c,
        "normalization": [{"source": s.name, "mean": n.mean, "std": n.std} for s, n in
                          zip(loaded, norms, strict=True)],
        "augment": list(ops),
        "pairing": pairing,
    }  # fmt: skip
    data = Data(parsed, preset, loaded, norms, space_of(norms, c), c, ops, pairing, sources)
    data.manifest = manifest
    return data


def _load_mixture(
    parsed: DataSpec,
    preset: str,
    size: int,
    channels: int | None,
    augment_ops: Sequence[str],
    pairing: str,
    split: Sequence[int],
    mirror: str | None,
    cache: str | Path | None,
    sources: bool,
    progress: bool,
    counts: Counts,
) -> MixData:
    """A mixture: each part loaded as its own spec (random pairing for its blends only),
    all in one space, so the parts must share a preset that does not depend on the data."""
    if preset != "unit":
        raise BlendaeError(
            f"--data {parsed}: a mixture's parts must share one input space: use --preset unit"
        )
    if sources:
        raise BlendaeError(f"separation needs a blend of two sources; --data {parsed} is a mixture")
    parts = [
        load_data(
            str(part),
            preset=preset,
            size=size,
            channels=channels or 3,
            augment_ops=augment_ops,
            pairing=pairing if part.is_blend else "fixed",
            split=split,
            mirror=mirror,
            cache=cache,
            progress=progress,
            counts=counts,
        )
        for part in parsed.parts
    ]
    c = parts[0].channels
    manifest = {
        "data": str(parsed),
        "preset": preset,
        "size": size,
        "channels": c,
        "parts": [p.manifest for p in parts],
        "augment": list(augment_ops),
        "pairing": pairing,
    }
    return MixData(parsed, preset, parts, parts[0].space, c, manifest)
