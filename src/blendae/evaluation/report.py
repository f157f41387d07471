"""`blendae evaluate`: re-measure a finished run and write its figures and summary.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from blendae import runs
from blendae.config import RunConfig
from blendae.data import BlendedSplits, Data, from_pixels, to_pixels
from blendae.data.spec import STUDY as STUDY_DATA
from blendae.errors import BlendaeError
from blendae.evaluation.metrics import measure
from blendae.evaluation.plots import comparison_rows, plot_losses, plot_rows
from blendae.files import atomic_write_text

STUDY = {"train_first": 0.9747, "train_last": 0.2641, "test_first": 0.9674, "test_last": 0.2609}
N_SHOWN = 8


def evaluate_run(run_dir: Path, splits: Data | BlendedSplits) -> dict[str, Any]:
    """Evaluate the run's final weights on its test images (`splits`: the run's data);
    write loss.png, reconstructions.png, summary.md and final.json; return the numbers."""
    data = Data.of(splits)
    with runs.lock(run_dir):
        config, model = runs.load_model(run_dir)
        state = runs.load_state(run_dir)
        metrics: list[dict[str, Any]] = state["metrics"]
        test = data.tensors("test", config.limit_test, torch.device("cpu"))
        cpu = torch.device("cpu")
        final = measure(model, test, config, data.space, torch.contiguous_format, cpu)
        title = f"{config.model} · {config.data} · {config.preset}"
        plot_losses(metrics, run_dir / runs.LOSS_PLOT, title)
        rows = comparison_rows(model, {k: v[:N_SHOWN] for k, v in test.items()}, data.space)
        plot_rows(
            rows, run_dir / runs.RECONSTRUCTIONS, f"{config.model} on {config.data} test images"
        )
        summary = render_summary(
            run_dir.name, config, metrics, final, state["commands"], state["machine"],
            len(test["x"]),
        )  # fmt: skip
        atomic_write_text(run_dir / runs.SUMMARY, summary)
        atomic_write_text(run_dir / runs.FINAL, json.dumps(final, indent=2) + "\n")
    return final


def evaluate_on(run_dir: Path, data: Data) -> dict[str, Any]:
    """The run's final weights measured on another data set's test split, mapped through
    pixels into the run's input space (gray copied to RGB for an RGB model); writes nothing."""
    config, model = runs.load_model(run_dir)
    space = runs.space(run_dir, config)
    x = data.tensors("test", config.limit_test, torch.device("cpu"))["x"]
    if x.shape[1] != space.channels:
        if space.channels == 1:
            raise BlendaeError(f"{run_dir} codes gray images; --data {data.spec} is in color")
        x = x.expand(-1, space.channels, -1, -1)
    x = from_pixels(to_pixels(x, data.space), space)
    cpu = torch.device("cpu")
    return measure(model, {"x": x}, config, space, torch.contiguous_format, cpu)


SOURCES = (("cifar", "CIFAR"), ("mnist", "digit"))


def _data_options(config: RunConfig) -> str:
    """The data options that shape the images, as a short phrase."""
    parts = [f"{config.size}×{config.size}", f"pairing {config.pairing}"]
    parts.append("augment " + ",".join(config.augment) if config.augment else "no augmentation")
    if "folder:" in config.data:
        parts.append("split " + "/".join(map(str, config.split)))
    return ", ".join(parts)


def _source_rows(first: dict[str, Any], last: dict[str, Any]) -> list[str]:
    """Per-source table rows of a separation run (none for other runs)."""
    return [
        f"| {name} {what} | {first[key]:{fmt}} | {last[key]:{fmt}} |"
        for k, name in SOURCES
        for what, key, fmt in (
            ("PSNR (dB)", f"test_psnr_{k}", ".2f"),
            ("SSIM", f"test_ssim_{k}", ".4f"),
        )
        if key in last
    ]


def render_summary(
    name: str,
    config: RunConfig,
    metrics: list[dict[str, Any]],
    final: dict[str, float],
    commands: list[str],
    machine: dict[str, Any],
    n_test: int | None = None,
) -> str:
    """The run's numbers in Markdown, with the study's for comparison when they apply."""
    first, last = metrics[0], metrics[-1]
    train_seconds = sum(m["seconds"] for m in metrics)
    lines = [
        f"# blendae run: {name}",
        "",
        "Command: " + (" ; then ".join(f"`{c}`" for c in commands if c) or "(not recorded)"),
        "",
        f"Data `{config.data}` ({_data_options(config)}). "
        f"Model `{config.model}`{f' {config.model_args}' if config.model_args else ''}, "
        f"preset `{config.preset}`, "
        f"protocol `{config.protocol}`, {len(metrics)} epochs, batch size {config.batch_size}, "
        f"lr {config.lr} ({config.lr_schedule}), seed {config.seed}, device {config.device}.",
        "",
        "| | first epoch | last epoch |",
        "| --- | --- | --- |",
        f"| train loss | {first['train_loss']:.4f} | {last['train_loss']:.4f} |",
        f"| test loss | {first['test_loss']:.4f} | {last['test_loss']:.4f} |",
        f"| test PSNR (dB, pixel space) | {first['test_psnr']:.2f} | {last['test_psnr']:.2f} |",
        f"| test SSIM | {first['test_ssim']:.4f} | {last['test_ssim']:.4f} |",
        *_source_rows(first, last),
        "",
        f"Final evaluation on {n_test or config.limit_test or 10000} test images: test loss "
        f"{final['test_loss']:.4f}, PSNR {final['test_psnr']:.2f} dB, SSIM {final['test_ssim']:.4f}"
        + (f", estimated rate {final['test_bpp']:.3f} bpp" if "test_bpp" in final else "")
        + "".join(
            f"; {name} PSNR {final[f'test_psnr_{k}']:.2f} dB, SSIM {final[f'test_ssim_{k}']:.4f}"
            for k, name in SOURCES
            if f"test_psnr_{k}" in final
        )
        + ".",
        "",
        f"Wall time: {train_seconds:.1f} s for {len(metrics)} epochs (training and per-epoch "
        f"evaluation), {train_seconds / len(metrics):.1f} s per epoch, on {machine['device']} "
        f"({machine['cpu']}, {machine['threads']} threads, {machine['world_size']} process(es), "
        f"bf16 autocast {'on' if machine['bf16'] else 'off'}, torch {machine['torch']}).",
    ]
    if config.model == "seed" and config.preset == "seed" and config.data == STUDY_DATA:
        lines += [
            "",
            "The study (50 full-batch epochs): train loss "
            f"{STUDY['train_first']} → {STUDY['train_last']}, test loss "
            f"{STUDY['test_first']} → {STUDY['test_last']}.",
        ]
    lines += ["", "![loss](loss.png)", "", "![reconstructions](reconstructions.png)", ""]
    return "\n".join(lines)
