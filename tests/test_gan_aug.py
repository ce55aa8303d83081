"""``gan-aug``: the GAN sees the training split only, the generator's outputs, sampling with the batch
statistics of training, the sample grid, the top-up counts, and a smoke trial on ``synthetic``."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import plugins.gan_aug.model as gm  # noqa: E402
import plugins.gan_aug.train as impl  # noqa: E402
from harness import DatasetRequest, DataSplits, HarnessError, Split, TrialContext  # noqa: E402
from harness.run.config import config_from_dict, resolve_method_config  # noqa: E402
from harness.run.runner import cached_plugins, scorer  # noqa: E402
from plugins.datasets import synthetic  # noqa: E402
from plugins.gan_aug import DIFFAUGMENT_OPS, PROFILES, GanAugConfig, register_methods  # noqa: E402
from plugins.gan_aug.train import topup_counts  # noqa: E402
from plugins.samplers.sampling import uniform  # noqa: E402

TINY = dict(latent_dim=16, g_width=8, d_width=8, gan_batch_size=16, epochs=1, batch_size=32, grid_per_class=3)


def make_ctx(tmp_path, seed: int = 0, reporter=None) -> TrialContext:
    return TrialContext(seed=seed, device="cpu", threads=1, trial_dir=tmp_path, reporter=reporter or (lambda **_: None),
                        sampler_factory=uniform, profile="smoke", scorer=scorer(cached_plugins((), ())[1]))


def sentinel_splits(channels: int = 3, size: int = 16) -> DataSplits:
    """Train images in [0, 200]; every validation and test pixel is 255, a value no training pixel has."""
    rng = np.random.default_rng(0)
    train_labels = np.repeat([0, 1, 2], [14, 5, 2])
    train = Split(rng.integers(0, 201, (len(train_labels), size, size, channels), dtype=np.uint8), train_labels)
    held_out = np.tile(np.arange(3), 3)
    val = Split(np.full((9, size, size, channels), 255, np.uint8), held_out)
    test = Split(np.full((9, size, size, channels), 255, np.uint8), held_out.copy())
    return DataSplits(train=train, val=val, test=test, classes=("a", "b", "c"), name="sentinel")


def record_calls(monkeypatch, module, name: str) -> list[dict]:
    """Wrap ``module.name`` so each call's arguments are recorded (and the call goes through)."""
    original, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append({"args": args, "kwargs": kwargs})
        result = original(*args, **kwargs)
        calls[-1]["result"] = result
        return result

    monkeypatch.setattr(module, name, wrapper)
    return calls


# ------------------------------------------------------------------------------------- no leakage


def test_gan_trains_on_the_training_split_only(tmp_path, monkeypatch):
    data = sentinel_splits()
    gan_calls = record_calls(monkeypatch, impl, "train_gan")
    config = dataclasses.replace(GanAugConfig(), gan_steps=2, balance=1.0, **TINY)
    predictor = impl.fit(data, config, make_ctx(tmp_path))

    assert len(gan_calls) == 1
    images, labels = gan_calls[0]["args"][:2]
    np.testing.assert_array_equal(images, data.train.images)
    np.testing.assert_array_equal(labels, data.train.labels)
    every_array = [a for a in (*gan_calls[0]["args"], *gan_calls[0]["kwargs"].values()) if isinstance(a, np.ndarray)]
    assert all(not (a.dtype == np.uint8 and (a == 255).any()) for a in every_array), "a held-out pixel reached the GAN"
    assert not any(isinstance(a, DataSplits | Split) for a in (*gan_calls[0]["args"], *gan_calls[0]["kwargs"].values()))
    probs = predictor.predict(data.test.images)["probs"]
    assert probs.shape == (9, 3)


# ------------------------------------------------------------------------------------- generator


@pytest.mark.parametrize(("channels", "size", "gen_size"), [(1, 16, 16), (3, 28, 32), (3, 20, 32), (1, 33, 64)])
def test_generator_shape_channels_and_range(channels, size, gen_size):
    G = gm.Generator(num_classes=4, channels=channels, size=size, latent_dim=8, width=4)
    assert G.gen_size == gen_size
    x = G(torch.randn(5, 8), torch.tensor([0, 1, 2, 3, 3]))
    assert x.shape == (5, channels, size, size)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    samples = G.sample(torch.tensor([2, 2, 3]))
    assert samples.shape == (3, channels, size, size) and samples.dtype == torch.uint8
    assert G.sample(torch.tensor([], dtype=torch.int64)).shape == (0, channels, size, size)
    with pytest.raises(HarnessError, match="class labels"):
        G.sample(torch.tensor([4]))


