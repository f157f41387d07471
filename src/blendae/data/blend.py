"""The study's inputs: each CIFAR-10 image averaged with one MNIST digit, normalized.

MNIST digits become RGB 32×32 (gray copied to 3 channels, bilinear resize); each source
is normalized its own way by a preset; the blend is the mean of the two normalized
images, image i with image i: train pairs the first 50,000 MNIST train digits with the
50,000 CIFAR-10 train images, test the 10,000 with the 10,000. `load_blended` builds the
float tensors once per preset and input checksums and caches them as safetensors.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from blendae.data.formats import CIFAR_VARIANTS, OFFICIAL_COUNTS, Counts, read_cifar, read_mnist
from blendae.data.normalize import study_space
from blendae.data.presets import Preset, get_preset
from blendae.data.sources import fetch, resolve_cache, resolve_mirror, verified_sha256
from blendae.errors import BlendaeError
from blendae.files import atomic_write, ensure_dir, file_lock, write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # of the prepared cache file; bump when its content or meaning changes
RESIZE_METHOD = "torch bilinear, align_corners=False, antialias when shrinking"
_CHUNK = 5_000  # images blended per step, bounding temporary memory to ~100 MB


def _as_preset(preset: Preset | str) -> Preset:
    return get_preset(preset) if isinstance(preset, str) else preset


# ---------------------------------------------------------------- pixels to blend


def resize_bilinear(x: Tensor, size: int) -> Tensor:
    """Resize float images (N, C, H, W) in [0, 1] to (N, C, size, size), bilinearly.

    Half-pixel centres (align_corners=False) and clamped edges: the filter Pillow's
    BILINEAR uses, so MNIST 28->32 matches Pillow within its own uint8 rounding (1/255).
    Antialiasing only changes a shrink, where it makes the filter Pillow's too.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise BlendaeError(f"resize_bilinear expects float N×C×H×W, got {x.dtype} {tuple(x.shape)}")
    shrinking = size < x.shape[-2] or size < x.shape[-1]
    return F.interpolate(
        x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking
    )


def mnist_to_rgb32(u8: np.ndarray | Tensor) -> Tensor:
    """MNIST digits (N, 28, 28) uint8 -> (N, 3, 32, 32) float32 in [0, 1], gray in every channel."""
    gray = torch.as_tensor(u8)
    if gray.ndim != 3 or gray.dtype != torch.uint8:
        raise BlendaeError(
            f"mnist_to_rgb32 expects uint8 N×H×W, got {gray.dtype} {tuple(gray.shape)}"
        )
    x = resize_bilinear(gray.unsqueeze(1).float().div_(255), 32)  # (N, 1, 32, 32)
    return x.expand(-1, 3, -1, -1).contiguous()  # resizing then copying == copying then resizing


def _channels(values: tuple[float, ...]) -> Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1)


def blend(
    cifar_u8: np.ndarray | Tensor, mnist_u8: np.ndarray | Tensor, preset: Preset | str
) -> Tensor:
    """Mean of normalized CIFAR image i and normalized RGB MNIST digit i: (N, 3, 32, 32) float32.

    CIFAR: (c / 255 - cifar_mean) / cifar_std; MNIST: (mnist_to_rgb32(m) - mnist_mean) / mnist_std.
    """
    p = _as_preset(preset)
    cifar, mnist = torch.as_tensor(cifar_u8), torch.as_tensor(mnist_u8)
    if cifar.dtype != torch.uint8 or tuple(cifar.shape[1:]) != (3, 32, 32):
        raise BlendaeError(
            f"blend expects CIFAR uint8 N×3×32×32, got {cifar.dtype} {tuple(cifar.shape)}"
        )
    if len(mnist) != len(cifar):
        raise BlendaeError(
            f"blend pairs image i with image i, but got {len(cifar)} CIFAR images and "
            f"{len(mnist)} MNIST digits; pass equally long arrays"
        )
    cm, cs = _channels(p.cifar_mean), _channels(p.cifar_std)
    mm, ms = _channels(p.mnist_mean), _channels(p.mnist_std)
    out = torch.empty((len(cifar), 3, 32, 32), dtype=torch.float32)
    for start in range(0, len(cifar), _CHUNK):
        part = slice(start, start + _CHUNK)
        c = (cifar[part].float().div_(255) - cm) / cs
        m = (mnist_to_rgb32(mnist[part]) - mm) / ms
        out[part] = (m + c) / 2
    return out


