"""DiffMIC: the label diffusion's chains (the closed forms of the shared steps are in test_diffusion_nn.py),
the MMD, ROI selection and cropping, eval-mode priors, per-image noise, the per-dataset paper settings, the
config ranges, the fitted temperature, ONNX Runtime against torch, and every Table 2 variant end to end."""

from __future__ import annotations

import copy
import math
from dataclasses import fields, replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from harness import HarnessError  # noqa: E402
from harness.run.latency import LatencySettings  # noqa: E402
from harness.run.runner import RunSettings, run_trial  # noqa: E402
from harness.run.trial import Experiment, expand  # noqa: E402
from plugins.diffmic import model as dm  # noqa: E402
from plugins.diffmic import train as dt  # noqa: E402

TINY_SYNTHETIC = {"size": 16, "n_train": 70, "n_val": 35, "n_test": 35}
FAST = {"epochs": 1, "dcg_warmup_epochs": 1, "test_timesteps": 5, "feature_dim": 32, "uncertainty_chains": 3}


def test_sampler_grids():
    diffusion = dm.LabelDiffusion(1000, 1e-4, 0.02)
    truncated = diffusion.steps(60, "truncated")
    assert [s.t for s in truncated] == list(range(59, -1, -1))  # on the 1000-step indices, from n-1
    assert all(s.s == s.t - 1 for s in truncated[:-1]) and truncated[-1].s is None
    respaced = diffusion.steps(60, "respaced")
    assert respaced[0].t == 999 and respaced[-1].t == 0 and len(respaced) == 60
    assert all(a.t > b.t and a.s == b.t for a, b in zip(respaced, respaced[1:]))
    with pytest.raises(HarnessError, match="test_timesteps"):
        diffusion.steps(1001)
    with pytest.raises(HarnessError, match="sampler"):
        diffusion.steps(10, "euler")


def test_an_oracle_denoiser_recovers_y0_with_every_sampler():
    """If eps_theta returns the noise that explains y_t, every sampler ends exactly at the true y0: the
    last step returns the y0 estimate with no noise added, whatever the chain did before."""
    diffusion = dm.LabelDiffusion(1000, 1e-4, 0.02)
    g = torch.Generator().manual_seed(3)
    y0 = torch.nn.functional.one_hot(torch.randint(0, 4, (64,), generator=g), 4).double()
    prior = torch.softmax(torch.randn(64, 4, generator=g, dtype=torch.float64), 1)

    def oracle(y_t, t):  # the noise that explains y_t under q(y_t | y0): (y_t - mean) / std
        ab = float(diffusion.alpha_bars[t])
        return (y_t - math.sqrt(ab) * y0 - (1 - math.sqrt(ab)) * prior) / math.sqrt(1 - ab)

    for kind in ("truncated", "respaced", "ddim"):
        steps = diffusion.steps(50, kind)
        noise = torch.randn(64, len(steps), 4, generator=g, dtype=torch.float64)
        out = diffusion.sample(oracle, prior, steps, noise, ddim=kind == "ddim")
        torch.testing.assert_close(out, y0, atol=1e-6, rtol=0)
    with pytest.raises(HarnessError, match="noise draws"):
        diffusion.sample(oracle, prior, steps, noise[:, :10])


# ------------------------------------------------------------------------------------------- MMD


def test_mmd_is_zero_for_identical_batches_and_grows_with_a_mean_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 7, generator=g)
    assert abs(float(dm.mmd(a, a))) < 1e-6
    values = [float(dm.mmd(a, a + shift)) for shift in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert all(x < y for x, y in zip(values, values[1:])), values
    assert values[1] > 0


def test_mmd_matches_the_formula_written_out():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(6, 3)) + 0.3

    def k(u, v):
        return math.exp(-float(((u - v) ** 2).sum()) / 3 / 3)

    expected = (np.mean([k(u, v) for u in a for v in a]) + np.mean([k(u, v) for u in b for v in b])
                - 2 * np.mean([k(u, v) for u in a for v in b]))
    assert float(dm.mmd(torch.from_numpy(a), torch.from_numpy(b))) == pytest.approx(expected, rel=1e-10)


