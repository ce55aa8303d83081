"""``protodiff`` / ``cfg-diff`` (+ ``-tstr``): GCPL's losses by hand, frozen prototypes, batched guidance,
the DDIM sampler, the generation metrics, no held-out image reaching the generator, the shared generator
cache, and smoke trials on ``synthetic``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import plugins.protodiff.train as impl  # noqa: E402
from harness import DatasetRequest, DataSplits, HarnessError, Split, TrialContext  # noqa: E402
from harness.registry import load_plugins  # noqa: E402
from harness.run.config import resolve_method_config  # noqa: E402
from harness.run.latency import LatencySettings  # noqa: E402
from harness.run.runner import RunSettings, cached_plugins, run_trial, scorer  # noqa: E402
from harness.run.trial import Experiment, expand  # noqa: E402
from harness.toolkit import genmetrics  # noqa: E402
from harness.toolkit.nn import diffusion as D  # noqa: E402
from harness.toolkit.nn.schedules import DiscreteSchedule  # noqa: E402
from harness.toolkit.nn.unet import UNet  # noqa: E402
from plugins.datasets import synthetic  # noqa: E402
from plugins.protodiff import CfgDiffConfig, ProtoDiffConfig, generator_settings  # noqa: E402
from plugins.protodiff import model as M  # noqa: E402
from plugins.samplers.sampling import uniform  # noqa: E402
from tests.sentinel import record_calls, sentinel_splits  # noqa: E402

# The smallest generator that still runs every stage.
TINY = dict(epochs=1, batch_size=32, synthetic_per_class=3, channels=8, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(), dropout=0.0, emb_dim=16, class_dim=8, sample_steps=2, gen_epochs=1,
            gen_batch_size=16, gen_lr=1e-3, gen_warmup_epochs=0, grid_per_class=2)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the trial contexts here say (two threads on a loaded 2-core machine are far slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_ctx(tmp_path, seed: int = 0) -> TrialContext:
    return TrialContext(seed=seed, device="cpu", threads=1, trial_dir=tmp_path / "trial", reporter=lambda **_: None,
                        sampler_factory=uniform, profile="smoke", scorer=scorer(cached_plugins((), ())[1]))


# ------------------------------------------------------------------------------- GCPL by hand


def test_distance_cross_entropy_and_prototype_loss_match_hand_computation():
    f = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
    prototypes = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]], dtype=torch.float64)  # (C=2, M=1, d=2)
    y = torch.tensor([0, 1])
    # squared distances: image 0 -> (1, 4); image 1 -> (4, 1)
    d = torch.tensor([[1.0, 4.0], [4.0, 1.0]], dtype=torch.float64)
    assert torch.equal(M.squared_distances(f, prototypes)[..., 0], d)
    gamma, lam = 2.0, 0.01
    logits = M.dce_logits(f, prototypes, gamma)
    assert torch.allclose(logits, -gamma * d)
    # CE of logits (-2, -8) with target 0: -log(e^-2 / (e^-2 + e^-8)) = log(1 + e^-6), the same for image 1
    ce = np.log1p(np.exp(-6.0))
    assert M.prototype_loss(f, prototypes, y).item() == pytest.approx(1.0)  # (1 + 1) / 2
    total, parts = M.gcpl_loss(f, prototypes, y, gamma, lam)
    assert total.item() == pytest.approx(ce + lam * 1.0, rel=1e-9)
    assert parts["dce"] == pytest.approx(ce, rel=1e-9) and parts["pl"] == pytest.approx(1.0)


def test_several_prototypes_per_class_use_the_nearest():
    f = torch.tensor([[3.0, 0.0]])
    prototypes = torch.tensor([[[0.0, 0.0], [3.0, 1.0]], [[3.0, 3.0], [10.0, 0.0]]])  # (C=2, M=2, d=2)
    # class 0: min(9, 1) = 1; class 1: min(9, 49) = 9
    assert torch.allclose(M.dce_logits(f, prototypes, 0.5), torch.tensor([[-0.5, -4.5]]))
    assert M.prototype_loss(f, prototypes, torch.tensor([0])).item() == pytest.approx(1.0)
    assert M.prototype_loss(f, prototypes, torch.tensor([1])).item() == pytest.approx(9.0)
    net = M.PrototypeNet(torch.nn.Identity(), 2, 2, 2, 2, gamma=1.0)
    with torch.no_grad():
        net.project.weight.copy_(torch.eye(2))
        net.project.bias.zero_()
        net.prototypes.copy_(prototypes)
    assert net.assign(torch.tensor([[3.0, 0.0], [9.0, 0.0]]), torch.tensor([0, 1])).tolist() == [1, 1]


def test_a_frozen_encoder_keeps_its_weights_and_statistics_while_the_prototypes_learn(tmp_path):
    data = sentinel_splits((12, 6, 6), 4)
    config = dataclasses.replace(ProtoDiffConfig(), proto_epochs=2, freeze_encoder=True, **TINY)
    torch.manual_seed(0)
    encoder = impl.backbones.create("resnet18", num_classes=0, in_chans=3, image_size=16).model
    initial = M.PrototypeNet(encoder, 512, config.class_dim, 3, 1, config.gamma)  # the same draws as below
    reference = {k: v.clone() for k, v in initial.state_dict().items()}
    torch.manual_seed(0)
    net, info = impl.learn_prototypes(impl.only(data, data.train), config, make_ctx(tmp_path))
    assert info["encoder_frozen"] and info["encoder"] == "resnet18" and not info["encoder_pretrained_loaded"]
    for name, value in net.state_dict().items():  # weights and batch-norm running statistics
        if name.startswith("encoder."):
            assert torch.equal(value, reference[name]), name
    assert net.prototypes.shape == (3, 1, config.class_dim)
    assert not torch.equal(net.prototypes, reference["prototypes"])  # what does learn: prototypes, projection
    assert not torch.equal(net.project.weight, reference["project.weight"])


# ------------------------------------------------------------------------ conditioning, guidance


def test_unet_condition_vector_enters_every_block_through_its_own_projection():
    torch.manual_seed(0)
    net = UNet(3, channels=8, channel_mult=(1, 2), emb_dim=16, cond_dim=5, image_size=12)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    blocks = [b for level in (*net.down, net.mid, *net.up) for b in level.blocks]
    assert blocks and all(b.cond is not None and b.cond.in_features == 16 for b in blocks)
    x, t = torch.randn(2, 3, 12, 12), torch.tensor([10.0, 500.0])
    c = torch.randn(2, 5)
    assert net(x, t, cond=c).shape == x.shape
    assert not torch.allclose(net(x, t, cond=c), net(x, t, cond=torch.zeros(2, 5)))
    with pytest.raises(ValueError, match="cond of shape"):
        net(x, t)
    assert all(b.cond is None for level in UNet(3, channels=8, channel_mult=(1,), image_size=8).down
               for b in level.blocks)


@pytest.mark.parametrize("channels", [8, 16, 32, 64, 128])
def test_every_resblock_responds_to_its_time_and_condition_embeddings(channels):
    """The embeddings are per-channel constants added before a GroupNorm: with one channel per group the
    normalisation would subtract them exactly. The generators' UNet keeps at least 4 channels per group."""
    from harness.toolkit.nn.unet import group_norm

    config = dataclasses.replace(CfgDiffConfig(), **{**TINY, "channels": channels, "channel_mult": (1, 2)})
    net = M.build_denoiser(channels=3, size=8, num_classes=2, config=config)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_channels // m.num_groups >= 4 for m in norms)
    assert group_norm(128).num_groups == 32 and group_norm(256).num_groups == 32 and group_norm(12).num_groups == 3
    torch.manual_seed(0)
    block = net.unet.down[0].blocks[0]
    torch.nn.init.normal_(block.conv2.weight, std=0.1)  # zero-initialised: give the residual branch a say
    x, emb, cemb = torch.randn(2, channels, 6, 6), torch.randn(2, 16), torch.randn(2, 16)
    with torch.no_grad():
        base = block(x, emb, cemb) - block.skip(x)
        for changed in (block(x, torch.randn(2, 16), cemb), block(x, emb, torch.randn(2, 16))):
            assert (changed - block.skip(x) - base).abs().mean() > 0.05 * base.abs().mean()


