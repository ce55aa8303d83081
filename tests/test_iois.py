"""IOIS (issue 18): the AAS allocation, the direction of classifier guidance (both forms), no held-out image ever
reaching the generator, the merge rule (only the current epoch's synthetic images in an epoch's batches) under
both epoch orders, the generator cache shared by variants and seeds, each variant on ``synthetic`` smoke with
its artefacts, and ``harness run --methods diffmic,iois --datasets aptos`` on an APTOS-layout tree."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import harness.toolkit.training  # noqa: E402
import plugins.iois.model as model  # noqa: E402
import plugins.iois.train as impl  # noqa: E402
from harness import DatasetRequest, DataSplits, HarnessError, Split, TrialContext  # noqa: E402
from harness.run.config import config_from_dict, data_protocol_warnings, resolve_method_config  # noqa: E402
from harness.run.runner import cached_plugins, scorer  # noqa: E402
from harness.toolkit.cache import ArtefactCache  # noqa: E402
from plugins.datasets import synthetic  # noqa: E402
from plugins.iois import PROFILES, IOISConfig, register_methods  # noqa: E402
from plugins.samplers.sampling import uniform  # noqa: E402
from tests.sentinel import record_calls, sentinel_splits  # noqa: E402

SMOKE = {**PROFILES["smoke"], "gen_steps": 4, "epochs": 2, "pretrain_epochs": 1}
NO_AUGMENT = {"hflip": False, "rotation": 0.0, "crop_scale": 0.0}


def make_ctx(tmp_path, seed: int = 0, reporter=None) -> TrialContext:
    return TrialContext(seed=seed, device="cpu", threads=1, trial_dir=tmp_path / f"trial-{seed}",
                        reporter=reporter or (lambda **_: None), sampler_factory=uniform, profile="smoke",
                        scorer=scorer(cached_plugins((), ())[1]), cache_dir=tmp_path / "cache")


def config(**values) -> IOISConfig:
    return IOISConfig(**{**SMOKE, **values})


# ------------------------------------------------------------------------------------------------ AAS


def softmax_floor(acc, k):
    """floor(softmax(1 - acc) K), with a share that is a whole number in exact arithmetic (7 classes x 1/7 of
    K = 7) counted as that number despite rounding (1/7 * 7 = 0.99999...)."""
    w = np.exp(1.0 - np.asarray(acc, float))
    return np.floor(w / w.sum() * k + 1e-9).astype(int)


@pytest.mark.parametrize("acc", [[0.5] * 7, [0.95, 0.2, 0.4, 0.0, 1.0, 0.66, 0.31], [1.0, 0.0], [0.3, 0.3, 0.9]])
@pytest.mark.parametrize("k", [0, 1, 7, 64, 2000])
def test_aas_allocation_is_the_formula_and_never_exceeds_k(acc, k):
    n = model.aas_allocation(acc, k)
    assert n.tolist() == softmax_floor(acc, k).tolist()  # n_c = floor(softmax_c(1 - acc_c) K)
    assert n.sum() <= k and (n >= 0).all() and n.dtype == np.int64
    assert n.sum() > k - len(acc)  # the floor loses less than one image per class


def test_aas_allocation_favours_the_weak_classes_and_skips_absent_ones():
    n = model.aas_allocation([0.9, 0.1, 0.5], 300)
    assert n[1] > n[2] > n[0]
    assert model.equal_allocation(4, 10).tolist() == [2, 2, 2, 2]
    masked = model.aas_allocation([0.5, np.nan, 0.5], 10, present=[True, False, True])
    assert masked.tolist() == [5, 0, 5]
    with pytest.raises(HarnessError, match=r"in \[0, 1\]"):
        model.aas_allocation([0.5, 1.5], 10)
    with pytest.raises(HarnessError, match="K"):
        model.aas_allocation([0.5], -1)


def test_per_class_accuracy():
    acc = model.per_class_accuracy(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]), 3)
    assert acc[:2].tolist() == [0.5, pytest.approx(2 / 3)] and np.isnan(acc[2])


# ------------------------------------------------------------------------------------------- guidance


class ZeroEps(torch.nn.Module):
    """A generator that predicts eps = 0 everywhere."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, y=None):
        return torch.zeros_like(x)