def test_antithetic_timesteps_pair_t_with_its_mirror():
    t = dm.antithetic_timesteps(10, 1000, torch.Generator().manual_seed(0))
    assert t.shape == (10,) and int(t.min()) >= 0 and int(t.max()) <= 999
    assert torch.equal(t[:4] + t[6:10], torch.full((4,), 999))


# ------------------------------------------------------------------------------------------- ROIs


def test_roi_selection_picks_the_top_cells_and_never_twice():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, 4, 5, 6))
    lo, hi = s.min((2, 3), keepdims=True), s.max((2, 3), keepdims=True)
    summed = ((s - lo) / (hi - lo)).sum(1).reshape(3, -1)
    cells = dm.select_rois(torch.from_numpy(s), 6).numpy()
    for n in range(3):
        expected = np.argsort(-summed[n], kind="stable")[:6]
        np.testing.assert_array_equal(cells[n, :, 0] * 6 + cells[n, :, 1], expected)
    # a map with only two non-zero cells: the picks after them are still distinct
    sparse = torch.zeros(1, 2, 4, 4)
    sparse[0, 0, 1, 2], sparse[0, 1, 3, 0] = 5.0, 2.0
    picks = dm.select_rois(sparse, 16)[0].tolist()
    assert picks[:2] == [[1, 2], [3, 0]] or picks[:2] == [[3, 0], [1, 2]]
    assert len({tuple(p) for p in picks}) == 16
    with pytest.raises(HarnessError, match="num_crops"):
        dm.select_rois(sparse, 17)


def test_crops_are_the_image_patches_at_the_roi_corners():
    x = torch.randn(2, 3, 28, 28)
    cells = torch.tensor([[[0, 0], [6, 6], [3, 1]], [[2, 5], [6, 0], [0, 6]]])
    corners = dm.roi_corners(cells, (7, 7), (28, 28), 8)
    assert corners[0, 0].tolist() == [0, 0] and corners[0, 2].tolist() == [12, 4]
    assert corners[0, 1].tolist() == [20, 20]  # kept inside the image
    crops = dm.crop_rois(x, corners, 8)
    for n in range(2):
        for k in range(3):
            top, left = corners[n, k].tolist()
            assert torch.equal(crops[n, k], x[n, :, top : top + 8, left : left + 8])
    # the paper's geometry: cell (i, j) of 7x7 at 224 px -> pixel (32 i, 32 j)
    assert dm.roi_corners(torch.tensor([[[3, 5]]]), (7, 7), (224, 224), 32)[0, 0].tolist() == [96, 160]


def test_dcg_outputs_and_gated_attention():
    torch.manual_seed(0)
    dcg = dm.DCG(num_classes=4, in_chans=1, image_size=28, global_backbone="tinycnn", local_backbone="tinycnn",
                 pretrained=False, num_crops=5, crop_size=8, crop_channels="first", attention_dim=16).eval()
    x = torch.randn(3, 1, 28, 28)
    out = dcg(x)
    assert out["saliency"].shape == (3, 4, 7, 7)
    torch.testing.assert_close(out["y_global"], out["saliency"].mean((2, 3)))
    assert out["y_local"].shape == (3, 4) and out["corners"].shape == (3, 5, 2)
    torch.testing.assert_close(out["attention"].sum(1), torch.ones(3))
    p = dm.priors(dcg, out)
    torch.testing.assert_close(p["fused"], torch.softmax((out["y_global"] + out["y_local"]) / 2, 1))
    assert dcg.saliency.bias is None and dcg.attention.U.bias is None and dcg.local_head.bias is None


# ---------------------------------------------------------------------------------- training, inference


