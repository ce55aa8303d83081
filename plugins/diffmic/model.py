"""DiffMIC (Yang et al., MICCAI 2023): the model, its training and its sampler, read next to the paper.

Sections (paper / methods-brief section 1):

1. Label-space diffusion (CARD): the schedule, the forward process with the prior in the mean, the
   reverse-step coefficients gamma0..2 and beta-tilde, and the samplers (truncated / respaced / DDIM).
2. Encoders: timm CNNs (truncated before pooling) or a tiny CNN for CPU profiles.
3. DCG, the dual-granularity conditional guidance: the global branch (bias-free 1x1 conv saliency map,
   global logits by spatial mean), GMIC-style ROI selection and cropping, the local branch with
   gated-attention MIL pooling, and the priors.
4. The denoiser epsilon_theta(x, y_t, p, t): the Hadamard-product MLP with learned per-step gains.
5. Training losses: antithetic timesteps, the fused-prior noise MSE, the MMD regularisers.
6. The predictor module (inference, uncertainty) and the explanation images.
7. ``fit`` for the four Table 2 variants (basic / c1 / c2 / full).

Model selection uses ``data.val`` only (the official code selects on the test set).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness import HarnessError, Predictor
from harness.toolkit import backbones
from harness.toolkit.training import (
    Softmax,
    augment,
    lr_factor,
    make_optimizer,
    normalisation,
    normalise,
    to_uint8_tensor,
    train_classifier,
)

VARIANTS = ("basic", "c1", "c2", "full")
SAMPLERS = ("truncated", "respaced", "ddim")
READOUTS = ("argmax", "vote")


# =============================================================================================
# 1. Label-space diffusion (CARD, DiffMIC Eq. 1-3)
# =============================================================================================


@dataclass(frozen=True)
class Step:
    """One reverse step: from timestep index ``t`` (cumulative alpha ``ab_t``) to ``ab_prev``.
    ``ab_prev is None`` marks the last step, which returns the y0 estimate with no added noise."""

    t: int
    ab_t: float
    ab_prev: float | None


def posterior_coefficients(ab_t: float, ab_prev: float) -> tuple[float, float, float, float]:
    """gamma0, gamma1, gamma2, beta_tilde of q(y_{t-1} | y_t, y_0, y_hat) (CARD Eq. 9):
    mean = gamma0 * y0 + gamma1 * y_t + gamma2 * y_hat, variance = beta_tilde.

    ``ab_prev`` is the cumulative alpha of the state we step to; with respacing the step's own
    alpha is ab_t / ab_prev."""
    alpha = ab_t / ab_prev
    beta = 1.0 - alpha
    gamma0 = beta * math.sqrt(ab_prev) / (1.0 - ab_t)
    gamma1 = (1.0 - ab_prev) * math.sqrt(alpha) / (1.0 - ab_t)
    gamma2 = 1.0 + (math.sqrt(ab_t) - 1.0) * (math.sqrt(alpha) + math.sqrt(ab_prev)) / (1.0 - ab_t)
    beta_tilde = (1.0 - ab_prev) * beta / (1.0 - ab_t)
    return gamma0, gamma1, gamma2, beta_tilde


class CardSchedule:
    """A beta schedule and the CARD forward process y_t = sqrt(ab) y0 + (1 - sqrt(ab)) y_hat + sqrt(1-ab) eps."""

    def __init__(self, betas: torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise HarnessError(f"betas must be a 1-D tensor in (0, 1); found shape {tuple(betas.shape)}")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = torch.cumprod(self.alphas, 0)

    @classmethod
    def linear(cls, timesteps: int, beta_start: float, beta_end: float) -> CardSchedule:
        return cls(torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64))

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    def _ab(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.alpha_bars.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, y0: torch.Tensor, prior: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process at timestep indices ``t`` (N,): the prior is in the mean (DiffMIC Eq. 2)."""
        ab = self._ab(t, y0)
        return ab.sqrt() * y0 + (1 - ab.sqrt()) * prior + (1 - ab).sqrt() * noise

    def steps(self, n: int, kind: str = "truncated") -> list[Step]:
        """The reverse chain of ``n`` denoiser calls.

        - ``truncated`` (the official code, and the reported numbers): t = n-1, ..., 1 on the *training*
          schedule's indices, stepping t -> t-1, then the y0 step at t = 0. The start y = y_hat + N(0, I)
          does not match the forward marginal at t = n-1 < T-1: that is what the code does.
        - ``respaced`` / ``ddim``: n evenly spaced indices from 0 to T-1, stepping between neighbours with
          the respaced alphas (ab_t / ab_prev), so the chain starts where the forward process ends.
        """
        if kind not in SAMPLERS:
            raise HarnessError(f"sampler must be one of {', '.join(SAMPLERS)}; found {kind!r}")
        T = self.timesteps
        if not 1 <= n <= T:
            raise HarnessError(f"test_timesteps must be in [1, {T}] (the training schedule's length); found {n}")
        ab = self.alpha_bars.tolist()
        if kind == "truncated":
            grid = list(range(n))
        else:
            grid = sorted({int(round(v)) for v in np.linspace(0, T - 1, n)})
        out = [Step(grid[i], ab[grid[i]], ab[grid[i - 1]]) for i in range(len(grid) - 1, 0, -1)]
        out.append(Step(grid[0], ab[grid[0]], None))
        return out


