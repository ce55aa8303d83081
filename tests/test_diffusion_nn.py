"""The shared diffusion building blocks in ``harness.toolkit.nn`` against their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.toolkit.nn import diffusion as D
from harness.toolkit.nn.ema import EMA
from harness.toolkit.nn.schedules import (
    DiscreteSchedule,
    ShiftedCosineLogSNR,
    alpha_sigma_from_logsnr,
    cosine_betas,
    linear_betas,
)
from harness.toolkit.nn.unet import UNet, sinusoidal_embedding
from harness.toolkit.nn.wavelet import haar_dwt, haar_idwt


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_discrete_schedules_are_monotone(kind):
    sched = DiscreteSchedule.make(kind, 1000)
    abar = sched.alphas_cumprod
    assert torch.all(sched.betas > 0) and torch.all(sched.betas < 1)
    assert torch.all(abar[1:] < abar[:-1])
    assert 0.99 < abar[0] < 1 and abar[-1] < 0.01
    logsnr = sched.logsnr(torch.arange(1000))
    assert torch.all(logsnr[1:] < logsnr[:-1])
    a, s = sched.alpha_sigma(torch.tensor([0, 500, 999]))
    assert torch.allclose(a**2 + s**2, torch.ones(3), atol=1e-6)


def test_linear_and_cosine_betas_closed_form():
    assert torch.allclose(linear_betas(5, 0.1, 0.5), torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5], dtype=torch.float64))
    abar = torch.cumprod(1 - cosine_betas(10), 0)
    f = lambda t: math.cos((t / 10 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert abar[4].item() == pytest.approx(f(5) / f(0), rel=1e-9)


def test_shifted_cosine_logsnr_matches_the_formula_and_is_monotone():
    sched = ShiftedCosineLogSNR()  # Favero et al.: base 64, image 256
    t = torch.linspace(0, 1, 101)
    lam = sched.logsnr(t)
    assert torch.all(lam[1:] < lam[:-1])
    shift = 2 * math.log(64 / 256)
    a = math.atan(math.exp(-(15 + math.log(0.25)) / 2))
    b = math.atan(math.exp(-(-15 + math.log(0.25)) / 2))
    expected = -2 * math.log(math.tan(a + 0.3 * (b - a))) + shift
    assert sched.logsnr(torch.tensor(0.3)).item() == pytest.approx(expected, rel=1e-5)
    assert lam[0].item() == pytest.approx(15 + math.log(0.25) + shift, rel=1e-5)
    assert torch.allclose(sched.t_from_logsnr(lam), t, atol=1e-5)
    alpha, sigma = sched.alpha_sigma(t)
    assert torch.allclose(alpha**2, torch.sigmoid(lam)) and torch.allclose(alpha**2 + sigma**2, torch.ones(101))


def test_prediction_type_conversions_invert_each_other():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    alpha, sigma = alpha_sigma_from_logsnr(torch.tensor([-4.0, -1.0, 0.5, 3.0]))
    z = D.q_sample(x0, alpha, sigma, eps)
    v = D.v_target(x0, eps, alpha, sigma)
    assert torch.allclose(D.v_to_eps(z, v, alpha, sigma), eps, atol=1e-5)
    assert torch.allclose(D.v_to_x0(z, v, alpha, sigma), x0, atol=1e-5)
    assert torch.allclose(D.eps_to_x0(z, eps, alpha, sigma), x0, atol=1e-4)
    assert torch.allclose(D.x0_to_eps(z, x0, alpha, sigma), eps, atol=1e-4)
    for kind, out in (("eps", eps), ("v", v), ("x0", x0)):
        assert torch.allclose(D.to_eps(kind, z, out, alpha, sigma), eps, atol=1e-4)
    with pytest.raises(ValueError, match="prediction"):
        D.to_eps("score", z, eps, alpha, sigma)


def test_ddim_eta0_is_deterministic_and_exact_with_the_true_noise():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    (a_t, s_t), (a_s, s_s) = alpha_sigma_from_logsnr(torch.tensor(-1.0)), alpha_sigma_from_logsnr(torch.tensor(2.0))
    z_t = D.q_sample(x0, a_t, s_t, eps)
    one = D.ddim_step(z_t, eps, a_t, s_t, a_s, s_s, eta=0.0, noise=torch.randn(2, 1, 4, 4, generator=g))
    two = D.ddim_step(z_t, eps, a_t, s_t, a_s, s_s, eta=0.0, noise=torch.randn(2, 1, 4, 4, generator=g))
    assert torch.equal(one, two)
    assert torch.allclose(one, a_s * x0 + s_s * eps, atol=1e-5)  # DDIM keeps the same eps (Song et al. Eq. 12)
    noise = torch.randn(2, 1, 4, 4, generator=g)
    ddpm = D.ancestral_step(z_t, x0, a_t, s_t, a_s, s_s, noise)
    assert torch.allclose(D.ddim_step(z_t, eps, a_t, s_t, a_s, s_s, eta=1.0, noise=noise), ddpm, atol=1e-5)


def test_ddpm_step_matches_ho_et_al_posterior():
    abar = DiscreteSchedule.make("linear", 100).alphas_cumprod
    betas = linear_betas(100)
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(3, 2, 4, 4, generator=g) * 1.6 - 0.8
    eps, noise = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64), torch.randn(3, 2, 4, 4, generator=g)
    t = 40
    x_t = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * eps
    mean = (abar[t - 1].sqrt() * betas[t] / (1 - abar[t]) * x0
            + (1 - betas[t]).sqrt() * (1 - abar[t - 1]) / (1 - abar[t]) * x_t)  # Ho et al. Eq. 7
    var = (1 - abar[t - 1]) / (1 - abar[t]) * betas[t]
    got = D.ddpm_step(x_t, eps, t, abar, noise.double())
    assert torch.allclose(got, mean + var.sqrt() * noise, atol=1e-8)
    x_1 = abar[0].sqrt() * x0 + (1 - abar[0]).sqrt() * eps
    assert torch.allclose(D.ddpm_step(x_1, eps, 0, abar), x0.double(), atol=1e-6)  # the last step returns x0_hat


def test_respacing_keeps_alphas_cumprod():
    abar = DiscreteSchedule.make("cosine", 1000).alphas_cumprod
    steps = D.respace(1000, 50)
    assert len(steps) == 50 and steps[0] == 999 and steps[-1] == 0 and torch.all(steps[1:] < steps[:-1])
    betas = D.respaced_betas(abar, steps)
    assert torch.allclose(torch.cumprod(1 - betas, 0), abar[steps.sort().values])
    with pytest.raises(ValueError):
        D.respace(10, 11)


def test_leading_timesteps_are_the_truncated_chain():
    assert D.leading_timesteps(1000, 60).tolist() == list(range(59, -1, -1))  # DiffMIC's APTOS chain
    assert D.leading_timesteps(5, 5).tolist() == [4, 3, 2, 1, 0]
    with pytest.raises(ValueError):
        D.leading_timesteps(10, 0)


# ---------------------------------------------------------------- a prior in the mean (CARD label diffusion)


def _random_schedule(seed: int, timesteps: int = 40) -> DiscreteSchedule:
    rng = np.random.default_rng(seed)
    return DiscreteSchedule(torch.from_numpy(np.sort(rng.uniform(1e-4, 0.2, timesteps))))


def _alpha_sigma(abar: float) -> tuple[float, float]:
    return math.sqrt(abar), math.sqrt(1 - abar)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prior_forward_process_matches_the_composed_transitions(seed):
    """q(y_t | y0, y_hat) in closed form equals t one-step transitions
    y_t = sqrt(alpha_t) y_{t-1} + (1 - sqrt(alpha_t)) y_hat + sqrt(beta_t) eps (CARD Eq. 1), composed exactly."""
    schedule = _random_schedule(seed)
    alphas, abar = 1 - schedule.betas, schedule.alphas_cumprod
    g = torch.Generator().manual_seed(seed)
    y0 = torch.randn(4, 5, generator=g, dtype=torch.float64)
    prior = torch.softmax(torch.randn(4, 5, generator=g, dtype=torch.float64), 1)
    mean, var = y0.clone(), torch.zeros((), dtype=torch.float64)
    for t in range(schedule.num_steps):
        a = alphas[t]
        mean, var = a.sqrt() * mean + (1 - a.sqrt()) * prior, a * var + schedule.betas[t]
        alpha, sigma = _alpha_sigma(float(abar[t]))
        closed_mean = D.prior_q_sample(y0, prior, alpha, sigma, torch.zeros_like(y0))
        torch.testing.assert_close(closed_mean, mean, rtol=1e-10, atol=1e-10)
        noise = torch.randn(4, 5, generator=g, dtype=torch.float64)
        std = (D.prior_q_sample(y0, prior, alpha, sigma, noise) - closed_mean) / noise
        torch.testing.assert_close(std, torch.full_like(std, float(var.sqrt())), rtol=1e-9, atol=1e-12)
        # the forward process solved for y0 inverts it
        torch.testing.assert_close(D.prior_eps_to_y0(closed_mean + sigma * noise, noise, prior, alpha, sigma), y0)
    # the prior is the end point: y_T ~ N(y_hat, I) when alpha-bar_T -> 0
    alpha, sigma = _alpha_sigma(float(DiscreteSchedule.make("linear", 1000).alphas_cumprod[-1]))
    assert alpha < 0.01
    end = D.prior_q_sample(y0, prior, alpha, sigma, torch.zeros_like(y0))
    torch.testing.assert_close(end, prior, atol=0.01 * float((y0 - prior).abs().max()), rtol=0)


def _gaussian_posterior(y0, y_t, prior, ab_t, ab_s):
    """q(y_s | y_t, y0, y_hat) by Bayes' rule for Gaussians: N(m1, v1) on y_s and the transition
    y_t | y_s ~ N(sqrt(a) y_s + (1 - sqrt(a)) y_hat, 1 - a), a = ab_t / ab_s."""
    a = ab_t / ab_s
    m1, v1 = math.sqrt(ab_s) * y0 + (1 - math.sqrt(ab_s)) * prior, 1 - ab_s
    precision = 1 / v1 + a / (1 - a)
    mean = (m1 / v1 + math.sqrt(a) * (y_t - (1 - math.sqrt(a)) * prior) / (1 - a)) / precision
    return mean, 1 / precision


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_prior_ancestral_step_is_cards_posterior(seed):
    """The DDPM step on y - y_hat is CARD's Eq. 9: the brief's gamma0..2 and beta-tilde for adjacent steps, and
    the Gaussian posterior by Bayes' rule for adjacent and respaced steps."""
    schedule = _random_schedule(seed)
    abar, betas = schedule.alphas_cumprod.tolist(), schedule.betas.tolist()
    rng = np.random.default_rng(100 + seed)
    y0, y_t, prior = (torch.from_numpy(v) for v in rng.normal(size=(3, 6)))
    pairs = [(int(t), int(t) - 1) for t in rng.integers(1, schedule.num_steps, 5)]
    pairs += [tuple(int(v) for v in sorted(rng.choice(schedule.num_steps, 2, replace=False))[::-1]) for _ in range(5)]
    for t, s in pairs:
        (a_t, s_t), (a_s, s_s) = _alpha_sigma(abar[t]), _alpha_sigma(abar[s])
        mean = D.prior_ancestral_step(y_t, y0, prior, a_t, s_t, a_s, s_s)
        noise = torch.ones(6, dtype=torch.float64)
        std = D.prior_ancestral_step(y_t, y0, prior, a_t, s_t, a_s, s_s, noise) - mean
        bayes_mean, bayes_var = _gaussian_posterior(y0, y_t, prior, abar[t], abar[s])
        torch.testing.assert_close(mean, bayes_mean, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(std, torch.full_like(std, math.sqrt(bayes_var)), rtol=1e-9, atol=1e-12)
        if s == t - 1:  # the brief's closed forms (CARD Eq. 9)
            beta, alpha = betas[t], 1 - betas[t]
            g0 = beta * math.sqrt(abar[s]) / (1 - abar[t])
            g1 = (1 - abar[s]) * math.sqrt(alpha) / (1 - abar[t])
            g2 = 1 + (math.sqrt(abar[t]) - 1) * (math.sqrt(alpha) + math.sqrt(abar[s])) / (1 - abar[t])
            torch.testing.assert_close(mean, g0 * y0 + g1 * y_t + g2 * prior, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(std, torch.full_like(std, math.sqrt((1 - abar[s]) * beta / (1 - abar[t]))))


def test_prior_ddim_step_keeps_the_noise_and_eta1_is_ancestral():
    g = torch.Generator().manual_seed(4)
    y0, eps, noise = (torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(3))
    prior = torch.softmax(torch.randn(3, 5, generator=g, dtype=torch.float64), 1)
    (a_t, s_t), (a_s, s_s) = _alpha_sigma(0.3), _alpha_sigma(0.8)
    y_t = D.prior_q_sample(y0, prior, a_t, s_t, eps)
    torch.testing.assert_close(D.prior_ddim_step(y_t, eps, prior, a_t, s_t, a_s, s_s),
                               D.prior_q_sample(y0, prior, a_s, s_s, eps))  # eta = 0: the same eps, one level down
    torch.testing.assert_close(D.prior_ddim_step(y_t, eps, prior, a_t, s_t, a_s, s_s, eta=1.0, noise=noise),
                               D.prior_ancestral_step(y_t, y0, prior, a_t, s_t, a_s, s_s, noise))


def test_per_sample_noise_does_not_depend_on_the_batch():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 3, 8, 8, generator=g)
    seeds = D.content_seeds(x, seed=0)
    assert len(set(seeds)) == 6 and all(0 <= s < 2**63 for s in seeds)
    order = [4, 0, 5, 2]
    assert D.content_seeds(x[order], seed=0) == [seeds[i] for i in order]  # any batch, any position
    assert D.content_seeds(x, seed=1) != seeds  # the trial seed enters
    x2 = x.clone()
    x2[3, 0, 0, 0] += 1e-3
    assert D.content_seeds(x2, seed=0)[3] != seeds[3] and D.content_seeds(x2, seed=0)[:3] == seeds[:3]
    noise = D.per_sample_noise(seeds, (4, 7))
    assert noise.shape == (6, 4, 7)
    assert torch.equal(D.per_sample_noise([seeds[i] for i in order], (4, 7)), noise[order])
    assert torch.equal(D.per_sample_noise(seeds, (1, 7)), noise[:, :1])  # a prefix does not depend on the rest
    assert abs(float(noise.mean())) < 0.2 and abs(float(noise.std()) - 1) < 0.15


def test_guidance_formulas():
    eps_c, eps_u = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.allclose(D.cfg_eps(eps_c, eps_u, 0.0), eps_c)
    assert torch.allclose(D.cfg_eps(eps_c, eps_u, 4.5), 5.5 * eps_c - 4.5 * eps_u)
    w = torch.randn(4, 6, dtype=torch.float64)
    x, y = torch.randn(3, 6, dtype=torch.float64), torch.tensor([0, 3, 1])
    grad = D.classifier_log_prob_grad(lambda inp: inp @ w.T, x, y)
    p = torch.softmax(x @ w.T, 1)
    assert torch.allclose(grad, w[y] - p @ w)  # d/dx log softmax_y(Wx) = W_y - sum_k p_k W_k
    sigma = torch.tensor([0.5, 0.1, 0.9], dtype=torch.float64)
    assert torch.allclose(D.classifier_guided_eps(x, grad, sigma, 2.0), x - sigma[:, None] * 2.0 * grad)


def test_min_snr_weights():
    lam = torch.tensor([math.log(0.5), math.log(5.0), math.log(20.0)])
    assert torch.allclose(D.favero_min_snr_weight(lam), torch.tensor([1 / 1.5, 1 / 6, 1 / 6]))
    assert torch.allclose(D.min_snr_weight(lam, 5, "eps"), torch.tensor([1.0, 1.0, 0.25]))
    assert torch.allclose(D.min_snr_weight(lam, 5, "v"), torch.tensor([0.5 / 1.5, 5 / 6, 5 / 21]))


def test_ema_follows_closed_form():
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.9, update_every=2, start_step=1)
    with torch.no_grad():
        model.weight.fill_(3.0)
    for step in range(1, 7):  # updates at steps 2, 4, 6 only
        ema.update(model, step)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 3.0 + (1.0 - 3.0) * 0.9**3))
    assert not ema.module.weight.requires_grad


