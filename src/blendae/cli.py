"""Command-line interface: argument parsing and dispatch only.

Results go to stdout, progress and logs to stderr. A `BlendaeError` becomes one line
on stderr and exit status 2, like argparse's own usage errors. Every choice offered here
comes from the table that owns it (models, presets, protocols, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import shlex
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blendae import __version__
from blendae.codec.container import MAX_QUALITY
from blendae.codec.zoo import DEFAULT as DEFAULT_MODEL
from blendae.config import DEVICES, LR_SCHEDULES, PROTOCOLS, RunConfig
from blendae.data import PRESETS
from blendae.data.formats import CIFAR_VARIANTS
from blendae.data.spec import AUGMENTS, EXAMPLES, PAIRINGS, PRESET_NAMES, parse_spec
from blendae.errors import BlendaeError
from blendae.models.names import MODEL_NAMES as MODELS  # the names only: no torch

TRAIN_EXAMPLES = """examples:
  blendae run                                   the default model, 50 epochs (~36 min, 2 cores)
  blendae run --model seed --protocol seed-fullbatch   replay the study exactly
  blendae train --model factorized --lambda 0.05 --preset unit --out runs/codec
  blendae train --resume runs/codec --epochs 10        continue (or extend) a run
  blendae run --data cifar10 --out runs/cifar          plain CIFAR-10 (its own statistics)
  blendae run --data folder:~/photos --size 64         your images: random 64×64 crops
  blendae run --data blend:cifar10+fashion-mnist --augment hflip,rot90,invert --pairing random"""

COMPRESS_EXAMPLES = """  blendae compress tiny.png -o tiny.bae
  blendae compress photos/ -o compressed/ --recursive
  blendae compress a.png -o a.bae --quality 30 --force    smaller file, replace a.bae
  blendae compress blend.png -o blend.bae --model blend-q3   the study's blends' own model"""
SEPARATE_EXAMPLES = (
    "  blendae separate mix.png -o parts/     writes parts/mix.cifar.png, mix.mnist.png\n"
    "  blendae separate mixes/ -o parts/ --force"
)
DECOMPRESS_EXAMPLES = """  blendae decompress tiny.bae -o tiny.png
  blendae decompress compressed/ -o restored/ --recursive"""

# Options of `train`/`run` that map one-to-one onto RunConfig fields.
TRAIN_FIELDS = tuple(
    f.name for f in dataclasses.fields(RunConfig) if f.name not in ("eval_batch_size",)
)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"latent_channels\": 32}'")
    return value


def _positive(cast: Callable[[str], Any], what: str, limit: float) -> Callable[[str], Any]:
    """An argparse type: `cast(text)`, refused unless it is finite, > 0 and <= `limit`."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from exc
        if not (math.isfinite(value) and 0 < value <= limit):
            raise argparse.ArgumentTypeError(f"expected {what} up to {limit:g}, got {text!r}")
        return value

    return parse


_positive_int = _positive(int, "a positive whole number", 2**31 - 1)
_positive_float = _positive(float, "a finite number > 0", 1e6)


