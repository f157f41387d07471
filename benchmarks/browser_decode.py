"""How fast bae.js, the browser's decoder, decodes `.bae` files in headless Chromium.

`measure(paths)` serves the package's page and model files (`blendae serve`'s app) on
127.0.0.1, opens one page in headless Chromium (Debian's, see scripts/install_browser.sh;
driven by Playwright), decodes every file once to warm up, then all of them again, timed in
the page with performance.now(): decoding only, no transfers. Run alone, it codes 1,000
32×32 images (the page's samples, shifted and flipped) with q3 and prints the rate:

    python -m benchmarks.browser_decode [--images 1000] [--model q3]
"""

from __future__ import annotations

import argparse
import base64
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from blendae.codec import DEFAULT, compress_batch, container, zoo_entries
from blendae.errors import BlendaeError
from blendae.serve import running

SAMPLES = Path(__file__).resolve().parents[1] / "src/blendae/serve/static/samples"
CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]

# Loads the models, decodes every file once (warm-up), then times decoding them all again.
MEASURE_JS = """async ([names, files]) => {
    const bae = await import("/static/bae.js");
    const models = await Promise.all(names.map((n) => bae.loadModel(`/models/${n}.json`)));
    const bytes = files.map((b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
    for (const data of bytes) bae.decodePixels(data, models);
    const start = performance.now();
    for (const data of bytes) bae.decodePixels(data, models);
    return bytes.length / ((performance.now() - start) / 1000);
}"""


def models_of(datas: list[bytes]) -> list[str]:
    """The shipped models that coded these files (the headers name them: since 0.8 by the
    first two bytes of the id, finished by the checksum, `container.made_by`)."""
    zoo = {name: bytes.fromhex(meta["id"]) for name, meta in zoo_entries().items()}
    found, unknown = set(), set()
    for data in datas:
        header = container.unpack(data)[0]
        names = [name for name, ident in zoo.items() if container.made_by(header, ident)]
        if not names:
            unknown.add(header.model_id.hex())
        found.update(names[:1])
    if unknown:
        raise BlendaeError(f"files of models that are not shipped: {', '.join(sorted(unknown))}")
    return sorted(found)


def measure(paths: list[Path]) -> float:
    """Images per second bae.js decodes `paths` (.bae files of shipped models) at in
    headless Chromium: decoding time only, measured in the page, after a warm-up."""
    from playwright.sync_api import sync_playwright

    executable = next(filter(None, map(shutil.which, CHROMIUM)), None)
    if executable is None:
        raise BlendaeError("no Chromium found: run scripts/install_browser.sh")
    datas = [Path(p).read_bytes() for p in paths]
    files = [base64.b64encode(d).decode("ascii") for d in datas]
    with running(Path("runs")) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url)
            return float(page.evaluate(MEASURE_JS, [models_of(datas), files]))
        finally:
            browser.close()


def test_images(count: int) -> list[np.ndarray]:
    """`count` 32×32 images: the page's sample blends, rolled and flipped."""
    samples = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(SAMPLES.glob("*.png"))]
    out = []
    for i in range(count):
        image = np.roll(samples[i % len(samples)], (i // len(samples)) % 32, axis=1)
        out.append(np.ascontiguousarray(image[:, ::-1] if (i // 512) % 2 else image))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--model", default=DEFAULT)
    args = parser.parse_args()
    datas = compress_batch(test_images(args.images), args.model)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{i}.bae" for i in range(len(datas))]
        for path, data in zip(paths, datas, strict=True):
            path.write_bytes(data)
        rate = measure(paths)
    size = sum(map(len, datas)) / len(datas)
    print(f"# bae.js in headless Chromium: {len(datas)} 32×32 files of {args.model}, {size:.0f} B")
    print(f"browser-decode-img-s {rate:.0f}")


if __name__ == "__main__":
    main()