def test_prototype_table_is_frozen_and_the_learned_one_is_not():
    table = torch.randn(6, 4)
    frozen = M.ClassCondition(6, 4, table)
    assert frozen.frozen and "table" in frozen.state_dict()
    assert all(p is not frozen.table for p in frozen.parameters())
    learned = M.ClassCondition(6, 4)
    assert not learned.frozen and any(p is learned.table for p in learned.parameters())
    idx = torch.tensor([0, 5])
    c = frozen(idx)
    assert torch.allclose(c, frozen.mlp(table[idx]))  # c = W2 SiLU(W1 E[y])
    assert torch.equal(frozen(idx, keep=torch.tensor([True, False]))[1], torch.zeros(4))  # null = 0 after the MLP
    with pytest.raises(HarnessError, match="prototype table"):
        M.ClassCondition(5, 4, table)


def test_prototypes_stay_bit_identical_through_diffusion_training(tmp_path, monkeypatch):
    data = sentinel_splits((12, 6, 6), 4)
    config = dataclasses.replace(CfgDiffConfig(), **{**TINY, "gen_epochs": 2})
    initial = []
    build = impl.build_denoiser
    monkeypatch.setattr(impl, "build_denoiser", lambda **kw: initial.append(build(**kw)) or initial[-1])
    table = torch.randn(3, config.class_dim)
    before = table.clone()
    train = impl.only(data, data.train)
    net, _ = impl.train_generator(train, config, make_ctx(tmp_path), table=table)
    assert torch.equal(net.condition.table, before) and torch.equal(table, before)
    assert not net.condition.table.requires_grad
    mlp_before = initial[0].condition.mlp[0].weight.detach().clone()  # the class MLP itself does train
    assert not torch.equal(mlp_before, torch.zeros_like(mlp_before))
    first_table = None

    def snapshot(**kw):
        nonlocal first_table
        out = build(**kw)
        first_table = out.condition.table.detach().clone()
        return out

    monkeypatch.setattr(impl, "build_denoiser", snapshot)
    learned, _ = impl.train_generator(train, config, make_ctx(tmp_path))
    assert not torch.equal(learned.condition.table, first_table)  # the baseline's table is learned
    with pytest.raises(HarnessError, match="training split only"):
        impl.train_generator(data, config, make_ctx(tmp_path))


