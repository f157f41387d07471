"""`blendae compress --quality Q`: the general model's rate, recorded in the file (container
version 2); refused for fixed-rate models and outside 0..100; listed in --help, torch-free."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blendae.cli import main
from blendae.codec import container, zoo_entries

SRC = str(Path(__file__).resolve().parents[1] / "src")
SAMPLES = sorted((Path(SRC) / "blendae/serve/static/samples").glob("*.png"))[:4]


def compress(tmp_path: Path, quality: int | None, *extra: str) -> Path:
    out = tmp_path / f"q{quality}"
    argv = ["compress", *map(str, SAMPLES), "-o", str(out), *extra]
    assert main(argv + ([] if quality is None else ["--quality", str(quality)])) == 0
    return out


def psnr_over(folder: Path) -> float:
    """PSNR of the decompressed PNGs in `folder` against the samples, over every pixel."""
    pairs = [
        (np.asarray(Image.open(s)), np.asarray(Image.open(folder / f"{s.stem}.png")))
        for s in SAMPLES
    ]
    mse = np.mean([np.mean((a.astype(float) - b.astype(float)) ** 2) for a, b in pairs])
    return 10 * math.log10(255**2 / mse)


def test_quality_is_recorded_and_decompresses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = compress(tmp_path, 30)
    assert "at quality 30" in capsys.readouterr().err  # the summary names it
    for sample in SAMPLES:
        data = (out / f"{sample.stem}.bae").read_bytes()
        assert data[2] == container.VERSION_COMPACT
        header, _ = container.unpack(data)
        assert header.quality == 30
        assert container.made_by(header, bytes.fromhex(zoo_entries()["general"]["id"]))
    restored = tmp_path / "restored"
    assert main(["decompress", str(out), "-o", str(restored)]) == 0
    for sample in SAMPLES:
        assert np.asarray(Image.open(restored / f"{sample.stem}.png")).shape == (32, 32, 3)


def test_default_quality_is_the_general_model_s(tmp_path: Path) -> None:
    out = compress(tmp_path, None)
    header, _ = container.unpack((out / f"{SAMPLES[0].stem}.bae").read_bytes())
    assert header.quality == zoo_entries()["general"]["quality"] == 63


def test_higher_quality_is_larger_and_better(tmp_path: Path) -> None:
    sizes, psnrs = {}, {}
    for q in (10, 50, 90):
        out = compress(tmp_path, q)
        sizes[q] = sum(p.stat().st_size for p in out.glob("*.bae"))
        restored = tmp_path / f"restored{q}"
        assert main(["decompress", str(out), "-o", str(restored)]) == 0
        psnrs[q] = psnr_over(restored)
    assert sizes[10] < sizes[50] < sizes[90]
    assert psnrs[10] < psnrs[50] < psnrs[90]


@pytest.mark.parametrize("model", ["blend-q3", "q3"])
def test_quality_with_a_fixed_rate_model_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str
) -> None:
    out = tmp_path / "out.bae"
    argv = ["compress", str(SAMPLES[0]), "-o", str(out), "--model", model, "--quality", "50"]
    assert main(argv) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert line.startswith("blendae: error: --quality 50: model ")
    assert model in line and "fixed rate" in line and "general" in line
    assert not out.exists()
    assert main(argv[:-2]) == 0  # the same model without --quality codes
    header, _ = container.unpack(out.read_bytes())
    assert header.quality is None and out.read_bytes()[2] == container.VERSION_COMPACT


@pytest.mark.parametrize("value", ["101", "-1", "abc", "1.5", "", "1e2"])
def test_quality_outside_0_to_100_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["compress", str(SAMPLES[0]), "-o", str(tmp_path / "x.bae"), "--quality", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --quality: expected a whole number 0..100" in err
    assert not (tmp_path / "x.bae").exists()


HELP_CHILD = """
import sys
from blendae import cli
try:
    cli.main(["compress", "--help"])
except SystemExit as exc:
    assert exc.code == 0, exc.code
print("torch loaded:", "torch" in sys.modules)
"""


def test_help_lists_the_measured_quality_scale_without_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", HELP_CHILD],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.rstrip().endswith("torch loaded: False")
    meta = zoo_entries()["general"]
    table = meta["qualities"]  # scripts/measure_qualities.py
    assert {"0", "50", "63", "100"} <= set(table)
    flat = " ".join(out.split())  # argparse wraps the options' help
    assert "--quality Q 0..100" in flat and "(default: 63, the general model's)" in flat
    for spec, count in meta["qualities_images"].items():
        assert f"{spec} ({count:,})" in out
    lines = out.splitlines()
    for q, sets in table.items():
        (row,) = [line for line in lines if line.split()[:1] == [q]]
        for scores in sets.values():
            assert f"{scores['bpp']:.2f} bpp {scores['psnr']:5.2f} dB" in row
        assert row.endswith("(default)") == (int(q) == meta["quality"])
    for k in range(5):  # the blend zoo, with its measured numbers
        final = zoo_entries()[f"q{k}"]["final_metrics"]
        (row,) = [line for line in lines if line.strip().startswith(f"blend-q{k} (q{k})")]
        assert f"{final['test_bpp']:.2f} bpp {final['test_psnr']:5.2f} dB" in row


def test_quality_table_is_ordered_and_monotone() -> None:
    """The recorded scale: more bits and a higher PSNR for every higher quality."""
    table = zoo_entries()["general"]["qualities"]
    qualities = sorted(table, key=int)
    for spec in table[qualities[0]]:
        bpps = [table[q][spec]["bpp"] for q in qualities]
        psnrs = [table[q][spec]["psnr"] for q in qualities]
        assert bpps == sorted(bpps) and psnrs == sorted(psnrs), spec
    assert json.loads(json.dumps(table)) == table  # plain JSON numbers
