"""`blendae serve` over HTTP (FastAPI's TestClient): bad uploads, the compare API, .bae round
trips, and the runs listing, including path traversal attempts."""

from __future__ import annotations

import base64
import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'blendae[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient

from blendae.codec import container, decompress_batch, zoo_entries
from blendae.codec.zoo import offered
from blendae.errors import BlendaeError
from blendae.serve import MISSING_EXTRA, build_app, compare, runs_view, serve
from serve_fixtures import SAMPLE, bomb_png, make_runs, png_bytes


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def client(runs_dir: Path) -> TestClient:
    return TestClient(build_app(runs_dir))


@pytest.fixture(scope="module")
def compared(client: TestClient) -> dict:
    response = client.post("/api/compare", content=SAMPLE.read_bytes())
    assert response.status_code == 200, response.text
    return response.json()


def pixels_of(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for word in words:
        assert word in message


# ---- the page ----------------------------------------------------------------------------------
def test_page_and_static_files(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "<title>blendae</title>" in page.text
    assert client.get("/static/app.js").status_code == 200
    samples = client.get("/api/samples").json()["samples"]
    assert len(samples) == 16
    assert client.get(samples[0]).headers["content-type"] == "image/png"
    info = client.get("/api/models").json()
    assert [m["name"] for m in info["models"]] == list(offered())  # not the replaced model
    assert info["slider"] == "general"  # the default model codes at any quality
    qualities = {m["name"]: m["quality"] for m in info["models"]}
    assert qualities == {name: meta.get("quality") for name, meta in offered().items()}
    assert qualities["general"] == 63 and qualities["q3"] is None


# ---- bad uploads ---------------------------------------------------------------------------------
def test_not_an_image(client: TestClient) -> None:
    assert_error(client.post("/api/compare", content=b"hello, world"), 400, "not an image")
    assert_error(client.post("/api/compare", content=b""), 400, "empty")


def test_damaged_image(client: TestClient) -> None:
    data = SAMPLE.read_bytes()
    assert_error(client.post("/api/compare", content=data[: len(data) // 2]), 400, "damaged")


def test_decompression_bomb(client: TestClient) -> None:
    response = client.post("/api/compare", content=bomb_png(20_000, 20_000))
    assert_error(response, 400, "decompression bomb")


def test_too_many_pixels(client: TestClient) -> None:
    big = png_bytes(np.zeros((1000, 1000), dtype=np.uint8))  # small file, 10⁶ pixels
    assert len(big) < 10_000
    assert_error(client.post("/api/compare", content=big), 400, "1000×1000", "at most")


def test_oversize_body(client: TestClient) -> None:
    body = b"\x00" * (compare.MAX_UPLOAD_BYTES + 1)
    assert_error(client.post("/api/compare", content=body), 413, "at most")
    assert_error(client.post("/api/decode", content=body), 413, "at most")

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(5):
            yield b"\x00" * (1 << 20)

    assert_error(client.post("/api/compare", content=chunks()), 413, "over")


def test_corrupt_bae(client: TestClient, compared: dict) -> None:
    assert_error(client.post("/api/decode", content=b"not a bae file"), 400, ".bae")
    data = bytearray(base64.b64decode(compared["rows"][0]["blendae"]["file"]))
    data[-1] ^= 0xFF
    assert_error(client.post("/api/decode", content=bytes(data)), 400)


# ---- the comparison -----------------------------------------------------------------------------
def test_compare_is_consistent(compared: dict) -> None:
    original = np.asarray(Image.open(SAMPLE))
    assert (compared["width"], compared["height"], compared["channels"]) == (32, 32, 3)
    assert np.array_equal(pixels_of(compared["original"]["image"]), original)
    assert [row["blendae"]["setting"] for row in compared["rows"]] == list(offered())
    for row in compared["rows"]:
        for codec, point in row.items():
            assert point["codec"] == codec
            data = base64.b64decode(point["file"])
            assert point["bytes"] == len(data)
            assert point["bpp"] == pytest.approx(8 * len(data) / (32 * 32))
            decoded = pixels_of(point["image"])
            assert decoded.shape == original.shape
            mse = np.mean((decoded.astype(float) - original.astype(float)) ** 2)
            assert point["psnr"] == pytest.approx(10 * math.log10(255**2 / mse))
        for codec in ("webp", "avif"):  # a note only where no quality gets nearer
            point, target = row[codec], row["blendae"]["bytes"]
            if point["setting"] == "q0" and point["bytes"] > target:
                assert point["note"] == f"the smallest {codec.upper()} file at any quality"
            else:
                assert point["note"] is None
        bae = base64.b64decode(row["blendae"]["file"])
        (restored,) = decompress_batch([bae])
        assert np.array_equal(restored, pixels_of(row["blendae"]["image"]))
    blend_zoo = [row["blendae"] for row in compared["rows"] if row["blendae"]["quality"] is None]
    sizes = [point["bytes"] for point in blend_zoo]
    assert [p["setting"] for p in blend_zoo] == ["q0", "q1", "q2", "q3", "q4"]
    assert sizes == sorted(sizes)  # q0 … q4: more bytes for more quality
    assert compared["slider"] == "general"
    (general,) = [row["blendae"] for row in compared["rows"] if row["blendae"]["quality"]]
    assert general["setting"] == "general" and general["quality"] == 63  # its JSON's default
    assert container.unpack(base64.b64decode(general["file"]))[0].quality == 63


# ---- the quality slider -------------------------------------------------------------------------
def by_model(result: dict) -> dict[str, dict]:
    return {row["blendae"]["setting"]: row["blendae"] for row in result["rows"]}


def slider_row(client: TestClient, quality: int) -> dict:
    response = client.post(f"/api/quality?quality={quality}", content=SAMPLE.read_bytes())
    assert response.status_code == 200, response.text
    return response.json()["row"]


def test_quality_slider(client: TestClient, compared: dict) -> None:
    low, high = slider_row(client, 10), slider_row(client, 90)
    for quality, row in ((10, low), (90, high)):
        point = row["blendae"]
        assert (point["setting"], point["quality"]) == ("general", quality)
        data = base64.b64decode(point["file"])
        assert container.unpack(data)[0].quality == quality  # the file records it
        assert point["bytes"] == len(data)
        (restored,) = decompress_batch([data])
        assert np.array_equal(restored, pixels_of(point["image"]))
        for codec in ("webp", "avif"):  # the anchors follow the slider's file size
            (nearest,) = compare.nearest_size(np.asarray(Image.open(SAMPLE)), codec, [len(data)])
            assert row[codec]["bytes"] == len(nearest.data)
    assert low["blendae"]["bytes"] < high["blendae"]["bytes"]
    assert low["blendae"]["psnr"] < high["blendae"]["psnr"]
    # the comparison at a quality holds the same file as the slider at that quality
    response = client.post("/api/compare?quality=10", content=SAMPLE.read_bytes())
    assert response.status_code == 200, response.text
    rows = {row["blendae"]["setting"]: row for row in response.json()["rows"]}
    assert rows["general"]["blendae"]["file"] == low["blendae"]["file"]
    assert rows["q3"]["blendae"]["file"] == by_model(compared)["q3"]["file"]  # one fixed rate
    decoded = client.post("/api/decode", content=base64.b64decode(low["blendae"]["file"]))
    assert (decoded.json()["model"], decoded.json()["quality"]) == ("general", 10)


def test_slider_default_quality(client: TestClient, compared: dict) -> None:
    response = client.post("/api/quality", content=SAMPLE.read_bytes())  # no ?quality
    assert response.status_code == 200, response.text
    assert response.json()["row"]["blendae"]["file"] == by_model(compared)["general"]["file"]


@pytest.mark.parametrize("quality", ["101", "-1", "abc", "1e2", "50.5", "", "%C2%B2", "9" * 40])
@pytest.mark.parametrize("api", ["/api/quality", "/api/compare"])
def test_bad_quality_is_a_4xx(client: TestClient, api: str, quality: str) -> None:
    response = client.post(f"{api}?quality={quality}", content=SAMPLE.read_bytes())
    assert_error(response, 400, "quality must be a whole number 0..100")


def test_nearest_size_is_nearest() -> None:
    pixels = np.asarray(Image.open(SAMPLE))
    target = 200
    (point,) = compare.nearest_size(pixels, "webp", [target])
    sizes = [len(compare.OTHER_CODECS["webp"](pixels, q)[0]) for q in range(0, 101, 5)]
    assert abs(len(point.data) - target) <= min(abs(s - target) for s in sizes)


def test_bae_round_trip(client: TestClient, compared: dict) -> None:
    point = compared["rows"][-1]["blendae"]
    response = client.post("/api/decode", content=base64.b64decode(point["file"]))
    assert response.status_code == 200, response.text
    decoded = response.json()
    assert (decoded["width"], decoded["height"], decoded["bytes"]) == (32, 32, point["bytes"])
    assert decoded["bpp"] == pytest.approx(point["bpp"])
    assert np.array_equal(pixels_of(decoded["image"]), pixels_of(point["image"]))


def test_gray_image(client: TestClient) -> None:
    gray = np.asarray(Image.open(SAMPLE).convert("L"))
    response = client.post("/api/compare", content=png_bytes(gray))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["channels"] == 1
    for row in result["rows"]:
        for point in row.values():
            assert pixels_of(point["image"]).shape == (32, 32)


# ---- runs ---------------------------------------------------------------------------------------
def test_runs_listing(client: TestClient, runs_dir: Path) -> None:
    listing = client.get("/api/runs").json()
    runs = {run["name"]: run for run in listing["runs"]}
    assert sorted(runs) == ["broken-run", "empty-run", "good-run", "stopped-run"]  # no stray.txt
    good = runs["good-run"]
    assert not good["broken"] and good["problems"] == []
    assert (good["model"], good["preset"], good["protocol"], good["epochs"]) == (
        "conv",
        "unit",
        "minibatch",
        3,
    )
    assert (good["test_loss"], good["test_psnr"], good["test_ssim"]) == (0.02, 30.5, 0.97)
    assert good["seconds"] == 7.5  # the epochs' seconds, as summary.md counts them
    stopped = runs["stopped-run"]
    assert (stopped["epochs"], stopped["epochs_planned"], stopped["broken"]) == (2, 50, False)
    assert stopped["problems"] == ["no final.json (not evaluated yet)"]
    assert stopped["test_psnr"] is None
    assert good["images"] == ["loss.png", "reconstructions.png"]
    broken = runs["broken-run"]
    assert broken["broken"] and any("config.json" in p for p in broken["problems"])
    assert any("line 2" in p for p in broken["problems"])
    assert broken["seconds"] is None  # its one readable epoch has no seconds
    assert runs["empty-run"]["broken"]


def test_run_details_and_files(client: TestClient, runs_dir: Path) -> None:
    run = client.get("/api/runs/good-run").json()
    assert run["summary"].startswith("# good-run")
    assert [m["epoch"] for m in run["metrics"]] == [1, 2, 3]
    assert run["final"]["test_psnr"] == 30.5
    plot = client.get("/api/runs/good-run/files/loss.png")
    assert plot.status_code == 200 and plot.content == (runs_dir / "good-run/loss.png").read_bytes()
    assert client.get("/api/runs/broken-run").json()["broken"]
    assert_error(client.get("/api/runs/no-such-run"), 404, "no run")
    assert_error(client.get("/api/runs/good-run/files/summary.md"), 400, "loss.png")
    assert_error(client.get("/api/runs/empty-run/files/loss.png"), 404, "no loss.png")


@pytest.mark.parametrize(
    "url",
    [
        "/api/runs/..%2F..%2Fetc",
        "/api/runs/..%2F..%2Fetc/files/loss.png",
        "/api/runs/%2E%2E",
        "/api/runs/%2E%2E/files/loss.png",
        "/api/runs/.hidden",
        "/api/runs/good-run%2F..%2F..%2Fetc",
        "/api/runs/good-run/files/..%2Fconfig.json",
        "/api/runs/good-run/files/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/api/runs/%2Fetc",
        "/api/runs/a%00b",
        "/models/..%2Fzoo%2Fq3.json",
        "/models/%2E%2E%2F__init__.py",
    ],
)
def test_path_traversal_is_refused(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert 400 <= response.status_code < 500, (url, response.status_code)
    assert "error" in response.json()
    assert "root:" not in response.text


# ---- the model files bae.js reads ----------------------------------------------------------------
def test_shipped_model_files_are_served_as_they_are(client: TestClient) -> None:
    from blendae.codec.loader import zoo_folder

    for name in zoo_entries():
        for suffix in (".json", ".safetensors"):
            response = client.get(f"/models/{name}{suffix}")
            assert response.status_code == 200
            assert response.content == (zoo_folder() / f"{name}{suffix}").read_bytes()
    assert client.get("/static/bae.js").headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize(
    "file", ["separate.json", "q3.txt", "q9.json", "q3", "earlier.json", "%2E%2E"]
)
def test_other_model_files_are_404(client: TestClient, file: str) -> None:
    assert_error(client.get(f"/models/{file}"), 404, "shipped models: general, q0")


def test_link_out_of_the_runs_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "loss.png").write_bytes(png_bytes(np.zeros((4, 4), np.uint8)))
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "escape").symlink_to(outside, target_is_directory=True)
    client = TestClient(build_app(runs))
    assert client.get("/api/runs").json()["runs"] == []
    assert_error(client.get("/api/runs/escape/files/loss.png"), 400, "outside")


def test_missing_runs_folder(tmp_path: Path) -> None:
    client = TestClient(build_app(tmp_path / "nothing-here"))
    assert client.get("/api/runs").json()["runs"] == []


# ---- the optional extra --------------------------------------------------------------------------
def test_missing_extra_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    with pytest.raises(BlendaeError) as info:
        serve(port=0)
    assert str(info.value) == MISSING_EXTRA
    assert "pip install 'blendae[serve]'" in MISSING_EXTRA


@pytest.mark.parametrize(
    "name", ["../../etc", "..", ".", "", "a/b", "/etc", "good-run/../..", "a\\b"]
)
def test_run_names_stay_inside_the_runs_folder(runs_dir: Path, name: str) -> None:
    with pytest.raises(runs_view.RunNameError):
        runs_view.run_folder(runs_dir, name)