def test_generator_rejects_images_below_16_px():
    with pytest.raises(HarnessError, match="at least 16 px"):
        gm.Generator(num_classes=2, channels=1, size=12, latent_dim=8, width=4)


DARK_BRIGHT = np.repeat([0, 1], [16, 8])


@pytest.fixture(scope="module")
def dark_bright_gan(tmp_path_factory):
    """A tiny GAN trained on class 0 = dark images, class 1 = bright images (16 px, one channel)."""
    rng = np.random.default_rng(0)
    labels = DARK_BRIGHT
    images = np.where(labels[:, None, None, None] == 0, rng.integers(0, 40, (24, 16, 16, 1)),
                      rng.integers(215, 256, (24, 16, 16, 1))).astype(np.uint8)
    config = dataclasses.replace(GanAugConfig(), latent_dim=16, g_width=8, d_width=8, gan_steps=150,
                                 gan_batch_size=16, g_lr=2e-3, d_lr=2e-3, diffaugment="translation,cutout")
    reports = []
    ctx = make_ctx(tmp_path_factory.mktemp("gan"), reporter=lambda **r: reports.append(r))
    G, history = impl.train_gan(images, labels, 2, config, ctx)
    return G, history, reports


def test_generator_follows_the_requested_class(dark_bright_gan):
    G, history, reports = dark_bright_gan
    samples = G.sample(torch.tensor([0] * 20 + [1] * 20), torch.Generator().manual_seed(1)).float()
    dark, bright = samples[:20].mean().item(), samples[20:].mean().item()
    assert bright - dark > 60, (dark, bright)
    # The adversarial steps ran in the shared loop: 24 images in batches of 16 are 2 steps per epoch, so
    # 150 steps are 75 epochs, each reported as the trial's "gan" stage.
    assert len(history) == 75 and reports == history
    assert all(r["stage"] == "gan" and math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in history)


