"""Files the `blendae serve` tests share: images, a decompression bomb, fake run folders."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLES = Path(__file__).resolve().parents[1] / "src/blendae/serve/static/samples"
SAMPLE = SAMPLES / "test-0613.png"


def png_bytes(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A ~100-byte PNG whose header claims width×height RGB pixels (1.2 GB decoded)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + b"\x00" * 3 * 16  # only a little of the image data is really there
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(row * 4))
        + _chunk(b"IEND", b"")
    )


def make_run(root: Path, name: str, *, epochs: int = 3, planned: int = 3) -> Path:
    """A run folder as `blendae run` leaves it: config, metrics, final, summary, two plots."""
    run = root / name
    run.mkdir(parents=True)
    config = {"model": "conv", "preset": "unit", "protocol": "minibatch", "epochs": planned}
    (run / "config.json").write_text(json.dumps(config))
    lines = [
        {
            "epoch": e,
            "train_loss": 0.1 / e,
            "test_loss": 0.08 / e,
            "test_psnr": 20.0 + e,
            "test_ssim": 0.9,
            "seconds": 2.5,
        }
        for e in range(1, epochs + 1)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    final = {"test_loss": 0.02, "test_psnr": 30.5, "test_ssim": 0.97}
    (run / "final.json").write_text(json.dumps(final))
    (run / "summary.md").write_text(f"# {name}\n\nA test run <b>not bold</b>.\n")
    (run / "loss.png").write_bytes(loss_png(lines))
    (run / "reconstructions.png").write_bytes(reconstructions_png())
    return run


def loss_png(lines: list[dict]) -> bytes:
    """A small loss plot like the run report's."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 2.5), dpi=80, layout="constrained")
    ax = fig.add_subplot()
    epochs = [line["epoch"] for line in lines]
    for key in ("train_loss", "test_loss"):
        ax.plot(epochs, [line[key] for line in lines], marker="o", label=key)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.legend()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def reconstructions_png() -> bytes:
    """Two rows of the shipped samples (a stand-in for test images over reconstructions)."""
    tiles = [np.asarray(Image.open(path)) for path in sorted(SAMPLES.glob("*.png"))[:16]]
    return png_bytes(np.concatenate([np.concatenate(tiles[:8], 1), np.concatenate(tiles[8:], 1)]))


def make_runs(root: Path) -> Path:
    """A runs folder: one good run, one with a broken config, one empty, one stray file."""
    make_run(root, "good-run")
    stopped = make_run(root, "stopped-run", epochs=2, planned=50)  # interrupted at 2 of 50
    (stopped / "final.json").unlink()
    broken = make_run(root, "broken-run")
    (broken / "config.json").write_text("{not json")
    (broken / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.0}\nnot json\n')
    (root / "empty-run").mkdir()
    (root / "stray.txt").write_text("not a run")
    return root