class BrightnessDenoiser(ZeroEps):
    """The exact eps-predictor of a data distribution of flat images x_0 = b 1 with brightness b ~ N(0, v):
    E[eps | x_t] = (x_t - alpha_t E[b | x_t]) / sigma_t, E[b | x_t] = alpha_t v u / (alpha_t^2 v + sigma_t^2 / n),
    u the pixel mean of x_t. Unguided, samples are flat images of random brightness; a class can only come
    from the guidance."""

    def __init__(self, schedule, v: float = 0.25):
        super().__init__()
        self.abar, self.v = schedule.alphas_cumprod.float(), v

    def forward(self, x, t, y=None):
        abar = self.abar[t.long()].view(-1, 1, 1, 1)
        a, s = abar.sqrt(), (1 - abar).sqrt()
        u = x.mean(dim=(1, 2, 3), keepdim=True)
        b = a * self.v * u / (abar * self.v + s**2 / x[0].numel())
        return (x - a * b) / s


class BrightnessClassifier(torch.nn.Module):
    """logits = (-w m, +w m) with m the mean pixel: grad log p(bright | x) is +, grad log p(dark | x) is -."""

    def __init__(self, w: float = 20.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-self.w * m, self.w * m], dim=1)


@pytest.mark.parametrize("form", ["ddim", "eq4"])
def test_guidance_moves_samples_towards_the_requested_class(form):
    schedule = model.make_schedule(IOISConfig())
    sampler = model.GuidedSampler(BrightnessDenoiser(schedule), schedule, size=8, channels=1, out_size=8, steps=20,
                                  guidance=form, scale=1.0, conditional=False, batch_size=64)
    labels = torch.tensor([0, 1] * 32)
    clf = BrightnessClassifier()
    guided = sampler.sample(labels, clf, torch.Generator().manual_seed(0)).float().mean(dim=(1, 2, 3))
    unguided = sampler.sample(labels, None, torch.Generator().manual_seed(0)).float().mean(dim=(1, 2, 3))
    # the generator alone: no class signal (both halves about mid-gray); guided: dark for 0, bright for 1
    assert abs(unguided[labels == 1].mean() - unguided[labels == 0].mean()) < 25
    dark, bright = guided[labels == 0], guided[labels == 1]
    assert bright.mean() - dark.mean() > 60, (form, dark.mean(), bright.mean())
    assert (bright > 127.5).float().mean() > 0.8 and (dark < 127.5).float().mean() > 0.8
    assert clf.w.requires_grad and clf.training  # restored after sampling


