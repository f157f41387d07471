"""Does the codec give the same files and pixels under other CPU instruction sets?

Encodes and decodes the first N blended test images (unit preset), and the first LARGER of
them upsampled to 128×128 (coded as 32×32 patches in one stream), with each model of
MODELS (the shipped default, the variable-rate general model, at a few qualities, and the
fixed-rate q3) in subprocesses under several settings of PyTorch's, oneDNN's, numpy's and
OpenBLAS's instruction-set dispatch and thread counts, each decoding the files the native
setting wrote with the torch decoder and with the torch-free one, and prints how many files
and decoded pixel values differ from the native run's torch decoding.

    python -m benchmarks.cross_isa [--limit 1000] [--models general@0,general@63,q3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import header

SETTINGS = {
    "native": {},
    "sse41": {
        "ATEN_CPU_CAPABILITY": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
        "OPENBLAS_CORETYPE": "Nehalem",  # numpy's matrix products: SSE4.2 kernels, no AVX
    },
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
        "OPENBLAS_CORETYPE": "Haswell",
    },
    "1 thread": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
}
# MODEL@QUALITY (a variable-rate model) or MODEL: both ends of the general model's range,
# its default (63) and one between, the model it replaced at its old default, and a
# fixed-rate model
MODELS = ("general@0", "general@37", "general@63", "general@100", "general-0.7@66", "q3")

CHILD = """
import json, sys
import numpy as np
from blendae import codec
from blendae.codec import container, decode
from blendae.data import load_blended, to_pixels
from torch.nn.functional import interpolate
limit, larger, folder, native = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
cases = sys.argv[5:]
test = load_blended("unit", progress=False).test[:limit]
pixels = lambda x: to_pixels(x, "unit").round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
up = interpolate(test[:larger], size=(128, 128), mode="bicubic", align_corners=False)
sets = {"": pixels(test), " 128x128": pixels(up)}
theirs_all = json.load(open(native)) if native != "-" else None
written = {}
for case in cases:
    model, _, quality = case.partition("@")
    for suffix, images in sets.items():
        files = codec.compress_batch(list(images), model, int(quality) if quality else None)
        key = case + suffix
        theirs = [bytes.fromhex(h) for h in theirs_all[key]] if theirs_all else files
        np.save(f"{folder}/decoded-{len(written)}.npy", np.stack(codec.decompress_batch(theirs)))
        parsed = [container.unpack(f) for f in theirs]
        np.save(f"{folder}/torchfree-{len(written)}.npy", np.stack(decode.decode_parsed(parsed)))
        written[key] = [d.hex() for d in files]
json.dump(written, open(f"{folder}/files.json", "w"))
"""
LARGER = 16  # upsampled test images coded in patches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help="MODEL or MODEL@QUALITY, comma-separated (default: %(default)s)",
    )
    args = parser.parse_args()
    cases = args.models.split(",")
    print(header("the codec under other instruction sets and thread counts"))
    larger = min(LARGER, args.limit)
    with tempfile.TemporaryDirectory(prefix="blendae-isa-") as tmp:
        results = {}
        for name, env in SETTINGS.items():
            folder = Path(tmp) / name.replace(" ", "-")
            folder.mkdir()
            native = "-" if name == "native" else str(Path(tmp) / "native" / "files.json")
            command = [sys.executable, "-c", CHILD, str(args.limit), str(larger), str(folder)]
            command.append(native)
            subprocess.run([*command, *cases], env={**os.environ, **env}, check=True)
            files = json.loads((folder / "files.json").read_text())
            decoded = [np.load(folder / f"decoded-{k}.npy") for k in range(len(files))]
            torchfree = [np.load(folder / f"torchfree-{k}.npy") for k in range(len(files))]
            results[name] = (files, decoded, torchfree)
    files0, decoded0, _ = results["native"]
    print(f"{args.limit} blended test images (and the first {larger} upsampled to 128x128, coded")
    print("in 32x32 patches); each setting decodes the files the native setting wrote with both")
    print("decoders, and its own encoder's files are compared with them")
    total = 0
    for k, case in enumerate(files0):
        print(f"{case}:")
        for name, (files, decoded, torchfree) in results.items():
            native = decoded0[k].astype(int)
            mine, free = decoded[k].astype(int), torchfree[k].astype(int)
            differ, free_differ = mine != native, free != native
            total += int(differ.sum()) + int(free_differ.sum())
            changed = sum(a != b for a, b in zip(files[case], files0[case], strict=True))
            print(
                f"  {name:>9} {SETTINGS[name] or '(as installed)'}: "
                f"files differing {changed}/{len(files[case])}"
                f", decoded values differing {int(differ.sum())}/{differ.size}"
                f" (max {int(np.abs(mine - native).max())} level)"
                f", torch-free {int(free_differ.sum())}"
            )
    print(
        "decoded values differing from the native run's torch decoding, all settings, models "
        f"and both decoders: {total}"
    )


if __name__ == "__main__":
    main()