def test_unet_shapes_conditioning_and_external_table():
    torch.manual_seed(0)
    net = UNet(3, channels=8, channel_mult=(1, 2, 2), attention_resolutions=(7,), emb_dim=16, num_classes=3,
               image_size=28)
    for p in net.parameters():  # residual branches and the output conv start at zero
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 3, 28, 28)
    out = net(x, torch.tensor([0.3, -2.0]), torch.tensor([0, 3]))  # 3 = the null class
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, torch.tensor([0.3, -2.0]), torch.tensor([1, 3])))
    table = torch.randn(3, 5)
    ext = UNet(1, channels=8, channel_mult=(1, 2), emb_dim=16, class_table=table, image_size=14)
    assert ext.class_emb is None and ext.class_embedding(torch.tensor([0, 3])).shape == (2, 16)
    assert torch.allclose(ext.class_embedding(torch.tensor([2])), ext.class_proj(table[2:3]))
    z = torch.randn(2, 1, 14, 14)
    assert torch.allclose(ext(z, 0.5, torch.tensor([1, 2])), ext(z, 0.5, class_emb=table[[1, 2]]))
    with pytest.raises(ValueError, match="class_table"):
        UNet(1, num_classes=4, class_table=table)
    emb = sinusoidal_embedding(torch.tensor([0.0, 1.0]), 8)
    assert torch.allclose(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))