def _run(tmp_path, method: str, overrides: dict, reporter=None, seed: int = 0, synthetic=TINY_SYNTHETIC):
    """One smoke trial through the runner, on one thread (so a loaded machine does not slow it tenfold)."""
    from harness.run.runner import cached_plugins

    _, registry = cached_plugins((), ())
    exp = Experiment(methods=(method,), datasets=("synthetic",), profile="smoke", seeds=(seed,),
                     overrides={"synthetic": synthetic, method: overrides})
    (trial,) = expand(exp, registry)
    settings = RunSettings(runs_dir=tmp_path, threads=1, latency=LatencySettings(onnx=False, budget_s=0.01, max_repeats_b1=2))
    return run_trial(trial, settings, reporter=reporter or (lambda **_: None)), trial


def test_training_loss_falls_on_synthetic_smoke(tmp_path):
    records = []
    # 90 small steps at a constant learning rate: enough for the per-step gains to start fitting
    result, _ = _run(tmp_path, "diffmic", {"epochs": 10, "dcg_warmup_epochs": 1, "test_timesteps": 5,
                                           "eval_every": 10, "explain_per_class": 0, "batch_size": 16,
                                           "feature_dim": 512, "schedule": "constant", "lr": 2e-3},
                     reporter=lambda **r: records.append(r), synthetic={})
    assert result["status"] == "ok", result.get("traceback")
    joint = [r for r in records if r.get("stage") == "joint"]
    assert len(joint) == 10 and all({"mse", "mmd", "dcg_loss"} <= set(r) for r in joint)
    first, last = np.mean([r["loss"] for r in joint[:2]]), np.mean([r["loss"] for r in joint[-2:]])
    assert last < 0.8 * first, [round(r["loss"], 3) for r in joint]
    assert joint[-1]["dcg_loss"] < joint[0]["dcg_loss"]


def _tiny_parts(num_classes: int = 3, timesteps: int = 1000):
    torch.manual_seed(0)
    dcg = dm.DCG(num_classes=num_classes, in_chans=3, image_size=16, global_backbone="tinycnn",
                 local_backbone="tinycnn", pretrained=False, num_crops=2, crop_size=4, crop_channels="all",
                 attention_dim=8)
    encoder = dm.Encoder("tinycnn", in_chans=3, image_size=16, pretrained=False)
    denoiser = dm.Denoiser(num_classes=num_classes, feature_dim=16, timesteps=timesteps, encoder=encoder)
    return dcg, denoiser, dm.LabelDiffusion(timesteps, 1e-4, 0.02)


def _tiny_classifier(seed: int, **kwargs) -> dm.DiffMICClassifier:
    dcg, denoiser, diffusion = _tiny_parts()
    kwargs.setdefault("test_timesteps", 20)
    return dm.DiffMICClassifier(dcg, denoiser, diffusion, seed=seed, **kwargs).eval()


def test_inference_is_reproducible_for_a_seed():
    x = torch.randn(6, 3, 16, 16)
    with torch.inference_mode():
        a = _tiny_classifier(seed=1, uncertainty_chains=5)(x)
        b = _tiny_classifier(seed=1, uncertainty_chains=5)(x)
        c = _tiny_classifier(seed=2, uncertainty_chains=5)(x)
        vote = _tiny_classifier(seed=1, readout="vote", votes=7)(x)
    assert torch.equal(a["probs"], b["probs"]) and torch.equal(a["uncertainty"], b["uncertainty"])
    assert not torch.equal(a["probs"], c["probs"])
    torch.testing.assert_close(a["probs"].sum(1), torch.ones(6))
    assert a["uncertainty"].shape == (6,) and ((a["uncertainty"] >= 0) & (a["uncertainty"] <= 0.8)).all()
    torch.testing.assert_close(vote["probs"].sum(1), torch.ones(6))
    assert torch.equal(vote["probs"] * 7, (vote["probs"] * 7).round())  # vote shares of 7 chains


