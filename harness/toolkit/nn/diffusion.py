"""Diffusion maths shared by the image-diffusion methods: noising, prediction types, samplers, guidance.

Everything is written in the (alpha, sigma) form of a variance-preserving process,
``z_t = alpha_t x_0 + sigma_t eps`` with ``alpha_t^2 + sigma_t^2 = 1``, so it serves discrete schedules
(``alpha_t = sqrt(alpha-bar_t)``) and continuous log-SNR schedules alike. ``alpha`` and ``sigma`` may be
scalars or per-sample tensors of shape (B,); they are broadcast over the image dimensions.

Prediction types (Salimans & Ho 2022, Sec. 4): ``eps`` (noise), ``x0`` (clean image) and
``v = alpha eps - sigma x_0``.

A prior in the mean (CARD, Han et al. 2022, Eq. 2): ``y_t = alpha_t y_0 + (1 - alpha_t) y_hat + sigma_t eps`` is
the process above on the shifted variable ``z = y - y_hat``; the ``prior_*`` functions apply the forward
process, the eps -> y0 conversion and the DDPM / DDIM steps to it. Reproducible noise: ``content_seeds`` and
``per_sample_noise`` give each sample its own noise, so a sample's result depends neither on its batch
nor on its position in it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch


def _b(coef, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or (B,) coefficient over the trailing dimensions of ``like``."""
    coef = torch.as_tensor(coef, dtype=like.dtype, device=like.device)
    return coef.reshape(coef.shape + (1,) * (like.dim() - coef.dim())) if coef.dim() else coef


def q_sample(x0: torch.Tensor, alpha, sigma, noise: torch.Tensor) -> torch.Tensor:
    """Forward noising q(z_t | x_0): z_t = alpha_t x_0 + sigma_t eps (Ho et al. 2020, Eq. 4)."""
    return _b(alpha, x0) * x0 + _b(sigma, x0) * noise


# ------------------------------------------------------------------------------- prediction types


