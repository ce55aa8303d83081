"""Noise schedules: discrete beta schedules and the continuous shifted-cosine log-SNR schedule.

Every schedule describes a variance-preserving process ``z_t = alpha_t x_0 + sigma_t eps`` with
``alpha_t^2 + sigma_t^2 = 1``. Discrete schedules (Ho et al. 2020) are given by ``betas`` with
``alphas_cumprod = prod_s (1 - beta_s)`` (their ``alpha-bar_t``), so ``alpha_t = sqrt(alpha-bar_t)``.
The continuous schedule is given by its log signal-to-noise ratio ``lambda(t) = log(alpha_t^2 / sigma_t^2)``
(Kingma et al. 2021), from which ``alpha_t^2 = sigmoid(lambda)`` and ``sigma_t^2 = sigmoid(-lambda)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linear beta schedule of DDPM (Ho et al. 2020, Sec. 4): beta_1 = 1e-4 ... beta_T = 0.02 (float64)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; found {num_steps}")
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule of Nichol & Dhariwal 2021, Eq. 17: alpha-bar_t = f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) pi/2);
    beta_t = 1 - alpha-bar_t / alpha-bar_{t-1}, clipped at ``max_beta`` (their Sec. 3.2)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; found {num_steps}")
    steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """alpha-bar_t = prod_{s<=t} (1 - beta_s) (Ho et al. 2020, Eq. 4)."""
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass(frozen=True)
class DiscreteSchedule:
    """A discrete schedule over timesteps 0 ... T-1 (index t means the paper's step t+1).

    ``DiscreteSchedule.make("linear" | "cosine", T)`` builds one; ``alpha_sigma(t)`` gives the
    coefficients of q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I) for integer timesteps.
    """

    betas: torch.Tensor

    @staticmethod
    def make(kind: str = "linear", num_steps: int = 1000, **kwargs) -> DiscreteSchedule:
        if kind == "linear":
            return DiscreteSchedule(linear_betas(num_steps, **kwargs))
        if kind == "cosine":
            return DiscreteSchedule(cosine_betas(num_steps, **kwargs))
        raise ValueError(f"schedule kind must be 'linear' or 'cosine'; found {kind!r}")

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return alphas_cumprod(self.betas)

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(alpha-bar_t), sqrt(1 - alpha-bar_t)) as float32 for integer timesteps ``t``."""
        abar = self.alphas_cumprod.to(t.device)[t.long()]
        return abar.sqrt().float(), (1 - abar).sqrt().float()

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        """lambda_t = log(alpha-bar_t / (1 - alpha-bar_t)) for integer timesteps."""
        abar = self.alphas_cumprod.to(t.device)[t.long()]
        return (abar.log() - (-abar).log1p()).float()


@dataclass(frozen=True)
class ShiftedCosineLogSNR:
    """The continuous shifted-cosine log-SNR schedule (Hoogeboom et al. 2023; Favero et al. 2025, brief Sec. 3.3).

        lambda(t) = -2 log tan(a + t (b - a)) + shift,      t in [0, 1],
        a = atan(exp(-lambda_max / 2)),  b = atan(exp(-lambda_min / 2)),
        shift = 2 log(base_d / image_d),  lambda_max/min = +-15 + log(base_d / image_d)  (as in the brief).

    With the defaults (base_d = 64, image_d = 256) this is the schedule of Favero et al.; lambda falls
    monotonically from lambda(0) (almost clean) to lambda(1) (almost pure noise).
    """

    logsnr_max: float = 15.0
    logsnr_min: float = -15.0
    base_d: int = 64
    image_d: int = 256

    @property
    def shift(self) -> float:
        return 2.0 * math.log(self.base_d / self.image_d)

    @property
    def limits(self) -> tuple[float, float]:
        """(a, b) of the tan parametrisation, from the shifted limits lambda_max/min +- 15 + log(base_d/image_d)."""
        offset = math.log(self.base_d / self.image_d)
        a = math.atan(math.exp(-(self.logsnr_max + offset) / 2))
        b = math.atan(math.exp(-(self.logsnr_min + offset) / 2))
        return a, b

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        """lambda(t) for continuous t in [0, 1] (any shape)."""
        a, b = self.limits
        return -2.0 * torch.log(torch.tan(a + t * (b - a))) + self.shift

    def t_from_logsnr(self, logsnr: torch.Tensor) -> torch.Tensor:
        """The inverse of ``logsnr``: t such that lambda(t) = logsnr."""
        a, b = self.limits
        return (torch.atan(torch.exp(-(logsnr - self.shift) / 2)) - a) / (b - a)

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t) with alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda)."""
        return alpha_sigma_from_logsnr(self.logsnr(t))


def alpha_sigma_from_logsnr(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha = sqrt(sigmoid(lambda)), sigma = sqrt(sigmoid(-lambda)) (variance preserving, Kingma et al. 2021)."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()
