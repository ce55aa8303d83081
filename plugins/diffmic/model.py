"""DiffMIC (Yang et al., MICCAI 2023): the model, read next to the paper (methods brief, section 1).

1. Label diffusion (CARD, DiffMIC Eq. 1-3): the schedule, the forward process with the prior in the mean and
   the reverse chains (truncated / respaced / DDIM), all through ``harness.toolkit.nn``.
2. Encoders: timm CNNs truncated before pooling, or a tiny CNN for CPU profiles.
3. DCG, the dual-granularity conditional guidance (Sec. 2.1): the global branch (bias-free 1x1 conv saliency
   map, logits by spatial mean), GMIC-style ROI selection and cropping, the local branch with gated-attention
   MIL pooling, and the priors.
4. The denoiser epsilon_theta(x, y_t, p, t) (Sec. 2.2): the Hadamard-product MLP with learned per-step gains.
5. The losses (Eq. 4-6): antithetic timesteps, the fused-prior noise MSE, the MMD regularisers.
6. The predictor module (Sec. 2.3): the prior, one chain per image (the paper's readout) or CARD's vote,
   the uncertainty chains, noise seeded per image.

Training (the stages, the DCG step, selection, the temperature) is ``plugins/diffmic/train.py``; explanation
images are ``explain.py``; the ONNX export and its ONNX Runtime-driven predictor are ``export.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness import HarnessError
from harness.toolkit import backbones
from harness.toolkit.nn import diffusion as D
from harness.toolkit.nn.schedules import DiscreteSchedule

SAMPLERS = ("truncated", "respaced", "ddim")
READOUTS = ("argmax", "vote")


# =============================================================================================
# 1. Label diffusion (CARD; DiffMIC Eq. 1-3), on the shared schedule and steps
# =============================================================================================


@dataclass(frozen=True)
class Step:
    """One reverse step from timestep index ``t`` to ``s`` (``s is None``: the last step, which returns the
    y0 estimate with no added noise)."""

    t: int
    s: int | None


class LabelDiffusion:
    """CARD's label diffusion on a linear beta schedule: y_t = sqrt(ab_t) y0 + (1 - sqrt(ab_t)) y_hat +
    sqrt(1 - ab_t) eps (DDPM on y - y_hat, ``harness.toolkit.nn.diffusion.prior_*``)."""

    def __init__(self, timesteps: int, beta_start: float, beta_end: float):
        if not 0 < beta_start <= beta_end < 1:
            raise HarnessError(f"betas must satisfy 0 < beta_start <= beta_end < 1; found {beta_start}, {beta_end}")
        self.schedule = DiscreteSchedule.make("linear", timesteps, beta_start=beta_start, beta_end=beta_end)
        self.alpha_bars = self.schedule.alphas_cumprod  # float64
        self._ab = self.alpha_bars.tolist()

    @property
    def timesteps(self) -> int:
        return self.schedule.num_steps

    def alpha_sigma(self, t: int) -> tuple[float, float]:
        """(sqrt(ab_t), sqrt(1 - ab_t)) of one timestep index, in float64."""
        return self._ab[t] ** 0.5, (1.0 - self._ab[t]) ** 0.5

    def q_sample(self, y0: torch.Tensor, prior: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The forward process at timestep indices ``t`` (N,), the prior in the mean (DiffMIC Eq. 2)."""
        alpha, sigma = self.schedule.alpha_sigma(t.cpu())
        return D.prior_q_sample(y0, prior, alpha.to(y0), sigma.to(y0), noise)

    def steps(self, n: int, kind: str = "truncated") -> list[Step]:
        """The reverse chain of ``n`` denoiser calls.

        - ``truncated`` (the official code, what the reported numbers came from): t = n-1, ..., 1 on the
          training schedule's indices, stepping t -> t-1, then the y0 step at t = 0. The start y = y_hat + N(0, I)
          matches the forward marginal only when n = T.
        - ``respaced`` / ``ddim``: n evenly spaced indices from T-1 to 0, stepping between neighbours with the
          respaced alphas, so the chain starts where the forward process ends.
        """
        if kind not in SAMPLERS:
            raise HarnessError(f"sampler must be one of {', '.join(SAMPLERS)}; found {kind!r}")
        if not 1 <= n <= self.timesteps:
            raise HarnessError(f"test_timesteps must be in [1, {self.timesteps}] (the training schedule's length); "
                               f"found {n}")
        grid = D.leading_timesteps(self.timesteps, n) if kind == "truncated" else D.respace(self.timesteps, n)
        grid = grid.tolist()
        return [Step(t, s) for t, s in zip(grid, grid[1:])] + [Step(grid[-1], None)]

    def sample(self, eps_fn: Callable[[torch.Tensor, int], torch.Tensor], prior: torch.Tensor, steps: list[Step],
               noise: torch.Tensor, *, ddim: bool = False, eta: float = 0.0) -> torch.Tensor:
        """Run the reverse chain for a batch: y_T = y_hat + noise[:, 0], then for step i the CARD posterior
        draw (or the DDIM step) with noise[:, i + 1], and the y0 estimate at the last step (no noise added).

        ``eps_fn(y_t, t)`` is the denoiser at one timestep index for the whole batch; ``noise`` is
        (N, len(steps), C). The chain's state stays in float32 (float64 coefficients)."""
        if noise.shape[1] < len(steps):
            raise HarnessError(f"the chain needs {len(steps)} noise draws per sample; found {noise.shape[1]}")
        y = prior + noise[:, 0]
        for i, step in enumerate(steps):
            a_t, s_t = self.alpha_sigma(step.t)
            eps = eps_fn(y, step.t).to(prior.dtype)
            y0 = D.prior_eps_to_y0(y, eps, prior, a_t, s_t)
            if step.s is None:
                return y0
            a_s, s_s = self.alpha_sigma(step.s)
            z = noise[:, i + 1]
            if ddim:
                y = D.prior_ddim_step(y, eps, prior, a_t, s_t, a_s, s_s, eta=eta, noise=z)
            else:
                y = D.prior_ancestral_step(y, y0, prior, a_t, s_t, a_s, s_s, noise=z)
        raise HarnessError("the reverse chain needs at least one step")


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

    Each class map is min-max normalised and the maps are summed into one map A; then k times the argmax
    cell of A is taken and removed, i.e. the top-k cells of A (a cell is never taken twice). The crop window
    is one cell (32 px at 224 / 7)."""
    n, _, h, w = saliency.shape
    if not 1 <= k <= h * w:
        raise HarnessError(f"num_crops must be in [1, {h * w}] for a {h}x{w} saliency map; found {k}")
    s = saliency.detach().flatten(2)
    lo, hi = s.min(2, keepdim=True).values, s.max(2, keepdim=True).values
    a = ((s - lo) / (hi - lo).clamp_min(1e-12)).sum(1)  # (N, h*w)
    flat = a.topk(k, dim=1).indices
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

    With ``local=False`` (ablation C1) only the global branch exists: a plain classifier (a backbone, global
    average pooling and a bias-free linear layer, since the mean of a 1x1 conv is the 1x1 conv of the mean)."""

    def __init__(self, *, num_classes: int, in_chans: int, image_size: int, global_backbone: str,
                 local_backbone: str, pretrained: bool, num_crops: int, crop_size: int, crop_channels: str,
                 attention_dim: int, local: bool = True):
        super().__init__()
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
            self.pretrained_loaded = self.pretrained_loaded and self.local_encoder.pretrained_loaded
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


