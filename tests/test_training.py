"""Training loop, run folders, checkpoints and resume, on small synthetic data."""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from blendae import runs
from blendae.config import RunConfig
from blendae.data import BlendedSplits
from blendae.errors import BlendaeError
from blendae.models import build_model
from blendae.training import loop


def _config(**kw: object) -> RunConfig:
    base: dict[str, object] = dict(model="seed", preset="unit", epochs=3, batch_size=16)
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


def _strip_time(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in metrics]


def test_metrics_and_outputs(tiny_splits: BlendedSplits, tmp_path: Path) -> None:
    out = tmp_path / "run"
    metrics = loop.train(_config(), out, tiny_splits, progress=False)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert set(m) >= {"epoch", "train_loss", "test_loss", "test_psnr", "test_ssim", "seconds"}
        assert all(math.isfinite(m[k]) for k in ("train_loss", "test_loss", "test_psnr"))
    lines = (out / runs.METRICS).read_text().splitlines()
    assert [json.loads(line) for line in lines] == metrics
    assert runs.load_config(out) == _config()
    assert runs.has_checkpoint(out) and (out / runs.WEIGHTS).is_file()
    # Learning happens: the last test loss is below the first.
    assert metrics[-1]["test_loss"] < metrics[0]["test_loss"]


@pytest.mark.parametrize("protocol", ["minibatch", "seed-fullbatch"])
def test_resume_equals_uninterrupted(
    tiny_splits: BlendedSplits, tmp_path: Path, protocol: str
) -> None:
    full = loop.train(_config(protocol=protocol, epochs=4), tmp_path / "full", tiny_splits)
    # "Interrupt" after 2 epochs, then resume to 4 in the same folder.
    loop.train(_config(protocol=protocol, epochs=2), tmp_path / "cut", tiny_splits)
    resumed = loop.train(
        _config(protocol=protocol, epochs=4), tmp_path / "cut", tiny_splits, resume=True
    )
    assert _strip_time(resumed) == _strip_time(full)
    a = runs.load_checkpoint(tmp_path / "full").model
    b = runs.load_checkpoint(tmp_path / "cut").model
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_copied_run_resumes_in_its_own_folder(tiny_splits: BlendedSplits, tmp_path: Path) -> None:
    loop.train(_config(epochs=1), tmp_path / "A", tiny_splits)
    shutil.copytree(tmp_path / "A", tmp_path / "B")
    before = (tmp_path / "A" / runs.CHECKPOINT).read_bytes()
    shutil.rmtree(tmp_path / "A")  # moved, not copied: nothing may point back at A
    metrics = loop.train(_config(epochs=2), tmp_path / "B", tiny_splits, resume=True)
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert not (tmp_path / "A").exists()
    assert (tmp_path / "B" / runs.CHECKPOINT).read_bytes() != before


def test_the_resume_rule_holds_from_python(tiny_splits: BlendedSplits, tmp_path: Path) -> None:
    loop.train(_config(epochs=1), tmp_path / "run", tiny_splits)
    with pytest.raises(BlendaeError, match="--lr"):
        loop.train(_config(epochs=2, lr=0.01), tmp_path / "run", tiny_splits, resume=True)