def test_a_prediction_depends_neither_on_its_batch_nor_on_its_position():
    """The chain's noise is seeded per image: an image gets the same prediction alone, in another batch and at
    another position (the old generator, reseeded per call, made it depend on both)."""
    g = torch.Generator().manual_seed(0)
    x, others = torch.randn(6, 3, 16, 16, generator=g), torch.randn(5, 3, 16, 16, generator=g)
    model = _tiny_classifier(seed=3, uncertainty_chains=4, temperature=0.05)
    with torch.inference_mode():
        batch = model(x)
        for i in (0, 4):
            alone = model(x[i : i + 1])
            mixed = model(torch.cat([others[:i + 1], x[i : i + 1], others[i + 1 :]]))
            for out in (alone, {k: v[i + 1 : i + 2] for k, v in mixed.items()}):
                torch.testing.assert_close(out["probs"], batch["probs"][i : i + 1], atol=1e-5, rtol=0)
                torch.testing.assert_close(out["uncertainty"], batch["uncertainty"][i : i + 1])
        reversed_ = model(x.flip(0))
    torch.testing.assert_close(reversed_["probs"].flip(0), batch["probs"], atol=1e-5, rtol=0)
    assert not torch.allclose(batch["probs"][0], batch["probs"][1])  # and images differ from each other


def test_one_chain_for_latency_is_chain_0_of_the_full_module():
    """The latency module runs the paper's one chain per image; the uncertainty chains only add chains, so its
    probabilities are the full module's."""
    full = _tiny_classifier(seed=1, uncertainty_chains=6, temperature=0.05)
    one = full.variant(uncertainty_chains=0)
    assert one.chains == 1 and full.chains == 6 and one.denoiser is full.denoiser and one.dcg is full.dcg
    calls = []
    hook = full.denoiser.register_forward_hook(lambda m, i, o: calls.append(i[1].shape[0]))
    x = torch.randn(4, 3, 16, 16)
    with torch.inference_mode():
        a, b = full(x), one(x)
    hook.remove()
    assert calls == [4 * 6] * 20 + [4] * 20  # 20 steps: 6 chains per image, then 1
    torch.testing.assert_close(a["probs"], b["probs"])
    assert torch.equal(b["uncertainty"], torch.zeros(4))


def test_image_feature_is_computed_once_per_image_not_per_step():
    model = _tiny_classifier(seed=0, uncertainty_chains=4)
    calls = []
    model.denoiser.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    with torch.inference_mode():
        model(torch.randn(5, 3, 16, 16))
    assert calls == [5]  # one encoder call for the batch: not per step, per chain or per image


def _joint_stage(draws: int = 1):
    from plugins.diffmic import DiffMICConfig

    dcg, denoiser, diffusion = _tiny_parts()
    cfg = DiffMICConfig(variant="full", noise_draws=draws, timesteps=1000)
    return dt.JointStage(dcg, denoiser, diffusion, dt.dcg_optimizer(dcg, cfg), cfg, 3, torch.Generator().manual_seed(0))


def _bn_buffers(module):
    return [b.clone() for name, b in module.named_buffers() if "running" in name]


def test_the_denoiser_is_trained_on_eval_mode_priors_and_the_dcg_on_a_training_mode_forward():
    """The priors conditioning the denoiser come from the DCG in eval mode (running statistics, as at test time)
    without gradient; a prior computed with batch statistics (the DCG in training mode) fails this test."""
    stage = _joint_stage()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 16, 16, generator=g) * 3 + 2  # batch statistics far from the running ones
    y = torch.randint(0, 3, (8,), generator=g)
    with torch.no_grad():
        expected = dm.priors(stage.dcg, stage.dcg.eval()(x))
        batch_stats = dm.priors(stage.dcg, copy.deepcopy(stage.dcg).train()(x))
    assert not torch.allclose(expected["fused"], batch_stats["fused"], atol=1e-3)
    seen = []
    forward = stage.denoiser.forward
    stage.denoiser.forward = lambda e, y_t, p, t: (seen.append(p), forward(e, y_t, p, t))[1]
    running = _bn_buffers(stage.dcg)
    stage.dcg.train()  # whatever mode the DCG was left in
    loss, parts = stage.loss(x, y, 0)
    assert [tuple(p.shape) for p in seen] == [(8, 3)] * 3  # fused, global and local branches (full variant)
    for p, branch in zip(seen, ("fused", "global", "local")):
        torch.testing.assert_close(p, expected[branch])
        assert not p.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(running, _bn_buffers(stage.dcg)))  # no batch statistics used
    loss.backward()
    assert all(p.grad is None for p in stage.dcg.parameters())  # the denoiser's loss never reaches the DCG
    assert {"mse", "mmd"} <= set(parts)
    weights = [p.detach().clone() for p in stage.dcg.parameters()]
    out = stage.dcg_step(x, y)
    assert out["dcg_loss"] > 0 and not stage.dcg.training
    assert not all(torch.equal(a, b) for a, b in zip(running, _bn_buffers(stage.dcg)))  # a training-mode forward
    assert not all(torch.equal(a, b) for a, b in zip(weights, stage.dcg.parameters()))