def test_sampling_uses_the_batch_statistics_of_training(dark_bright_gan):
    G, _, _ = dark_bright_gan
    G = G.eval()
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(1024, 16, generator=gen)
    y = torch.from_numpy(DARK_BRIGHT)[torch.randint(0, len(DARK_BRIGHT), (1024,), generator=gen)]
    # The batch statistics of training: train mode on a large batch whose classes are drawn as in training.
    as_trained = copy.deepcopy(G).train()
    inputs = {}
    for name, m in as_trained.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.register_forward_pre_hook(lambda mod, i, name=name: inputs.setdefault(name, i[0]))
    with torch.no_grad():
        trained = as_trained(z, y)
        sampled = G(z, y)  # eval mode: what sampling uses
    assert (sampled - trained).abs().mean() < 0.03
    norms = {name: m for name, m in G.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert norms and set(norms) == set(inputs)
    for name, norm in norms.items():
        x = inputs[name]
        assert torch.allclose(norm.running_mean, x.mean(dim=(0, 2, 3)), atol=0.1 * x.std().item()), name
        assert torch.allclose(norm.running_var, x.var(dim=(0, 2, 3), unbiased=False), rtol=0.2), name
    # An image does not depend on the classes of the others in its batch: a batch of the minority class
    # alone gives the same images as the same z inside a mixed batch; in train mode it would not.
    ones, zeros = torch.ones(8, dtype=torch.int64), torch.zeros(8, dtype=torch.int64)
    with torch.no_grad():
        alone = G(z[:8], ones)
        in_mixed = G(torch.cat([z[:8], z[8:16]]), torch.cat([ones, zeros]))[:8]
        alone_train = copy.deepcopy(G).train()(z[:8], ones)
    assert torch.allclose(alone, in_mixed, atol=1e-5)
    assert (alone_train - alone).abs().mean() > 0.03


def test_sample_grid_has_one_row_per_class(dark_bright_gan, tmp_path):
    from PIL import Image

    G, _, _ = dark_bright_gan
    path = impl.save_sample_grid(G, tmp_path / "grid.png", classes=("dark", "bright"), per_class=4, seed=0)
    grid = np.asarray(Image.open(path))
    tile, pad = 64, 2  # 16 px tiles upscaled 4x
    assert grid.shape == (2 * (tile + pad) + pad, 4 * (tile + pad) + pad)  # one channel -> greyscale PNG
    row_dark = grid[pad : pad + tile].astype(float)
    row_bright = grid[2 * pad + tile : 2 * pad + 2 * tile].astype(float)
    tiles = lambda row: np.concatenate([row[:, pad + i * (tile + pad) : pad + i * (tile + pad) + tile]  # noqa: E731
                                        for i in range(4)])
    assert tiles(row_bright).mean() - tiles(row_dark).mean() > 60


# ------------------------------------------------------------------------------------- DiffAugment


def test_diffaugment_is_differentiable_and_policy_checked():
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    ops = GanAugConfig(diffaugment="color,translation,cutout").diffaugment_ops()
    y = gm.diff_augment(x * 2 - 1, ops, gen)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    out = gm.diff_augment(torch.ones(4, 1, 16, 16), ("cutout",), gen)
    zeros = (out == 0).sum(dim=(1, 2, 3))
    assert ((zeros > 0) & (zeros <= 8 * 8)).all()  # a half-side square, clipped at the border
    assert GanAugConfig(diffaugment="").diffaugment_ops() == ()
    assert set(DIFFAUGMENT_OPS) == set(gm.DIFFAUGMENT)  # the config's names are the model's operations
    with pytest.raises(ValueError, match="unknown operations"):
        GanAugConfig(diffaugment="color,flip")
    with pytest.raises(ValueError, match="gan_batch_size"):
        GanAugConfig(gan_batch_size=1)


# ----------------------------------------------------------------------------------------- top-up


def test_topup_counts_formula():
    labels = np.repeat([0, 1, 2], [10, 4, 1])
    assert topup_counts(labels, 4, 1.0).tolist() == [0, 6, 9, 0]  # class 3 is absent: never generated
    assert topup_counts(labels, 4, 0.5).tolist() == [0, 1, 4, 0]
    assert topup_counts(labels, 4, 0.25).tolist() == [0, 0, 2, 0]  # ceil(2.5) = 3
    assert topup_counts(labels, 4, 0.0).tolist() == [0, 0, 0, 0]
    with pytest.raises(HarnessError, match="balance"):
        topup_counts(labels, 4, -0.1)


def test_fixed_pool_is_reused_and_no_topup_skips_the_gan(tmp_path, monkeypatch):
    data = sentinel_splits(channels=1)
    loops = record_calls(monkeypatch, impl, "train_classifier")
    gan_calls = record_calls(monkeypatch, impl, "train_gan")
    config = dataclasses.replace(GanAugConfig(), gan_steps=2, balance=0.5, fresh_samples=False, **TINY)
    fixed = make_ctx(tmp_path / "fixed")
    impl.fit(data, config, fixed)
    assert fixed.warnings == []  # images were added: nothing to warn about
    extra = loops[-1]["kwargs"]["extra_batches"]
    (x0, y0), (x1, y1) = extra(0), extra(1)
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert x0.shape == (len(y0), 1, 16, 16) and x0.dtype == torch.uint8
    assert np.bincount(y0.numpy(), minlength=3).tolist() == [0, 2, 5]  # up to ceil(0.5 * 14) = 7

    ctx = make_ctx(tmp_path / "none")
    impl.fit(data, dataclasses.replace(config, balance=0.0), ctx)
    assert len(gan_calls) == 1 and loops[-1]["kwargs"]["extra_batches"] is None
    assert "no GAN is trained" in ctx.notes["gan_skipped"] and ctx.notes["topup_counts"] == [0, 0, 0]
    (warning,) = ctx.warnings  # the row is plain ResNet-18: the report's Warnings must say so
    assert warning.startswith("gan-aug is plain ResNet-18 here") and "raise `balance`" in warning
    assert not (tmp_path / "none" / "artefacts" / "gan_samples.png").exists()


# ---------------------------------------------------------------------------------- smoke trial


def test_smoke_trial_on_synthetic(tmp_path, monkeypatch):
    options = synthetic.SyntheticOptions(size=16, n_train=140, n_val=70, n_test=140)  # the smoke profile
    data = synthetic.load(DatasetRequest(options=options, seed=0, data_dir=None, cache_dir=tmp_path))
    specs = []
    register_methods(specs.append)
    spec = specs[0]
    assert spec.name == "gan-aug"
    config = config_from_dict(GanAugConfig, resolve_method_config(spec, "smoke", {}))
    assert config.gan_steps == PROFILES["smoke"]["gan_steps"]
    loops = record_calls(monkeypatch, impl, "train_classifier")
    reports = []
    ctx = make_ctx(tmp_path, reporter=lambda **r: reports.append(r))
    predictor = impl.fit(data, config, ctx)

    probs = predictor.predict(data.test.images)["probs"]
    assert probs.shape == (140, 7)
    assert np.all(probs >= 0) and np.allclose(probs.sum(1), 1, atol=1e-5)

    # Every class reaches ceil(balance * majority) with this epoch's synthetic images; fresh ones per epoch.
    counts = np.bincount(data.train.labels, minlength=7)
    target = math.ceil(config.balance * counts.max())
    extra = loops[0]["kwargs"]["extra_batches"]
    (x0, y0), (x1, _) = extra(0), extra(1)
    assert (counts + np.bincount(y0.numpy(), minlength=7)).tolist() == np.maximum(counts, target).tolist()
    assert x0.shape == (len(y0), 3, 16, 16) and x0.dtype == torch.uint8 and not torch.equal(x0, x1)

    from PIL import Image

    grid = Image.open(ctx.artefacts_dir / "gan_samples.png")
    tile = 64 + 2
    assert grid.size == (config.grid_per_class * tile + 2, 7 * tile + 2) and grid.mode == "RGB"
    report = json.loads((ctx.artefacts_dir / "gan_history.json").read_text())
    assert report["topup_counts"] == np.bincount(y0.numpy(), minlength=7).tolist()
    assert report["gan_steps_done"] >= config.gan_steps and ctx.notes["gan_steps_done"] == report["gan_steps_done"]
    # One learning curve: the GAN's epochs, then the classifier's, numbered on.
    stages = [r.get("stage") for r in reports]
    gan_epochs = len(report["gan_history"])
    assert stages == ["gan"] * gan_epochs + ["classifier"] * (len(reports) - gan_epochs)
    assert [r["epoch"] for r in reports] == list(range(1, len(reports) + 1))
    assert "val_macro_f1" in reports[-1] and "loss_d" in reports[0]


def test_a_method_warning_reaches_the_result(tmp_path):
    """``ctx.warn`` lands in the trial's ``warnings`` (the report's Warnings): gan-aug at ``balance=0``."""
    from harness.run.latency import LatencySettings
    from harness.run.runner import RunSettings, run_trial
    from harness.run.trial import Experiment, expand

    _, registry = cached_plugins((), ())
    exp = Experiment(methods=("gan-aug",), datasets=("synthetic",), profile="smoke", seeds=(0,),
                     overrides={"synthetic": {"size": 16, "n_train": 70, "n_val": 35, "n_test": 35},
                                "gan-aug": {"balance": 0.0}})
    (trial,) = expand(exp, registry)
    settings = RunSettings(runs_dir=tmp_path, threads=1, latency=LatencySettings(onnx=False, budget_s=0.01,
                                                                                   max_repeats_b1=2))
    result = run_trial(trial, settings, reporter=lambda **_: None)
    assert result["status"] == "ok", result.get("traceback")
    assert any(w.startswith("gan-aug is plain ResNet-18 here") for w in result["warnings"]), result["warnings"]


def test_a_step_budget_stays_resnets_over_the_augmented_set(tmp_path, monkeypatch):
    """With ``steps`` set, the classifier gets the same optimizer steps as ``resnet`` however many images the
    GAN adds: fewer epochs over real + synthetic images, not more steps for more images."""
    data = sentinel_splits(channels=1)  # 14 / 5 / 2 training images
    loops = record_calls(monkeypatch, impl, "train_classifier")
    config = dataclasses.replace(GanAugConfig(), gan_steps=2, balance=0.5, fresh_samples=False,
                                 **{**TINY, "batch_size": 8}, steps=20, min_epochs=1)
    ctx = make_ctx(tmp_path)
    impl.fit(data, config, ctx)
    used = loops[-1]["args"][2]  # 21 real + 7 synthetic = 28 images, 4 steps an epoch: 5 epochs (7 on 21 alone)
    assert (used.steps, used.epochs) == (0, 5) and ctx.notes["classifier_steps"] == 20