def test_guided_eps_forms_match_the_paper_and_the_code():
    """ddim: eps(clipped x0) - sqrt(1 - abar_t) s g; eq4: eps - s g (Eq. 4), for a classifier with a known gradient."""
    schedule = model.make_schedule(IOISConfig())
    x = torch.rand(4, 1, 4, 4) * 0.2 - 0.1
    y = torch.tensor([1, 1, 0, 0])
    clf = BrightnessClassifier(w=2.0).eval()
    m = x.mean(dim=(1, 2, 3))
    p_bright = torch.sigmoid(2 * 2.0 * m)  # softmax of (-2m, 2m)
    d_logp = torch.where(y == 1, 1 - p_bright, -p_bright) * 2 * 2.0 / 16  # d log p_y / d pixel
    grad = d_logp.view(4, 1, 1, 1).expand_as(x)
    t = 60
    sigma = float((1 - schedule.alphas_cumprod[t]).sqrt())
    for form, expected in (("eq4", -0.5 * grad), ("ddim", -sigma * 0.5 * grad)):
        sampler = model.GuidedSampler(ZeroEps(), schedule, size=4, channels=1, out_size=4, steps=5, guidance=form,
                                      scale=0.5, conditional=False)
        torch.testing.assert_close(sampler.guided_eps(x, t, y, clf), expected, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------- no held-out images


def test_generator_trains_on_the_training_split_only(tmp_path, monkeypatch):
    data = sentinel_splits()
    gen_calls = record_calls(monkeypatch, impl, "train_generator")
    loops = record_calls(monkeypatch, harness.toolkit.training, "train_loop")
    predictor = impl.fit(data, config(), make_ctx(tmp_path))

    assert len(gen_calls) == 1
    train = gen_calls[0]["args"][0]
    np.testing.assert_array_equal(train.images, data.train.images)
    np.testing.assert_array_equal(train.labels, data.train.labels)
    every = [*gen_calls[0]["args"], *gen_calls[0]["kwargs"].values()]
    assert not any(isinstance(a, DataSplits) for a in every)
    generator_loops = [c for c in loops if c["kwargs"].get("stage") == "generator"]
    assert len(generator_loops) == 1
    seen = generator_loops[0]["kwargs"]["data"]
    assert not hasattr(seen, "test") and len(seen.val) == 0
    assert not (seen.train.images == 255).any(), "a held-out pixel reached the generator"
    assert predictor.predict(data.test.images)["probs"].shape == (9, 3)


# ------------------------------------------------------------------------------------------ merge rule


def epoch_batches(loops) -> dict[int, list[np.ndarray]]:
    """Wrap the classifier loop's loss so it records every batch as uint8 pixels, by epoch."""
    seen: dict[int, list[np.ndarray]] = {}
    original = harness.toolkit.training.train_loop

    def train_loop(*args, **kwargs):
        if kwargs.get("stage") is None:
            loss = kwargs["loss"]

            def recording(x, y, epoch):
                pixels = ((x * 0.5 + 0.5) * 255).round().clamp(0, 255).to(torch.uint8)  # mean = std = 0.5
                seen.setdefault(epoch, []).append(pixels[:, 0, 0, 0].numpy().copy())
                return loss(x, y, epoch)

            kwargs["loss"] = recording
        return original(*args, **kwargs)

    loops.setattr(harness.toolkit.training, "train_loop", train_loop)
    return seen


@pytest.mark.parametrize("order", ["code", "paper"])
def test_each_epoch_trains_on_the_real_images_and_only_its_own_synthetic_images(tmp_path, monkeypatch, order):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [12, 6, 4])
    real_values = rng.choice(np.arange(100, 256), len(labels), replace=False).astype(np.uint8)
    images = np.broadcast_to(real_values[:, None, None, None], (len(labels), 16, 16, 3)).copy()
    data = DataSplits(train=Split(images, labels), val=Split(images[:6], labels[:6]), test=Split(images[:6], labels[:6]),
                      classes=("a", "b", "c"), name="constant")
    calls = []

    def fake_sample(self, labels, classifier=None, generator=None):  # epoch e's images are all 10 + 7 e
        calls.append(len(labels))
        value = 10 + 7 * (len(calls) - 1 + (order == "paper"))
        return torch.full((len(labels), 3, 16, 16), value, dtype=torch.uint8)

    monkeypatch.setattr(model.GuidedSampler, "sample", fake_sample)
    seen = epoch_batches(monkeypatch)
    cfg = config(epochs=3, batch_size=8, epoch_order=order, synthetic_per_epoch=9, **NO_AUGMENT)
    impl.fit(data, cfg, make_ctx(tmp_path))

    log = json.loads((tmp_path / "trial-0" / "artefacts" / "synthesis.json").read_text())["epochs"]
    assert log[0]["allocation"] == ([0, 0, 0] if order == "paper" else [3, 3, 3])  # the code's uniform start
    for previous, current in zip(log, log[1:]):  # AAS: the next allocation from this epoch's accuracies
        assert current["allocation"] == model.aas_allocation(previous["train_accuracy"], 9).tolist()
    assert sorted(seen) == [0, 1, 2]
    for epoch in range(3):
        values = np.concatenate(seen[epoch])
        real = np.sort(values[values >= 100])
        np.testing.assert_array_equal(real, np.sort(real_values))  # every real image, once
        synthetic = values[values < 100]
        assert len(synthetic) == sum(log[epoch]["allocation"])  # all of this epoch's synthetic images ...
        if len(synthetic):
            assert set(synthetic.tolist()) == {10 + 7 * epoch}  # ... and no other epoch's
        assert len(synthetic) == 0 if (order, epoch) == ("paper", 0) else len(synthetic) > 0  # Algorithm 1