def test_noise_draws_repeat_each_image_with_its_own_prior():
    stage = _joint_stage(draws=3)
    seen = []
    forward = stage.denoiser.forward
    stage.denoiser.forward = lambda e, y_t, p, t: (seen.append((p, t)), forward(e, y_t, p, t))[1]
    x = torch.randn(4, 3, 16, 16)
    stage.loss(x, torch.tensor([0, 1, 2, 0]), 0)
    p, t = seen[0]
    assert p.shape == (12, 3) and torch.equal(p[:4], p[4:8]) and torch.equal(p[:4], p[8:])
    assert t.shape == (12,) and len(set(t.tolist())) > 4  # different timesteps for the copies


def test_fitted_temperature_recovers_the_generating_one():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 5, generator=g) * 2
    for tau in (0.3, 2.0):
        labels = torch.multinomial(torch.softmax(logits / tau, 1), 1, generator=g).squeeze(1)
        assert dt.fit_temperature(logits.numpy(), labels.numpy()) == pytest.approx(tau, rel=0.1)


# ------------------------------------------------------------------------------------ settings


def test_paper_profile_carries_the_per_dataset_settings():
    from harness.run.config import data_protocol_warnings, resolve_method_config
    from harness.run.runner import cached_plugins

    _, registry = cached_plugins((), ())
    for name in ("diffmic", "diffmic-c1", "diffmic-basic"):
        spec = registry.get("methods", name)
        aptos = resolve_method_config(spec, "paper", {}, dataset="aptos")
        assert (aptos["test_timesteps"], aptos["vflip"], aptos["batch_size"]) == (60, True, 32)
        for isic in ("ham10000", "isic2018"):
            cfg = resolve_method_config(spec, "paper", {}, dataset=isic)
            assert (cfg["test_timesteps"], cfg["vflip"], cfg["batch_size"]) == (250, False, 64)
        other = resolve_method_config(spec, "paper", {}, dataset="retinamnist")
        assert other["test_timesteps"] == 100 and other["rotation_padding"] == "zeros" and other["rotation"] == 30
        assert other["pretrained"] and other["feature_dim"] == 6144 and other["timesteps"] == 1000
        # an explicit override still wins; other profiles are untouched by the paper's per-dataset settings
        assert resolve_method_config(spec, "paper", {"test_timesteps": 80}, dataset="aptos")["test_timesteps"] == 80
        assert resolve_method_config(spec, "cpu", {}, dataset="aptos")["vflip"] is False
        for dataset, settings in spec.dataset_profiles["paper"].items():  # every stated option exists
            data_spec = registry.get("datasets", dataset)
            assert settings["dataset.split"] in data_spec.protocols
            assert {k[len("dataset."):] for k in settings if k.startswith("dataset.")} <= {
                f.name for f in fields(data_spec.options)}
        warnings = data_protocol_warnings(spec, "paper", "aptos", {"split": "iois", "size": 224})
        assert len(warnings) == 1 and "split='diffmic'" in warnings[0]
        assert not data_protocol_warnings(spec, "paper", "aptos", {"split": "diffmic", "size": 224})