# ---------------------------------------------------------------- the cached splits


@dataclass(frozen=True)
class Sources:
    """The two images behind each blend, in [0, 1]: CIFAR-10 (N, 3, 32, 32) and the digit as
    one gray channel (N, 1, 32, 32), resized as in the blend. Under `unit` the blend is
    exactly (cifar + mnist) / 2 (the digit repeated over the 3 channels)."""

    cifar: Tensor
    mnist: Tensor


@dataclass(frozen=True)
class BlendedSplits:
    """The blended train (50,000) and test (10,000) images, float32 N×3×32×32, and, when
    asked for (separation), each split's sources."""

    train: Tensor
    test: Tensor
    preset: str
    manifest: dict[str, Any]
    sources: dict[str, Sources] | None = None

    def tensors(self, split: str, limit: int | None, device: torch.device) -> dict[str, Tensor]:
        """The first `limit` images of a split as training batches see them: "x" (the
        blends) and, when loaded, the sources "cifar" and "mnist"."""
        tensors = {"x": self.train if split == "train" else self.test}
        if self.sources is not None:
            sources = self.sources[split]
            tensors |= {"cifar": sources.cifar, "mnist": sources.mnist}
        return {k: v[:limit].to(device) for k, v in tensors.items()}


def _pairs(
    files: dict[str, Path], split: str, variant: str, counts: Counts
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 images (N, 3, 32, 32) and the MNIST digits paired with them (N, 28, 28)."""
    cifar, _ = read_cifar(files, split, variant, counts=counts)
    mnist, _ = read_mnist(files, split, counts=counts)
    # The readers enforce `counts`, whose values make these hold.
    assert len(mnist) >= len(cifar), (split, len(mnist), len(cifar))
    assert split == "train" or len(mnist) == len(cifar), (split, len(mnist), len(cifar))
    return cifar, mnist[: len(cifar)]  # train: the first 50,000 digits of 60,000


def _sources(files: dict[str, Path], variant: str, counts: Counts) -> dict[str, Sources]:
    """Each split's sources, converted as `blend` converts them (not cached: a few seconds,
    and only separation runs need them)."""
    out = {}
    for split in ("train", "test"):
        cifar, mnist = _pairs(files, split, variant, counts)
        digits = torch.empty((len(cifar), 1, 32, 32), dtype=torch.float32)
        for start in range(0, len(cifar), _CHUNK):
            part = slice(start, start + _CHUNK)
            digits[part] = mnist_to_rgb32(mnist[part])[:, :1]
        out[split] = Sources(torch.from_numpy(cifar).float().div_(255), digits)
    return out


def _build(
    files: dict[str, Path], p: Preset, variant: str, counts: Counts
) -> tuple[Tensor, Tensor]:
    """Parse the source files and blend both splits (the slow path, run once per cache key)."""
    train, test = (blend(*_pairs(files, split, variant, counts), p) for split in ("train", "test"))
    return train, test


def _all_finite(t: Tensor) -> bool:
    """Whether every value of `t` is finite, from its sum (NaN and ±inf propagate through
    it; one pass, no temporary mask). Blends lie within a few units of 0, so the float32 sum
    of a real one cannot overflow; one that does holds absurd values, unusable too."""
    return bool(torch.isfinite(t.sum()))


def _load_cached(
    path: Path, manifest_path: Path, key: str, shapes: dict[str, tuple[int, ...]]
) -> tuple[Tensor, Tensor, dict[str, Any]] | None:
    """The cached splits if `path` holds a complete matching build, else None (with a
    warning when a file is there but unusable)."""
    if not path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        with safe_open(path, framework="pt") as f:
            file_key = (f.metadata() or {}).get("key")
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (no __iter__)
        problem = None
        if manifest.get("key") != key or file_key != key:
            problem = (
                f"keys {file_key!r} (file), {manifest.get('key')!r} (manifest), expected {key!r}"
            )
        for name, shape in shapes.items():
            t = tensors.get(name)
            if t is None or t.dtype != torch.float32 or tuple(t.shape) != shape:
                found = "missing" if t is None else f"{t.dtype} {tuple(t.shape)}"
                problem = f"tensor {name!r} is {found}, expected float32 {shape}"
            elif not _all_finite(t):
                problem = f"tensor {name!r} holds NaN or infinite values"
    except (OSError, ValueError, AttributeError, SafetensorError) as e:
        problem = f"{type(e).__name__}: {e}"
    if problem:
        log.warning("cached blend %s is unusable (%s); rebuilding it", path, problem)
        return None
    return tensors["train"], tensors["test"], manifest


def _manifest(
    params: dict[str, Any], key: str, shapes: dict[str, tuple[int, ...]], p: Preset
) -> dict[str, Any]:
    """What the cache file holds and how it was made, as plain JSON types."""
    space = study_space(p)
    manifest = {
        **params,
        "key": key,
        "pairing": f"image i with image i; train: MNIST train[:{shapes['train'][0]}] with "
        "CIFAR-10 train (data batches 1-5 in order); test: MNIST test with CIFAR-10 test",
        "shapes": {name: list(shape) for name, shape in shapes.items()},
        "dtype": "float32",
        "pixels": {**space.to_dict(), "definition": "blendae.data.to_pixels"},
    }
    return json.loads(json.dumps(manifest))  # tuples -> lists, as a warm load returns it


def load_blended(
    preset: str = "seed",
    *,
    mirror: str | None = None,
    cache: str | Path | None = None,
    cifar_variant: str = "binary",
    progress: bool = True,
    counts: Counts = OFFICIAL_COUNTS,
    sources: bool = False,
) -> BlendedSplits:
    """The blended splits for `preset`, built once and then loaded from the cache.

    Fetches (and verifies) the source files, then reuses
    `cache/prepared/blend-<preset>-<key>.safetensors` (tensors "train", "test") and its
    `.json` manifest, where the key hashes everything the tensors depend on: source file
    sha256s, preset values, CIFAR variant, resize method, record counts, format version.
    A missing, corrupt or mismatching cache file is rebuilt (atomically). `counts` are the
    record counts the files must have (the official ones; small fixtures pass their own).
    `sources=True` also returns each blend's two images (`Sources`), for separation.
    """
    p = get_preset(preset)
    if cifar_variant not in CIFAR_VARIANTS:
        raise BlendaeError(
            f"unknown CIFAR-10 variant {cifar_variant!r}; valid variants: "
            f"{', '.join(CIFAR_VARIANTS)}"
        )
    mirror, cache_dir = resolve_mirror(mirror), resolve_cache(cache)
    files = {
        **fetch("mnist", mirror=mirror, cache=cache_dir, progress=progress),
        **fetch(f"cifar10-{cifar_variant}", mirror=mirror, cache=cache_dir, progress=progress),
    }
    params = {
        "format_version": FORMAT_VERSION,
        "preset": asdict(p),
        "cifar_variant": cifar_variant,
        "resize": RESIZE_METHOD,
        "counts": asdict(counts),
        "sources_sha256": {name: verified_sha256(path) for name, path in sorted(files.items())},
    }
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    n_train = 5 * counts.cifar_batch  # CIFAR-10 train: 5 batches, all of them used
    shapes = {"train": (n_train, 3, 32, 32), "test": (counts.cifar_batch, 3, 32, 32)}
    prepared = ensure_dir(cache_dir / "prepared")
    path = prepared / f"blend-{p.name}-{key}.safetensors"
    manifest_path = path.with_suffix(".json")
    with file_lock(prepared / ".lock"):  # parallel ranks wait for the one that builds
        cached = _load_cached(path, manifest_path, key, shapes)
        if cached is None:
            log.info("building the %r blend once (cached afterwards as %s)", p.name, path)
            train, test = _build(files, p, cifar_variant, counts)
            manifest = _manifest(params, key, shapes, p)
            # The manifest first: the tensors file appearing is what commits the build.
            write_json(manifest_path, manifest)
            tensors = {"train": train, "test": test}
            atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"key": key}))
            cached = train, test, manifest
    train, test, manifest = cached
    pairs = _sources(files, cifar_variant, counts) if sources else None
    return BlendedSplits(train, test, p.name, manifest, pairs)