class Prior(nn.Module):
    """Images -> the DCG's fused prior y_hat (what the chain starts from; also the prior as a classifier)."""

    def __init__(self, dcg: DCG):
        super().__init__()
        self.dcg = dcg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.dcg.fused_logits(self.dcg(x)).float(), 1)


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


def diffusion_loss(denoiser: Denoiser, diffusion: LabelDiffusion, e: torch.Tensor, y0: torch.Tensor,
                   prior: dict[str, torch.Tensor], t: torch.Tensor, noise: torch.Tensor,
                   mmd_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """||eps - eps_theta(y_t^fused)||^2 + lambda [MMD(eps, eps_theta(y_t^global)) + MMD(eps, eps_theta(y_t^local))].
    One eps is shared by the branches; ``mmd_weight = 0`` (C1, C2) drops the branch terms."""
    fused = prior["fused"]
    mse = (noise - denoiser(e, diffusion.q_sample(y0, fused, t, noise), fused, t)).square().mean()
    parts = {"mse": float(mse.detach())}
    loss = mse
    if mmd_weight > 0:
        reg = 0.0
        for branch in ("global", "local"):
            p = prior[branch]
            reg = reg + mmd(noise, denoiser(e, diffusion.q_sample(y0, p, t, noise), p, t))
        loss = mse + mmd_weight * reg
        parts["mmd"] = float(reg.detach())
    return loss, parts


# =============================================================================================
# 6. Inference (paper Sec. 2.3): the predictor module
# =============================================================================================


def chain_noise(x: torch.Tensor, seed: int, chains: int, steps: int, num_classes: int) -> torch.Tensor:
    """The chains' noise, seeded per image (a hash of the image and the trial seed): (N * chains, steps, C).
    An image gets the same noise in any batch, at any position, and chain c's noise does not depend on how
    many chains run (chain 0, the paper's one chain, is the same with or without the uncertainty chains)."""
    noise = D.per_sample_noise(D.content_seeds(x, seed), (chains, steps, num_classes))
    return noise.flatten(0, 1).to(x.device)


def readout(y0: torch.Tensor, readout: str, votes: int, temperature: float,
            uncertainty_chains: int) -> dict[str, torch.Tensor]:
    """Label samples y0 (N, S, C) -> {"probs", "uncertainty"}.

    ``argmax`` (the code): the class is argmax y0 of chain 0 and probs = softmax(y0 / tau) (tau fitted on
    validation by ``train.py``). ``vote`` (CARD): per chain the class whose y0 is closest to 1 (the argmax of
    CARD's softmax(-(y0 - 1)^2 / tau), for any tau), majority vote over ``votes`` chains; probs are the vote
    shares. ``uncertainty`` = 1 - the share of the most frequent label over the first ``uncertainty_chains``
    chains (0 with one chain)."""
    num_classes = y0.shape[-1]
    if readout == "argmax":
        labels = y0.argmax(-1)
        probs = torch.softmax(y0[:, 0] / temperature, 1)
    else:
        labels = (y0 - 1).square().argmin(-1)
        probs = F.one_hot(labels[:, :votes], num_classes).float().mean(1)
    u = max(uncertainty_chains, 1)
    top = F.one_hot(labels[:, :u], num_classes).float().mean(1).max(1).values
    return {"probs": probs, "uncertainty": 1.0 - top}


class DiffMICClassifier(nn.Module):
    """Images -> {"probs", "uncertainty"}.

    The DCG prior and the image feature are computed once per image; the reverse chains of all images of a
    batch run together, each image's noise seeded by the image itself (``chain_noise``). ``chains`` is 1 (the
    paper's readout) unless ``readout="vote"`` or ``uncertainty_chains`` asks for more."""

    def __init__(self, dcg: DCG, denoiser: Denoiser, diffusion: LabelDiffusion, *, test_timesteps: int,
                 sampler: str = "truncated", ddim_eta: float = 0.0, readout: str = "argmax", votes: int = 100,
                 temperature: float = 1.0, uncertainty_chains: int = 0, seed: int = 0,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32):
        super().__init__()
        if readout not in READOUTS:
            raise HarnessError(f"readout must be one of {', '.join(READOUTS)}; found {readout!r}")
        self.settings = dict(test_timesteps=test_timesteps, sampler=sampler, ddim_eta=ddim_eta, readout=readout,
                             votes=votes, temperature=temperature, uncertainty_chains=uncertainty_chains, seed=seed,
                             channels_last=channels_last, dtype=dtype)
        self.dcg, self.denoiser, self.diffusion = dcg, denoiser, diffusion
        self.steps = diffusion.steps(test_timesteps, sampler)
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

    @property
    def num_classes(self) -> int:
        return self.denoiser.lin4.out_features

    def label_samples(self, x: torch.Tensor) -> torch.Tensor:
        """y0 of every chain: (N, chains, C) in float32."""
        n, s = x.shape[0], self.chains
        noise = chain_noise(x, self.seed, s, len(self.steps), self.num_classes)
        x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        prior = torch.softmax(self.dcg.fused_logits(self.dcg(x)).float(), 1).repeat_interleave(s, 0)
        e = self.denoiser.image_feature(x).repeat_interleave(s, 0)
        prior_in = prior.to(self.dtype)

        def eps_fn(y: torch.Tensor, t: int) -> torch.Tensor:
            return self.denoiser(e, y.to(self.dtype), prior_in, torch.full((1,), t, dtype=torch.long, device=y.device))

        y0 = self.diffusion.sample(eps_fn, prior, self.steps, noise, ddim=self.ddim, eta=self.eta)
        return y0.view(n, s, -1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return readout(self.label_samples(x), self.readout, self.votes, self.temperature, self.uncertainty_chains)

    def variant(self, **settings) -> DiffMICClassifier:
        """The same networks (shared, not copied) with some settings changed, e.g. ``uncertainty_chains=0``
        (one chain: the paper's cost) or a fitted ``temperature``."""
        other = DiffMICClassifier(self.dcg, self.denoiser, self.diffusion, **{**self.settings, **settings})
        return other.train(self.training)