def eps_to_x0(z: torch.Tensor, eps: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """x_0 = (z - sigma eps) / alpha (Ho et al. 2020, Eq. 15)."""
    return (z - _b(sigma, z) * eps) / _b(alpha, z)


def x0_to_eps(z: torch.Tensor, x0: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """eps = (z - alpha x_0) / sigma."""
    return (z - _b(alpha, z) * x0) / _b(sigma, z)


def v_target(x0: torch.Tensor, eps: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """v = alpha eps - sigma x_0 (Salimans & Ho 2022, Sec. 4)."""
    return _b(alpha, x0) * eps - _b(sigma, x0) * x0


def v_to_eps(z: torch.Tensor, v: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """eps = sigma z + alpha v (Favero et al.: eps-hat = sigma z + alpha v-hat)."""
    return _b(sigma, z) * z + _b(alpha, z) * v


def v_to_x0(z: torch.Tensor, v: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """x_0 = alpha z - sigma v (Salimans & Ho 2022, Sec. 4)."""
    return _b(alpha, z) * z - _b(sigma, z) * v


def to_eps(prediction: str, z: torch.Tensor, out: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """Convert a network output of type ``prediction`` ("eps" | "x0" | "v") to an eps prediction."""
    if prediction == "eps":
        return out
    if prediction == "v":
        return v_to_eps(z, out, alpha, sigma)
    if prediction == "x0":
        return x0_to_eps(z, out, alpha, sigma)
    raise ValueError(f"prediction must be 'eps', 'x0' or 'v'; found {prediction!r}")


# -------------------------------------------------------------------------------------- samplers


def ancestral_step(z_t, x0_hat, alpha_t, sigma_t, alpha_s, sigma_s, noise=None) -> torch.Tensor:
    """One ancestral (DDPM) step from time t to an earlier time s < t: a draw from q(z_s | z_t, x_0 = x0_hat).

    With alpha_{t|s} = alpha_t / alpha_s and sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2
    (Kingma et al. 2021, Eqs. 2-3), the posterior is
        mean = alpha_{t|s} sigma_s^2 / sigma_t^2 z_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x_0,
        var  = sigma_{t|s}^2 sigma_s^2 / sigma_t^2,
    which for a discrete schedule is Ho et al. 2020, Eqs. 6-7. ``noise=None`` returns the mean.
    """
    a_t, s_t, a_s, s_s = (_b(c, z_t) for c in (alpha_t, sigma_t, alpha_s, sigma_s))
    a_ts = a_t / a_s
    var_ts = s_t**2 - a_ts**2 * s_s**2
    mean = a_ts * s_s**2 / s_t**2 * z_t + a_s * var_ts / s_t**2 * x0_hat
    if noise is None:
        return mean
    return mean + (var_ts * s_s**2 / s_t**2).clamp(min=0).sqrt() * noise


def ddpm_step(x_t, eps_hat, t: int, alphas_cumprod: torch.Tensor, noise=None, clip: float | None = 1.0):
    """Ancestral DDPM step t -> t-1 on a discrete schedule (Ho et al. 2020, Algorithm 2, via Eq. 7).

    ``t`` is an index into ``alphas_cumprod``; at t = 0 the clean estimate x0_hat is returned.
    """
    abar_t = alphas_cumprod[t]
    a_t, s_t = abar_t.sqrt(), (1 - abar_t).sqrt()
    x0_hat = eps_to_x0(x_t, eps_hat, a_t, s_t)
    if clip is not None:
        x0_hat = x0_hat.clamp(-clip, clip)
    if t == 0:
        return x0_hat
    abar_s = alphas_cumprod[t - 1]
    return ancestral_step(x_t, x0_hat, a_t, s_t, abar_s.sqrt(), (1 - abar_s).sqrt(), noise)


def ddim_step(z_t, eps_hat, alpha_t, sigma_t, alpha_s, sigma_s, eta: float = 0.0, noise=None,
              clip: float | None = None) -> torch.Tensor:
    """DDIM step t -> s (Song et al. 2021, Eq. 12), with
    sigma_eta = eta sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t/abar_s)  (their Eq. 16):

        z_s = alpha_s x0_hat + sqrt(sigma_s^2 - sigma_eta^2) eps_hat + sigma_eta noise.

    eta = 0 is deterministic (``noise`` is then ignored); eta = 1 is the ancestral DDPM step.
    """
    a_t, s_t, a_s, s_s = (_b(c, z_t) for c in (alpha_t, sigma_t, alpha_s, sigma_s))
    x0_hat = eps_to_x0(z_t, eps_hat, a_t, s_t)
    if clip is not None:
        x0_hat = x0_hat.clamp(-clip, clip)
        eps_hat = x0_to_eps(z_t, x0_hat, a_t, s_t)
    sigma_eta = eta * (s_s**2 / s_t**2).sqrt() * (1 - a_t**2 / a_s**2).clamp(min=0).sqrt()
    z_s = a_s * x0_hat + (s_s**2 - sigma_eta**2).clamp(min=0).sqrt() * eps_hat
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs a noise tensor")
        z_s = z_s + sigma_eta * noise
    return z_s


def respace(num_steps: int, num_sample_steps: int) -> torch.Tensor:
    """Evenly spaced subset of the timesteps 0 ... T-1, descending, always ending at 0 (Nichol & Dhariwal 2021,
    Sec. 4: sampling with K < T steps)."""
    if not 1 <= num_sample_steps <= num_steps:
        raise ValueError(f"num_sample_steps must be in 1..{num_steps}; found {num_sample_steps}")
    steps = torch.linspace(0, num_steps - 1, num_sample_steps).round().long()
    return steps.flip(0)


def leading_timesteps(num_steps: int, num_sample_steps: int) -> torch.Tensor:
    """The first ``num_sample_steps`` timesteps of a ``num_steps`` schedule, descending: n-1, ..., 0. The test
    chain of the CARD / DiffMIC code, which starts at index n-1 of the training schedule (not at T-1) and steps
    t -> t-1 with the schedule's own betas."""
    if not 1 <= num_sample_steps <= num_steps:
        raise ValueError(f"num_sample_steps must be in 1..{num_steps}; found {num_sample_steps}")
    return torch.arange(num_sample_steps - 1, -1, -1)


def respaced_betas(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Betas of the respaced chain: beta_i = 1 - abar_{t_i} / abar_{t_{i-1}} over ascending ``timesteps``
    (Nichol & Dhariwal 2021, Sec. 4), so the respaced chain has the same alpha-bar at the kept steps."""
    abar = alphas_cumprod[timesteps.sort().values]
    prev = torch.cat([abar.new_ones(1), abar[:-1]])
    return 1 - abar / prev


# ------------------------------------------------------------------ a prior in the mean (CARD)


def prior_q_sample(y0: torch.Tensor, prior: torch.Tensor, alpha, sigma, noise: torch.Tensor) -> torch.Tensor:
    """CARD's forward process (Han et al. 2022, Eq. 2; DiffMIC Eq. 2): the prior ``y_hat`` in the mean,
    y_t = alpha_t y_0 + (1 - alpha_t) y_hat + sigma_t eps, i.e. ``q_sample`` on y - y_hat. At alpha_T -> 0,
    y_T ~ N(y_hat, I)."""
    return prior + q_sample(y0 - prior, alpha, sigma, noise)


def prior_eps_to_y0(y_t: torch.Tensor, eps: torch.Tensor, prior: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """y_0 = (y_t - (1 - alpha_t) y_hat - sigma_t eps) / alpha_t (the forward process solved for y_0)."""
    return prior + eps_to_x0(y_t - prior, eps, alpha, sigma)


def prior_ancestral_step(y_t, y0_hat, prior, alpha_t, sigma_t, alpha_s, sigma_s, noise=None) -> torch.Tensor:
    """A draw from q(y_s | y_t, y_0 = y0_hat, y_hat): ``ancestral_step`` on y - y_hat. Written in y it is CARD's
    Eq. 9, mean = gamma0 y0_hat + gamma1 y_t + gamma2 y_hat with (adjacent steps, alpha-bar = alpha^2)
    gamma0 = beta_t sqrt(abar_s) / (1 - abar_t), gamma1 = (1 - abar_s) sqrt(alpha_t) / (1 - abar_t),
    gamma2 = 1 - gamma0 - gamma1, and variance beta-tilde = (1 - abar_s) beta_t / (1 - abar_t)."""
    return prior + ancestral_step(y_t - prior, y0_hat - prior, alpha_t, sigma_t, alpha_s, sigma_s, noise)


def prior_ddim_step(y_t, eps_hat, prior, alpha_t, sigma_t, alpha_s, sigma_s, eta: float = 0.0,
                    noise=None) -> torch.Tensor:
    """``ddim_step`` on y - y_hat: y_s = alpha_s y0_hat + (1 - alpha_s) y_hat + sqrt(sigma_s^2 - sigma_eta^2) eps_hat
    + sigma_eta noise (CARD's DDIM sampler)."""
    return prior + ddim_step(y_t - prior, eps_hat, alpha_t, sigma_t, alpha_s, sigma_s, eta=eta, noise=noise)


# ------------------------------------------------------------------------- reproducible noise


def content_seeds(x: torch.Tensor, seed: int) -> list[int]:
    """One 63-bit seed per sample of ``x`` (B, ...): a hash of the sample's values and ``seed``. The same
    sample gets the same seed in any batch and at any position (and in any runtime that feeds it the same
    float32 values)."""
    values = x.detach().to("cpu", torch.float32).contiguous().reshape(x.shape[0], -1).numpy()
    salt = int(seed).to_bytes(8, "little", signed=True)
    return [int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8, key=salt).digest(), "little") >> 1
            for row in values]


def per_sample_noise(seeds: Sequence[int], shape: Sequence[int], dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise (B, *shape) on the CPU, sample b drawn from its own generator seeded with
    ``seeds[b]``, one ``shape[1:]`` slice after another: the first k slices of a sample are the same whatever
    ``shape[0]`` is (e.g. chain 0 of one chain or of eight)."""
    out = torch.empty(len(seeds), *shape, dtype=dtype)
    generator = torch.Generator()
    for b, seed in enumerate(seeds):
        generator.manual_seed(int(seed))
        for k in range(shape[0]):
            out[b, k] = torch.randn(*shape[1:], generator=generator, dtype=dtype)
    return out


# ------------------------------------------------------------------------------ DDIM sampling


def ddim_sample(eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], z_T: torch.Tensor,
                alphas_cumprod: torch.Tensor, num_sample_steps: int, eta: float = 0.0,
                generator: torch.Generator | None = None, clip: float | None = 1.0) -> torch.Tensor:
    """DDIM sampling (Song et al. 2021) from noise ``z_T`` over :func:`respace`'s evenly spaced timesteps of
    the discrete schedule ``alphas_cumprod``: ``eps_fn(z_t, t)`` (t: a (B,) long tensor of timestep indices)
    gives the eps prediction (guided or not) and :func:`ddim_step` moves to the next kept timestep; the last
    step (from t = 0) returns the clean estimate. x0 estimates are clipped to [-clip, clip]."""
    abar = alphas_cumprod.to(device=z_T.device, dtype=torch.float64)
    steps = respace(len(abar), num_sample_steps).tolist()
    z = z_T
    for i, t in enumerate(steps):
        a_t, s_t = abar[t].sqrt().float(), (1 - abar[t]).sqrt().float()
        if i + 1 < len(steps):
            s = steps[i + 1]
            a_s, s_s = abar[s].sqrt().float(), (1 - abar[s]).sqrt().float()
        else:
            a_s, s_s = torch.ones((), device=z.device), torch.zeros((), device=z.device)
        eps = eps_fn(z, torch.full((z.shape[0],), t, dtype=torch.long, device=z.device))
        noise = torch.randn(z.shape, generator=generator).to(z.device) if eta > 0 else None
        z = ddim_step(z, eps, a_t, s_t, a_s, s_s, eta=eta, noise=noise, clip=clip)
    return z


# -------------------------------------------------------------------------------------- guidance


def cfg_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, Eq. 6): eps~ = (1 + w) eps_c - w eps_null."""
    return (1 + w) * eps_cond - w * eps_uncond


def cfg_eps_batched(net: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], z_t: torch.Tensor,
                    t: torch.Tensor, cond: torch.Tensor, null: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance with the conditional and the null pass as **one** network call on a batch of
    2B rows (z_t twice; ``cond`` then ``null``), split and combined by :func:`cfg_eps`.

    ``net(z, t, c)`` is any eps-predicting network; ``t`` has one entry per sample (B,), ``cond`` and ``null``
    are (B, ...) conditionings (labels, vectors). w = 0 gives the conditional model.
    """
    b = z_t.shape[0]
    out = net(torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([cond, null]))
    return cfg_eps(out[:b], out[b:], w)


def classifier_log_prob_grad(classifier: Callable[..., torch.Tensor], x_t: torch.Tensor, y: torch.Tensor,
                             *args, **kwargs) -> torch.Tensor:
    """grad_{x_t} log p(y | x_t) of any classifier returning logits (B, K) (Dhariwal & Nichol 2021, Sec. 4).

    Extra ``args``/``kwargs`` are passed to the classifier (e.g. the timestep of a noise-aware classifier).
    """
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        log_probs = torch.log_softmax(classifier(x, *args, **kwargs), dim=1)
        selected = log_probs.gather(1, y.view(-1, 1).long()).sum()
        return torch.autograd.grad(selected, x)[0]


def classifier_guided_eps(eps: torch.Tensor, grad: torch.Tensor, sigma, scale: float) -> torch.Tensor:
    """Score correction for DDIM (Dhariwal & Nichol 2021, Algorithm 2 / Eq. 14):
    eps-hat = eps - sqrt(1 - abar_t) s grad log p(y | x_t), with sigma_t = sqrt(1 - abar_t)."""
    return eps - _b(sigma, eps) * scale * grad


# --------------------------------------------------------------------------------- loss weights


def min_snr_weight(logsnr: torch.Tensor, gamma: float = 5.0, prediction: str = "eps") -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023, Eq. 8/Sec. 3.4) for the loss written on ``prediction``:
    eps: min(snr, gamma) / snr;  x0: min(snr, gamma);  v: min(snr, gamma) / (snr + 1)."""
    snr = logsnr.exp()
    clipped = snr.clamp(max=gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "x0":
        return clipped
    if prediction == "v":
        return clipped / (snr + 1)
    raise ValueError(f"prediction must be 'eps', 'x0' or 'v'; found {prediction!r}")


def favero_min_snr_weight(logsnr: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """The weight of Favero et al. 2025 (brief Sec. 3.4) on the eps-space error of a v-prediction model:
    w = 1 / (1 + min(e^lambda, gamma))."""
    return 1.0 / (1.0 + logsnr.exp().clamp(max=gamma))
