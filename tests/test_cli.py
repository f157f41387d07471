"""The command line: one-line errors with exit status 2, nothing overwritten; e2e on the mirror."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blendae.cli import main

needs_mirror = pytest.mark.skipif(
    not os.environ.get("BLENDAE_MIRROR"), reason="BLENDAE_MIRROR is not set"
)


def _err_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--protocol", "fullbatch"],
        ["train", "--epochs", "0"],
        ["train", "--epochs", "ten"],
        ["train", "--lr", "-1"],
        ["train", "--model", "resnet"],
        ["train", "--model-args", "[1, 2]"],
        ["train", "--lr", "inf"],
        ["train", "--lr", "nan"],
        ["train", "--seed", "99999999999999999999999"],
        ["train", "--codec"],
        ["prepare", "--preset", "imagenet"],
        ["frobnicate"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_non_empty_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["train", "--out", str(out), "--epochs", "1"]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "not empty" in lines[0] and "notes.txt" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_resume_refuses_changed_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"out": str(out), "model": "seed", "lr": 0.001}))
    assert main(["train", "--out", str(out), "--resume", "--lr", "0.01"]) == 2
    assert "--lr" in _err_lines(capsys)[0]


def test_evaluate_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "not a blendae run folder" in lines[0]


def test_version_and_help_for_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    from blendae import __version__
    from blendae.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"blendae {__version__}"
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # the documented subcommands
    for name, sub in commands.items():
        assert "examples:" in (sub.epilog or ""), name
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    assert (
        "q3" in commands["compress"].format_help()
        and "(default)" in commands["compress"].format_help()
    )


def test_resume_takes_the_folder_as_its_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model": "seed", "lr": 0.001}))
    assert main(["train", "--resume", str(out), "--lr", "0.01"]) == 2
    assert "--lr" in _err_lines(capsys)[0]  # the run in that folder was found and checked


def test_module_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "blendae", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    for command in ("prepare", "train", "run", "evaluate", "compress", "decompress"):
        assert command in done.stdout


@needs_mirror
@pytest.mark.mirror
def test_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`blendae run` on a slice of the real data writes every promised output."""
    out = tmp_path / "e2e"
    argv = [
        "run",
        "--model",
        "seed",
        "--preset",
        "seed",
        "--protocol",
        "seed-fullbatch",
        "--epochs",
        "2",
        "--out",
        str(out),
        "--limit-train",
        "2000",
        "--limit-test",
        "500",
    ]
    assert main(argv) == 0
    assert "summary.md" in capsys.readouterr().out
    for name in (
        "config.json",
        "metrics.jsonl",
        "loss.png",
        "reconstructions.png",
        "checkpoint.safetensors",
        "model.safetensors",
        "summary.md",
    ):
        assert (out / name).is_file(), name
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    # The study's space, before its first step: the loss is the data's mean square (~1.0).
    assert 0.8 < metrics[0]["train_loss"] < 1.1
    summary = (out / "summary.md").read_text()
    assert "blendae run --model seed" in summary and "0.2609" in summary
    config = json.loads((out / "config.json").read_text())
    mirror = os.path.abspath(os.environ["BLENDAE_MIRROR"])
    assert config["data_source"]["mirror"] == mirror  # resolved from the environment
    # Resume continues to epoch 3 from the checkpoint, and the report follows.
    assert main(["train", "--resume", str(out), "--epochs", "3"]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert " 3 epochs" in (out / "summary.md").read_text()  # the report is current
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert "PSNR" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_psnr"] > 0
