"""bae.js, the browser's decoder, in headless Chromium: every shipped model (and the 0.3 and
0.4 baselines) decodes files to exactly the Python decoder's pixels; mutated and forged files
are a thrown error with a message, within a time bound, or (where the Python decoder reads
them too) the same pixels; the compare page says the two decodings are identical.

Same skip rules as tests/test_serve_browser.py (its fixtures serve the app and start Chromium).
"""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from blendae import codec as api
from blendae.codec import container
from blendae.codec.zoo import offered
from blendae.errors import BlendaeError
from conftest import repack
from serve_fixtures import SAMPLE, SAMPLES
from test_serve_browser import base_url, browser, page, upload  # noqa: F401 (fixtures)

if TYPE_CHECKING:  # playwright may be missing: test_serve_browser then skips this module
    from playwright.sync_api import Page, Route

ROOT = Path(__file__).resolve().parents[1]
BASELINES = [
    ROOT / f"benchmarks/baseline/{family}/q{i}.json"
    for family in ("checkerboard-0.4", "hyperprior-0.3")
    for i in range(5)
]
PER_MODEL = 200  # files per shipped model (the general model: per quality below)
GENERAL_QUALITIES = (0, 37, 63, 100)
FIXED_RATE = [name for name, meta in api.zoo_entries().items() if meta["model"] != "gained"]
PER_BASELINE = 10
TIME_BOUND_MS = 5_000  # the slowest file a test decodes (a forged 64×64) takes ~0.1 s

# Decodes base64 files in the page; for each, its pixels (base64) or the error's name and
# message, and the slowest decode's milliseconds.
DECODE_JS = """async ([modelUrls, files, options]) => {
    const bae = await import("/static/bae.js");
    const models = await Promise.all(modelUrls.map((url) => bae.loadModel(url, options)));
    const out = [];
    let slowest = 0;
    for (const b64 of files) {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const start = performance.now();
        try {
            const { pixels } = bae.decodePixels(bytes, models);
            let text = "";
            for (let i = 0; i < pixels.length; i += 8192) {
                text += String.fromCharCode(...pixels.subarray(i, i + 8192));
            }
            out.push({ pixels: btoa(text) });
        } catch (error) {
            out.push({ error: `${error.name}: ${error.message}` });
        }
        slowest = Math.max(slowest, performance.now() - start);
    }
    return { out, slowest };
}"""