def test_guidance_with_w0_is_the_conditional_model_and_both_passes_are_one_batch():
    torch.manual_seed(0)
    config = dataclasses.replace(CfgDiffConfig(), **TINY)
    net = M.build_denoiser(channels=3, size=8, num_classes=3, config=config).eval()
    for p in net.unet.parameters():
        torch.nn.init.normal_(p, std=0.1)
    calls = []
    net.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    z, t = torch.randn(4, 3, 8, 8), torch.full((4,), 300, dtype=torch.long)
    c = net.condition(torch.tensor([0, 1, 2, 0]))
    null = torch.zeros_like(c)
    with torch.no_grad():
        guided = D.cfg_eps_batched(net, z, t, c, null, 1.8)
        assert calls == [8]  # one call, 2B rows
        cond, uncond = net(z, t, c), net(z, t, null)
        assert torch.allclose(guided, 2.8 * cond - 1.8 * uncond, atol=1e-5)
        assert torch.allclose(D.cfg_eps_batched(net, z, t, c, null, 0.0), cond, atol=1e-6)
        assert not torch.allclose(cond, uncond)


def test_ddim_sample_recovers_x0_with_the_true_noise_and_is_seeded():
    abar = DiscreteSchedule.make("linear", 1000).alphas_cumprod
    x0 = torch.rand(2, 1, 4, 4) * 1.6 - 0.8

    def oracle(z, t):  # the exact eps of a one-image data set
        a, s = abar[t].sqrt().float().view(-1, 1, 1, 1), (1 - abar[t]).sqrt().float().view(-1, 1, 1, 1)
        return (z - a * x0) / s

    z_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for eta in (0.0, 1.0):
        out = D.ddim_sample(oracle, z_T, abar, 10, eta=eta, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(out, x0, atol=1e-4)
    config = dataclasses.replace(CfgDiffConfig(), **TINY)
    net = M.build_denoiser(channels=3, size=8, num_classes=3, config=config)
    a = M.sample(net, [0, 2, 1], shape=(3, 8, 8), guidance_scale=1.8, steps=3, seed=4)
    b = M.sample(net, [0, 2, 1], shape=(3, 8, 8), guidance_scale=1.8, steps=3, seed=4)
    assert a.shape == (3, 8, 8, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    with pytest.raises(HarnessError, match="class labels"):
        M.sample(net, [3], shape=(3, 8, 8), guidance_scale=1.8, steps=3)


def test_a_trained_generator_follows_the_requested_class_and_guidance_sharpens_it(tmp_path):
    """Red and green images (8 px): after 300 steps the samples of each class have its colour, more so with w."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 24)
    colour = np.array([[200, 40, 40], [40, 200, 40]])
    images = np.clip(colour[labels][:, None, None, :] + rng.normal(0, 10, (48, 8, 8, 3)), 0, 255).astype(np.uint8)
    data = DataSplits(train=Split(images, labels), val=Split(images[:0], labels[:0]),
                      test=Split(images[:0], labels[:0]), classes=("red", "green"))
    config = dataclasses.replace(CfgDiffConfig(), **{**TINY, "gen_epochs": 1, "gen_steps": 300, "gen_lr": 2e-3,
                                                     "gen_hflip": False})
    torch.manual_seed(0)
    net, facts = impl.train_generator(data, config, make_ctx(tmp_path))
    assert facts["steps"] == 300
    gap = {}
    for w in (0.0, 1.8):
        out = M.sample(net, np.repeat([0, 1], 8), shape=(3, 8, 8), guidance_scale=w, steps=20, seed=1).astype(float)
        red, green = out[:8].mean((0, 1, 2)), out[8:].mean((0, 1, 2))
        gap[w] = min(red[0] - green[0], green[1] - red[1])  # the red class is redder, the green class greener
    assert gap[0.0] > 15 and gap[1.8] > 30 and gap[1.8] > gap[0.0] + 10, gap  # unconditional: 0


def test_several_prototypes_per_class_draw_the_prototype_by_training_frequency():
    config = dataclasses.replace(CfgDiffConfig(), **TINY)
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    net = M.build_denoiser(channels=3, size=8, num_classes=3, config=config, table=torch.randn(6, 8), per_class=2,
                           mode_weights=weights)
    index = net.condition_index(torch.tensor([0] * 50 + [1] * 50 + [2] * 200), torch.Generator().manual_seed(0))
    assert set(index[:50].tolist()) == {0} and set(index[50:100].tolist()) == {3}
    assert set(index[100:].tolist()) == {4, 5}


# ------------------------------------------------------------------------------- generation metrics


def test_frechet_distance_matches_scipy_sqrtm():
    from scipy import linalg

    rng = np.random.default_rng(0)
    for n, m, d in ((30, 25, 40), (200, 300, 8)):  # fewer and more features than dimensions
        a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
        b = rng.normal(size=(m, d)) * 2 + 0.5
        s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a + s_b - 2 * np.real(linalg.sqrtm(s_a @ s_b)))
        assert genmetrics.frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)


def test_knn_precision_recall_by_hand():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # k = 1: every radius is 1
    fake = np.array([[0.5], [10.0]])  # k = 1: radius 9.5 each
    p, r = genmetrics.knn_precision_recall(real, fake, k=1)
    assert p == 0.5  # 0.5 is inside the real manifold, 10 is not
    assert r == 1.0  # every real point is within 9.5 of 0.5
    with pytest.raises(HarnessError, match="more than 3"):
        genmetrics.knn_precision_recall(real, fake, k=3)


@pytest.fixture(scope="module")
def lesions():
    options = synthetic.SyntheticOptions(size=16, n_train=160, n_val=7, n_test=7, separation=1.0)
    data = synthetic.load(DatasetRequest(options=options, seed=0, data_dir=None, cache_dir=None))
    return data.train


def test_generation_metrics_are_perfect_on_the_same_set_and_poor_on_noise(lesions):
    encoder = genmetrics.FeatureEncoder(3, 16)
    real = encoder(lesions.images)
    same = genmetrics.generation_report(real, lesions.labels, real, lesions.labels, synthetic.CLASSES)
    assert same["overall"]["fd"] == pytest.approx(0.0, abs=1e-6)
    assert same["overall"]["precision"] == 1.0 and same["overall"]["recall"] == 1.0
    assert same["class_mean"]["precision"] == 1.0 and same["class_mean"]["recall"] == 1.0
    assert same["per_class"]["naevus"]["n_real"] == int((lesions.labels == 0).sum())

    noise = np.random.default_rng(0).integers(0, 256, lesions.images.shape, dtype=np.uint8)
    bad = genmetrics.generation_report(real, lesions.labels, encoder(noise), lesions.labels, synthetic.CLASSES)
    half = len(real) // 2  # two halves of the real set: what a perfect generator would score
    floor = genmetrics.frechet_distance(real[:half], real[half:])
    p_half, r_half = genmetrics.knn_precision_recall(real[:half], real[half:])
    assert p_half > 0.8 and r_half > 0.8
    assert bad["overall"]["fd"] > 10 * floor
    assert bad["overall"]["precision"] < 0.05 and bad["overall"]["recall"] < 0.3
    # the same seed gives the same encoder
    assert np.array_equal(genmetrics.FeatureEncoder(3, 16)(lesions.images[:5]), real[:5])
    assert encoder.describe()["init"] == "random" and encoder.describe()["features"] == real.shape[1]


# ------------------------------------------------------------------------- no leakage, the cache


def test_the_generator_and_prototypes_never_see_validation_or_test_images(tmp_path, monkeypatch):
    data = sentinel_splits((12, 6, 6), 4)
    stages = {name: record_calls(monkeypatch, impl, name) for name in ("learn_prototypes", "train_generator")}
    config = dataclasses.replace(ProtoDiffConfig(), proto_epochs=1, prototypes_per_class=2, **TINY)
    ctx = make_ctx(tmp_path)
    predictor = impl.fit(data, config, ctx, kind="prototype", use="tstr")
    for name, calls in stages.items():
        assert len(calls) == 1, name
        seen = calls[0]["args"][0]
        assert isinstance(seen, DataSplits) and len(seen.val) == 0 and len(seen.test) == 0, name
        np.testing.assert_array_equal(seen.train.images, data.train.images)
        assert not (seen.train.images == 255).any()
    # the generator's labels are condition indices: class * 2 + the nearest prototype of the class
    labels = stages["train_generator"][0]["args"][0].train.labels
    assert np.array_equal(labels // 2, data.train.labels)
    assert predictor.predict(data.val.images)["probs"].shape == (12, 3)


def test_the_cache_key_is_the_generator_not_the_classifier():
    data = sentinel_splits((12, 6, 6), 4)
    base = ProtoDiffConfig()
    key = impl.generator_key(data, base, "prototype", 0)
    for change in ({"lr": 0.1}, {"epochs": 3}, {"backbone": "resnet50"}, {"synthetic_per_class": 7},
                   {"guidance_scale": 3.0}, {"grid_per_class": 3}):
        assert impl.generator_key(data, dataclasses.replace(base, **change), "prototype", 0) == key, change
    for change in ({"gen_lr": 1e-3}, {"class_dim": 64}, {"proto_lambda": 0.1}, {"label_dropout": 0.2}):
        assert impl.generator_key(data, dataclasses.replace(base, **change), "prototype", 0) != key, change
    assert impl.generator_key(data, base, "prototype", 1) != key
    assert impl.generator_key(data, base, "learned", 0) != key
    assert "proto_lambda" not in generator_settings(CfgDiffConfig()) and "gen_lr" in generator_settings(base)


def test_config_ranges_are_checked():
    for bad in ({"guidance_scale": -1.0}, {"label_dropout": 0.0}, {"sample_steps": 2000}, {"gen_ema": 1.0},
                {"channel_mult": ()}):
        with pytest.raises(ValueError):
            CfgDiffConfig(**bad)
    with pytest.raises(ValueError, match="prototypes_per_class"):
        ProtoDiffConfig(prototypes_per_class=0)


# ---------------------------------------------------------------------------------- smoke trials


def test_the_four_methods_run_on_synthetic_smoke_and_share_their_generators(tmp_path):
    registry = load_plugins().build_registry()
    tiny = {"size": 16, "n_train": 70, "n_val": 35, "n_test": 35}
    methods = ("protodiff", "protodiff-tstr", "cfg-diff", "cfg-diff-tstr")
    for name in methods:
        spec = registry.methods[name]
        for profile in ("smoke", "cpu", "paper"):
            resolve_method_config(spec, profile, {}, dataset="synthetic")
    exp = Experiment(methods=methods, datasets=("synthetic",), profile="smoke", overrides={"synthetic": tiny})
    records = {}
    for trial in expand(exp, registry):
        record = run_trial(trial, RunSettings(runs_dir=tmp_path, threads=1, latency=LatencySettings(onnx=False)),
                           reporter=lambda **_: None)
        assert record["status"] == "ok", record.get("traceback")
        records[trial.method] = record
    for first, second in (("protodiff", "protodiff-tstr"), ("cfg-diff", "cfg-diff-tstr")):
        a, b = records[first]["notes"], records[second]["notes"]
        assert a["generator"]["key"] == b["generator"]["key"]
        assert a["generator"]["cached"] is False and b["generator"]["cached"] is True
        assert a["synthetic"]["cached"] is False and b["synthetic"]["cached"] is True
        same = lambda notes: {k: v for k, v in notes["generation"].items() if k != "seconds"}  # noqa: E731
        assert same(a) == same(b)  # the same images against the same validation split
    assert records["protodiff"]["notes"]["generator"]["key"] != records["cfg-diff"]["notes"]["generator"]["key"]
    assert records["protodiff"]["notes"]["prototypes"]["encoder"] == "resnet18"
    assert "prototypes" not in records["cfg-diff"]["notes"]
    generation = records["cfg-diff"]["notes"]["generation"]
    assert set(generation["per_class"]) == set(synthetic.CLASSES)
    assert generation["real"] == "validation split" and generation["overall"]["n_real"] == 35
    assert generation["overall"]["n_fake"] == 7 * 4  # the smoke profile's synthetic_per_class
    for name, record in records.items():
        folder = tmp_path / record["experiment"] / record["key"] / "artefacts"
        stem = "protodiff" if name.startswith("protodiff") else "cfg-diff"
        assert (folder / f"samples_{stem}.png").is_file()
        saved = json.loads((folder / f"generation_{stem}.json").read_text())
        assert saved["overall"] == record["notes"]["generation"]["overall"]


@pytest.mark.parametrize("per_class", [1, 2])
def test_the_onnx_generator_samples_the_torch_images(tmp_path, per_class):
    """The UNet on ONNX Runtime, the condition, guidance and DDIM loop in torch: with the same seed the uint8
    images are the torch sampler's, up to one level where float32 round-off crosses a rounding boundary."""
    pytest.importorskip("onnxruntime")
    from plugins.protodiff.export import onnx_denoiser

    torch.manual_seed(0)
    config = dataclasses.replace(ProtoDiffConfig(), **TINY)
    table = torch.randn(3 * per_class, config.class_dim)
    net = M.build_denoiser(channels=3, size=8, num_classes=3, config=config, table=table, per_class=per_class)
    for p in net.unet.parameters():
        torch.nn.init.normal_(p, std=0.1)
    fast = onnx_denoiser(net, tmp_path / "denoiser.onnx", shape=(3, 8, 8), threads=1)
    assert fast.unet.provider == "CPUExecutionProvider" and not list(fast.unet.parameters())
    labels = [0, 1, 2, 2, 1, 0]
    args = dict(shape=(3, 8, 8), guidance_scale=1.8, steps=5, seed=3, eta=1.0)
    reference, onnx = M.sample(net, labels, **args), M.sample(fast, labels, **args)
    diff = np.abs(reference.astype(int) - onnx.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    assert reference.std() > 10  # the network is not trivial: the images are not flat