def test_a_finished_run_says_so(
    tiny_splits: BlendedSplits, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = loop.train(_config(epochs=1), tmp_path / "run", tiny_splits)
    with caplog.at_level("INFO", logger="blendae"):
        again = loop.train(_config(epochs=1), tmp_path / "run", tiny_splits, resume=True)
    assert again == first and "is finished (1 of 1 epochs)" in caplog.text
    assert "--epochs" in caplog.text
    with caplog.at_level("INFO", logger="blendae"):
        loop.train(_config(epochs=2), tmp_path / "run", tiny_splits, resume=True)
    assert "resuming" in caplog.text and "at epoch 2 of 2" in caplog.text


def test_fullbatch_is_one_step_on_the_full_mean(tiny_splits: BlendedSplits, tmp_path: Path) -> None:
    """One seed-fullbatch epoch equals one Adam step on the whole-set MSE, computed directly."""
    from blendae.models.seed import SeedAutoencoder

    # fullbatch_chunk 25 forces several chunks over the 96 images.
    cfg = _config(protocol="seed-fullbatch", epochs=1, channels_last=False, fullbatch_chunk=25)
    metrics = loop.train(cfg, tmp_path / "fb", tiny_splits, progress=False)
    torch.manual_seed(cfg.seed)
    model = SeedAutoencoder()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss = torch.nn.functional.mse_loss(model(tiny_splits.train)["x_hat"], tiny_splits.train)
    loss.backward()
    opt.step()
    assert metrics[0]["train_loss"] == pytest.approx(loss.item(), rel=1e-6)
    trained = runs.load_checkpoint(tmp_path / "fb").model
    for name, p in model.state_dict().items():
        torch.testing.assert_close(trained[name], p, rtol=1e-5, atol=1e-6)


def test_non_empty_out_without_resume_is_refused(
    tiny_splits: BlendedSplits, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(BlendaeError, match="not empty"):
        loop.train(_config(), out, tiny_splits)
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_a_run_stopped_before_its_first_checkpoint_restarts(
    tiny_splits: BlendedSplits, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    runs.save_config(out, _config(epochs=1))  # what Ctrl-C in epoch 1 leaves behind
    (out / runs.LOCK).write_text("12345\n")
    assert [m["epoch"] for m in loop.train(_config(epochs=1), out, tiny_splits)] == [1]
    shutil.rmtree(out)
    out.mkdir()
    runs.save_config(out, _config(epochs=1))
    assert [m["epoch"] for m in loop.train(_config(epochs=1), out, tiny_splits, resume=True)] == [1]


def _hold_lock(
    folder: str, ready: multiprocessing.synchronize.Event, done: multiprocessing.synchronize.Event
) -> None:
    with runs.lock(Path(folder)):
        ready.set()
        done.wait(30)


def test_one_writer_per_run_folder(tiny_splits: BlendedSplits, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path / "run"), ready, done))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(BlendaeError, match=rf"is in use by process {holder.pid}"):
            loop.train(_config(epochs=1), tmp_path / "run", tiny_splits)
    finally:
        done.set()
        holder.join(30)
    holder_killed = ctx.Process(target=_hold_lock, args=(str(tmp_path / "run"), ready, done))
    ready.clear()
    done.clear()
    holder_killed.start()
    assert ready.wait(30)
    holder_killed.kill()  # kill -9: the lock dies with its process
    holder_killed.join(30)
    assert [m["epoch"] for m in loop.train(_config(epochs=1), tmp_path / "run", tiny_splits)] == [1]


def test_a_diverging_run_stops_and_keeps_its_last_checkpoint(
    tiny_splits: BlendedSplits, tmp_path: Path
) -> None:
    loop.train(_config(epochs=1), tmp_path / "run", tiny_splits)
    good = (tmp_path / "run" / runs.CHECKPOINT).read_bytes()
    poisoned = BlendedSplits(
        tiny_splits.train.clone().fill_(float("nan")), tiny_splits.test, "unit", {}
    )
    with pytest.raises(BlendaeError, match=r"diverged: loss nan at epoch 2, step 7.*epoch 1"):
        loop.train(_config(epochs=2), tmp_path / "run", poisoned, resume=True)
    assert (tmp_path / "run" / runs.CHECKPOINT).read_bytes() == good


def test_models_that_cannot_take_the_data_are_refused_before_writing(
    tiny_splits: BlendedSplits, tmp_path: Path
) -> None:
    with pytest.raises(BlendaeError, match=r"cannot take \(3, 32, 32\) images"):
        loop.train(
            _config(model="conv", model_args={"in_channels": 1}), tmp_path / "a", tiny_splits
        )
    assert not (tmp_path / "a" / runs.CONFIG).exists()
    with pytest.raises(BlendaeError, match="is a codec: give --lambda"):
        loop.train(_config(model="factorized"), tmp_path / "b", tiny_splits)
    with pytest.raises(BlendaeError, match="--lambda weighs a rate"):
        loop.train(_config(lmbda=0.01), tmp_path / "c", tiny_splits)


def test_damaged_checkpoint(tiny_splits: BlendedSplits, tmp_path: Path) -> None:
    out = tmp_path / "run"
    loop.train(_config(epochs=1), out, tiny_splits)
    data = (out / runs.CHECKPOINT).read_bytes()
    (out / runs.CHECKPOINT).write_bytes(data[: len(data) // 2])
    with pytest.raises(BlendaeError, match="damaged"):
        runs.load_checkpoint(out)


def test_old_config_files_migrate(tmp_path: Path) -> None:
    (tmp_path / runs.CONFIG).write_text(
        json.dumps({"out": "/elsewhere/run", "model": "seed", "codec": False, "lmbda": 0.01})
    )
    config = runs.load_config(tmp_path)
    assert config.model == "seed" and config.lmbda is None
    (tmp_path / runs.CONFIG).write_text(json.dumps({"model": "seed", "model_args": [1]}))
    with pytest.raises(BlendaeError, match="model_args must be a JSON object"):
        runs.load_config(tmp_path)
    (tmp_path / runs.CONFIG).write_text(json.dumps({"model": "seed", "init_from": 5}))
    with pytest.raises(BlendaeError, match="init_from must be the path of a run folder"):
        runs.load_config(tmp_path)


def test_cosine_schedule_decays_to_one_percent() -> None:
    cfg = RunConfig(lr=1e-3, lr_schedule="cosine")
    assert loop.lr_at(cfg, 0, 100) == pytest.approx(1e-3)
    assert loop.lr_at(cfg, 100, 100) == pytest.approx(1e-5)
    assert loop.lr_at(RunConfig(lr=1e-3), 50, 100) == 1e-3


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("protocol", "fullbatch", "unknown protocol"),
        ("epochs", 0, "--epochs must be a whole number from 1"),
        ("lr", -1.0, "--lr must be a finite number > 0"),
        ("lr", float("inf"), "--lr must be a finite number > 0"),
        ("seed", 10**30, "--seed must be a whole number"),
        ("device", "tpu", "unknown device"),
    ],
)
def test_config_validation(field: str, value: object, match: str) -> None:
    with pytest.raises(BlendaeError, match=match):
        RunConfig(**{field: value}).validate()  # type: ignore[arg-type]


def test_models_match_the_study() -> None:
    from blendae.models import build_model

    seed = build_model("seed")
    convs = [m for m in seed.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [
        (3, 16),
        (16, 32),
        (32, 64),
        (64, 32),
        (32, 16),
        (16, 3),
    ]
    assert all(
        m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1) for m in convs
    )
    x = torch.zeros(2, 3, 32, 32)
    assert seed.encoder(x).shape == (2, 64, 4, 4)
    assert seed(x)["x_hat"].shape == x.shape and seed(x)["likelihoods"] == {}
    with pytest.raises(BlendaeError, match="unknown model"):
        build_model("nope")
    with pytest.raises(BlendaeError, match="unknown activation"):
        build_model("conv", activation="swish2")


def test_stop_hook_ends_the_run_at_that_step(tiny_splits: BlendedSplits, tmp_path: Path) -> None:
    asked: list[int] = []

    def stop(model: torch.nn.Module, step: int) -> bool:
        asked.append(step)
        return step == 9  # mid-way through epoch 2 (6 steps of 16 per epoch)

    metrics = loop.train(_config(epochs=5), tmp_path / "run", tiny_splits, stop=stop)
    assert asked == list(range(1, 10))
    assert [m["epoch"] for m in metrics] == [1]  # epoch 2 was cut short, so not recorded


def test_non_finite_weights_are_refused_when_loaded(
    tiny_splits: BlendedSplits, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    loop.train(_config(epochs=1), out, tiny_splits)
    weights = load_file(out / runs.WEIGHTS)
    name = next(iter(weights))
    weights[name][0] = float("nan")
    save_file(weights, out / runs.WEIGHTS)
    with pytest.raises(BlendaeError, match=rf"non-finite values in '{name}'"):
        runs.load_model(out)


def test_a_collapsing_run_stops_and_keeps_its_last_good_checkpoint(tmp_path: Path) -> None:
    """Weights wrecked mid-run (as a diverging codec's are): the epoch is not saved."""
    steps_per_epoch = 60  # 480 images, batches of 8

    def wreck(model: torch.nn.Module, step: int) -> bool:
        if step == 2 * steps_per_epoch:  # the last step of epoch 2
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(40.0)
        return False

    g = torch.Generator().manual_seed(0)
    flat = BlendedSplits(  # easy images: a high PSNR after one epoch, far to fall
        0.5 + 0.05 * torch.rand(480, 3, 32, 32, generator=g),
        0.5 + 0.05 * torch.rand(40, 3, 32, 32, generator=g),
        "unit",
        {},
    )
    config = _config(epochs=3, batch_size=8, lr=3e-3)
    out = tmp_path / "run"
    with pytest.raises(
        BlendaeError,
        match=r"collapsed from .* \(epoch 1\) to .* at epoch 2.*"
        r"checkpoint of epoch 1 is kept.*--clip-grad",
    ):
        loop.train(config, out, flat, stop=wreck)
    assert runs.load_checkpoint(out).state["epoch"] == 1
    cured = dataclasses.replace(config, clip_grad=1.0)  # resumable: the cure
    assert [m["epoch"] for m in loop.train(cured, out, flat, resume=True)] == [1, 2, 3]


@pytest.mark.parametrize(
    ("model", "args"),
    [("hyperprior", {"N": 16, "M": 8, "Nh": 8, "Z": 4}), ("factorized", {"N": 16, "M": 8})],
)
def test_a_codec_at_the_highest_shipped_lambda_trains_stably_with_clipping(
    tiny_splits: BlendedSplits, tmp_path: Path, model: str, args: dict
) -> None:
    """240 steps of a small codec at λ 0.08 (the zoo's q4) with the gradient clipped."""
    config = _config(
        model=model,
        model_args=args,
        lmbda=0.08,
        epochs=20,
        batch_size=8,
        lr_schedule="constant",
        clip_grad=1.0,
    )
    metrics = loop.train(config, tmp_path / "codec", tiny_splits)  # a collapse would raise
    assert len(metrics) == 20 and all(math.isfinite(m["test_psnr"]) for m in metrics)
    assert metrics[-1]["test_psnr"] > metrics[0]["test_psnr"]


def test_a_validation_split_is_the_last_training_images_and_never_trained_on(
    tiny_splits: BlendedSplits, tmp_path: Path
) -> None:
    with_val = loop.train(_config(val=16), tmp_path / "val", tiny_splits, progress=False)
    explicit = BlendedSplits(tiny_splits.train[:80], tiny_splits.train[80:], "unit", {})
    by_hand = loop.train(_config(), tmp_path / "hand", explicit, progress=False)
    assert _strip_time(with_val) == _strip_time(by_hand)
    with pytest.raises(BlendaeError, match="--val 96 leaves no training images"):
        loop.train(_config(val=96), tmp_path / "none", tiny_splits, progress=False)


def test_a_finished_codec_run_calibrates_its_exact_decoders(
    tiny_splits: BlendedSplits, tmp_path: Path
) -> None:
    """A range that a wild start left 1,000× too wide (training only lets the recorded
    maximum decay slowly) is cut at the end of the run, on training images; the run's state
    records it, and the saved model codes what its exact decoder decodes."""
    small = {"N": 8, "M": 8, "Nh": 8, "Z": 4, "context": 8}
    wild = build_model("hyperprior", **small)
    last = "g_s.9.amax"  # the range of the synthesis' last convolution
    wild.get_buffer(last).fill_(1000.0)
    save_file(wild.state_dict(), str(tmp_path / "wild.safetensors"))
    (tmp_path / "wild.json").write_text("{}")
    config = _config(
        model="hyperprior", model_args=small, lmbda=0.01, epochs=1,
        init_from=str(tmp_path / "wild.json"),
    )  # fmt: skip
    loop.train(config, tmp_path / "run", tiny_splits, progress=False)
    record = runs.load_state(tmp_path / "run")["calibration"]
    assert record["images"] == 96 and record["qualities"] == [None]  # all 96 training images
    assert record["trained_ranges"][last] > 900
    bits, psnr = record["mean_log2_bits"], record["mean_psnr"]
    assert bits[1] <= bits[0] and psnr[1] > psnr[0]
    model = runs.load_model(tmp_path / "run")[1].eval()
    assert float(model.get_buffer(last)) < record["trained_ranges"][last] / 2
    x = tiny_splits.train[:16]

    def exact_minus_float() -> float:
        with torch.no_grad():
            exact = model(x)["x_hat"]
            model._exact_current = False  # the float networks
            floating = model(x)["x_hat"]
            model._exact_current = True
        return float((exact - floating).square().mean())

    calibrated = exact_minus_float()
    for name, value in record["trained_ranges"].items():
        model.get_buffer(name).fill_(value)
    model._build_exact()
    assert calibrated < exact_minus_float() / 4
    x = tiny_splits.test[:4]
    decoded = model.decompress(model.compress(x), (32, 32))
    with torch.no_grad():
        assert torch.equal(decoded, model(x)["x_hat"])
    # a damaged record is named as such when the run is resumed for more epochs
    ckpt = runs.load_checkpoint(tmp_path / "run")
    ckpt.state["calibration"]["trained_ranges"][last] = "wide"
    runs.save_checkpoint(tmp_path / "run", ckpt)
    more = dataclasses.replace(config, epochs=2)
    with pytest.raises(BlendaeError, match=r"damaged \(its calibration record: range g_s\.9"):
        loop.train(more, tmp_path / "run", tiny_splits, resume=True, progress=False)


def test_init_from_starts_a_larger_model_from_a_trained_one(
    tiny_splits: BlendedSplits, tmp_path: Path
) -> None:
    """A context hyperprior fine-tuned from a plain one: the shared weights start as trained,
    the new ones as built; a model that does not extend the run is refused."""
    small = {"N": 8, "M": 8, "Nh": 8, "Z": 4}
    base = _config(model="hyperprior", model_args=small, lmbda=0.01, epochs=1)
    loop.train(base, tmp_path / "base", tiny_splits, progress=False)
    trained = runs.load_model(tmp_path / "base")[1].state_dict()
    start = build_model("hyperprior", **small, context=8)
    fresh = runs.init_from(start, tmp_path / "base")
    assert fresh and all(k.startswith(("ctx.", "ep.")) for k in fresh)
    assert all(torch.equal(start.state_dict()[k], v) for k, v in trained.items())
    extended = dataclasses.replace(
        base, model_args={**small, "context": 8}, init_from=str(tmp_path / "base"), epochs=1
    )
    loop.train(extended, tmp_path / "ctx", tiny_splits, progress=False)
    assert runs.load_config(tmp_path / "ctx").init_from == str(tmp_path / "base")
    tuned = runs.load_model(tmp_path / "ctx")[1].state_dict()
    assert any(k.startswith("ep.") for k in tuned) and "g_a.0.weight" in tuned
    assert not torch.equal(tuned["g_a.0.weight"], trained["g_a.0.weight"])  # it trained on
    # A model with no place for the run's weights (the plain one from the context one):
    back = dataclasses.replace(base, init_from=str(tmp_path / "ctx"))
    with pytest.raises(BlendaeError, match="no place for its weights"):
        loop.train(back, tmp_path / "back", tiny_splits, progress=False)
    wrong = dataclasses.replace(base, model="seed", model_args={}, lmbda=None)
    wrong = dataclasses.replace(wrong, init_from=str(tmp_path / "base"))
    with pytest.raises(BlendaeError, match="init-from"):
        loop.train(wrong, tmp_path / "wrong", tiny_splits, progress=False)
    with pytest.raises(BlendaeError, match="cannot read model weights"):
        loop.train(
            dataclasses.replace(base, init_from=str(tmp_path / "nowhere")),
            tmp_path / "x",
            tiny_splits,
            progress=False,
        )


def test_a_gained_model_with_a_faster_gain_lr_resumes_exactly_and_moves_its_gains_faster(
    tiny_splits: BlendedSplits, tmp_path: Path
) -> None:
    """`gain_lr` puts the gain vectors in their own Adam group at a multiple of the schedule's
    rate; the group survives a resume (the interrupted run ends where the whole one does)."""
    small = {"N": 8, "M": 4, "Nh": 4, "Z": 2, "context": 8, "levels": 3, "lmbda": [0.01, 0.2]}

    def config(args: dict, epochs: int) -> RunConfig:
        return _config(model="gained", model_args=args, epochs=epochs, batch_size=16, lr=1e-3)

    fast = {**small, "gain_lr": 20.0, "balance": 0.5}
    full = loop.train(config(fast, 2), tmp_path / "full", tiny_splits)
    loop.train(config(fast, 1), tmp_path / "cut", tiny_splits)
    resumed = loop.train(config(fast, 2), tmp_path / "cut", tiny_splits, resume=True)
    assert _strip_time(resumed) == _strip_time(full)
    a = runs.load_checkpoint(tmp_path / "full").model
    b = runs.load_checkpoint(tmp_path / "cut").model
    assert all(torch.equal(a[k], b[k]) for k in a)
    loop.train(config(small, 2), tmp_path / "plain", tiny_splits)
    plain = runs.load_checkpoint(tmp_path / "plain").model
    start = build_model("gained", **small).state_dict()["log_gain"]
    moved = {k: float((w["log_gain"] - start).abs().max()) for k, w in [("fast", a), ("1", plain)]}
    assert moved["fast"] > 5 * moved["1"] > 0


def test_an_optimizer_has_one_group_unless_the_model_scales_some_learning_rates() -> None:
    small = {"N": 8, "M": 4, "Nh": 4, "Z": 2, "context": 8, "levels": 3, "lmbda": [0.01, 0.2]}
    cpu = torch.device("cpu")
    plain = loop.make_optimizer(build_model("gained", **small), 1e-3, cpu)
    assert [g["lr"] for g in plain.param_groups] == [1e-3]  # old checkpoints resume alike
    model = build_model("gained", **small, gain_lr=50.0)
    groups = loop.make_optimizer(model, 1e-3, cpu).param_groups
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(0.05)]
    assert {id(p) for p in groups[1]["params"]} == {id(model.log_gain), id(model.log_inv_gain)}
