"""The codec on larger natural photos, against WebP, AVIF and JPEG: where it wins, where not.

The shipped models are trained on 32×32 images; this measures them honestly off that
ground (since 0.9 they code a photo as 32×32 patches, `codec.images.in_patches`). The
photos are the colour ones scikit-image ships inside its wheel (`skimage/data/`, read as
plain files; nothing is downloaded): `pip install scikit-image` first. Per photo: bpp
from whole files and PSNR of the decoded photo for every blendae model and every anchor
quality, then the BD-rate of blendae against each anchor over
their shared PSNR range (or why there is none), and the speed of each codec in pixels
per second. The anchors are the ones of `benchmarks.rd` (AVIF 4:4:4 at speed 0,
`tune=psnr`, whole files and `mdat` payload).

    python -m benchmarks.photos [--threads 2] [--only astronaut.png ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import header
from benchmarks.rd import (
    AVIF_QUALITIES,
    AVIF_SWEEP,
    JPEG_QUALITIES,
    WEBP_QUALITIES,
    Point,
    avif,
    bd_or_reason,
    families,
    mdat_payload_size,
    measure,
    percent,
    pillow,
    size_ratio,
    zoo_points,
)
from blendae import codec as api

PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "motorcycle_left.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",  # 1411×1411: above 1 Mpixel, so blendae codes it in tiles
)


PHOTO_QUALITIES = (0, 20, 40, 80, 100)  # plus the general model's default


def photo_folder() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("benchmarks.photos reads scikit-image's bundled photos: pip install scikit-image")
    return Path(spec.submodule_search_locations[0]) / "data"


def points_for(image: np.ndarray) -> list[Point]:
    """Every codec at every setting on one photo (a batch of one): the general model at
    PHOTO_QUALITIES and its default quality, the blend zoo, and the anchors."""
    batch = image[None]
    points: list[Point] = []
    for family, members in families().items():
        if members[0][1] is not None:  # the variable-rate model: fewer points on photos
            default = api.zoo_entries()[members[0][0]]["quality"]
            qualities = sorted({*PHOTO_QUALITIES, default})
            members = [(members[0][0], q) for q in qualities]
        points += zoo_points(family, members, batch)
    for q in WEBP_QUALITIES:
        points += measure("webp-m6", f"q{q}", batch, *pillow("WEBP", quality=q, method=6))
    setting = AVIF_SWEEP[next(iter(AVIF_SWEEP))]
    for q in AVIF_QUALITIES:
        encode, decode = avif(q, setting)
        points += measure(
            "avif-file", f"q{q}", batch, encode, decode, ("avif-payload", mdat_payload_size)
        )
    for q in JPEG_QUALITIES:
        points += measure("jpeg", f"q{q}", batch, *pillow("JPEG", quality=q))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument(
        "--only", nargs="+", default=list(PHOTOS), choices=PHOTOS, help="photo file names"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = photo_folder()
    print(header("blendae on natural photos (scikit-image's bundled data)"), file=sys.stderr)

    summary = []
    for name in args.only:
        image = np.asarray(Image.open(folder / name).convert("RGB"))
        h, w = image.shape[:2]
        t0 = time.perf_counter()
        by_codec: dict[str, list[Point]] = {}
        for p in points_for(image):
            by_codec.setdefault(p.codec, []).append(p)
        print(f"\n{name} ({w}x{h}), {time.perf_counter() - t0:.0f} s")
        for codec, pts in by_codec.items():
            cells = ", ".join(f"{p.setting} {p.bpp:.3f}/{p.psnr:.2f}" for p in pts)
            print(f"  {codec:13} {cells}")
        ours = {f: by_codec.pop(f) for f in families()}
        row = {"photo": name}
        for family, pts_ours in ours.items():
            default = _default_point(family, pts_ours)
            for anchor, pts in by_codec.items():
                row[family, anchor] = ratio = size_ratio(default, pts)
                bd = bd_or_reason(pts, pts_ours)
                shown = percent(bd) if isinstance(bd, float) else "n/a (PSNR ranges barely overlap)"
                print(
                    f"  {family} vs {anchor:13} BD-rate {shown}; at {default.setting}'s "
                    f"{default.psnr:.2f} dB it takes {fmt_ratio(ratio)} the anchor's bits"
                )
            enc = np.mean([h * w * p.encode_per_s for p in pts_ours]) / 1e6
            dec = np.mean([h * w * p.decode_per_s for p in pts_ours]) / 1e6
            print(f"  {family} speed: encode {enc:.2f} Mpixel/s, decode {dec:.2f} Mpixel/s")
        summary.append(row)

    for family in families():
        print(
            f"\n{family} at its default ({_default_label(family)}): bits over each anchor's "
            "at equal PSNR (< 1: blendae smaller)"
        )
        anchors = [k[1] for k in summary[0] if k != "photo" and k[0] == family]
        print(f"{'photo':24}" + "".join(f"{a:>14}" for a in anchors))
        for row in summary:
            cells = "".join(f"{fmt_ratio(row[family, a]):>14}" for a in anchors)
            print(f"{row['photo']:24}" + cells)


def _default_label(family: str) -> str:
    """The setting a family's default point has: the general model's default quality, or
    the blend zoo's q3 (0.5's default)."""
    members = families()[family]
    if members[0][1] is None:
        return "q3"
    return f"q{api.zoo_entries()[members[0][0]]['quality']}"


def _default_point(family: str, points: list[Point]) -> Point:
    return next(p for p in points if p.setting == _default_label(family))


def fmt_ratio(ratio: float | None) -> str:
    return "out of range" if ratio is None else f"{ratio:.2f}x"


if __name__ == "__main__":
    main()
