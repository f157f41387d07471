"""What the codec accepts, and how files and images share network calls: torch-free, for
both decoders (`images`, `decode`), so that they check and group files alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from blendae.codec import container
from blendae.errors import BlendaeError

BATCH_PIXELS = 1 << 16  # pixels per network call: 64 images of 32×32 ran fastest here (see README)
MAX_PIXELS = 1 << 22  # the largest image coded (2048×2048); memory is bounded by the tiling


def check_size(height: int, width: int) -> None:
    """A `BlendaeError` unless an image of this size can be coded (and decoded)."""
    if not (1 <= height <= container.MAX_SIDE and 1 <= width <= container.MAX_SIDE) or (
        height * width > MAX_PIXELS
    ):
        raise BlendaeError(
            f"image size {width}x{height} (width x height) is not supported: sides "
            f"1..{container.MAX_SIDE} pixels and at most {MAX_PIXELS} pixels in all (2048x2048)"
            "; crop or downscale it"
        )


def batches(members: list[int], pixels: int, budget: int = BATCH_PIXELS) -> list[list[int]]:
    """Same-size images (`pixels` each) grouped so that one network call sees at most
    `budget` pixels (an image larger than that goes alone; the model tiles it)."""
    per_call = max(1, budget // max(pixels, 1))
    return [members[i : i + per_call] for i in range(0, len(members), per_call)]


Named = Callable[[int, BlendaeError], BlendaeError]


def naming(names: Sequence[str] | None) -> Named:
    """How an error about file i is raised: prefixed with names[i], when there are names."""

    def named(i: int, exc: BlendaeError) -> BlendaeError:
        return BlendaeError(f"{names[i]}: {exc}") if names is not None else exc

    return named


Key = tuple[bytes, int, int, int | None, int | None]


def groups(parsed: list[tuple[container.Header, bytes]], named: Named) -> dict[Key, list[int]]:
    """Unpacked files grouped by (model id, height, width, quality, patch side), after
    checking every size (only a forged file can fail there): the files that can share
    network calls (a file coded in patches decodes alone: its patches share them)."""
    for i, (header, _) in enumerate(parsed):
        try:
            check_size(header.height, header.width)
        except BlendaeError as exc:
            raise named(i, exc) from exc
    found: dict[Key, list[int]] = {}
    for i, (header, _) in enumerate(parsed):
        key = (header.model_id, header.height, header.width, header.quality, header.patch)
        found.setdefault(key, []).append(i)
    return found


def strings_of(
    parsed: list[tuple[container.Header, bytes]], chunk: list[int], count: int, named: Named
) -> list[list[bytes]]:
    """The `count` byte strings of each file of `chunk`."""
    strings = []
    for i in chunk:
        try:
            strings.append(container.split_strings(parsed[i][1], count))
        except BlendaeError as exc:
            raise named(i, exc) from exc
    return strings


def check_made_by(
    parsed: list[tuple[container.Header, bytes]], members: list[int], model_id: bytes, named: Named
) -> None:
    """Every file of `members` was written by the model with id `model_id` (a version 3
    file's checksum is finished with it), else the first one's checksum error."""
    for i in members:
        if not container.made_by(parsed[i][0], model_id):
            raise named(i, BlendaeError(container.CHECKSUM_MISMATCH))


def check_quality(variable_rate: bool, quality: int | None, named: Named, first: int) -> None:
    """A file's quality byte must match its model: present exactly for variable-rate ones
    (only a forged file can fail here, since the model id matched)."""
    if variable_rate != (quality is not None):
        want = "a quality" if variable_rate else "no quality"
        raise named(first, BlendaeError(f"corrupt .bae header: its model's files carry {want}"))


def grid(height: int, width: int, patch: int) -> tuple[int, int]:
    """(rows, columns) of the `patch`-sided patches that cover an image (the last ones padded)."""
    return -(-height // patch), -(-width // patch)


def check_patch(
    name: str, patches: bool, stride: int, patch: int, named: Named, first: int
) -> None:
    """A file coded in patches must name a model that codes patches, in a side it can code
    (only a forged file can fail here, since the model id matched)."""
    if not patches or patch % stride:
        raise named(
            first,
            BlendaeError(f"corrupt .bae header: model {name!r} codes no {patch}-pixel patches"),
        )