def images(count: int, seed: int) -> list[np.ndarray]:
    """32×32 test images (the samples, flipped, noisy, pure noise, flat) and odd sizes, the
    last one coded in patches."""
    rng = np.random.default_rng(seed)
    samples = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(SAMPLES.glob("*.png"))]
    out = []
    for i in range(count - 5):
        im = samples[i % len(samples)]
        kind = (i // len(samples)) % 5
        if kind == 1:
            im = im[::-1, ::-1]
        elif kind == 2:
            im = np.clip(im + rng.integers(-48, 48, im.shape), 0, 255).astype(np.uint8)
        elif kind == 3:
            im = rng.integers(0, 256, im.shape, dtype=np.uint8)
        elif kind == 4:
            im = np.full(im.shape, rng.integers(0, 256, 3), dtype=np.uint8)
        out.append(np.ascontiguousarray(im))
    out.append(rng.integers(0, 256, (1, 1, 3), dtype=np.uint8))
    out.append(rng.integers(0, 256, (17, 33, 3), dtype=np.uint8))
    out.append(samples[0][:, :, 1])  # gray
    out.append(rng.integers(0, 256, (40, 20), dtype=np.uint8))
    out.append(np.kron(samples[1], np.ones((2, 3, 1), np.uint8))[:, :70])  # 64×70: patches
    return out


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_in_page(
    tab: Page, model_urls: list[str], files: list[bytes], wasm: bool = True
) -> tuple[list[dict], float]:
    """bae.js's results for `files` in the page; wasm=False: its JavaScript convolutions."""
    result = tab.evaluate(DECODE_JS, [model_urls, [b64(f) for f in files], {"wasm": wasm}])
    return result["out"], result["slowest"]


def assert_same_pixels(results: list[dict], expected: list[np.ndarray], what: str) -> None:
    for i, (got, want) in enumerate(zip(results, expected, strict=True)):
        assert "pixels" in got, f"{what} file {i}: {got.get('error')}"
        pixels = np.frombuffer(base64.b64decode(got["pixels"]), np.uint8)
        assert np.array_equal(pixels, want.reshape(-1)), f"{what} file {i}: pixels differ"


@pytest.fixture
def models_page(page: Page, base_url: str) -> Page:  # noqa: F811 (the fixture imported above)
    """The app's page, with the baseline models served under /baselines/ as well."""

    def serve_baseline(route: Route) -> None:
        name = route.request.url.split("/baselines/", 1)[1]
        family, file = name.split("/")
        route.fulfill(body=(ROOT / "benchmarks/baseline" / family / file).read_bytes())

    page.route("**/baselines/**", serve_baseline)
    return page


@pytest.mark.parametrize("name", FIXED_RATE)
def test_shipped_models_decode_as_python_does(models_page: Page, name: str) -> None:
    files = api.compress_batch(images(PER_MODEL, seed=len(name) + int(name[1:])), name)
    expected = api.decompress_batch(files, name)
    results, slowest = decode_in_page(models_page, [f"/models/{name}.json"], files)
    assert_same_pixels(results, expected, name)
    assert slowest < TIME_BOUND_MS


@pytest.mark.parametrize("quality", GENERAL_QUALITIES)
def test_the_general_model_decodes_as_python_does_at_every_quality(
    models_page: Page, quality: int
) -> None:
    """Version-2 files of the variable-rate model: the quality byte picks the stored row of
    inv_gain_table that scales the decoded latent (one Math.fround multiply)."""
    files = api.compress_batch(images(PER_MODEL // 2, seed=100 + quality), "general", quality)
    assert all(container.unpack(f)[0].quality == quality for f in files)
    expected = api.decompress_batch(files, "general")
    results, slowest = decode_in_page(models_page, ["/models/general.json"], files)
    assert_same_pixels(results, expected, f"general at quality {quality}")
    assert slowest < TIME_BOUND_MS


def test_golden_files_decode_in_the_browser(models_page: Page) -> None:
    """tests/data's files of the shipped models (0.5's q3, 0.7's general, 0.8's version 3
    files of both, 0.9's version 4 files in patches) decode to the pixels recorded when
    they were written; 0.7–0.9's general files with that model, now `general-0.7`."""
    import hashlib
    import json

    data = ROOT / "tests" / "data"
    names, files, want = [], [], []
    for record in ("zoo-0.5.json", "general-0.7.json", "format3-0.8.json", "patches-0.9.json"):
        for name, one in json.loads((data / record).read_text()).items():
            names.append(name)
            files.append((data / name).read_bytes())
            want.append(one["sha256"])
    urls = [f"/models/{name}.json" for name in ("q3", "general", "general-0.7")]
    results, _ = decode_in_page(models_page, urls, files)
    for name, got, sha in zip(names, results, want, strict=True):
        assert "pixels" in got, f"{name}: {got.get('error')}"
        assert hashlib.sha256(base64.b64decode(got["pixels"])).hexdigest() == sha, name


def test_forged_qualities_are_errors_in_both_decoders(models_page: Page) -> None:
    """Quality 101 (and 255), a quality byte on a fixed-rate model's file, none on the
    general model's: the Python decoder's error, word for word, in the browser."""
    base = images(8, seed=5)
    general = api.compress_batch([base[0], base[-4]], "general", 37)
    fixed = api.compress_batch([base[0]], "q3")
    gid, qid = (bytes.fromhex(api.zoo_entries()[name]["id"]) for name in ("general", "q3"))
    cases = [repack(g, gid, 3, q) for g in general for q in (b"\x65", b"\xe5")]
    cases += [repack(g, gid, 2, b"\x65") for g in general]
    cases += [repack(fixed[0], qid, 3, bytes([q])) for q in (0, 66, 100)]
    cases += [repack(fixed[0], qid, 2, bytes([q])) for q in (0, 66, 100)]
    cases += [repack(g, gid, 3, b"\x7f") for g in general]
    cases += [repack(g, gid, 1, b"") for g in general]
    cases.append(repack(general[0], gid, 2, b""))  # version 2 without its quality byte
    assert repack(general[0], gid, 3, b"\x25") == general[0]
    errors = []
    for data in cases:
        with pytest.raises(BlendaeError) as caught:
            api.decompress(data)
        errors.append(f"BaeError: {caught.value}")
    urls = ["/models/q3.json", "/models/general.json"]
    results, _ = decode_in_page(models_page, urls, cases)
    assert [got.get("error") for got in results] == errors
    assert sum("quality 101 (expected 0..100)" in e for e in errors) == 6
    assert sum("carry no quality" in e for e in errors) == 6
    assert sum("carry a quality" in e for e in errors) == 4
    # the valid files decode in both, each at its quality
    results, _ = decode_in_page(models_page, urls, general + fixed)
    assert_same_pixels(results, api.decompress_batch(general + fixed), "valid")


def test_javascript_convolutions_decode_as_python_does(models_page: Page) -> None:
    """Where WebAssembly SIMD is missing, the JavaScript kernel gives the same pixels."""
    files = api.compress_batch(images(24, seed=11), "q3")
    results, _ = decode_in_page(models_page, ["/models/q3.json"], files, wasm=False)
    assert_same_pixels(results, api.decompress_batch(files, "q3"), "q3 without WebAssembly")


@pytest.mark.parametrize("meta", BASELINES, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_baseline_models_decode_as_python_does(models_page: Page, meta: Path) -> None:
    files = api.compress_batch(images(PER_BASELINE, seed=7), str(meta))
    expected = api.decompress_batch(files, str(meta))
    url = f"/baselines/{meta.parent.name}/{meta.name}"
    results, _ = decode_in_page(models_page, [url], files)
    assert_same_pixels(results, expected, meta.parent.name + "/" + meta.stem)


Q3_ID = bytes.fromhex(api.zoo_entries()["q3"]["id"])  # the model of the mutated files


def forge(data: bytes, height: int, width: int) -> bytes:
    """The file with another size under a valid checksum: a writer bug or a forgery."""
    _, payload = container.unpack(data)
    return container.pack(container.Header(Q3_ID, height, width, 3), [payload])


def mutations(valid: list[bytes], seed: int) -> list[bytes]:
    """Truncations, byte changes, bit flips, insertions, forged sizes and model ids, and
    payload changes under a recomputed checksum."""
    rng = np.random.default_rng(seed)
    out: list[bytes] = []
    first = valid[0]
    out += [first[:n] for n in range(len(first))]  # every truncation
    for data in valid:
        for _ in range(25):
            buf = bytearray(data)
            pos = int(rng.integers(len(buf)))
            kind = rng.integers(3)
            if kind == 0:
                buf[pos] = int(rng.integers(256))
            elif kind == 1:
                buf[pos] ^= 1 << int(rng.integers(8))
            else:
                buf[pos:pos] = bytes([int(rng.integers(256))])
            out.append(bytes(buf))
        out += [forge(data, h, w) for h, w in ((2049, 2048), (65535, 65535))]
        out += [forge(data, 64, 64), forge(data, 1, 17)]
        header, payload = container.unpack(data)
        other = container.Header(b"\x00\x01\x02\x03", header.height, header.width, 3)
        out.append(container.pack(other, [payload]))
        header = dataclasses.replace(header, model_id=Q3_ID, checksum=None)
        largest = container.Header(Q3_ID, 2048, 2048, 3)  # a zero word: refused
        out.append(container.pack(largest, [b"\0\0\0\0"]))  # before any network runs
        patched = container.Header(Q3_ID, 100, 130, 3, None, 32)  # 20 patches
        out.append(container.pack(patched, [payload]))
        for _ in range(8):  # payload bit flips and cuts that keep a valid checksum
            body = bytearray(payload)
            if body and rng.integers(2):
                body[int(rng.integers(len(body)))] ^= 1 << int(rng.integers(8))
            else:
                body = body[: int(rng.integers(len(body) + 1))]
            out.append(container.pack(header, [bytes(body)]))
    return out


def python_decodes(data: bytes) -> np.ndarray | None:
    try:
        return api.decompress(data)
    except BlendaeError:
        return None


def test_mutated_files_are_errors_or_python_s_pixels(models_page: Page) -> None:
    base = images(16, seed=3)
    valid = api.compress_batch([base[0], base[5], base[-4], base[-3], base[-1]], "q3")
    cases = mutations(valid, seed=0)
    assert len(cases) > 250
    expected = [python_decodes(data) for data in cases]
    results, slowest = decode_in_page(models_page, ["/models/q3.json"], cases)
    assert slowest < TIME_BOUND_MS
    for data, got, want in zip(cases, results, expected, strict=True):
        if want is None:
            assert "error" in got, f"bae.js decoded a file Python refuses: {data.hex()}"
            assert got["error"].startswith("BaeError: ") and len(got["error"]) > 30
        else:
            assert "pixels" in got, got.get("error")
            pixels = np.frombuffer(base64.b64decode(got["pixels"]), np.uint8)
            assert np.array_equal(pixels, want.reshape(-1))
    errors = [got["error"] for got in results if "error" in got]
    assert any("checksum mismatch" in e for e in errors)
    assert any("truncated" in e for e in errors)
    assert any("image size 2048x2049" in e for e in errors)
    assert any("codec model 0001," in e for e in errors)
    assert any("corrupt .bae payload" in e for e in errors)


def test_the_compare_page_decodes_in_the_browser(page: Page) -> None:  # noqa: F811
    result = upload(page, str(SAMPLE))
    page.locator("#results .row").first.wait_for()
    checks = page.locator("#results figure[data-codec=blendae] .browser")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results figure[data-codec=blendae]')]"
        ".every((f) => f.dataset.browser)"
    )
    shipped = len(offered())  # the general model and q0 … q4 (not the replaced general-0.7)
    assert checks.count() == len(result["rows"]) == shipped == 6
    for i in range(shipped):
        assert checks.nth(i).inner_text() == (
            "decoded in your browser: identical to the server's pixels"
        )
    # the decode view checks a dropped .bae file the same way
    (q3,) = [
        base64.b64decode(row["blendae"]["file"])
        for row in result["rows"]
        if row["blendae"]["setting"] == "q3"
    ]
    upload(
        page,
        {"name": "q3.bae", "mimeType": "application/octet-stream", "buffer": q3},
        "/api/decode",
    )
    figure = page.locator("#results figure[data-codec=decoded]")
    page.wait_for_function("() => document.querySelector('#results figure')?.dataset.browser")
    assert figure.get_attribute("data-browser") == "identical"
    # a corrupted file: the server's error and the browser decoder's, nothing decoded
    bad = q3[:-1] + bytes([q3[-1] ^ 1])
    upload(
        page,
        {"name": "bad.bae", "mimeType": "application/octet-stream", "buffer": bad},
        api="/api/decode",
    )
    status = page.locator("#status.error")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('browser')"
    )
    assert "checksum mismatch" in status.inner_text()
    assert "your browser's decoder: corrupt or truncated .bae file" in status.inner_text()
    assert page.locator("#results figure").count() == 0


def test_the_example_page_draws_the_sample(page: Page, base_url: str) -> None:  # noqa: F811
    """docs/browser.md's example, shipped as /static/example.html, with its sample file."""
    page.goto(f"{base_url}/static/example.html")
    page.wait_for_function("() => document.getElementById('out').width === 32")
    drawn = page.evaluate(
        "() => { const c = document.getElementById('out');"
        " return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }"
    )
    expected = api.decompress((SAMPLES / "test-0613-q3.bae").read_bytes())
    rgba = np.array(drawn, dtype=np.uint8).reshape(32, 32, 4)
    assert np.array_equal(rgba[..., :3], expected) and (rgba[..., 3] == 255).all()


def test_a_damaged_model_is_refused(page: Page) -> None:  # noqa: F811
    """Weights that do not match the model's id (as blendae's loader checks) never decode."""
    zoo = ROOT / "src/blendae/zoo"
    weights = bytearray((zoo / "q3.safetensors").read_bytes())
    weights[-1] ^= 1  # the last byte of the last tensor's data
    files = {"q3.json": (zoo / "q3.json").read_bytes(), "q3.safetensors": bytes(weights)}
    page.route(
        "**/damaged/*", lambda route: route.fulfill(body=files[route.request.url.split("/")[-1]])
    )
    error = page.evaluate(
        """async () => {
            const bae = await import("/static/bae.js");
            try { await bae.loadModel("/damaged/q3.json"); return null; }
            catch (error) { return `${error.name}: ${error.message}`; }
        }"""
    )
    ident = api.zoo_entries()["q3"]["id"]
    assert (
        error
        == f"BaeError: model /damaged/q3.json is damaged: its weights do not match its id {ident}"
    )