def _quality(text: str) -> int:
    """--quality: a whole number 0..100, checked here so that a bad one is a usage error."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a whole number 0..100, got {text!r}") from exc
    if not 0 <= value <= MAX_QUALITY:
        raise argparse.ArgumentTypeError(f"expected a whole number 0..100, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from exc
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 2**63-1, got {text}")
    return value


def _augments(text: str) -> list[str]:
    return [op.strip() for op in text.split(",") if op.strip()]


def _split(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split("/")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected train/val/test percentages like 90/5/5, got {text!r}"
        ) from exc


def _add_spec_options(p: argparse.ArgumentParser) -> None:
    """What the images are: --data and the options that shape them."""
    d = RunConfig()
    p.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        help="normalization: seed (the study's, its data only), unit ([0, 1]) or data (each "
        "source's training statistics); default: seed for the study's data, unit for a "
        "mixture, else data",
    )
    p.add_argument(
        "--data", metavar="SPEC", help=f"images to train on: {EXAMPLES} (default: {d.data})"
    )
    p.add_argument(
        "--size",
        type=_positive_int,
        help=f"training images are N×N, a multiple of 16 (default: {d.size}); larger "
        "folder images are cropped",
    )
    p.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        help="1 (gray) or 3 (RGB); default: 1 for a gray source alone, else 3",
    )
    p.add_argument(
        "--augment",
        type=_augments,
        metavar="OPS",
        help=f"comma-separated, applied per source before blending: {','.join(AUGMENTS)}",
    )
    p.add_argument(
        "--pairing",
        choices=PAIRINGS,
        help="blends: image i with image i (fixed, the default) or partners re-drawn every epoch",
    )
    p.add_argument(
        "--split",
        type=_split,
        metavar="TRAIN/VAL/TEST",
        help="folders: percentages of the deterministic split by path hash (default: 90/5/5)",
    )


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mirror",
        help="folder or URL serving the official files and SHA256SUMS "
        "(default: $BLENDAE_MIRROR, else the official URLs)",
    )
    p.add_argument("--cache", help="cache folder (default: $BLENDAE_CACHE, else the user cache)")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    d = RunConfig()
    # Defaults are None so that an explicit option can be told apart on --resume;
    # the help shows the real default.
    p.add_argument("--out", type=Path, help="run folder (default: runs/<model>-<protocol>)")
    p.add_argument("--model", choices=sorted(MODELS), help=f"architecture (default: {d.model})")
    p.add_argument(
        "--model-args",
        type=_json_object,
        help="constructor arguments as JSON, e.g. '{\"latent_channels\": 32}'",
    )
    _add_spec_options(p)
    p.add_argument("--protocol", choices=PROTOCOLS, help=f"(default: {d.protocol})")
    p.add_argument("--epochs", type=_positive_int, help=f"(default: {d.epochs})")
    p.add_argument("--batch-size", type=_positive_int, help=f"(default: {d.batch_size})")
    p.add_argument("--lr", type=_positive_float, help=f"Adam learning rate (default: {d.lr})")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, help=f"(default: {d.lr_schedule})")
    p.add_argument("--seed", type=_seed, help=f"seeds init and shuffles (default: {d.seed})")
    p.add_argument(
        "--clip-grad",
        type=_positive_float,
        help="clip the gradient norm to this before each step (default: off); may change on "
        "--resume, the cure for a run whose test PSNR collapsed",
    )
    p.add_argument(
        "--init-from",
        metavar="RUN_FOLDER",
        help="start from the trained weights of this run (fine-tune a model that extends "
        "it); its other layers keep their initialization",
    )
    p.add_argument("--limit-train", type=_positive_int, help="use the first N training images")
    p.add_argument("--limit-test", type=_positive_int, help="use the first N test images")
    p.add_argument(
        "--val",
        type=_positive_int,
        help="hold out the last N training images and score every epoch on them instead of "
        "the test set (metrics keep their test_ names); choose settings this way",
    )
    p.add_argument("--device", choices=DEVICES, help=f"(default: {d.device})")
    p.add_argument(
        "--lambda",
        dest="lmbda",
        type=_positive_float,
        help="rate–distortion trade-off λ of codec models (loss λ·255²·MSE + bpp); required "
        "for them, refused for the others",
    )
    p.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_const",
        const=False,
        help="keep NCHW memory layout (channels-last is faster on oneDNN/cuDNN)",
    )
    p.add_argument(
        "--no-bf16",
        dest="bf16",
        action="store_const",
        const=False,
        help="train mini-batches in float32 even where bf16 autocast is available",
    )
    p.add_argument(
        "--no-tensorboard",
        dest="tensorboard",
        action="store_const",
        const=False,
        help="write no TensorBoard events (on by default when tensorboard is installed)",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN_FOLDER",
        help="continue the run in --out (or in RUN_FOLDER)",
    )
    _add_data_options(p)


def _sub(sub: Any, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with an example block."""
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _scores(bpp: Any, psnr: Any) -> str:
    try:
        return f"{float(bpp):.2f} bpp {float(psnr):5.2f} dB"
    except (TypeError, ValueError):
        return "–"


def _wrapped(text: str) -> list[str]:
    return textwrap.wrap(text, width=88, initial_indent="  ", subsequent_indent="  ")


