"""`blendae serve` in a real browser: headless Chromium (Debian's, see scripts/install_browser.sh)
driven by Playwright against uvicorn on 127.0.0.1.

Set BLENDAE_SCREENSHOTS=DIR to save serve-compare.png and serve-runs.png into DIR (the
README's screenshots: BLENDAE_SCREENSHOTS=docs pytest tests/test_serve_browser.py).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'blendae[serve]'")
pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'blendae[serve]'")
pytest.importorskip("playwright.sync_api", reason="needs playwright (the test extra)")

from playwright.sync_api import sync_playwright

from blendae.codec.zoo import offered
from blendae.serve import running
from serve_fixtures import SAMPLE, make_runs

BROWSER_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = os.environ.get("BLENDAE_SCREENSHOTS")


def find_browser() -> str | None:
    for candidate in BROWSER_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """uvicorn serving the app on 127.0.0.1, on a port the OS picked, in a thread."""
    with running(make_runs(tmp_path_factory.mktemp("runs"))) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = find_browser()
    if executable is None:
        pytest.skip("no Chromium found: run scripts/install_browser.sh (Debian's chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, base_url: str) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)  # the first comparison loads five models on a busy CPU
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base_url)
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def all_images_render(page) -> bool:
    return page.evaluate(
        "() => [...document.querySelectorAll('#results img, #run-detail img')]"
        ".every((img) => img.complete && img.naturalWidth > 0)"
    )


def upload(page, path_or_file, api: str = "/api/compare") -> dict:
    """Pick a file in the page; returns the JSON the page got from `api` for it.

    The response is captured by routing it through the test (Chromium's inspector may drop
    large bodies before `Response.json()` can read them).
    """
    seen: list[bytes] = []

    def capture(route) -> None:
        response = route.fetch()
        seen.append(response.body())
        route.fulfill(response=response)

    page.route(f"**{api}", capture)
    try:
        with page.expect_response(lambda r: r.url.endswith(api)):
            page.set_input_files("#file", path_or_file)
    finally:
        page.unroute(f"**{api}", capture)
    (body,) = seen
    return json.loads(body)


def test_compare_view(page) -> None:
    result = upload(page, str(SAMPLE))
    rows = page.locator("#results .row")
    rows.first.wait_for()
    assert rows.count() == len(result["rows"]) == len(offered())
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')].every((i) => i.complete)"
    )
    assert all_images_render(page)
    for i, row in enumerate(result["rows"]):
        for codec, point in row.items():
            tile = rows.nth(i).locator(f"figure[data-codec={codec}]")
            quality = point.get("quality")
            name = point["setting"] + ("" if quality is None else f" q{quality}")
            assert tile.locator(".name").inner_text().endswith(name)
            assert tile.get_attribute("data-bytes") == str(point["bytes"])
            assert tile.locator(".bytes").inner_text() == f"{point['bytes']:,} B"
            assert tile.locator(".bpp").inner_text() == f"{point['bpp']:.3f} bpp"
            assert tile.locator(".psnr").inner_text() == f"{point['psnr']:.2f} dB"
            img = tile.locator("img")
            assert img.evaluate("(img) => img.naturalWidth") == result["width"]
    # 32×32 shown upscaled, pixelated, at the same zoom everywhere
    widths = page.eval_on_selector_all("#results img", "(imgs) => imgs.map((i) => i.width)")
    assert len(set(widths)) == 1 and widths[0] > 32
    rendering = page.eval_on_selector("#results img", "(i) => getComputedStyle(i).imageRendering")
    assert rendering == "pixelated"
    if SCREENSHOTS:  # once the page has decoded every blendae file itself (bae.js)
        page.wait_for_function(
            "() => [...document.querySelectorAll('#results figure[data-codec=blendae]')]"
            ".every((f) => f.dataset.browser)"
        )
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / "serve-compare.png"), full_page=True)

    # download a .bae, then drop it back in to decode it
    q3 = page.locator("#results .row[data-model=q3] figure[data-codec=blendae] a.download")
    with page.expect_download() as download:
        q3.click()
    data = Path(download.value.path()).read_bytes()
    (expected,) = [row["blendae"] for row in result["rows"] if row["blendae"]["setting"] == "q3"]
    assert data == base64.b64decode(expected["file"])
    assert download.value.suggested_filename == "test-0613-q3.bae"
    bae = {"name": "test-0613-q3.bae", "mimeType": "application/octet-stream", "buffer": data}
    decoded = upload(page, bae, api="/api/decode")
    figure = page.locator("#results figure[data-codec=decoded]")
    figure.wait_for()
    assert figure.get_attribute("data-bytes") == str(len(data)) == str(decoded["bytes"])
    page.wait_for_function("() => document.querySelector('#results img').complete")
    assert all_images_render(page)


def test_sample_button(page) -> None:
    with page.expect_response(lambda r: r.url.endswith("/api/compare")) as response:
        page.click("#sample")
    assert response.value.status == 200
    page.locator("#results .row").first.wait_for()
    assert page.locator("#results .row").count() == len(offered())


def test_bad_upload_shows_the_error(page) -> None:
    bad = {"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image at all"}
    upload(page, bad)
    status = page.locator("#status.error")
    status.wait_for()
    assert "not an image" in status.inner_text()
    assert page.locator("#results .row").count() == 0


def test_runs_view(page, base_url: str) -> None:
    page.click("#nav-runs")
    rows = page.locator("#runs-table tbody tr")
    rows.first.wait_for()
    assert rows.count() == 4
    assert page.locator("#runs-table tr.broken").count() == 2
    good = page.locator("#runs-table tr[data-run=good-run] td")
    assert good.nth(2).inner_text() == "blend:cifar10+mnist"  # a 0.5 config: the study's data
    assert good.nth(7).inner_text() == "30.50 dB"
    assert page.locator("#runs-table tr[data-run=stopped-run] td").nth(5).inner_text() == "2 / 50"
    page.click("#runs-table a:text('good-run')")
    page.wait_for_selector("#run-detail figure[data-file='reconstructions.png'] img")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#run-detail img')].every((i) => i.complete)"
    )
    assert all_images_render(page)
    assert page.locator("#run-detail img").count() == 2
    summary = page.locator("#run-detail pre.summary")
    assert "<b>not bold</b>" in summary.inner_text()  # shown as text, never as HTML
    assert summary.locator("b").count() == 0
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / "serve-runs.png"), full_page=True)
    page.goto(f"{base_url}/#run/broken-run")
    page.locator("#run-detail .error").wait_for()
    assert "config.json" in page.locator("#run-detail .error").inner_text()


def test_drop_an_image(page) -> None:
    data = base64.b64encode(SAMPLE.read_bytes()).decode()
    with page.expect_response(lambda r: r.url.endswith("/api/compare")) as response:
        page.evaluate(
            """(b64) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
                const event = new DragEvent("drop", { dataTransfer: transfer, bubbles: true });
                document.querySelector("#drop").dispatchEvent(event);
            }""",
            data,
        )
    assert response.value.status == 200
    page.locator("#results .row").first.wait_for()
    assert "dropped.png: 32×32 RGB" in page.locator("#results .hint").inner_text()


def slide(page, quality: int) -> dict:
    """Move the quality slider to `quality` as a user's drag ends there; returns the JSON the
    page got from /api/quality."""
    seen: list[bytes] = []

    def capture(route) -> None:
        response = route.fetch()
        seen.append(response.body())
        route.fulfill(response=response)

    page.route("**/api/quality?*", capture)
    try:
        with page.expect_response(lambda r: "/api/quality?" in r.url):
            page.eval_on_selector(
                "#quality",
                "(input, q) => { input.value = String(q);"
                " input.dispatchEvent(new Event('input', { bubbles: true })); }",
                quality,
            )
    finally:
        page.unroute("**/api/quality?*", capture)
    (body,) = seen
    row = page.locator(f"#results .row[data-model=general][data-quality='{quality}']")
    row.wait_for()
    return json.loads(body)


def test_quality_slider(page) -> None:
    result = upload(page, str(SAMPLE))
    page.locator("#results .row").first.wait_for()
    slider = page.locator("#quality")
    assert slider.get_attribute("min") == "0" and slider.get_attribute("max") == "100"
    assert slider.input_value() == "63"  # the general model's default quality
    assert page.locator("#quality-value").inner_text() == "63"
    rows = page.locator("#results .row")
    count = rows.count()
    sizes = {}
    for quality in (10, 95):
        answer = slide(page, quality)
        row = page.locator(f"#results .row[data-model=general][data-quality='{quality}']")
        assert rows.count() == count  # the general row was replaced, not added
        assert page.locator("#quality-value").inner_text() == str(quality)
        for codec, point in answer["row"].items():
            tile = row.locator(f"figure[data-codec={codec}]")
            assert tile.get_attribute("data-bytes") == str(point["bytes"])
            assert tile.locator(".bpp").inner_text() == f"{point['bpp']:.3f} bpp"
        blendae = row.locator("figure[data-codec=blendae]")
        assert blendae.locator(".name").inner_text() == f"blendae general q{quality}"
        link = blendae.locator("a.download")
        assert link.get_attribute("download") == f"test-0613-general-q{quality}.bae"
        sizes[quality] = answer["row"]["blendae"]["bytes"]
    assert sizes[10] < sizes[95]
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')].every((i) => i.complete)"
    )
    assert all_images_render(page)
    # the other rows (the blend zoo, one fixed rate each) stay as they were
    q3 = next(row for row in result["rows"] if row["blendae"]["setting"] == "q3")
    tile = page.locator("#results .row[data-model=q3] figure[data-codec=blendae]")
    assert tile.get_attribute("data-bytes") == str(q3["blendae"]["bytes"])
    # a new zoom redraws the rows with the slider where it was
    page.select_option("#zoom", "2")
    assert page.locator("#quality").input_value() == "95"
    page.locator("#results .row[data-model=general][data-quality='95']").wait_for()
