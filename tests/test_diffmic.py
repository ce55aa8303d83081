"""DiffMIC: the CARD forward / reverse process against closed forms, the MMD, ROI selection and cropping,
training on synthetic smoke data, reproducible inference, and every Table 2 variant end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from harness import HarnessError  # noqa: E402
from harness.run.latency import LatencySettings  # noqa: E402
from harness.run.runner import RunSettings, run_trial  # noqa: E402
from harness.run.trial import Experiment, expand  # noqa: E402
from plugins.diffmic import model as dm  # noqa: E402

TINY_SYNTHETIC = {"size": 16, "n_train": 70, "n_val": 35, "n_test": 35}
FAST = {"epochs": 1, "dcg_warmup_epochs": 1, "test_timesteps": 5, "feature_dim": 32, "uncertainty_chains": 3}


def random_schedule(seed: int, timesteps: int = 40) -> dm.CardSchedule:
    rng = np.random.default_rng(seed)
    return dm.CardSchedule(torch.from_numpy(np.sort(rng.uniform(1e-4, 0.2, timesteps))))


# ---------------------------------------------------------------------------- forward and reverse


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_process_matches_the_composed_transitions(seed):
    """q(y_t | y0) from the closed form equals t one-step transitions
    y_t = sqrt(alpha_t) y_{t-1} + (1 - sqrt(alpha_t)) y_hat + sqrt(beta_t) eps, composed exactly."""
    schedule = random_schedule(seed)
    g = torch.Generator().manual_seed(seed)
    y0 = torch.randn(4, 5, generator=g, dtype=torch.float64)
    prior = torch.softmax(torch.randn(4, 5, generator=g, dtype=torch.float64), 1)
    mean, var = y0.clone(), torch.zeros(())
    for t in range(schedule.timesteps):
        a = schedule.alphas[t]
        mean, var = a.sqrt() * mean + (1 - a.sqrt()) * prior, a * var + schedule.betas[t]
        index = torch.full((4,), t)
        closed_mean = schedule.q_sample(y0, prior, index, torch.zeros_like(y0))
        torch.testing.assert_close(closed_mean, mean, rtol=1e-10, atol=1e-10)
        noise = torch.randn(4, 5, generator=g, dtype=torch.float64)
        std = (schedule.q_sample(y0, prior, index, noise) - closed_mean) / noise
        torch.testing.assert_close(std, torch.full_like(std, float(var.sqrt())), rtol=1e-9, atol=1e-12)
    # the prior is the end point: y_T ~ N(y_hat, I) when alpha_bar_T -> 0
    long = dm.CardSchedule.linear(1000, 1e-4, 0.02)
    end = long.q_sample(y0, prior, torch.full((4,), 999), torch.zeros_like(y0))
    assert float(long.alpha_bars[-1].sqrt()) < 0.01
    torch.testing.assert_close(end, prior, atol=0.01 * float((y0 - prior).abs().max()), rtol=0)


def gaussian_posterior(y0, y_t, prior, ab_t, ab_prev):
    """q(y_prev | y_t, y0) by Bayes' rule for Gaussians: prior N(m1, v1) on y_prev and the transition
    y_t | y_prev ~ N(sqrt(a) y_prev + (1 - sqrt(a)) y_hat, 1 - a), a = ab_t / ab_prev."""
    a = ab_t / ab_prev
    m1 = math.sqrt(ab_prev) * y0 + (1 - math.sqrt(ab_prev)) * prior
    v1 = 1 - ab_prev
    precision = 1 / v1 + a / (1 - a)
    mean = (m1 / v1 + math.sqrt(a) * (y_t - (1 - math.sqrt(a)) * prior) / (1 - a)) / precision
    return mean, 1 / precision


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_reverse_coefficients_match_the_gaussian_posterior(seed):
    schedule = random_schedule(seed)
    rng = np.random.default_rng(100 + seed)
    ab = schedule.alpha_bars.tolist()
    y0, y_t, prior = rng.normal(size=(3, 6))
    pairs = [(t, t - 1) for t in rng.integers(1, schedule.timesteps, 5)]  # the truncated chain's steps
    pairs += [(t, s) for t, s in (sorted(rng.choice(schedule.timesteps, 2, replace=False))[::-1] for _ in range(5))]
    for t, s in pairs:  # adjacent and respaced steps
        g0, g1, g2, beta_tilde = dm.posterior_coefficients(ab[t], ab[s])
        mean, var = gaussian_posterior(y0, y_t, prior, ab[t], ab[s])
        np.testing.assert_allclose(g0 * y0 + g1 * y_t + g2 * prior, mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(beta_tilde, var, rtol=1e-9)
        # the brief's closed forms for an adjacent step
        if s == t - 1:
            beta, alpha = float(schedule.betas[t]), float(schedule.alphas[t])
            np.testing.assert_allclose(g0, beta * math.sqrt(ab[s]) / (1 - ab[t]), rtol=1e-9)
            np.testing.assert_allclose(g1, (1 - ab[s]) * math.sqrt(alpha) / (1 - ab[t]), rtol=1e-9)
            np.testing.assert_allclose(
                g2, 1 + (math.sqrt(ab[t]) - 1) * (math.sqrt(alpha) + math.sqrt(ab[s])) / (1 - ab[t]), rtol=1e-9)
            np.testing.assert_allclose(beta_tilde, (1 - ab[s]) * beta / (1 - ab[t]), rtol=1e-9)


def test_y0_estimate_inverts_the_forward_process():
    schedule = random_schedule(7)
    g = torch.Generator().manual_seed(0)
    y0, noise = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    prior = torch.softmax(torch.randn(3, 4, generator=g, dtype=torch.float64), 1)
    for t in (0, 17, 39):
        y_t = schedule.q_sample(y0, prior, torch.full((3,), t), noise)
        torch.testing.assert_close(dm.predict_y0(y_t, prior, noise, float(schedule.alpha_bars[t])), y0)


def test_sampler_grids():
    schedule = dm.CardSchedule.linear(1000, 1e-4, 0.02)
    truncated = schedule.steps(60, "truncated")
    assert [s.t for s in truncated] == list(range(59, -1, -1))  # on the 1000-step indices, from n-1
    assert all(s.ab_prev == pytest.approx(float(schedule.alpha_bars[s.t - 1])) for s in truncated[:-1])
    assert truncated[-1].ab_prev is None
    respaced = schedule.steps(60, "respaced")
    assert respaced[0].t == 999 and respaced[-1].t == 0 and len(respaced) == 60
    assert all(a.t > b.t for a, b in zip(respaced, respaced[1:]))
    with pytest.raises(HarnessError, match="test_timesteps"):
        schedule.steps(1001)
    with pytest.raises(HarnessError, match="sampler"):
        schedule.steps(10, "euler")


def test_an_oracle_denoiser_recovers_y0_with_every_sampler():
    """If eps_theta returns the noise that explains y_t, every sampler ends exactly at the true y0: the
    last step returns the y0 estimate with no noise added, whatever the chain did before."""
    schedule = dm.CardSchedule.linear(1000, 1e-4, 0.02)
    g = torch.Generator().manual_seed(3)
    y0 = torch.nn.functional.one_hot(torch.randint(0, 4, (64,), generator=g), 4).double()
    prior = torch.softmax(torch.randn(64, 4, generator=g, dtype=torch.float64), 1)

    class Oracle:  # the noise that explains y_t under q(y_t | y0): (y_t - mean) / std
        def __call__(self, e, y_t, p, t):
            ab = float(schedule.alpha_bars[int(t[0])])
            return (y_t - math.sqrt(ab) * y0 - (1 - math.sqrt(ab)) * p) / math.sqrt(1 - ab)

    for kind in ("truncated", "respaced", "ddim"):
        out = dm.sample_y0(Oracle(), None, prior, schedule.steps(50, kind), ddim=kind == "ddim", generator=g)
        torch.testing.assert_close(out, y0, atol=1e-6, rtol=0)


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


def _tiny_classifier(seed: int, **kwargs) -> dm.DiffMICClassifier:
    torch.manual_seed(0)
    dcg = dm.DCG(num_classes=3, in_chans=3, image_size=16, global_backbone="tinycnn", local_backbone="tinycnn",
                 pretrained=False, num_crops=2, crop_size=4, crop_channels="all", attention_dim=8)
    encoder = dm.Encoder("tinycnn", in_chans=3, image_size=16, pretrained=False)
    denoiser = dm.Denoiser(num_classes=3, feature_dim=16, timesteps=1000, encoder=encoder)
    schedule = dm.CardSchedule.linear(1000, 1e-4, 0.02)
    return dm.DiffMICClassifier(dcg, denoiser, schedule, test_timesteps=20, seed=seed, **kwargs).eval()


def test_inference_is_reproducible_for_a_seed_and_batched():
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


def test_image_feature_is_computed_once_per_image_not_per_step():
    model = _tiny_classifier(seed=0, uncertainty_chains=4)
    calls = []
    model.denoiser.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    with torch.inference_mode():
        model(torch.randn(5, 3, 16, 16))
    assert calls == [5]  # one encoder call for the batch: not per step, per chain or per image


@pytest.mark.parametrize("method", ["diffmic-basic", "diffmic-c1", "diffmic-c2", "diffmic"])
def test_each_table2_variant_runs_end_to_end(tmp_path, method):
    result, trial = _run(tmp_path, method, FAST)
    assert result["status"] == "ok", result.get("traceback")
    assert result["config"]["variant"] == {"diffmic-basic": "basic", "diffmic-c1": "c1", "diffmic-c2": "c2",
                                           "diffmic": "full"}[method]
    assert 0.0 <= result["metrics"]["macro_f1"] <= 1.0
    import polars as pl

    predictions = pl.read_parquet(tmp_path / trial.experiment / trial.key / "predictions.parquet")
    if method == "diffmic-basic":
        assert "uncertainty" not in predictions.columns
    else:
        assert predictions["uncertainty"].is_between(0.0, 1.0).all()
        assert result["explanations"] and all(p.endswith(".png") for p in result["explanations"])
        assert len(result["explanations"]) == 7  # one test image per class (explain_per_class=1 in smoke)


def test_bad_variant_settings_are_explained(tmp_path):
    result, _ = _run(tmp_path, "diffmic", {**FAST, "sampler": "euler"})
    assert result["status"] == "failed" and "sampler must be one of" in result["error"]


def test_bfloat16_inference_agrees_with_float32():
    x = torch.randn(32, 3, 16, 16)
    with torch.inference_mode():
        full = _tiny_classifier(seed=1)(x)
        half = _tiny_classifier(seed=1, dtype=torch.bfloat16)(x)
    assert half["probs"].dtype == torch.float32
    assert float((full["probs"].argmax(1) == half["probs"].argmax(1)).float().mean()) >= 0.9
    torch.testing.assert_close(half["probs"], full["probs"], atol=0.05, rtol=0)