def _quality_scale(name: str, meta: dict[str, Any]) -> list[str]:
    """The variable-rate model `name`'s measured qualities (its JSON's "qualities", written
    by scripts/measure_qualities.py) as a table: quality, then bpp and PSNR per test set."""
    table = meta.get("qualities") or {}
    if not table:
        return [f"    (no measured qualities in {name}.json: run scripts/measure_qualities.py)"]
    counts = meta.get("qualities_images") or {}
    sets = list(dict.fromkeys(s for row in table.values() for s in row))
    heads = [f"{s} ({counts[s]:,})" if s in counts else s for s in sets]
    width = max(22, *(len(h) + 2 for h in heads))
    lines = ["      Q  " + "".join(f"{h:<{width}}" for h in heads).rstrip()]
    for q in sorted(table, key=int):
        cells = [_scores(**table[q][s]) if s in table[q] else "–" for s in sets]
        row = f"    {int(q):>3}  " + "".join(f"{c:<{width}}" for c in cells).rstrip()
        lines.append(row + ("  (default)" if int(q) == meta.get("quality") else ""))
    return lines


def _shipped_models() -> str:
    """The shipped codec models for compress --help: each variable-rate model's measured
    quality scale, then the blend zoo with its test-set rate and quality. Read from the
    models' JSON files only: no torch."""
    from blendae.codec import DEFAULT, zoo_entries
    from blendae.codec.zoo import ALIASES, offered

    alias = {name: a for a, name in ALIASES.items()}
    entries = offered()
    out = []
    for name, meta in entries.items():
        if meta.get("quality") is None:
            continue
        mark = " (the default)" if name == DEFAULT else ""
        out += _wrapped(
            f"{name}{mark}: one model for any image, at every rate: --quality 0..100 "
            f"(default {meta['quality']}). Measured: bpp of the coded files (headers "
            "included) and PSNR of their decoding, on the first test images of each set:"
        )
        out += [*_quality_scale(name, meta), ""]
    fixed = {name: meta for name, meta in entries.items() if meta.get("quality") is None}
    if fixed:
        counts = {(m.get("final_metrics") or {}).get("test_images") for m in fixed.values()}
        count = counts.pop() if len(counts) == 1 else None
        on = f"all {count:,}" if isinstance(count, int) else "the"
        names = [alias.get(name, name) for name in fixed]
        out += _wrapped(
            f"{names[0]}..{names[-1]}, the blend zoo: specialised for the study's "
            "CIFAR-10/MNIST blends, one fixed rate each (no --quality); coded files of "
            f"{on} blended test images:"
        )
        for name, meta in fixed.items():
            final = meta.get("final_metrics") or {}
            shown = f"{alias[name]} ({name})" if name in alias else name
            scores = _scores(final.get("test_bpp"), final.get("test_psnr"))
            out.append(f"    {shown:<15}{scores}" + (" (default)" if name == DEFAULT else ""))
    for name, meta in zoo_entries().items():
        if "superseded_by" in meta:
            note = (
                f"{name}: the {meta['superseded_by']} model of blendae {meta['shipped_in']}, "
                f"replaced by {meta['superseded_by']}; kept so that its files decode "
                f"(--model {name} still codes with it)"
            )
            out += ["", *_wrapped(note)]
    return "shipped models (--model NAME):\n" + "\n".join(out).rstrip()


def _default_quality() -> int | None:
    """The default model's default quality, from its JSON (no torch)."""
    from blendae.codec.zoo import zoo_entries

    return zoo_entries().get(DEFAULT_MODEL, {}).get("quality")


