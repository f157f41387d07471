"""Does the codec give the same files and pixels under other CPU instruction sets?

Encodes and decodes the first N blended test images (unit preset, shipped default model) in
subprocesses under several settings of PyTorch's and oneDNN's instruction-set dispatch and
thread counts, each decoding the files the native setting wrote, and prints how many files
and decoded pixel values differ from the native run.

    python -m benchmarks.cross_isa [--limit 1000]
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
    "sse41": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
}

CHILD = """
import json, sys
import numpy as np
from blendae import codec
from blendae.data import load_blended, to_pixels
limit, folder, native = int(sys.argv[1]), sys.argv[2], sys.argv[3]
test = load_blended("unit", progress=False).test[:limit]
images = to_pixels(test, "unit").round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
files = codec.compress_batch(list(images))
with open(f"{folder}/files.bin", "wb") as f:
    for data in files:
        f.write(len(data).to_bytes(4, "little") + data)
theirs = [bytes.fromhex(h) for h in json.load(open(native))] if native != "-" else files
np.save(f"{folder}/decoded.npy", np.stack(codec.decompress_batch(theirs)))
json.dump([d.hex() for d in files], open(f"{folder}/files.json", "w"))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args()
    print(header("the codec under other instruction sets and thread counts"))
    with tempfile.TemporaryDirectory(prefix="blendae-isa-") as tmp:
        results = {}
        for name, env in SETTINGS.items():
            folder = Path(tmp) / name.replace(" ", "-")
            folder.mkdir()
            native = "-" if name == "native" else str(Path(tmp) / "native" / "files.json")
            command = [sys.executable, "-c", CHILD, str(args.limit), str(folder), native]
            subprocess.run(command, env={**os.environ, **env}, check=True)
            files = json.loads((folder / "files.json").read_text())
            results[name] = (files, np.load(folder / "decoded.npy"))
    files0, decoded0 = results["native"]
    print(f"{args.limit} blended test images, shipped default model; each setting decodes the")
    print("files the native setting wrote, and its own encoder's files are compared with them")
    for name, (files, decoded) in results.items():
        differ = decoded.astype(int) != decoded0.astype(int)
        changed = sum(a != b for a, b in zip(files, files0, strict=True))
        print(
            f"{name:>9} {SETTINGS[name] or '(as installed)'}: "
            f"files differing {changed}/{len(files)}"
            f", decoded values differing {int(differ.sum())}/{differ.size}"
            f" (max {int(np.abs(decoded.astype(int) - decoded0.astype(int)).max())} level)"
        )


if __name__ == "__main__":
    main()