def test_zero_filled_rotation_fills_with_black_pixels_not_the_mean_colour():
    """The paper profile's rotation is torchvision's, on the unnormalised image: uncovered corners are black.
    The loop augments normalised batches, so black is ``-mean / std`` there, not 0 (the mean colour)."""
    from types import SimpleNamespace

    from harness.contract.specs import normalise
    from harness.toolkit.training import augment

    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)
    white = normalise(torch.full((8, 3, 28, 28), 255, dtype=torch.uint8), mean, std)
    black = normalise(torch.zeros(1, 3, 1, 1, dtype=torch.uint8), mean, std).view(-1)
    cfg = SimpleNamespace(hflip=False, vflip=False, rotation=45.0, crop_scale=0.0, rotation_padding="zeros")
    out = augment(white, cfg, torch.Generator().manual_seed(0), black)
    for c in range(3):  # every channel spans exactly [black, white]: the corners are black, nothing else is lost
        assert out[:, c].min().item() == pytest.approx(black[c].item(), abs=1e-5)
        assert out[:, c].max().item() == pytest.approx(white[0, c, 0, 0].item(), abs=1e-5)
    corners = out[:, :, 0, 0]  # a corner pixel is wholly uncovered by most angles (not by the small ones)
    assert ((corners - black).abs().amax(1) < 1e-5).sum() >= 4
    with pytest.raises(HarnessError, match="needs `black`"):
        augment(white, cfg, torch.Generator().manual_seed(0))
    reflecting = SimpleNamespace(**{**vars(cfg), "rotation_padding": "reflection"})
    reflected = augment(white, reflecting, torch.Generator().manual_seed(0), black)
    assert torch.allclose(reflected, white)


def test_pretrained_weights_are_required_under_paper_only():
    from plugins.diffmic import DiffMICConfig

    data = type("Data", (), {"num_classes": 3, "channels": 3, "size": 16})()
    cfg = DiffMICConfig(dcg_backbone="tinycnn", local_backbone="tinycnn", pretrained=True, crop_fraction=0.25)

    def ctx(profile):
        return type("Ctx", (), {"profile": profile})()

    with pytest.raises(HarnessError, match="(?s)ImageNet weights.*pretrained=false"):
        dt.build_dcg(data, cfg, ctx("paper"), local=True)  # a tiny CNN has none: missing weights
    assert not dt.build_dcg(data, cfg, ctx("cpu"), local=True).pretrained_loaded  # other profiles go on offline
    dt.build_dcg(data, replace(cfg, pretrained=False), ctx("paper"), local=False)  # an explicit opt-out works


@pytest.mark.parametrize("key,value,message", [
    ("test_timesteps", 0, "test_timesteps must be at least 1"),
    ("test_timesteps", 1001, "test_timesteps must be at least 1 and at most 1000"),
    ("num_crops", 0, "num_crops"),
    ("feature_dim", 0, "feature_dim"),
    ("mmd_weight", -0.5, "mmd_weight"),
    ("crop_fraction", 0.0, "crop_fraction"),
    ("beta_end", 1.0, "beta_end"),
    ("sampler", "euler", "sampler must be one of"),
    ("readout", "mean", "readout must be one of"),
    ("variant", "c3", "variant must be one of"),
    ("temperature", -1.0, "temperature"),
    ("noise_draws", 0, "noise_draws"),
    ("inference_dtype", "float16", "inference_dtype"),
])
def test_config_ranges_are_checked(key, value, message):
    from harness.run.config import resolve_method_config
    from harness.run.runner import cached_plugins
    from plugins.diffmic import DiffMICConfig

    with pytest.raises(ValueError, match=message):
        DiffMICConfig(**{key: value})
    _, registry = cached_plugins((), ())
    with pytest.raises(HarnessError, match=f"method 'diffmic': invalid config: {message}"):
        resolve_method_config(registry.get("methods", "diffmic"), "paper", {key: value})