def _add_file_options(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("-o", "--out", type=Path, required=True, help=out_help)
    p.add_argument(
        "-f", "--force", action="store_true", help="replace existing output files (never inputs)"
    )
    p.add_argument(
        "-r", "--recursive", action="store_true", help="code subfolders too, mirrored under -o"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blendae",
        description="Autoencoders on tiny images (the study's CIFAR-10/MNIST blends, or any "
        "--data), and a learned image codec.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"blendae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _sub(sub, "prepare", "download, verify and blend the datasets", "  blendae prepare")
    p.add_argument("--preset", choices=tuple(PRESETS), default="seed", help="normalization")
    p.add_argument(
        "--cifar-variant",
        choices=CIFAR_VARIANTS,
        default=CIFAR_VARIANTS[0],
        help="which official CIFAR-10 archive to read",
    )
    _add_data_options(p)
    _add_train_options(
        _sub(sub, "train", "train a model; writes checkpoints, metrics and report", TRAIN_EXAMPLES)
    )
    _add_train_options(
        _sub(sub, "run", "prepare + train + evaluate + report (the quick start)", TRAIN_EXAMPLES)
    )

    p = _sub(
        sub,
        "evaluate",
        "re-measure a run folder on its test images; rewrites its report",
        "  blendae evaluate runs/conv-minibatch",
    )
    p.add_argument("run_dir", type=Path, help="the run folder (holds config.json)")
    p.add_argument("--json", action="store_true", help="print the final numbers as JSON")
    p.add_argument(
        "--data",
        metavar="SPEC",
        help="measure on another spec's test split, in the run's input space (prints only; "
        "the report stays the run's own)",
    )

    p = _sub(sub, "compress", "images (files or folders) → .bae files", COMPRESS_EXAMPLES)
    p.epilog = f"{_shipped_models()}\n\n{p.epilog}"
    p.add_argument("inputs", nargs="+", type=Path, help="image files or folders of images")
    _add_file_options(p, "output folder, or a file ending in .bae for one input")
    p.add_argument(
        "--model",
        default=None,
        help=f"shipped model name or codec run folder (default: {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--quality",
        type=_quality,
        metavar="Q",
        help="0..100, like cwebp -q or avifenc -q: higher is a larger file and a better image "
        f"(default: {_default_quality()}, the {DEFAULT_MODEL} model's); variable-rate models "
        "only, see the scale below",
    )

    p = _sub(sub, "decompress", ".bae files (or folders of them) → PNG", DECOMPRESS_EXAMPLES)
    p.add_argument("inputs", nargs="+", type=Path, help=".bae files or folders of them")
    _add_file_options(p, "output folder, or a file ending in .png for one input")
    p.add_argument(
        "--model", default=None, help="run folder of the model that made the files, if not shipped"
    )

    p = _sub(
        sub, "separate", "mean images → their CIFAR-10 image and MNIST digit", SEPARATE_EXAMPLES
    )
    p.add_argument("inputs", nargs="+", type=Path, help="32×32 mean images, or folders of them")
    _add_file_options(p, "output folder (two files per input)")
    p.add_argument(
        "--model", default=None, help="run folder of a separation model (default: the shipped one)"
    )

    p = _sub(
        sub,
        "serve",
        "a local web page: the codec next to WebP and AVIF, and your runs",
        "  blendae serve            then open http://127.0.0.1:8000",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    p.add_argument("--port", type=_positive_int, default=8000, help="TCP port (default: 8000)")
    p.add_argument(
        "--runs", type=Path, default=Path("runs"), help="folder of run folders (default: runs)"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    """The run's config and folder: defaults overridden by the options given; on --resume,
    the run's saved config with the options the resume rule allows."""
    from blendae import runs

    given = {k: getattr(args, k) for k in TRAIN_FIELDS if getattr(args, k, None) is not None}
    if isinstance(args.resume, str):  # `--resume runs/X`
        if args.out is not None and args.out != Path(args.resume):
            raise BlendaeError(f"--resume {args.resume} and --out {args.out} name two folders")
        args.out, args.resume = Path(args.resume), True
    if args.resume:
        if args.out is None:
            raise BlendaeError("--resume needs --out RUN_FOLDER, the run to continue")
        if runs.has_checkpoint(args.out) or (args.out / runs.CONFIG).is_file():
            return runs.resumed_config(runs.load_config(args.out), given), args.out
    config = RunConfig(**given)
    config.validate()
    return config, args.out or Path(f"runs/{config.model}-{config.protocol}")


def _load_data(config: RunConfig) -> Any:
    from blendae.data import load_data
    from blendae.models import is_separator

    return load_data(
        config.data,
        preset=config.preset,
        size=config.size,
        channels=config.channels,
        augment_ops=config.augment,
        pairing=config.pairing,
        split=config.split,
        mirror=config.mirror,
        cache=config.cache,
        sources=is_separator(config.model),  # separation trains on each blend's two images
    )


def _train(args: argparse.Namespace, command_line: str) -> None:
    from blendae.data import resolve_cache, resolve_mirror
    from blendae.evaluation.report import evaluate_run
    from blendae.training.distributed import is_main_process
    from blendae.training.loop import plan_run, train

    config, run_dir = config_from_args(args)
    plan_run(config, run_dir, args.resume)  # refuse a wrong folder before loading any data
    config.data_source = {
        "mirror": resolve_mirror(config.mirror) or "the official URLs",
        "cache": str(resolve_cache(config.cache)),
    }
    splits = _load_data(config)
    train(config, run_dir, splits, resume=args.resume, command=command_line)
    if not is_main_process():  # under torchrun, rank 0 alone evaluates and reports
        return
    final = evaluate_run(run_dir, splits)  # the report is current after every training command
    print(_final_line(run_dir, final))


def _final_line(run_dir: Path, final: dict[str, float], data: str | None = None) -> str:
    rate = f", {final['test_bpp']:.3f} bpp" if "test_bpp" in final else ""
    on = f" on {data}" if data else ""
    return (
        f"{run_dir}{on}: test loss {final['test_loss']:.4f}, PSNR {final['test_psnr']:.2f} dB, "
        f"SSIM {final['test_ssim']:.4f}{rate}; see {run_dir}/summary.md"
    )


CODING_COMMANDS = ("compress", "decompress")  # they code batch after batch (blendae.allocator)


def _dispatch(args: argparse.Namespace, argv: list[str]) -> None:
    command_line = "blendae " + " ".join(shlex.quote(a) for a in argv)
    if args.command in CODING_COMMANDS:
        from blendae.allocator import keep_freed_memory

        keep_freed_memory()
    if args.command == "prepare":
        from blendae.data import load_blended

        splits = load_blended(
            args.preset, mirror=args.mirror, cache=args.cache, cifar_variant=args.cifar_variant
        )
        print(
            f"prepared preset {splits.preset}: train {tuple(splits.train.shape)}, "
            f"test {tuple(splits.test.shape)}"
        )
    elif args.command in ("train", "run"):
        _train(args, command_line)
    elif args.command == "evaluate":
        from blendae import runs
        from blendae.evaluation.report import evaluate_run

        config = runs.load_config(args.run_dir)
        if args.data is not None and parse_spec(args.data) != parse_spec(config.data):
            from blendae.evaluation.report import evaluate_on

            other = dataclasses.replace(config, data=args.data, preset="unit", augment=[])
            final = evaluate_on(args.run_dir, _load_data(other))
            print(json.dumps(final) if args.json else _final_line(args.run_dir, final, args.data))
            return
        final = evaluate_run(args.run_dir, _load_data(config))
        if args.json:
            print(json.dumps(final))
        else:
            print(_final_line(args.run_dir, final))
            written = (runs.FINAL, runs.SUMMARY, runs.LOSS_PLOT, runs.RECONSTRUCTIONS)
            logging.getLogger("blendae").info("rewrote %s in %s", ", ".join(written), args.run_dir)
    elif args.command == "compress":
        from blendae.codec.files import compress_files

        report = compress_files(
            args.inputs,
            args.out,
            model=args.model,
            quality=args.quality,
            force=args.force,
            recursive=args.recursive,
        )
        print("\n".join(map(str, report.written)))
        print("\n".join(f"blendae: {line}" for line in report.lines()), file=sys.stderr)
    elif args.command == "separate":
        from blendae.separate import separate_files

        report = separate_files(
            args.inputs, args.out, model=args.model, force=args.force, recursive=args.recursive
        )
        print("\n".join(map(str, report.written)))
        print("\n".join(f"blendae: {line}" for line in report.lines), file=sys.stderr)
    elif args.command == "serve":
        from blendae.serve import serve

        serve(host=args.host, port=args.port, runs_dir=args.runs)
    elif args.command == "decompress":
        from blendae.codec.files import decompress_files

        report = decompress_files(
            args.inputs, args.out, model=args.model, force=args.force, recursive=args.recursive
        )
        print("\n".join(map(str, report.written)))
        print("\n".join(f"blendae: {line}" for line in report.lines()), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        _dispatch(args, argv)
    except BlendaeError as exc:
        print(f"blendae: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("blendae: interrupted; continue a training run with --resume", file=sys.stderr)
        return 130
    return 0
