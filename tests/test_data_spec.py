"""`--data SPEC` parsing and the data options of a run's config."""

from __future__ import annotations

from pathlib import Path

import pytest

from blendae.config import RunConfig
from blendae.data.spec import STUDY, check_augments, parse_spec
from blendae.errors import BlendaeError


@pytest.mark.parametrize(
    ("text", "sources"),
    [
        ("cifar10", ("cifar10",)),
        ("fashion-mnist", ("fashion-mnist",)),
        ("blend:cifar10+mnist", ("cifar10", "mnist")),
        ("blend:mnist+fashion-mnist", ("mnist", "fashion-mnist")),
    ],
)
def test_builtin_specs(text: str, sources: tuple[str, ...]) -> None:
    spec = parse_spec(text)
    assert spec.sources == sources
    assert str(spec) == text
    assert spec.is_blend == (len(sources) == 2)
    assert spec.is_study == (text == STUDY)


def test_folder_paths_become_absolute_and_may_hold_plus(tmp_path: Path) -> None:
    folder = tmp_path / "a+b"
    spec = parse_spec(f"blend:folder:{folder}+mnist")
    assert spec.sources == (f"folder:{folder}", "mnist")
    assert parse_spec("folder:rel/dir").sources[0] == f"folder:{Path('rel/dir').absolute()}"
    both = parse_spec(f"blend:folder:{tmp_path}/x+folder:{tmp_path}/y")
    assert both.sources == (f"folder:{tmp_path}/x", f"folder:{tmp_path}/y")


@pytest.mark.parametrize(
    "text", ["", "cifar100", "blend:cifar10", "blend:cifar10+", "blend:+mnist", "folder:", "x+y"]
)
def test_bad_specs_are_one_clear_error(text: str) -> None:
    with pytest.raises(BlendaeError, match="--data"):
        parse_spec(text)


def test_augment_names_are_checked() -> None:
    assert check_augments(["hflip", "invert"]) == ("hflip", "invert")
    for bad in (["hflip", "hflip"], ["blur"]):
        with pytest.raises(BlendaeError, match="--augment"):
            check_augments(bad)


def test_config_defaults_and_resolved_preset() -> None:
    assert RunConfig().data == STUDY and RunConfig().preset == "seed"
    assert RunConfig(data="cifar10").preset == "data"
    assert RunConfig(data="cifar10", preset="unit").preset == "unit"
    old = RunConfig.from_dict({"preset": "unit"})  # a 0.5 config.json has no data keys
    assert old.data == STUDY and old.augment == [] and old.split == [90, 5, 5]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"data": "cifar10", "preset": "seed"}, "preset 'seed'"),
        ({"size": 40}, "multiple of 16"),
        ({"size": 0}, "--size"),
        ({"channels": 2}, "--channels"),
        ({"augment": ["spin"]}, "--augment"),
        ({"pairing": "shuffled"}, "pairing"),
        ({"split": [90, 10]}, "--split"),
        ({"split": [0, 50, 50]}, "--split"),
        ({"split": [80, 10, 5]}, "--split"),
        ({"data": "nope"}, "--data"),
    ],
)
def test_bad_data_options(values: dict, message: str) -> None:
    with pytest.raises(BlendaeError, match=message):
        RunConfig.from_dict(values)


def test_a_mixture_names_two_or_more_different_specs() -> None:
    spec = parse_spec("mix:cifar10,blend:mnist+fashion-mnist,mnist")
    assert [str(p) for p in spec.parts] == ["cifar10", "blend:mnist+fashion-mnist", "mnist"]
    assert str(spec) == "mix:cifar10,blend:mnist+fashion-mnist,mnist"
    assert not spec.is_blend and not spec.is_study and spec.sources == ()
    for bad in ("mix:", "mix:cifar10", "mix:cifar10,cifar10", "mix:cifar10,mix:mnist", "mix:a,b"):
        with pytest.raises(BlendaeError, match="mixture"):
            parse_spec(bad)


def test_a_folder_in_a_mixture_may_hold_commas(tmp_path) -> None:
    folder = tmp_path / "a,b"
    spec = parse_spec(f"mix:folder:{folder},mnist")
    assert [str(p) for p in spec.parts] == [f"folder:{folder}", "mnist"]


def test_a_mixture_defaults_to_the_unit_space() -> None:
    assert RunConfig(data="mix:cifar10,mnist").preset == "unit"
    assert RunConfig(data="cifar10").preset == "data"
