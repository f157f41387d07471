#!/usr/bin/env bash
# Decode anywhere: build a fresh virtualenv with only the torch-free decoder's packages
# (numpy, constriction, safetensors, pillow), decode files of every shipped model there
# with `blendae decompress`, and compare the pixels with the torch decoder's (here).
#   bash scripts/check_torchfree.sh [VENV_DIR]      exit 0: identical; 3: cannot build here
# The new environment is built with the same base Python ($BASE_PYTHON, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${1:-$(mktemp -d)/venv}
# The project's Python (with torch) makes the files; $PYTHON, else .venv's, else python3.
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=$(command -v python3)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! "${BASE_PYTHON:-python3}" -m venv "$venv" >"$work/venv.log" 2>&1 ||
    ! "$venv/bin/python" -m pip install -q numpy constriction safetensors pillow \
        >"$work/pip.log" 2>&1; then
    cat "$work/venv.log" "$work/pip.log" >&2 || true
    echo "cannot build a virtualenv with numpy, constriction, safetensors, pillow here" >&2
    exit 3
fi
if "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "the fresh environment has torch: the check would prove nothing" >&2
    exit 1
fi

# Files of every shipped model, made (and decoded) by the torch codec of this checkout.
PYTHONPATH="$root/src" "$python" - "$work" <<'PY'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from blendae import codec

work = Path(sys.argv[1])
rng = np.random.default_rng(0)
shapes = [(32, 32, 3), (1, 1, 3), (17, 33, 3), (40, 56, 1), (70, 100, 3), (64, 49, 1)]  # the last two: patches
for name in codec.zoo_entries():
    for i, shape in enumerate(shapes):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        data = codec.compress(image, name)
        (work / f"{name}-{i}.bae").write_bytes(data)
        Image.fromarray(codec.decompress(data, name)).save(work / f"{name}-{i}.torch.png")
PY

# The same files decoded in the fresh environment, from the source tree (not installed).
mkdir "$work/out"
PYTHONPATH="$root/src" "$venv/bin/python" -m blendae decompress "$work"/*.bae -o "$work/out" \
    >/dev/null
# Compressing there is one clear error (exit 2), not a traceback.
set +e
PYTHONPATH="$root/src" "$venv/bin/python" -m blendae compress "$work/q0-0.torch.png" \
    -o "$work/again.bae" 2>"$work/compress.err"
code=$?
set -e
if [ "$code" != 2 ] || ! grep -q "compressing needs torch" "$work/compress.err"; then
    cat "$work/compress.err" >&2
    echo "compress without torch: exit $code, not the one-line error" >&2
    exit 1
fi

"$python" - "$work" <<'PY'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

work = Path(sys.argv[1])
for torch_png in sorted(work.glob("*.torch.png")):
    name = torch_png.name.removesuffix(".torch.png")
    a, b = (np.asarray(Image.open(p)) for p in (torch_png, work / "out" / f"{name}.png"))
    if a.shape != b.shape or not (a == b).all():
        sys.exit(f"{name}: pixels differ")
print(f"torch-free decoding: {len(list(work.glob('*.bae')))} files, the same pixels as torch")
PY