# ---------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("method", ["diffmic-basic", "diffmic-c1", "diffmic-c2", "diffmic"])
def test_each_table2_variant_runs_end_to_end(tmp_path, method):
    result, trial = _run(tmp_path, method, FAST)
    assert result["status"] == "ok", result.get("traceback")
    assert result["config"]["variant"] == {"diffmic-basic": "basic", "diffmic-c1": "c1", "diffmic-c2": "c2",
                                           "diffmic": "full"}[method]
    assert 0.0 <= result["metrics"]["macro_f1"] <= 1.0
    import polars as pl

    predictions = pl.read_parquet(tmp_path / trial.experiment / trial.key / "predictions.parquet")
    notes = result["notes"]
    assert 0.0 <= notes["val_macro_f1"] <= 1.0
    if method == "diffmic-basic":
        assert "uncertainty" not in predictions.columns and "full_ms_per_image_b1" not in result["latency"]
        return
    assert predictions["uncertainty"].is_between(0.0, 1.0).all()
    assert result["explanations"] and all(p.endswith(".png") for p in result["explanations"])
    assert len(result["explanations"]) == 7  # one test image per class (explain_per_class=1 in smoke)
    assert 0.0 <= notes["val_prior_macro_f1"] <= 1.0 and notes["temperature"] > 0
    assert "fitted on validation" in notes["probabilities"]
    assert result["latency"]["full_ms_per_image_b1"] > 0  # the uncertainty chains, timed apart from one chain


def test_basic_is_the_prior_network_of_c1(tmp_path):
    """basic -> C1 adds label diffusion and nothing else: basic is C1's DCG network, with its backbone."""
    basic, _ = _run(tmp_path, "diffmic-basic", FAST)
    dcg = dm.DCG(num_classes=7, in_chans=3, image_size=16, global_backbone="tinycnn", local_backbone="tinycnn",
                 pretrained=False, num_crops=3, crop_size=5, crop_channels="first", attention_dim=128, local=False)
    assert basic["params"] == sum(p.numel() for p in dcg.parameters())


def test_bad_variant_settings_are_explained(tmp_path):
    from harness.run.runner import cached_plugins

    _, registry = cached_plugins((), ())
    exp = Experiment(methods=("diffmic",), datasets=("synthetic",), profile="smoke", seeds=(0,),
                     overrides={"diffmic": {**FAST, "sampler": "euler"}})
    with pytest.raises(HarnessError, match="sampler must be one of"):
        expand(exp, registry)


def test_bfloat16_inference_agrees_with_float32():
    x = torch.randn(32, 3, 16, 16)
    with torch.inference_mode():
        full = _tiny_classifier(seed=1)(x)
        half = _tiny_classifier(seed=1, dtype=torch.bfloat16)(x)
    assert half["probs"].dtype == torch.float32
    assert float((full["probs"].argmax(1) == half["probs"].argmax(1)).float().mean()) >= 0.9
    torch.testing.assert_close(half["probs"], full["probs"], atol=0.05, rtol=0)