def test_haar_wavelet_round_trip():
    x = torch.randn(2, 3, 6, 4)
    y = haar_dwt(x)
    assert y.shape == (2, 12, 3, 2)
    assert torch.allclose(y[:, :3], torch.nn.functional.avg_pool2d(x, 2), atol=1e-6)
    assert torch.allclose(haar_idwt(y), x, atol=1e-6)
    with pytest.raises(ValueError, match="even"):
        haar_dwt(torch.randn(1, 1, 5, 4))


def test_onnx_net_stands_in_for_a_network_with_the_loops_arguments(tmp_path):
    """``export_net`` + ``OnnxNet``: positional arguments as the network takes them, a scalar timestep expanded
    to the batch (batch 1 included), int64 inputs refusing non-integral values, the caller's dtype back, and an
    input the network ignores refused at export (the arguments would no longer line up)."""
    pytest.importorskip("onnxruntime")
    from harness.toolkit.nn.onnx import OnnxNet, export_net

    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, x, t, y=None):
            return self.w * x * (t.float() + 1).view(-1, 1) + (0 if y is None else y.view(-1, 1))

    net = Scale()
    path = export_net(net, tmp_path / "scale.onnx", {"x": torch.ones(2, 3), "t": torch.tensor([1, 2])})
    onnx = OnnxNet(path, threads=1)
    x = torch.randn(4, 3)
    torch.testing.assert_close(onnx(x, torch.tensor([0, 1, 2, 3])), net(x, torch.tensor([0, 1, 2, 3])))
    torch.testing.assert_close(onnx(x, torch.tensor(5)), net(x, torch.full((4,), 5)))  # a scalar timestep
    torch.testing.assert_close(onnx(x[:1], torch.tensor(5)), net(x[:1], torch.tensor([5])))  # batch 1, 0-d t
    torch.testing.assert_close(onnx(x, 3.0, None), net(x, torch.full((4,), 3)))  # None skipped, 3.0 is whole
    assert onnx(x.double(), 1).dtype == torch.float64
    with pytest.raises(ValueError, match="int64"):
        onnx(x, torch.full((4,), 2.5))
    with pytest.raises(ValueError, match="traced away"):
        export_net(net, tmp_path / "unused.onnx", {"x": torch.ones(2, 3), "t": torch.tensor([1, 2]),
                                                   "z": torch.ones(2, 3)}, call=lambda n, x, t, z: n(x, t))
