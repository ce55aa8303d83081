"""The model of ``diffclf``, read next to Favero et al. 2025 (brief Sec. 3) and Li et al. 2023. Imports torch.

- Sec. 3.1, data: images in [-1, 1], optionally area-resized (``resolution``), then the Haar DWT (``wavelet``):
  ``DiffusionClassifier.transform``.
- Sec. 3.3, noise schedule: the shifted-cosine log-SNR schedule (``harness.toolkit.nn.schedules``), the network
  receives lambda as its time input.
- Sec. 3.4, training objective: ``diffusion_loss`` (v-prediction, eps-space error, min-SNR weight).
- Sec. 3.5, conditioning: ``build_unet`` (one class token through cross-attention, or an additive embedding;
  index C is the null class of label dropout). The diffusers model's ``text_proj`` (a Linear on the token) is
  left out: a linear map of a learned embedding table is just another learned table.
- Sec. 3.6, classification: ``DiffusionClassifier``: for a batch of B images it draws N trials of
  (t_j ~ U(0, 1), eps_j) per image, noises z_j = alpha x + sigma eps_j, and evaluates the denoiser for all K
  classes of all trials in a few batched network calls (rows = B x trials x classes), giving the error matrix
  e (B, N, K) with e_jc = mean ||eps-hat(z_j, lambda_j, c) - eps_j||^2; the same eps_j for every class (paired,
  Li et al.). Rules: ``vote`` (each trial votes for its argmin) or ``mean`` (argmin of the mean error).
  Li et al.'s staged pruning keeps, after each stage, the classes with the lowest mean error so far.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from harness import HarnessError
from harness.toolkit.nn.diffusion import favero_min_snr_weight, q_sample, to_eps
from harness.toolkit.nn.schedules import ShiftedCosineLogSNR, alpha_sigma_from_logsnr
from harness.toolkit.nn.unet import UNet
from harness.toolkit.nn.wavelet import haar_dwt, haar_idwt

# ------------------------------------------------------------------------------------------ rules


def vote_shares(errors: torch.Tensor) -> torch.Tensor:
    """Majority voting: each trial (dim 1 of (B, N, K)) votes for its lowest-error class -> vote shares (B, K)."""
    winners = errors.argmin(dim=2)
    return F.one_hot(winners, errors.shape[2]).float().mean(dim=1)


def mean_rule_scores(errors: torch.Tensor) -> torch.Tensor:
    """Mean rule: the mean error over trials (B, K); the prediction is its argmin."""
    return errors.mean(dim=1)


def rule_scores(errors: torch.Tensor, rule: str) -> torch.Tensor:
    """Higher is better: vote shares (ties broken by the lower mean error) or minus the mean error."""
    mean = mean_rule_scores(errors)
    if rule == "vote":
        # ties broken by the mean error: its rank, scaled far below one vote (1/N)
        ranks = (-mean).argsort(dim=1).argsort(dim=1).float() / errors.shape[2]
        return vote_shares(errors) + ranks * 1e-4 / errors.shape[1]
    if rule == "mean":
        return -mean
    raise HarnessError(f"diffclf rule must be 'vote' or 'mean'; found {rule!r}")


def prune(errors_so_far: torch.Tensor, keep: int) -> torch.Tensor:
    """Li et al.'s pruning: indices (B, keep) of the classes with the lowest mean error over the trials so far
    (dim 1 of (B, n, k)), whatever the final rule."""
    return mean_rule_scores(errors_so_far).topk(keep, dim=1, largest=False).indices


def stage_plan(votes: int, num_classes: int, prune_stages=(), prune_keep=()) -> list[tuple[int, int]]:
    """[(trials in this stage, classes active in it), ...] for Li et al.'s staged pruning."""
    stages, keep = list(prune_stages), list(prune_keep)
    if len(stages) != len(keep):
        raise HarnessError(f"prune_stages {stages} and prune_keep {keep} must have the same length")
    if any(b <= a for a, b in zip([0] + stages, stages + [votes])):
        raise HarnessError(f"prune_stages must increase and stay below votes={votes}; found {stages}")
    if any(not 1 <= k for k in keep) or any(b > a for a, b in zip(keep, keep[1:])):
        raise HarnessError(f"prune_keep must be positive and non-increasing; found {keep}")
    plan, active, start = [], num_classes, 0
    for end, k in zip(stages + [votes], [None] + keep):
        active = min(active, k) if k is not None else active
        plan.append((end - start, active))
        start = end
    return plan


# ------------------------------------------------------------------------------------- classifier