def test_onnx_runtime_drives_the_same_chain_as_torch(tmp_path):
    """The DCG, the image feature and the per-step denoiser exported to ONNX, the chain driven from Python over
    ONNX Runtime sessions: with the same per-image noise, probabilities within 1e-4 and identical labels."""
    pytest.importorskip("onnxruntime")
    from plugins.diffmic.export import OnnxDiffMIC, export_onnx

    dcg, denoiser, diffusion = _tiny_parts(num_classes=4, timesteps=50)
    with torch.no_grad():  # batch-norm statistics that are not the identity
        for module in [*dcg.modules(), *denoiser.modules()]:
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    torch_module = dm.DiffMICClassifier(dcg, denoiser, diffusion, test_timesteps=50, uncertainty_chains=3,
                                        temperature=1.0, seed=7).eval()
    paths = export_onnx(torch_module, tmp_path, image_shape=(3, 16, 16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["denoiser.onnx", "feature.onnx", "prior.onnx"]
    ort_module = OnnxDiffMIC(paths, torch_module, threads=1)
    x = torch.randn(9, 3, 16, 16)
    with torch.inference_mode():
        a, b = torch_module(x), ort_module(x)
    assert float(a["probs"].max(1).values.min()) < 0.99  # probabilities that can disagree
    torch.testing.assert_close(b["probs"], a["probs"], atol=1e-4, rtol=0)
    assert torch.equal(b["probs"].argmax(1), a["probs"].argmax(1))
    torch.testing.assert_close(b["uncertainty"], a["uncertainty"])
    with pytest.raises(HarnessError, match="missing denoiser"):
        OnnxDiffMIC({**paths, "denoiser": tmp_path / "absent.onnx"}, torch_module)


@pytest.mark.slow
def test_diffmic_beats_chance_on_synthetic(tmp_path):
    """The chain starts at the DCG's prior and must not lose it. A smaller ``cpu`` trial (16 px, 350 training
    images, 400 denoiser steps; under a minute on one core): the chain's validation Macro-F1 at the selected
    checkpoint and the test Macro-F1 are far above chance (0.14 for 7 classes). Before the fixes
    (batch-statistics priors, a 3-epoch warm-up, 80 denoiser steps) the chain was at chance."""
    from harness.run.runner import cached_plugins

    _, registry = cached_plugins((), ())
    exp = Experiment(methods=("diffmic",), datasets=("synthetic",), profile="cpu", seeds=(0,),
                     overrides={"synthetic": {"size": 16, "n_train": 350, "n_val": 140, "n_test": 140},
                                "diffmic": {"steps": 400, "dcg_warmup_epochs": 10, "batch_size": 32, "eval_every": 5,
                                            "feature_dim": 128, "uncertainty_chains": 0, "explain_per_class": 0}})
    (trial,) = expand(exp, registry)
    settings = RunSettings(runs_dir=tmp_path, threads=1, latency=LatencySettings(onnx=False, budget_s=0.01,
                                                                                   max_repeats_b1=2))
    result = run_trial(trial, settings, reporter=lambda **_: None)
    assert result["status"] == "ok", result.get("traceback")
    notes = result["notes"]
    # Far above chance from the chain itself. Whether the chain matches its prior at this small budget depends
    # on the seed (validation chain / prior, seeds 0-2: 0.78 / 0.92, 0.77 / 0.79, 0.90 / 0.86; see
    # benchmarks/README.md): one chain is a sample of the label, so that claim is the budget study's, not a test's.
    assert notes["val_macro_f1"] > 0.6 and notes["val_prior_macro_f1"] > 0.6, notes
    assert result["metrics"]["macro_f1"] > 0.5, result["metrics"]


def test_latency_times_the_chain_on_onnx_runtime_beside_torch(tmp_path):
    """A DiffMIC predictor is not one graph (``exportable=False``), yet the latency record has both runtimes:
    its ``onnx_runtime`` (export.py) exports the three networks and the chain runs over ONNX Runtime sessions."""
    pytest.importorskip("onnxruntime")
    from harness import Predictor
    from harness.run import models
    from harness.run.latency import LatencySettings, measure

    module = _tiny_classifier(seed=1).eval()
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    predictor = Predictor(module, exportable=False, onnx_runtime="plugins.diffmic.export:onnx_runtime")
    models.save_predictor(predictor, tmp_path)
    kept = models.load_predictor(tmp_path)  # what `harness bench` re-times: the ONNX Runtime form is kept
    assert kept.onnx_runtime == predictor.onnx_runtime and not kept.exportable
    record = measure(kept, images, LatencySettings(batch=4, max_repeats_b1=2, max_repeats_batch=2, budget_s=0.01))
    assert "onnx_error" not in record, record.get("onnx_error")
    assert record["onnx_provider"] == "CPUExecutionProvider"
    assert record["onnx_graphs"] == ["denoiser.onnx", "feature.onnx", "prior.onnx"]
    assert record["onnx_ms_per_image_b1"] > 0 and record["ms_per_image_b1"] > 0
    assert record["onnx_max_abs_diff_b1"] < 1e-4  # the form timed predicts what torch predicts
