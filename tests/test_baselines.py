"""The baselines: the imbalance losses against their formulas (and hand computations), LDAM's cosine head, the
samplers against their definitions, the small-input backbone adaptations, the paper profiles and the cpu step
budgets, and every baseline method training on an easily separable synthetic variant (through ``run_trial``)
to clearly better than chance."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.errors import HarnessError
from plugins.baselines.model import (
    CosineHead,
    NormalisedSigmoid,
    build_backbone,
    drw_start,
    effective_number_weights,
    focal_loss,
    ldam_loss,
    ldam_margins,
    set_prior_bias,
    sigmoid_focal_loss,
    swin_input_size,
    with_cosine_head,
)
from plugins.samplers.sampling import ProgressiveSampler, class_probabilities, progressive, sqrt

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ losses


def _batch(n=64, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * 3, torch.randint(0, k, (n,), generator=g)


def test_focal_with_gamma_zero_is_cross_entropy():
    logits, y = _batch()
    assert torch.allclose(focal_loss(logits, y, gamma=0.0), F.cross_entropy(logits, y), atol=1e-6)


def test_focal_matches_its_closed_form_and_down_weights_easy_examples():
    logits, y = _batch(seed=1)
    p = torch.softmax(logits.double(), 1)[torch.arange(len(y)), y]
    expected = (-(1 - p) ** 2 * torch.log(p)).mean()
    assert torch.allclose(focal_loss(logits, y, gamma=2.0).double(), expected, atol=1e-6)
    # With gamma > 0 a confidently correct example costs much less than under cross-entropy.
    easy = torch.tensor([[6.0, 0.0, 0.0]])
    target = torch.tensor([0])
    assert focal_loss(easy, target, 2.0) < 1e-3 * F.cross_entropy(easy, target)
    with pytest.raises(HarnessError, match="gamma"):
        focal_loss(logits, y, gamma=-1.0)


def test_weighted_focal_is_the_batch_mean_of_weighted_terms():
    logits, y = _batch(seed=2)
    w = torch.tensor([0.2, 1.0, 2.0, 0.5, 1.3])
    per_image = F.cross_entropy(logits, y, reduction="none") * w[y]
    assert torch.allclose(focal_loss(logits, y, gamma=0.0, weight=w), per_image.mean(), atol=1e-6)


def test_class_balanced_weights_follow_the_effective_number():
    # counts (1, 2), beta 0.5: raw (1 - b) / (1 - b^n) = (1, 2/3), scaled to sum to 2 -> (1.2, 0.8).
    assert np.allclose(effective_number_weights([1, 2], beta=0.5), [1.2, 0.8])
    counts = np.array([1000, 200, 40, 8, 3])
    beta = 0.9999
    raw = np.array([(1 - beta) / (1 - beta**n) for n in counts.tolist()])
    weights = effective_number_weights(counts, beta)
    assert np.allclose(weights, raw / raw.sum() * len(counts))
    assert np.isclose(weights.sum(), len(counts)) and np.all(np.diff(weights) > 0)
    # End points: beta = 0 weighs every class equally; beta -> 1 tends to inverse class frequency.
    assert np.allclose(effective_number_weights(counts, 0.0), 1.0)
    inverse = (1 / counts) / (1 / counts).sum() * len(counts)
    assert np.allclose(effective_number_weights(counts, 1 - 1e-9), inverse, rtol=1e-4)
    with pytest.raises(HarnessError, match="beta"):
        effective_number_weights(counts, 1.0)
    with pytest.raises(HarnessError, match="positive"):
        effective_number_weights([5, 0], 0.9)


def test_ldam_margins_scale_with_inverse_fourth_root_of_counts():
    counts = np.array([1600, 100, 16, 1])
    margins = ldam_margins(counts, max_margin=0.5)
    assert np.allclose(margins * counts**0.25, margins[0] * counts[0] ** 0.25)  # Delta_c * n_c^(1/4) constant
    assert np.isclose(margins.max(), 0.5) and margins.argmax() == 3
    assert np.allclose(margins, [0.5 / 1600**0.25, 0.5 / 100**0.25, 0.5 / 16**0.25, 0.5])
    assert np.allclose(ldam_margins([16, 1], 0.5), [0.25, 0.5])


def test_ldam_loss_is_cross_entropy_on_margin_shifted_cosine_logits():
    cos = torch.tanh(_batch(seed=3)[0])  # cosines in (-1, 1)
    y = _batch(seed=3)[1]
    margins = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    shifted = cos.double().clone()
    shifted[torch.arange(len(y)), y] -= margins.double()[y]
    # Cao et al.: cross-entropy of s (cos theta_j - Delta_y [j = y]); the head's logits are s cos theta.
    expected = F.cross_entropy(30 * shifted, y)
    assert torch.allclose(ldam_loss(30 * cos, y, margins, scale=30.0).double(), expected, atol=1e-4)
    # No margin is plain cross-entropy on the logits; the margin makes the loss larger.
    logits, zero = 30 * cos, torch.zeros(5)
    assert torch.allclose(ldam_loss(logits, y, zero, scale=30.0), F.cross_entropy(logits, y), atol=1e-5)
    assert ldam_loss(logits, y, margins, scale=30.0) > F.cross_entropy(logits, y)
    w = torch.tensor([3.0, 1.0, 1.0, 0.5, 2.0])
    assert torch.allclose(ldam_loss(logits, y, zero, 30.0, w), F.cross_entropy(logits, y, weight=w), atol=1e-5)


def test_ldam_logits_are_scaled_cosines_of_features_and_class_weights():
    model = with_cosine_head(build_backbone("resnet18", num_classes=4, in_chans=3, image_size=16).model, 4, 30.0)
    model.eval()
    assert isinstance(model.head, CosineHead)
    x = torch.randn(6, 3, 16, 16)
    with torch.no_grad():
        features = model.features(x)  # pooled features (the backbone without its classifier)
        logits = model(x)
        w = model.head.weight
        by_hand = 30.0 * (features @ w.T) / (features.norm(dim=1, keepdim=True) * w.norm(dim=1)[None, :])
        assert torch.allclose(logits, by_hand, atol=1e-4)
        assert logits.abs().max() <= 30.0 + 1e-4
        # Only angles count: rescaling a feature vector or a class's weight vector changes no logit.
        head = model.head
        assert torch.allclose(head(features * 7.5), logits, atol=1e-4)
        head.weight.mul_(torch.tensor([0.1, 2.0, 5.0, 1.0])[:, None])
        assert torch.allclose(model(x), logits, atol=1e-4)


def test_drw_starts_at_eighty_percent_of_the_step_budgets_epochs(tmp_path):
    from harness import DataSplits, Split, TrialContext
    from plugins.baselines import LDAMDRWConfig
    from plugins.baselines.train import fit_ldam_drw
    from plugins.samplers.sampling import uniform

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [12, 8, 4])
    split = Split(rng.integers(0, 256, (24, 8, 8, 1), dtype=np.uint8), labels)
    data = DataSplits(train=split, val=split, test=split, classes=("a", "b", "c"))
    ctx = TrialContext(seed=0, device="cpu", threads=1, trial_dir=tmp_path, reporter=lambda **_: None,
                       sampler_factory=uniform, scorer=lambda y, p: {"macro_f1": float((p.argmax(1) == y).mean())})
    # 24 images in batches of 8: 3 steps per epoch, so 12 steps are 4 epochs and DRW starts at round(3.2) = 3.
    config = LDAMDRWConfig(steps=12, batch_size=8, epochs=1)
    predictor = fit_ldam_drw(data, config, ctx)
    assert ctx.notes["drw_start_epoch"] == 4  # 1-based, as the learning curve counts epochs
    assert np.allclose(ctx.notes["ldam_margins"], ldam_margins([12, 8, 4], 0.5), atol=1e-6)
    assert isinstance(predictor.module.model.head, CosineHead)


def test_drw_starts_at_eighty_percent_unless_set():
    assert drw_start(200, -1) == 160 and drw_start(10, -1) == 8 and drw_start(10, 3) == 3


def test_sigmoid_focal_loss_by_hand():
    # Two images, three classes: every class is a binary problem, p_t = sigmoid(z) for the true class and
    # 1 - sigmoid(z) for the others; loss = sum over images and classes of w_y (1 - p_t)^2 (-log p_t) / N.
    logits = [[2.0, -1.0, 0.5], [0.0, 1.5, -2.0]]
    targets = [0, 2]
    counts, beta, gamma = [10, 5, 2], 0.9, 2.0
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    w = [r / sum(raw) * 3 for r in raw]
    total = 0.0
    for z_row, y in zip(logits, targets):
        for c, z in enumerate(z_row):
            sig = 1 / (1 + math.exp(-z))
            p_t = sig if c == y else 1 - sig
            total += w[y] * (1 - p_t) ** gamma * -math.log(p_t)
    expected = total / 2
    weights = torch.tensor(effective_number_weights(counts, beta), dtype=torch.float32)
    got = sigmoid_focal_loss(torch.tensor(logits), torch.tensor(targets), gamma, weights)
    assert math.isclose(float(got), expected, rel_tol=1e-5)
    # gamma = 0 and no weights: binary cross-entropy summed over classes, averaged over images.
    onehot = F.one_hot(torch.tensor(targets), 3).float()
    bce = F.binary_cross_entropy_with_logits(torch.tensor(logits), onehot, reduction="sum") / 2
    assert torch.allclose(sigmoid_focal_loss(torch.tensor(logits), torch.tensor(targets), 0.0), bce, atol=1e-6)


def test_cb_focal_defaults_to_the_sigmoid_form_and_focal_to_softmax():
    from plugins.baselines import CBFocalConfig, FocalConfig

    assert CBFocalConfig().form == "sigmoid" and FocalConfig().form == "softmax"
    with pytest.raises(ValueError, match="form"):
        CBFocalConfig(form="tanh")
    model = build_backbone("resnet18", num_classes=5, in_chans=1, image_size=16).model
    set_prior_bias(model, 0.1)
    assert torch.allclose(model.fc.bias, torch.full((5,), -math.log(9.0)))  # sigmoid(b) = 0.1 at the start
    # The sigmoid form's probabilities: sigmoids normalised to sum to 1, same argmax, finite for any logits.
    logits = torch.tensor([[3.0, -1.0, 0.0], [-200.0, -300.0, -250.0]])
    probs = NormalisedSigmoid(torch.nn.Identity())(logits)
    assert torch.isfinite(probs).all() and torch.allclose(probs.sum(1), torch.ones(2))
    assert probs.argmax(1).tolist() == [0, 0]
    s = torch.sigmoid(logits[0])
    assert torch.allclose(probs[0], s / s.sum())


def test_loop_feeds_channels_last_batches_and_reports_epoch_means(tmp_path):
    from harness import DataSplits, Split, TrialContext
    from harness.toolkit.training import train_loop
    from harness.toolkit.training_config import TrainConfig
    from plugins.samplers.sampling import uniform

    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8), np.arange(10) % 2)
    data = DataSplits(train=split, val=split, test=split, classes=("a", "b"))
    ctx = TrialContext(seed=0, device="cpu", threads=1, trial_dir=tmp_path, reporter=lambda **_: None,
                       sampler_factory=uniform)
    model = torch.nn.Linear(1, 1)
    formats = []

    def loss(x, y, epoch):
        formats.append(x.is_contiguous(memory_format=torch.channels_last))
        return model.weight.square().sum() + 1.0, {"part": torch.tensor(2.0), "count": 3}

    extra = lambda epoch: (torch.zeros(3, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0]))  # noqa: E731
    # Rotation and a random-resized crop resample the batch, extra images come NCHW: the model still gets
    # channels-last batches (what the convolutions are fastest on, benchmarks/README.md).
    cfg = TrainConfig(epochs=2, batch_size=4, rotation=10.0, crop_scale=0.8)
    _, history = train_loop(ctx, cfg, model=model, data=data, mean=(0.5,), std=(0.5,), loss=loss, extra_batches=extra)
    assert formats and all(formats)
    for record in history.records:  # the epoch means of what the steps returned, as floats
        assert type(record["part"]) is float and record["part"] == pytest.approx(2.0)
        assert record["count"] == pytest.approx(3.0) and type(record["loss"]) is float


# ---------------------------------------------------------------------------------------------- samplers

LABELS = np.repeat(np.arange(4), [400, 100, 25, 9])


def _class_frequencies(sampler, epoch, num_epochs, draws_epochs=60, seed=0):
    rng = np.random.default_rng(seed)
    idx = np.concatenate([sampler.indices(epoch, num_epochs, rng) for _ in range(draws_epochs)])
    return np.bincount(LABELS[idx], minlength=4) / len(idx), len(idx)


def _assert_frequencies(observed, expected, n):
    se = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(observed - expected) < 5 * se + 1e-9), (observed, expected)


def test_sqrt_sampler_draws_classes_in_proportion_to_root_counts():
    counts = np.bincount(LABELS)
    expected = np.sqrt(counts) / np.sqrt(counts).sum()
    observed, n = _class_frequencies(sqrt(LABELS), 0, 1)
    _assert_frequencies(observed, expected, n)
    assert len(sqrt(LABELS).indices(0, 1, np.random.default_rng(0))) == len(LABELS)


def test_progressive_sampler_moves_from_instance_to_class_balanced():
    counts = np.bincount(LABELS)
    instance, balanced = counts / counts.sum(), np.full(4, 0.25)
    sampler = progressive(LABELS)
    epochs = 10
    minority = []
    for epoch in (0, 5, 9):
        share = epoch / epochs
        expected = (1 - share) * instance + share * balanced
        observed, n = _class_frequencies(sampler, epoch, epochs, seed=epoch)
        _assert_frequencies(observed, expected, n)
        minority.append(observed[3])
    assert minority[0] < minority[1] < minority[2]
    # The per-image probabilities are exactly the two end points' mixture.
    p = sampler.probabilities(5, 10)
    assert np.allclose(p, 0.5 * class_probabilities(LABELS, 1.0) + 0.5 * class_probabilities(LABELS, 0.0))
    assert np.isclose(p.sum(), 1.0)
    with pytest.raises(HarnessError, match="epoch"):
        ProgressiveSampler(LABELS).probabilities(10, 10)


# --------------------------------------------------------------------------------------------- backbones


def test_registering_modules_do_not_import_torch():
    code = ("import sys, plugins.baselines, plugins.gan_aug, plugins.samplers; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_swin_input_size_is_the_smallest_window_compatible_size():
    assert swin_input_size(28, 2, 4) == 32  # grids 16, 8, 4, 2
    assert swin_input_size(16, 2, 4) == 16 and swin_input_size(64, 2, 4) == 64
    assert swin_input_size(224, 4, 7) == 224
    assert swin_input_size(48, 2, 4) == 64  # 48 -> grid 6 at stage 3 does not fit window 4


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "pvt_v2_b0"])
def test_transformer_backbones_take_28px_images(name):
    model = build_backbone(name, num_classes=5, in_chans=1, image_size=28).model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_pvt_rejects_a_stem_stride_too_large_for_the_image():
    with pytest.raises(HarnessError, match="spatial-reduction"):
        build_backbone("pvt_v2_b0", num_classes=3, in_chans=3, image_size=16, stem_stride=4)


def test_paper_profiles_carry_the_papers_settings(registry):
    from harness.run.config import resolve_method_config

    ioi = {"optimizer": "sgd", "lr": 0.0125, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 32,
           "epochs": 200, "schedule": "multistep", "milestones": [60, 120, 180]}
    for method in ("resnet50", "focal", "cb-focal", "ldam-drw"):
        config = resolve_method_config(registry.get("methods", method), "paper", {})
        assert {k: config[k] for k in ioi} == ioi and config["backbone"] == "resnet50", method
    for method in ("vit", "swin", "pvt"):
        config = resolve_method_config(registry.get("methods", method), "paper", {})
        assert config["optimizer"] == "adam", method


def test_cpu_budgets_are_optimizer_steps_shared_by_the_iois_table_rows(registry):
    from harness.run.config import resolve_method_config
    from harness.toolkit.training import epochs_for
    from plugins.baselines import BaselineConfig

    rows = ("resnet", "focal", "cb-focal", "ldam-drw", "gan-aug")
    shared = ("steps", "min_epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule", "warmup_epochs",
              "hflip", "vflip", "rotation", "rotation_padding", "crop_scale", "backbone")
    budgets = {m: {k: resolve_method_config(registry.get("methods", m), "cpu", {})[k] for k in shared} for m in rows}
    assert all(b == budgets["resnet"] for b in budgets.values()), budgets
    for method in (*rows, "resnet50", "vit", "swin", "pvt"):
        config = resolve_method_config(registry.get("methods", method), "cpu", {}, dataset="retinamnist")
        assert config["steps"] > 0, method
        # the built-in synthetic data (the default run) has its own, smaller budget
        small = resolve_method_config(registry.get("methods", method), "cpu", {}, dataset="synthetic")
        assert 0 < small["steps"] < config["steps"], method
    # A step budget gives a small training set more epochs and the same number of steps.
    cfg = BaselineConfig(**{k: v for k, v in budgets["resnet"].items() if k != "backbone"})
    retina, small = epochs_for(cfg, 1080), epochs_for(cfg, 300)
    assert retina.steps_per_epoch == 9 and retina.epochs == math.ceil(cfg.steps / 9)
    assert small.epochs == math.ceil(cfg.steps / 3) and abs(small.steps - retina.steps) <= 9
    assert epochs_for(cfg, 100_000).epochs == cfg.min_epochs


def test_an_epochs_override_replaces_a_step_budget(registry):
    from harness.run.config import resolve_method_config

    spec = registry.get("methods", "resnet")
    assert resolve_method_config(spec, "cpu", {})["steps"] > 0
    config = resolve_method_config(spec, "cpu", {"epochs": 20})
    assert config["epochs"] == 20 and config["steps"] == 0  # --set resnet.epochs=20 trains 20 epochs
    config = resolve_method_config(spec, "cpu", {"epochs": 20, "steps": 50}, dataset="synthetic")
    assert config["steps"] == 50  # both given: the step budget, as asked


def test_iois_protocol_config_gives_every_row_the_same_classifier(registry):
    from harness.run.config import resolve_method_config
    from harness.run.experiment_config import load_experiment

    parsed = load_experiment(REPO / "benchmarks" / "configs" / "iois-protocol.toml")
    methods = parsed.options["methods"].split(",")
    tables = {m: parsed.overrides[m] for m in methods}  # every row has its table ...
    assert all(t == tables["resnet"] for t in tables.values()), tables  # ... and they are the same
    assert tables["resnet"]["crop_scale"] > 0 and tables["resnet"]["rotation"] > 0  # IOIS's crop and rotation
    shared = ("backbone", "steps", "min_epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule",
              "hflip", "vflip", "rotation", "rotation_padding", "crop_scale", "pretrained")
    resolved = {}
    for m in methods:
        if m in registry.methods:  # the IOIS rows come with the iois plugin
            config = resolve_method_config(registry.get("methods", m), "cpu", parsed.overrides[m], "retinamnist")
            resolved[m] = {k: config[k] for k in shared}
    assert len(resolved) >= 5 and all(r == resolved["resnet"] for r in resolved.values()), resolved


# ------------------------------------------------------------------------------------ methods end to end

# Each method on the smoke profile with an easily separable synthetic variant, long enough to learn it.
# The loss methods also run with a re-balancing sampler, so each sampler trains a classifier once.
METHODS = [("resnet50", "uniform"), ("vit", "uniform"), ("swin", "uniform"), ("pvt", "uniform"),
           ("focal", "sqrt"), ("cb-focal", "progressive"), ("ldam-drw", "uniform")]


@pytest.mark.slow
@pytest.mark.parametrize("method,sampler", METHODS)
def test_method_beats_chance_on_separable_synthetic(method, sampler, registry, tmp_path):
    from harness.registry import load_plugins
    from harness.run.config import parse_overrides
    from harness.run.latency import LatencySettings
    from harness.run.runner import RunSettings, run_trial
    from harness.run.trial import Experiment, expand

    overrides = parse_overrides(["dataset.separation=3.0", f"{method}.epochs=3", f"{method}.batch_size=16"])
    experiment = Experiment(methods=(method,), datasets=("synthetic",), samplers=(sampler,), seeds=(0,),
                            profile="smoke", overrides=overrides)
    (trial,) = expand(experiment, registry)
    # One thread: on a shared 2-core machine two threads per trial mostly wait for each other.
    settings = RunSettings(runs_dir=tmp_path, threads=1,
                           latency=LatencySettings(onnx=False, max_repeats_b1=2, max_repeats_batch=1, budget_s=0.0))
    manager = load_plugins()
    record = run_trial(trial, settings, reporter=lambda **_: None, registry=registry, manager=manager)
    assert record["status"] == "ok", record.get("traceback")
    metrics = record["metrics"]
    # Chance: AUROC 0.5, MCC 0, balanced accuracy 1/7 (the majority class alone).
    assert metrics["auroc"] > 0.8 and metrics["mcc"] > 0.2, metrics
    assert metrics["balanced_accuracy"] > 1 / 7 + 0.05, metrics