def predict_y0(y_t: torch.Tensor, prior: torch.Tensor, eps: torch.Tensor, ab_t: float) -> torch.Tensor:
    """y0 estimate from the predicted noise (the forward process solved for y0)."""
    return (y_t - (1 - math.sqrt(ab_t)) * prior - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)


# =============================================================================================
# 2. Encoders
# =============================================================================================


class TinyCNN(nn.Module):
    """Five 3x3 conv-BN-ReLU layers (32, 64, 64, 128, 128 channels; two stride-2): a map at 1/4 size.
    A stand-in for the ResNets in CPU profiles (a 28 px image gives a 7x7 map, like 224 px in a ResNet)."""

    def __init__(self, in_chans: int):
        super().__init__()
        layers, c = [], in_chans
        for width, stride in ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1)):
            layers += [nn.Conv2d(c, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c = width
        self.body = nn.Sequential(*layers)
        self.num_features = c

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Encoder(nn.Module):
    """A CNN truncated before pooling: (N, C, H, W) -> feature map (N, D, h, w)."""

    def __init__(self, name: str, *, in_chans: int, image_size: int, pretrained: bool):
        super().__init__()
        self.pretrained_loaded = False
        if name == "tinycnn":
            self.net = TinyCNN(in_chans)
        else:
            backbone = backbones.create(name, num_classes=0, in_chans=in_chans, image_size=image_size,
                                        pretrained=pretrained)
            self.net, self.pretrained_loaded = backbone.model, backbone.pretrained_loaded
        self.num_features = int(self.net.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.net.forward_features(x)
        if fmap.dim() != 4:
            raise HarnessError(f"DiffMIC needs a CNN backbone with a spatial feature map; got shape {tuple(fmap.shape)}")
        return fmap


# =============================================================================================
# 3. DCG: dual-granularity conditional guidance (paper Sec. 2.1)
# =============================================================================================


def select_rois(saliency: torch.Tensor, k: int) -> torch.Tensor:
    """GMIC-style ROI selection on class saliency maps (N, C, h, w) -> cells (N, k, 2) as (row, col).

    Each class map is min-max normalised, the maps are summed into one map A, then k times: take the
    argmax cell of A and remove it (the code zeroes it; we set it to -inf so that a cell is never taken
    twice even when the rest of A is zero). The crop window is one cell (32 px at 224 / 7)."""
    n, _, h, w = saliency.shape
    if not 1 <= k <= h * w:
        raise HarnessError(f"num_crops must be in [1, {h * w}] for a {h}x{w} saliency map; found {k}")
    s = saliency.detach().flatten(2)
    lo, hi = s.min(2, keepdim=True).values, s.max(2, keepdim=True).values
    a = ((s - lo) / (hi - lo).clamp_min(1e-12)).sum(1)  # (N, h*w)
    cells = []
    rows = torch.arange(n, device=a.device)
    for _ in range(k):
        idx = a.argmax(1)
        cells.append(idx)
        a[rows, idx] = float("-inf")
    flat = torch.stack(cells, 1)
    return torch.stack([flat // w, flat % w], 2)


def roi_corners(cells: torch.Tensor, grid: tuple[int, int], image: tuple[int, int], crop: int) -> torch.Tensor:
    """Cell (i, j) -> upper-left pixel (round(i H / h), round(j W / w)), kept inside the image: (N, k, 2)."""
    (h, w), (height, width) = grid, image
    top = torch.round(cells[..., 0].double() * height / h).long().clamp(0, height - crop)
    left = torch.round(cells[..., 1].double() * width / w).long().clamp(0, width - crop)
    return torch.stack([top, left], -1)


def crop_rois(x: torch.Tensor, corners: torch.Tensor, crop: int) -> torch.Tensor:
    """Batched crops: images (N, C, H, W), corners (N, k, 2) -> (N, k, C, crop, crop), no Python loop."""
    offsets = torch.arange(crop, device=x.device)
    rows = (corners[..., 0, None] + offsets)[:, :, :, None]  # (N, k, crop, 1)
    cols = (corners[..., 1, None] + offsets)[:, :, None, :]  # (N, k, 1, crop)
    batch = torch.arange(x.shape[0], device=x.device)[:, None, None, None]
    patches = x.permute(0, 2, 3, 1)[batch, rows, cols]  # (N, k, crop, crop, C)
    return patches.permute(0, 1, 4, 2, 3)


class GatedAttentionMIL(nn.Module):
    """a_k = w^T [tanh(V h_k) * sigmoid(U h_k)], alpha = softmax_k(a); all bias-free (Ilse et al. 2018)."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.V = nn.Linear(dim, hidden, bias=False)
        self.U = nn.Linear(dim, hidden, bias=False)
        self.w = nn.Linear(hidden, 1, bias=False)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.w(torch.tanh(self.V(h)) * torch.sigmoid(self.U(h))).squeeze(-1)  # (N, k)
        alpha = torch.softmax(a, dim=1)
        return (alpha.unsqueeze(-1) * h).sum(1), alpha


class DCG(nn.Module):
    """Global branch -> saliency S and logits y_g; ROIs -> local branch -> logits y_l.

    With ``local=False`` (ablation C1) only the global branch exists: a plain classifier (a backbone,
    global average pooling and a bias-free linear layer, since the mean of a 1x1 conv is the 1x1 conv
    of the mean)."""

    def __init__(self, *, num_classes: int, in_chans: int, image_size: int, global_backbone: str,
                 local_backbone: str, pretrained: bool, num_crops: int, crop_size: int, crop_channels: str,
                 attention_dim: int, local: bool = True):
        super().__init__()
        if crop_channels not in ("first", "all"):
            raise HarnessError(f"crop_channels must be 'first' or 'all'; found {crop_channels!r}")
        if not 1 <= crop_size <= image_size:
            raise HarnessError(f"crop size must be in [1, {image_size}] px; found {crop_size} (check crop_fraction)")
        self.global_encoder = Encoder(global_backbone, in_chans=in_chans, image_size=image_size, pretrained=pretrained)
        self.saliency = nn.Conv2d(self.global_encoder.num_features, num_classes, 1, bias=False)
        self.local = local
        self.num_crops, self.crop_size, self.crop_channels = num_crops, crop_size, crop_channels
        self.pretrained_loaded = self.global_encoder.pretrained_loaded
        if local:
            # the local backbone keeps the stem that suits the full image size (an ImageNet ResNet-50 on
            # 32 px crops of a 224 px image, as in the code), hence image_size and not crop_size
            local_in = 3 if crop_channels == "first" else in_chans
            self.local_encoder = Encoder(local_backbone, in_chans=local_in, image_size=image_size,
                                         pretrained=pretrained)
            dim = self.local_encoder.num_features
            self.attention = GatedAttentionMIL(dim, attention_dim)
            self.local_head = nn.Linear(dim, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.saliency(self.global_encoder(x))  # (N, C, h, w)
        out = {"saliency": s, "y_global": s.mean((2, 3))}  # top-t pooling with t = 100%
        if not self.local:
            return out
        cells = select_rois(s, self.num_crops)
        corners = roi_corners(cells, s.shape[-2:], x.shape[-2:], self.crop_size)
        crops = crop_rois(x, corners, self.crop_size)  # (N, k, C, c, c)
        if self.crop_channels == "first":
            crops = crops[:, :, :1].expand(-1, -1, 3, -1, -1)  # channel 0 replicated, as in the code
        n, k = crops.shape[:2]
        h = self.local_encoder(crops.reshape(n * k, *crops.shape[2:])).mean((2, 3)).view(n, k, -1)
        pooled, alpha = self.attention(h)
        out.update(y_local=self.local_head(pooled), corners=corners, attention=alpha)
        return out

    def fused_logits(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        return (out["y_global"] + out["y_local"]) / 2 if self.local else out["y_global"]


def priors(dcg: DCG, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fused prior y_hat = softmax((y_g + y_l) / 2) and the branch priors softmax(y_g), softmax(y_l)."""
    p = {"fused": torch.softmax(dcg.fused_logits(out), 1), "global": torch.softmax(out["y_global"], 1)}
    if dcg.local:
        p["local"] = torch.softmax(out["y_local"], 1)
    return p


# =============================================================================================
# 4. The denoiser epsilon_theta(x, y_t, p, t) (paper Sec. 2.2, Fig. 2)
# =============================================================================================


class Denoiser(nn.Module):
    """e = BN(Linear(encoder(x))); h1 = softplus(BN(g1(t) * W1 [y_t; p])); h2 = softplus(BN(g2(t) * W2 (e * h1)));
    h3 = softplus(BN(g3(t) * W3 h2)); eps = W4 h3. g_i(t) are learned per-step gains (T+1 entries, U(0, 1))."""

    def __init__(self, *, num_classes: int, feature_dim: int, timesteps: int, encoder: Encoder):
        super().__init__()
        self.encoder = encoder
        self.project = nn.Linear(encoder.num_features, feature_dim)
        self.norm = nn.BatchNorm1d(feature_dim)
        self.lin1 = nn.Linear(2 * num_classes, feature_dim)
        self.lin2 = nn.Linear(feature_dim, feature_dim)
        self.lin3 = nn.Linear(feature_dim, feature_dim)
        self.lin4 = nn.Linear(feature_dim, num_classes)
        self.gain1, self.gain2, self.gain3 = (nn.Embedding(timesteps + 1, feature_dim) for _ in range(3))
        for gain in (self.gain1, self.gain2, self.gain3):
            nn.init.uniform_(gain.weight, 0.0, 1.0)
        self.bn1, self.bn2, self.bn3 = (nn.BatchNorm1d(feature_dim) for _ in range(3))

    def image_feature(self, x: torch.Tensor) -> torch.Tensor:
        """The image feature e, computed once per image (not once per step)."""
        return self.norm(self.project(self.encoder(x).mean((2, 3))))

    def forward(self, e: torch.Tensor, y_t: torch.Tensor, prior: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``t``: timestep indices (N,), or (1,) for one step shared by the whole batch."""
        h = F.softplus(self.bn1(self.gain1(t) * self.lin1(torch.cat([y_t, prior], 1))))
        h = F.softplus(self.bn2(self.gain2(t) * self.lin2(e * h)))
        h = F.softplus(self.bn3(self.gain3(t) * self.lin3(h)))
        return self.lin4(h)


# =============================================================================================
# 5. Training losses (paper Eq. 4-6)
# =============================================================================================


def antithetic_timesteps(n: int, timesteps: int, generator: torch.Generator, device="cpu") -> torch.Tensor:
    """n/2 + 1 uniform draws t and their mirrors T - 1 - t, cut to n."""
    t = torch.randint(0, timesteps, (n // 2 + 1,), generator=generator)
    return torch.cat([t, timesteps - 1 - t])[:n].to(device)


def mmd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Biased batch MMD^2 with k(a, b) = exp(-||a - b||^2 / C^2) (the distance divided by the dimension
    twice, as in the code): mean K_aa + mean K_bb - 2 mean K_ab."""
    dim = a.shape[1]

    def kernel(u, v):
        return torch.exp(-(u[:, None, :] - v[None, :, :]).square().sum(-1) / dim / dim)

    return kernel(a, a).mean() + kernel(b, b).mean() - 2 * kernel(a, b).mean()


def diffusion_loss(denoiser: Denoiser, schedule: CardSchedule, e: torch.Tensor, y0: torch.Tensor,
                   prior: dict[str, torch.Tensor], t: torch.Tensor, noise: torch.Tensor,
                   mmd_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """||eps - eps_theta(y_t^fused)||^2 + lambda [MMD(eps, eps_theta(y_t^global)) + MMD(eps, eps_theta(y_t^local))].
    One eps is shared by the branches; ``mmd_weight = 0`` (C1, C2) drops the branch terms."""
    fused = prior["fused"]
    mse = (noise - denoiser(e, schedule.q_sample(y0, fused, t, noise), fused, t)).square().mean()
    parts = {"mse": float(mse.detach())}
    loss = mse
    if mmd_weight > 0:
        reg = 0.0
        for branch in ("global", "local"):
            p = prior[branch]
            reg = reg + mmd(noise, denoiser(e, schedule.q_sample(y0, p, t, noise), p, t))
        loss = mse + mmd_weight * reg
        parts["mmd"] = float(reg.detach())
    return loss, parts


# =============================================================================================
# 6. Inference (paper Sec. 2.3), uncertainty and explanations
# =============================================================================================


def sample_y0(denoiser: Denoiser, e: torch.Tensor, prior: torch.Tensor, steps: list[Step], *, ddim: bool = False,
              eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Run the reverse chain for a whole batch at once: y_T = y_hat + N(0, I), then CARD (or DDIM) steps,
    and the y0 estimate at the last step (no added noise). The chain's state stays in float32; the denoiser
    runs in the dtype of ``e`` (bfloat16 when the predictor was built with ``dtype=torch.bfloat16``)."""
    y = prior + torch.randn(prior.shape, generator=generator, device=prior.device, dtype=prior.dtype)
    prior_in = prior.to(e.dtype) if e is not None else prior
    for step in steps:
        t = torch.full((1,), step.t, device=prior.device, dtype=torch.long)
        eps = denoiser(e, y.to(prior_in.dtype), prior_in, t).to(prior.dtype)
        y0 = predict_y0(y, prior, eps, step.ab_t)
        if step.ab_prev is None:
            return y0
        z = torch.randn(prior.shape, generator=generator, device=prior.device, dtype=prior.dtype)
        if ddim:
            sigma = eta * math.sqrt((1 - step.ab_prev) / (1 - step.ab_t) * (1 - step.ab_t / step.ab_prev))
            y = (math.sqrt(step.ab_prev) * y0 + (1 - math.sqrt(step.ab_prev)) * prior
                 + math.sqrt(max(1 - step.ab_prev - sigma**2, 0.0)) * eps + sigma * z)
        else:
            g0, g1, g2, beta_tilde = posterior_coefficients(step.ab_t, step.ab_prev)
            y = g0 * y0 + g1 * y + g2 * prior + math.sqrt(beta_tilde) * z
    raise HarnessError("sample_y0 needs at least one step")


class DiffMICClassifier(nn.Module):
    """Images -> {"probs", "uncertainty"}.

    The DCG prior and the image feature are computed once per image; ``chains`` reverse chains per image
    run together as one batch. ``readout="argmax"`` (the code): the class is argmax y0 of chain 0 and
    probs = softmax(y0 / tau). ``readout="vote"`` (CARD): per chain p = softmax(-(y0 - 1)^2 / tau), the
    class is the majority vote over ``votes`` chains; probs are the vote shares (ties broken by mean p).
    ``uncertainty`` = 1 - (share of the most frequent label) over the chains (0 with a single chain)."""

    def __init__(self, dcg: DCG, denoiser: Denoiser, schedule: CardSchedule, *, test_timesteps: int,
                 sampler: str = "truncated", ddim_eta: float = 0.0, readout: str = "argmax", votes: int = 100,
                 temperature: float = 0.1, uncertainty_chains: int = 0, seed: int = 0,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32):
        super().__init__()
        if readout not in READOUTS:
            raise HarnessError(f"readout must be one of {', '.join(READOUTS)}; found {readout!r}")
        self.dcg, self.denoiser = dcg, denoiser
        self.steps = schedule.steps(test_timesteps, sampler)
        self.ddim, self.eta = sampler == "ddim", ddim_eta
        self.readout, self.votes, self.temperature = readout, votes, temperature
        self.uncertainty_chains, self.seed = uncertainty_chains, seed
        self.channels_last = channels_last  # NHWC convolutions: faster on CPU, same numbers
        if channels_last:
            self.to(memory_format=torch.channels_last)
        # bfloat16 weights (float32 chain state): about 6x faster width-6144 matrix products on CPUs with
        # AVX512-BF16; an inference option, off by default (it changes the numbers slightly)
        self.dtype = dtype
        if dtype != torch.float32:
            self.to(dtype)

    @property
    def chains(self) -> int:
        return max(self.votes if self.readout == "vote" else 1, self.uncertainty_chains, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n, s = x.shape[0], self.chains
        x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        prior = torch.softmax(self.dcg.fused_logits(self.dcg(x)).float(), 1)
        e = self.denoiser.image_feature(x)
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        y0 = sample_y0(self.denoiser, e.repeat_interleave(s, 0), prior.repeat_interleave(s, 0), self.steps,
                       ddim=self.ddim, eta=self.eta, generator=generator).view(n, s, -1)
        if self.readout == "argmax":
            probs = torch.softmax(y0[:, 0] / self.temperature, 1)
            labels = y0.argmax(-1)
        else:
            p = torch.softmax(-(y0 - 1).square() / self.temperature, -1)
            labels = p.argmax(-1)
            shares = F.one_hot(labels[:, : self.votes], y0.shape[-1]).float().mean(1)
            probs = shares + 1e-3 * p[:, : self.votes].mean(1)
            probs = probs / probs.sum(1, keepdim=True)
        u = max(self.uncertainty_chains, 1)
        top = F.one_hot(labels[:, :u], y0.shape[-1]).float().mean(1).max(1).values
        return {"probs": probs, "uncertainty": 1.0 - top}


def _colormap(v: np.ndarray) -> np.ndarray:
    """Jet-like colours for values in [0, 1]: (..., 3) uint8."""
    rgb = np.stack([1.5 - np.abs(4 * v - 3), 1.5 - np.abs(4 * v - 2), 1.5 - np.abs(4 * v - 1)], -1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def make_explainer(module: DiffMICClassifier, mean, std, device: str, per_class: int, classes=()):
    """``explain(images_uint8, labels, out_dir)``: for ``per_class`` images of each class, a PNG with
    the image and the chosen ROI boxes (numbered by attention rank), the predicted class's saliency map,
    and the summed min-max-normalised map the ROIs were picked from."""

    def explain(images: np.ndarray, labels: np.ndarray, out_dir) -> list[Path]:
        from PIL import Image, ImageDraw

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        picks = [i for c in np.unique(labels) for i in np.flatnonzero(labels == c)[:per_class]]
        if not picks:
            return []
        x = normalise(to_uint8_tensor(images[picks]).to(device), mean, std).to(module.dtype)
        module.eval()
        with torch.inference_mode():
            out = module.dcg(x)
            pred = module(x)["probs"].argmax(1)
        size = images.shape[1]
        scale = max(1, 224 // size)
        paths = []
        for row, index in enumerate(picks):
            img = images[index]
            img = np.repeat(img, 3, -1) if img.shape[-1] == 1 else img[..., :3]
            base = np.kron(img, np.ones((scale, scale, 1), dtype=np.uint8))
            sal = out["saliency"][row : row + 1].float()  # (bfloat16 predictors: back to float32)
            sal_pred = F.interpolate(sal[:, int(pred[row]) : int(pred[row]) + 1], size=(size, size), mode="bilinear",
                                     align_corners=False)[0, 0]
            flat = sal[0].flatten(1)
            lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
            summed = ((flat - lo) / (hi - lo).clamp_min(1e-12)).sum(0).view(1, 1, *sal.shape[-2:])
            summed = F.interpolate(summed, size=(size, size), mode="nearest")[0, 0]
            panels = []
            for m in (None, sal_pred, summed):
                if m is None:
                    panels.append(base)
                    continue
                m = m.cpu().numpy()
                m = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
                heat = np.kron(_colormap(m), np.ones((scale, scale, 1), dtype=np.uint8))
                panels.append((0.5 * base + 0.5 * heat).astype(np.uint8))
            canvas = Image.fromarray(np.concatenate(panels, 1))
            draw = ImageDraw.Draw(canvas)
            if "corners" in out:
                order = torch.argsort(out["attention"][row], descending=True).tolist()
                crop = module.dcg.crop_size * scale
                for rank, k in enumerate(order):
                    top, left = (int(v) * scale for v in out["corners"][row, k])
                    for p in range(3):
                        x0 = left + p * size * scale
                        draw.rectangle([x0, top, x0 + crop - 1, top + crop - 1],
                                       outline=(255, 255, 0) if rank == 0 else (255, 0, 255), width=2)
                        draw.text((x0 + 2, top + 1), str(rank + 1), fill=(255, 255, 255))
            name = lambda c: classes[c] if c < len(classes) else str(c)  # noqa: E731
            draw.text((3, 3), f"true {name(int(labels[index]))} / pred {name(int(pred[row]))}", fill=(255, 255, 255))
            path = out_dir / f"diffmic_saliency_class{int(labels[index])}_test{int(index)}.png"
            canvas.save(path)
            paths.append(path)
        return paths

    return explain


# =============================================================================================
# 7. Training: fit for the Table 2 variants
# =============================================================================================


def fit(data, config, ctx) -> Predictor:
    """Train the variant named by ``config.variant`` and return its predictor."""
    if config.variant not in VARIANTS:
        raise HarnessError(f"DiffMIC variant must be one of {', '.join(VARIANTS)}; found {config.variant!r}")
    if config.variant == "basic":
        return fit_basic(data, config, ctx)
    return fit_diffusion(data, config, ctx)


class _Classifier(nn.Module):
    """The 'basic' row: the image encoder, global average pooling and a linear head."""

    def __init__(self, encoder: Encoder, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.num_features, num_classes)

    def forward(self, x):
        return self.head(self.encoder(x).mean((2, 3)))


def fit_basic(data, cfg, ctx) -> Predictor:
    encoder = Encoder(cfg.encoder_backbone, in_chans=data.channels, image_size=data.size,
                      pretrained=cfg.encoder_pretrained)
    mean, std = normalisation(data.channels, encoder.pretrained_loaded)
    model, _ = train_classifier(_Classifier(encoder, data.num_classes), data, cfg, ctx, mean=mean, std=std)
    return Predictor(Softmax(model), mean=mean, std=std, device=ctx.device)


class _PriorOnly(nn.Module):
    """The DCG's fused prior as a classifier (a diagnostic reported next to the diffusion's score)."""

    def __init__(self, dcg: DCG):
        super().__init__()
        self.dcg = dcg

    def forward(self, x):
        return {"probs": torch.softmax(self.dcg.fused_logits(self.dcg(x)), 1)}


def _predict(module: nn.Module, images_u8: torch.Tensor, mean, std, device: str, batch_size: int = 256) -> np.ndarray:
    module.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images_u8), batch_size):
            x = normalise(images_u8[start : start + batch_size].to(device), mean, std)
            out.append(module(x)["probs"].float().cpu())
    return torch.cat(out).numpy()


def fit_diffusion(data, cfg, ctx) -> Predictor:
    """C1 / C2 / full: DCG warm-up with cross-entropy, then joint training (one denoiser step, then one
    DCG cross-entropy step on the same batch); the checkpoint kept is the best on validation Macro-F1."""
    device, num_classes = ctx.device, data.num_classes
    dcg = DCG(num_classes=num_classes, in_chans=data.channels, image_size=data.size,
              global_backbone=cfg.dcg_backbone, local_backbone=cfg.local_backbone, pretrained=cfg.pretrained,
              num_crops=cfg.num_crops, crop_size=max(1, round(cfg.crop_fraction * data.size)),
              crop_channels=cfg.crop_channels, attention_dim=cfg.attention_dim,
              local=cfg.variant != "c1").to(device)
    encoder = Encoder(cfg.encoder_backbone, in_chans=data.channels, image_size=data.size,
                      pretrained=cfg.encoder_pretrained)
    denoiser = Denoiser(num_classes=num_classes, feature_dim=cfg.feature_dim, timesteps=cfg.timesteps,
                        encoder=encoder).to(device)
    schedule = CardSchedule.linear(cfg.timesteps, cfg.beta_start, cfg.beta_end)
    mean, std = normalisation(data.channels, dcg.pretrained_loaded)
    mmd_weight = cfg.mmd_weight if cfg.variant == "full" else 0.0

    def classifier(uncertainty_chains: int, channels_last: bool = False, final: bool = False) -> DiffMICClassifier:
        return DiffMICClassifier(dcg, denoiser, schedule, test_timesteps=cfg.test_timesteps, sampler=cfg.sampler,
                                 ddim_eta=cfg.ddim_eta, readout=cfg.readout, votes=cfg.votes,
                                 temperature=cfg.temperature, uncertainty_chains=uncertainty_chains, seed=ctx.seed,
                                 channels_last=channels_last,
                                 dtype=getattr(torch, cfg.inference_dtype) if final else torch.float32)

    if cfg.inference_dtype not in ("float32", "bfloat16"):
        raise HarnessError(f"inference_dtype must be float32 or bfloat16; found {cfg.inference_dtype!r}")
    classifier(0)  # validate the inference settings before training
    train_x = to_uint8_tensor(data.train.images)
    train_y = torch.from_numpy(data.train.labels.astype(np.int64))
    val_x, val_y = to_uint8_tensor(data.val.images), data.val.labels.astype(np.int64)
    sampler = ctx.make_sampler(data.train.labels)
    rng = np.random.default_rng(ctx.seed)
    generator = torch.Generator().manual_seed(ctx.seed)
    total_epochs = cfg.dcg_warmup_epochs + cfg.epochs

    def batches(epoch: int):
        order = torch.from_numpy(np.asarray(sampler.indices(epoch, total_epochs, rng), dtype=np.int64))
        steps = max(1, math.ceil(len(order) / cfg.batch_size))
        for step in range(steps):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            if len(idx) < 2:
                continue  # a batch of one breaks batch norm
            x = augment(normalise(train_x[idx].to(device), mean, std), cfg, generator)
            yield step / steps, x, train_y[idx].to(device)

    dcg_optimizer = torch.optim.Adam(dcg.parameters(), lr=cfg.dcg_lr, amsgrad=True)

    def dcg_step(out, y) -> float:
        loss = F.cross_entropy(dcg.fused_logits(out), y)
        dcg_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        dcg_optimizer.step()
        return float(loss.detach())

    # Stage 1: DCG warm-up with cross-entropy on the fused logits (code: 15 epochs, paper: 10).
    for epoch in range(cfg.dcg_warmup_epochs):
        dcg.train()
        losses = [dcg_step(dcg(x), y) for _, x, y in batches(epoch)]
        ctx.report(epoch=epoch + 1, stage="dcg_warmup", dcg_loss=float(np.mean(losses)))

    # Stage 2: the denoiser, trained jointly with the DCG.
    optimizer = make_optimizer(denoiser.parameters(), cfg)
    base_lr = cfg.lr
    best_score, best_state = -1.0, None
    for epoch in range(cfg.epochs):
        dcg.train()
        denoiser.train()
        sums: dict[str, float] = {}
        count = 0
        for frac, x, y in batches(cfg.dcg_warmup_epochs + epoch):
            for group in optimizer.param_groups:
                group["lr"] = base_lr * lr_factor(cfg, epoch + frac)
            out = dcg(x)
            with torch.no_grad():
                prior = priors(dcg, out)  # detached: the denoiser loss never reaches the DCG
            e = denoiser.image_feature(x)  # once for the three branches
            y0 = F.one_hot(y, num_classes).float()
            if cfg.noise_draws > 1:  # several (t, eps) pairs per image for one pass of the encoders
                e, y0 = e.repeat(cfg.noise_draws, 1), y0.repeat(cfg.noise_draws, 1)
                prior = {k: v.repeat(cfg.noise_draws, 1) for k, v in prior.items()}
            t = antithetic_timesteps(len(y0), cfg.timesteps, generator, device)
            noise = torch.randn(len(y0), num_classes, generator=generator).to(device)
            loss, parts = diffusion_loss(denoiser, schedule, e, y0, prior, t, noise, mmd_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(denoiser.parameters(), cfg.grad_clip)
            optimizer.step()
            parts["dcg_loss"] = dcg_step(out, y)
            parts["loss"] = float(loss.detach())
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
        record = {"epoch": cfg.dcg_warmup_epochs + epoch + 1, "stage": "joint",
                  **{k: v / max(count, 1) for k, v in sums.items()}, "lr": optimizer.param_groups[0]["lr"]}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            probs = _predict(classifier(0), val_x, mean, std, device)
            score = ctx.score(val_y, probs)[ctx.headline_metric]
            record.update(val_macro_f1=score, val_accuracy=float((probs.argmax(1) == val_y).mean()),
                          val_prior_macro_f1=ctx.score(val_y, _predict(_PriorOnly(dcg), val_x, mean, std, device))["macro_f1"])
            if score > best_score:
                best_score = score
                best_state = (copy.deepcopy(dcg.state_dict()), copy.deepcopy(denoiser.state_dict()))
        ctx.report(**record)
    if best_state is not None:
        dcg.load_state_dict(best_state[0])
        denoiser.load_state_dict(best_state[1])
    module = classifier(cfg.uncertainty_chains, channels_last=device == "cpu", final=True).eval()
    explain = make_explainer(module, mean, std, device, cfg.explain_per_class, data.classes) \
        if cfg.explain_per_class > 0 else None
    return Predictor(module, mean=mean, std=std, device=device, exportable=False, explain=explain,
                     batch_size=max(1, min(256, 2048 // module.chains)))
