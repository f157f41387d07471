"""What the codec accepts, and how images share network calls: torch-free, for both
decoders.
"""

from __future__ import annotations

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