def image_seed(image: torch.Tensor, seed: int) -> int:
    """A 63-bit seed from (seed, the image's values): the trials of an image do not depend on its batch."""
    digest = hashlib.blake2b(image.detach().float().cpu().contiguous().numpy().tobytes(), digest_size=8,
                             key=int(seed).to_bytes(8, "little", signed=True)).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def tensor_key(x: torch.Tensor) -> str:
    return hashlib.blake2b(x.detach().float().cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()


def model_view(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """The image at the diffusion model's resolution (area-resized down, bilinear up; unchanged when 0)."""
    if resolution and x.shape[-1] != resolution:
        return F.interpolate(x, size=(resolution, resolution), mode="area" if resolution < x.shape[-1] else "bilinear")
    return x


class DiffusionClassifier(nn.Module):
    """Predictor module: normalised images (B, C, H, W) -> {"probs", "uncertainty", "vote_entropy"}.

    ``net(z, logsnr, y)`` returns a ``prediction`` ("v" | "eps" | "x0"); it is called with rows of
    (noised image, lambda, class) only, so a torch UNet and an ONNX Runtime session (``export.py``) are
    interchangeable. Trials are drawn in chunks of about ``max_rows`` network rows (images x trials x
    classes), each chunk one batched network call (several when one trial of the batch alone exceeds
    ``max_rows``). Each image's t_j and eps_j come from a generator seeded by ``seed`` and the image itself,
    drawn in trial order, so the trials of an image are the same at any batch size, chunking or pruning.
    ``errors(x)`` returns the full (B, N, K) error matrix (pruned entries are NaN) and the surviving
    classes (B, k).
    """

    def __init__(self, net: nn.Module, num_classes: int, *, schedule=None, votes: int = 51, rule: str = "vote",
                 prune_stages=(), prune_keep=(), prediction: str = "v", wavelet: bool = False,
                 max_rows: int = 4096, temperature: float = 1.0, seed: int = 0, resolution: int = 0):
        super().__init__()
        self.settings = dict(schedule=schedule or ShiftedCosineLogSNR(), votes=votes, rule=rule,
                             prune_stages=tuple(prune_stages), prune_keep=tuple(prune_keep), prediction=prediction,
                             wavelet=wavelet, max_rows=max_rows, temperature=temperature, seed=seed,
                             resolution=resolution)
        self.net, self.num_classes, self.schedule = net, num_classes, self.settings["schedule"]
        self.votes, self.rule, self.prediction, self.wavelet = votes, rule, prediction, wavelet
        self.resolution, self.seed = resolution, seed
        self.plan = stage_plan(votes, num_classes, prune_stages, prune_keep)
        rule_scores(torch.zeros(1, 1, 1), rule)  # validates the rule
        self.max_rows, self.temperature = max_rows, temperature
        self.memo: dict[str, dict[str, torch.Tensor]] = {}  # outputs by input hash, read only by ``explain``

    def with_net(self, net: nn.Module, **changes) -> DiffusionClassifier:
        """The same classifier (settings, seed) over another network, e.g. an ONNX Runtime session."""
        return DiffusionClassifier(net, self.num_classes, **{**self.settings, **changes})

    @property
    def onnx_provider(self) -> str | None:
        return getattr(self.net, "provider", None)

    def model_view(self, x: torch.Tensor) -> torch.Tensor:
        return model_view(x, self.resolution)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> the diffusion model's input space (resize, then the Haar transform if ``wavelet``)."""
        x = self.model_view(x)
        return haar_dwt(x) if self.wavelet else x

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return haar_idwt(z) if self.wavelet else z

    def class_errors(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, classes: torch.Tensor):
        """e (B, J, k) for transformed images x0 (B, ...), t (B, J), noise (B, J, ...), classes (B, k)."""
        b, j, k = t.shape[0], t.shape[1], classes.shape[1]
        logsnr = self.schedule.logsnr(t)  # (B, J)
        alpha, sigma = alpha_sigma_from_logsnr(logsnr)
        z = q_sample(x0[:, None], alpha, sigma, noise)  # (B, J, ...)
        rows_z = z[:, :, None].expand(b, j, k, *z.shape[2:]).reshape(b * j * k, *z.shape[2:])
        rows_l = logsnr[:, :, None].expand(b, j, k).reshape(-1)
        rows_y = classes[:, None, :].expand(b, j, k).reshape(-1)
        rows_e = noise[:, :, None].expand(b, j, k, *z.shape[2:]).reshape(b * j * k, *z.shape[2:])
        rows_a, rows_s = (c[:, :, None].expand(b, j, k).reshape(-1) for c in (alpha, sigma))
        out = []
        for s in range(0, len(rows_y), self.max_rows):
            sl = slice(s, s + self.max_rows)
            pred = self.net(rows_z[sl], rows_l[sl], rows_y[sl])
            eps_hat = to_eps(self.prediction, rows_z[sl], pred, rows_a[sl], rows_s[sl])
            out.append((eps_hat - rows_e[sl]).pow(2).flatten(1).mean(1))
        return torch.cat(out).view(b, j, k)

    def errors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = self.transform(x)
        b, dev = x0.shape[0], x0.device
        generators = [torch.Generator().manual_seed(image_seed(image, self.seed)) for image in x]
        t_all = torch.stack([torch.rand(self.votes, generator=g) for g in generators]).to(dev)  # (B, N)
        errors = torch.full((b, self.votes, self.num_classes), float("nan"), device=dev)
        active = torch.arange(self.num_classes, device=dev).expand(b, -1)
        start = 0
        for trials, keep in self.plan:
            if keep < active.shape[1]:  # Li et al.: keep the classes with the lowest mean error so far
                seen = errors[:, :start].gather(2, active[:, None, :].expand(b, start, -1))
                active = active.gather(1, prune(seen, keep))
            # trials in chunks of about max_rows rows, so memory stays bounded at any N and image size
            chunk = max(1, self.max_rows // (b * active.shape[1]))
            for j0 in range(start, start + trials, chunk):
                j = min(chunk, start + trials - j0)
                noise = torch.stack([torch.stack([torch.randn(x0.shape[1:], generator=g) for _ in range(j)])
                                     for g in generators]).to(dev)  # (B, j, ...), one draw per trial in order
                e = self.class_errors(x0, t_all[:, j0:j0 + j], noise, active)
                errors[:, j0:j0 + j].scatter_(2, active[:, None, :].expand(b, j, -1), e)
            start += trials
        return errors, active

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        errors, active = self.errors(x)
        b = x.shape[0]
        full = errors.gather(2, active[:, None, :].expand(b, self.votes, -1))  # survivors have every trial
        shares = vote_shares(full)
        if self.rule == "vote":
            scores = rule_scores(full, "vote")
            probs_k = scores / scores.sum(dim=1, keepdim=True)
        else:
            probs_k = torch.softmax(-mean_rule_scores(full) / self.temperature, dim=1)
        probs = torch.zeros(b, self.num_classes, device=x.device).scatter_(1, active, probs_k)
        entropy = -(shares * shares.clamp(min=1e-12).log()).sum(1)
        out = {"probs": probs, "uncertainty": 1.0 - shares.max(dim=1).values, "vote_entropy": entropy}
        if len(self.memo) < 4096:
            self.memo[tensor_key(x)] = {k: v.detach().cpu() for k, v in out.items()}
        return out


# ----------------------------------------------------------------------------------- network, loss


def build_unet(config, channels: int, size: int, num_classes: int) -> UNet:
    """The conditional UNet of the config for ``channels``-channel images of side ``size`` (before the Haar
    transform, which makes it 4 x channels at half the side)."""
    size = config.resolution or size
    in_ch = channels * 4 if config.wavelet else channels
    return UNet(in_ch, channels=config.channels, channel_mult=tuple(config.channel_mult),
                num_res_blocks=config.num_res_blocks, attention_levels=tuple(config.attention_levels),
                dropout=config.dropout, emb_dim=config.emb_dim, num_classes=num_classes,
                image_size=size // 2 if config.wavelet else size, conditioning=config.conditioning,
                context_dim=config.context_dim, heads=config.heads)


def diffusion_loss(net, x0, y, schedule, generator, num_classes: int, *, label_dropout: float,
                   snr_gamma: float) -> torch.Tensor:
    """E[w ||eps-hat - eps||^2] over t ~ U(0, 1) and eps ~ N(0, I) (brief Sec. 3.4): z = alpha x + sigma eps,
    v-prediction with eps-hat = sigma z + alpha v-hat, w = 1 / (1 + min(e^lambda, gamma)); the label is
    replaced by the null class (index K) with probability ``label_dropout`` (Sec. 3.5)."""
    b, dev = x0.shape[0], x0.device
    t = torch.rand(b, generator=generator).to(dev)
    noise = torch.randn(x0.shape, generator=generator).to(dev)
    drop = torch.rand(b, generator=generator).to(dev) < label_dropout
    y = torch.where(drop, torch.full_like(y, num_classes), y)
    logsnr = schedule.logsnr(t)
    alpha, sigma = alpha_sigma_from_logsnr(logsnr)
    z = q_sample(x0, alpha, sigma, noise)
    eps_hat = to_eps("v", z, net(z, logsnr, y), alpha, sigma)
    per_sample = (eps_hat - noise).pow(2).flatten(1).mean(1)
    return (favero_min_snr_weight(logsnr, snr_gamma) * per_sample).mean()


def make_schedule(config) -> ShiftedCosineLogSNR:
    return ShiftedCosineLogSNR(base_d=config.base_d, image_d=config.image_d)


def make_classifier(net, config, num_classes: int, votes: int, seed: int, rule: str | None = None,
                    prune_stages=None, prune_keep=None) -> DiffusionClassifier:
    return DiffusionClassifier(
        net, num_classes, schedule=make_schedule(config), votes=votes, rule=rule or config.rule,
        wavelet=config.wavelet, max_rows=config.max_rows,
        prune_stages=config.prune_stages if prune_stages is None else prune_stages,
        prune_keep=config.prune_keep if prune_keep is None else prune_keep,
        temperature=config.mean_temperature, seed=seed, resolution=config.resolution)