# ------------------------------------------------------------------------------------ generator cache


def test_a_cached_generator_is_reused_by_other_variants_and_seeds(tmp_path, monkeypatch):
    options = synthetic.SyntheticOptions(size=16, n_train=70, n_val=35, n_test=35)
    data = synthetic.load(DatasetRequest(options=options, seed=0, data_dir=None, cache_dir=tmp_path))
    gen_calls = record_calls(monkeypatch, impl, "train_generator")
    notes = []
    for variant, seed, values in (("full", 0, {}), ("ois", 0, {}), ("full", 1, {"lr": 1e-3}),
                                  ("full", 0, {"gen_steps": 5})):
        ctx = make_ctx(tmp_path, seed)
        impl.fit(data, config(variant=variant, epochs=1, **values), ctx)
        notes.append(ctx.notes)
    assert len(gen_calls) == 2  # the first trial and the changed generator setting; never for another variant
    assert [n["generator_cached"] for n in notes] == [False, True, True, False]
    assert len({n["generator_key"] for n in notes[:3]}) == 1 and notes[3]["generator_key"] != notes[0]["generator_key"]
    assert notes[1]["generator_train_seconds"] == notes[0]["generator_train_seconds"] > 0
    assert (tmp_path / "cache" / impl.CACHE_FOLDER / f"{notes[0]['generator_key']}.pt").is_file()


def test_the_generator_key_follows_the_training_split(tmp_path):
    data = sentinel_splits()
    key, payload = impl.generator_key(data, config())
    assert payload["generator"]["gen_steps"] == SMOKE["gen_steps"] and payload["dataset"] == "sentinel"
    other_val = dataclasses.replace(data, val=Split(data.val.images[:3], data.val.labels[:3]))
    assert impl.generator_key(other_val, config())[0] == key  # held-out splits do not enter
    changed = data.train.images.copy()
    changed[0, 0, 0, 0] ^= 1
    other_train = dataclasses.replace(data, train=Split(changed, data.train.labels))
    assert impl.generator_key(other_train, config())[0] != key
    assert impl.generator_key(data, config(conditional=False))[0] != key
    assert impl.generator_key(data, config(variant="ois", lr=0.1, guidance="eq4"))[0] == key


def test_artefact_cache_stores_atomically_and_rebuilds_a_broken_file(tmp_path):
    cache = ArtefactCache(tmp_path)
    built = []
    obj, cached = cache.get_or_build("k1", lambda: built.append(1) or {"w": torch.ones(2)})
    again, cached_again = cache.get_or_build("k1", lambda: built.append(1) or {"w": torch.zeros(2)})
    assert (cached, cached_again, len(built)) == (False, True, 1) and torch.equal(again["w"], torch.ones(2))
    cache.path("k1").write_bytes(b"truncated")
    _, cached = cache.get_or_build("k1", lambda: {"w": torch.zeros(2)})
    assert not cached and not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(HarnessError, match="cache key"):
        cache.path("../escape")


# ------------------------------------------------------------------------------------- config ranges


@pytest.mark.parametrize(("key", "value"), [("variant", "both"), ("guidance", "cfg"), ("epoch_order", "late"),
                                            ("k_fraction", -0.1), ("sample_steps", 0), ("gen_ema_decay", 1.0),
                                            ("gen_channel_mult", ())])
def test_config_ranges_are_checked(key, value):
    with pytest.raises(ValueError, match=key):
        IOISConfig(**{key: value})


# ------------------------------------------------------------------------------ variants, artefacts


