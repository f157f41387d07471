"""`python -m benchmarks.rd --all-sets`: its set list, its summary lines, and the saving
at AVIF's top points (the README's "at AVIF's own points" figures)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from benchmarks import rd
from benchmarks.blend_variants import blends, variant_images

from blendae.data.spec import parse_spec


def test_the_sets_are_the_issues_and_each_one_loads_by_name() -> None:
    assert rd.ALL_SETS == (
        "blend:cifar10+mnist",
        "blend:cifar10+fashion-mnist",
        "cifar10",
        "mnist",
        "fashion-mnist",
        "blend:cifar10+mnist:transposed-inverted",
    )
    for name in rd.ALL_SETS:
        if name != rd.SHIFTED_SET:
            assert str(parse_spec(name)) == name  # a `--data` spec test_images can load
    digits = torch.rand(2, 1, 32, 32)
    assert rd.SHIFTED_VARIANT in blends(torch.rand(2, 3, 32, 32), digits)


def test_bd_line_has_one_decimal_and_a_sign_or_the_reason() -> None:
    assert (
        rd.bd_line("cifar10", -45.43, 25.61) == "bd cifar10 vs-webp -45.4% vs-avif-payload +25.6%"
    )
    reason = rd.bd_or_reason([rd.Point("a", "q", 1.0, 30.0, 1, 1)], [])
    assert rd.bd_line("mnist", reason, 0.04) == (
        "bd mnist vs-webp n/a: fewer than 2 points on a curve vs-avif-payload +0.0%"
    )


def points(codec: str, pairs: str) -> list[rd.Point]:
    return [
        rd.Point(codec, f"q{i}", float(b), float(p), 1.0, 1.0)
        for i, (b, p) in enumerate(pair.split("/") for pair in pairs.split())
    ]


def test_saving_at_avifs_top_points_reproduces_the_readme() -> None:
    # The README's 1,000-image run: blendae q0..q4 and AVIF's payload q30..q60; it quotes
    # 25.5 %, 18.4 %, 13.2 % and 6.7 % fewer bits at AVIF's four points.
    ours = points("blendae", "0.657/29.95 0.901/31.95 1.259/34.47 1.645/37.05 1.987/38.73")
    avif = points("avif-payload", "0.895/30.04 1.175/32.42 1.534/35.01 1.998/38.16")
    assert rd.saving_line(avif, ours) == (
        "q2 35.01 dB: 13.2% fewer bits; q3 38.16 dB: 6.7% fewer bits"
    )
    assert rd.saving_line(avif, ours, top=4).startswith("q0 30.04 dB: 25.5% fewer bits; q1")
    beyond = points("avif-payload", "1.0/36.0 1.2/38.0 1.3/40.0")
    assert rd.saving_line(beyond, ours) == (
        "q1 38.00 dB: 52.5% more bits; q2 40.00 dB: outside blendae's 29.95–38.73 dB"
    )


@pytest.mark.mirror
def test_all_sets_on_the_study_and_the_shifted_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The two sets with their own loaders (each source alone loads as the study does),
    on three images each; the shifted set's sources are the study's test images."""
    shown = rd.set_images(rd.STUDY, 3, None)
    assert np.array_equal(variant_images("test blends", 3, None), shown)
    monkeypatch.setattr(rd, "ALL_SETS", (rd.STUDY, rd.SHIFTED_SET))
    monkeypatch.setattr(sys, "argv", ["rd", "--all-sets", "--limit", "3", "--threads", "2"])
    rd.main()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" vs-webp ")[0] for line in lines[-2:]] == [
        f"bd {rd.STUDY}",
        f"bd {rd.SHIFTED_SET}",
    ]
    # per set, a saving line for each shipped family: the general model and the blend zoo
    assert sum("at AVIF's top two points" in line for line in lines) == 2 * len(rd.families())
    assert lines[-3] == f"{rd.main_family()} (the default model):"
    assert sum(line.startswith("blendae-blend: bd ") for line in lines) == 2