@pytest.mark.parametrize("name", ["iois", "iois-ois", "iois-offline"])
def test_each_variant_on_synthetic_smoke(tmp_path, name):
    options = synthetic.SyntheticOptions(size=16, n_train=70, n_val=35, n_test=35)
    data = synthetic.load(DatasetRequest(options=options, seed=0, data_dir=None, cache_dir=tmp_path))
    specs = []
    register_methods(specs.append)
    spec = {s.name: s for s in specs}[name]
    cfg = config_from_dict(spec.config, resolve_method_config(spec, "smoke", {"gen_steps": 4}))
    assert cfg.variant == {"iois": "full", "iois-ois": "ois", "iois-offline": "offline"}[name]
    ctx = make_ctx(tmp_path)
    predictor = impl.fit(data, cfg, ctx)
    probs = predictor.predict(data.test.images)["probs"]
    assert probs.shape == (35, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)

    folder = ctx.artefacts_dir
    k = impl.synthetic_count(cfg, len(data.train))
    with open(folder / "allocation.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == cfg.epochs * 7
    per_epoch = {}
    for row in rows:
        per_epoch[row["epoch"]] = per_epoch.get(row["epoch"], 0) + int(row["allocated"])
    assert all(0 < n <= k for n in per_epoch.values())
    assert (folder / "allocation.svg").read_text().startswith("<svg")
    grids = sorted(p.name for p in folder.glob("synthetic_*.png"))
    assert grids == (["synthetic_pool.png"] if name == "iois-offline" else
                     ["synthetic_epoch_001.png", "synthetic_epoch_002.png"])
    assert ctx.notes["synthetic_per_epoch"] == k and ctx.notes["generation_seconds"] > 0
    if name == "iois-offline":
        assert "pretrain_val_score" in ctx.notes


def test_harness_run_diffmic_and_iois_on_an_aptos_tree(tmp_path, cli):
    from PIL import Image

    root = tmp_path / "data" / "aptos"
    (root / "train_images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for grade in range(5):
        for i in range(10):
            code = f"g{grade}i{i:02d}"
            pixels = rng.integers(0, 60, (20, 24, 3)) + np.array([40 * grade, 120, 200 - 40 * grade])
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / "train_images" / f"{code}.png")
            rows.append(f"{code},{grade}")
    (root / "train.csv").write_text("id_code,diagnosis\n" + "\n".join(rows) + "\n")
    result = cli("run", "--methods", "diffmic,iois", "--datasets", "aptos", "--data-dir", str(tmp_path / "data"),
                 "--profile", "smoke", "--runs-dir", str(tmp_path / "runs"), "--set", "aptos.size=16",
                 "--set", "iois.gen_steps=4", "--threads", "1")
    assert result.exit_code == 0, result.output
    results = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("result.json")]
    assert sorted(r["method"] for r in results) == ["diffmic", "iois"]
    assert all(r["status"] == "ok" and r["protocol"] == "iois" for r in results)
    iois = next(r for r in results if r["method"] == "iois")
    assert iois["notes"]["generator_cached"] is False and not iois.get("warnings")  # the paper's split: no warning
    spec = cached_plugins((), ())[1].get("methods", "iois")
    other_split = data_protocol_warnings(spec, "smoke", "aptos", {"split": "diffmic"})
    assert len(other_split) == 1 and "split='iois'" in other_split[0]


@pytest.mark.parametrize("form", ["ddim", "eq4"])
def test_the_onnx_generator_samples_the_torch_images(tmp_path, form):
    """The generator on ONNX Runtime, the classifier's guidance gradient in torch: with the same noise the
    uint8 images are the torch sampler's, up to one level where float32 round-off crosses a rounding boundary."""
    pytest.importorskip("onnxruntime")
    from plugins.iois.export import onnx_sampler

    torch.manual_seed(0)
    cfg = config()
    net = model.build_generator(cfg, channels=3, num_classes=2, data_size=8)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    schedule = model.make_schedule(cfg)
    sampler = model.GuidedSampler(net, schedule, size=8, channels=3, out_size=8, steps=4, guidance=form,
                                  prediction=cfg.gen_prediction, conditional=True, batch_size=4)
    fast = onnx_sampler(sampler, tmp_path / "generator.onnx", threads=1)
    assert fast.net.provider == "CPUExecutionProvider" and sampler.net is net
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    clf = BrightnessClassifier()
    reference = sampler.sample(labels, clf, torch.Generator().manual_seed(5)).numpy().astype(int)
    onnx = fast.sample(labels, clf, torch.Generator().manual_seed(5)).numpy().astype(int)
    diff = np.abs(reference - onnx)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    assert reference.std() > 10
