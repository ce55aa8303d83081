"""Training and classification of ``diffclf`` (Favero et al. 2025; brief Sec. 3). Imports torch.

``DiffusionClassifier`` is the predictor module: for a batch of B images it draws N trials of
(t_j ~ U(0, 1), eps_j) per image, noises z_j = alpha x + sigma eps_j, and evaluates the denoiser for all
K classes of all trials in a few batched network calls (rows = B x trials x classes), giving the error
matrix e (B, N, K) with e_jc = mean ||eps-hat(z_j, lambda_j, c) - eps_j||^2 (brief Sec. 3.6).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness import HarnessError, Predictor
from harness.toolkit.nn.diffusion import favero_min_snr_weight, q_sample, to_eps
from harness.toolkit.nn.ema import EMA
from harness.toolkit.nn.schedules import ShiftedCosineLogSNR, alpha_sigma_from_logsnr
from harness.toolkit.nn.unet import UNet
from harness.toolkit.nn.wavelet import haar_dwt, haar_idwt
from harness.toolkit.training import augment, make_optimizer, normalise, to_uint8_tensor

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


class DiffusionClassifier(nn.Module):
    """Predictor module: normalised images (B, C, H, W) -> {"probs", "uncertainty", "vote_entropy"}.

    Trials are drawn in chunks of about ``max_rows`` network rows (images x trials x classes), each chunk one
    batched network call (several when one trial of the batch alone exceeds ``max_rows``).

    ``net(z, logsnr, y)`` returns a ``prediction`` ("v" | "eps" | "x0"); it is called with rows of
    (noised image, lambda, class) only. ``errors(x)`` returns the full (B, N, K) error matrix (pruned
    entries are NaN) and the surviving classes (B, k).
    """

    def __init__(self, net: nn.Module, num_classes: int, *, schedule=None, votes: int = 51, rule: str = "vote",
                 prune_stages=(), prune_keep=(), prediction: str = "v", wavelet: bool = False,
                 max_rows: int = 4096, temperature: float = 1.0, seed: int = 0, resolution: int = 0):
        super().__init__()
        self.net, self.num_classes, self.schedule = net, num_classes, schedule or ShiftedCosineLogSNR()
        self.votes, self.rule, self.prediction, self.wavelet = votes, rule, prediction, wavelet
        self.resolution = resolution
        self.plan = stage_plan(votes, num_classes, prune_stages, prune_keep)
        rule_scores(torch.zeros(1, 1, 1), rule)  # validates the rule
        self.max_rows, self.temperature = max_rows, temperature
        self.generator = torch.Generator().manual_seed(seed)
        self.memo: dict[str, dict[str, torch.Tensor]] = {}  # outputs by input hash, read only by ``explain``

    def model_view(self, x: torch.Tensor) -> torch.Tensor:
        """The image at the diffusion model's resolution (area-resized when ``resolution`` is set)."""
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
        errors = torch.full((b, self.votes, self.num_classes), float("nan"), device=dev)
        active = torch.arange(self.num_classes, device=dev).expand(b, -1)
        start = 0
        for trials, keep in self.plan:
            if keep < active.shape[1]:  # prune: keep the best classes by the rule over the trials so far
                seen = errors[:, :start].gather(2, active[:, None, :].expand(b, start, -1))
                best = rule_scores(seen, self.rule).topk(keep, dim=1).indices
                active = active.gather(1, best)
            # trials in chunks of about max_rows rows, so memory stays bounded at any N and image size
            chunk = max(1, self.max_rows // (b * active.shape[1]))
            for j0 in range(start, start + trials, chunk):
                j = min(chunk, start + trials - j0)
                t = torch.rand(b, j, generator=self.generator).to(dev)
                noise = torch.randn((b, j, *x0.shape[1:]), generator=self.generator).to(dev)
                e = self.class_errors(x0, t, noise, active)
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


def model_view(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if resolution and x.shape[-1] != resolution:
        return F.interpolate(x, size=(resolution, resolution), mode="area" if resolution < x.shape[-1] else "bilinear")
    return x


def tensor_key(x: torch.Tensor) -> str:
    return hashlib.blake2b(x.detach().float().cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()


# --------------------------------------------------------------------------------------- training


def build_unet(config, channels: int, size: int, num_classes: int) -> UNet:
    size = config.resolution or size
    in_ch = channels * 4 if config.wavelet else channels
    return UNet(in_ch, channels=config.channels, channel_mult=tuple(config.channel_mult),
                num_res_blocks=config.num_res_blocks, attention_resolutions=tuple(config.attention_resolutions),
                dropout=config.dropout, emb_dim=config.emb_dim, num_classes=num_classes,
                image_size=size // 2 if config.wavelet else size)


def diffusion_loss(net, x0, y, schedule, config, generator, num_classes: int) -> torch.Tensor:
    """E[w ||eps-hat - eps||^2], eps-hat = sigma z + alpha v-hat, w = 1/(1 + min(e^lambda, gamma)) (brief Sec. 3.4),
    with the label replaced by the null class (index K) with probability ``label_dropout``."""
    b, dev = x0.shape[0], x0.device
    t = torch.rand(b, generator=generator).to(dev)
    noise = torch.randn(x0.shape, generator=generator).to(dev)
    drop = torch.rand(b, generator=generator).to(dev) < config.label_dropout
    y = torch.where(drop, torch.full_like(y, num_classes), y)
    logsnr = schedule.logsnr(t)
    alpha, sigma = alpha_sigma_from_logsnr(logsnr)
    z = q_sample(x0, alpha, sigma, noise)
    eps_hat = to_eps("v", z, net(z, logsnr, y), alpha, sigma)
    per_sample = (eps_hat - noise).pow(2).flatten(1).mean(1)
    return (favero_min_snr_weight(logsnr, config.snr_gamma) * per_sample).mean()


def make_classifier(net, config, num_classes: int, votes: int, seed: int, rule: str | None = None,
                    prune_stages=None, prune_keep=None) -> DiffusionClassifier:
    return DiffusionClassifier(
        net, num_classes, schedule=ShiftedCosineLogSNR(base_d=config.base_d, image_d=config.image_d), votes=votes,
        rule=rule or config.rule, wavelet=config.wavelet, max_rows=config.max_rows,
        prune_stages=config.prune_stages if prune_stages is None else prune_stages,
        prune_keep=config.prune_keep if prune_keep is None else prune_keep,
        temperature=config.mean_temperature, seed=seed, resolution=config.resolution)


def classify(module: nn.Module, images_u8: torch.Tensor, mean, std, device: str, batch_size: int = 64) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for s in range(0, len(images_u8), batch_size):
            out.append(module(normalise(images_u8[s:s + batch_size].to(device), mean, std))["probs"].cpu().numpy())
    return np.concatenate(out)


def fit(data, config, ctx) -> Predictor:
    torch.manual_seed(ctx.seed)
    device, k = ctx.device, data.num_classes
    if config.wavelet and (config.resolution or data.size) % 2:
        raise HarnessError(f"diffclf wavelet=true needs an even image size; found {config.resolution or data.size} px "
                           "(set resolution to an even size)")
    mean = std = (0.5,) * data.channels  # images in [-1, 1] (brief Sec. 3.1)
    net = build_unet(config, data.channels, data.size, k).to(device)
    ema = EMA(net, config.ema_decay, config.ema_every, config.ema_start)
    schedule = ShiftedCosineLogSNR(base_d=config.base_d, image_d=config.image_d)
    optimizer = make_optimizer(net.parameters(), config)
    train_x, train_y = to_uint8_tensor(data.train.images), torch.from_numpy(data.train.labels.astype(np.int64))
    val_x, val_y = to_uint8_tensor(data.val.images), data.val.labels.astype(np.int64)
    sampler, rng = ctx.make_sampler(data.train.labels), np.random.default_rng(ctx.seed)
    generator = torch.Generator().manual_seed(ctx.seed)
    steps_per_epoch = max(1, math.ceil(len(train_y) / config.batch_size))
    total = config.epochs * steps_per_epoch
    best, best_state, step = -1.0, {key: v.clone() for key, v in ema.state_dict().items()}, 0
    for epoch in range(config.epochs):
        net.train()
        order = torch.from_numpy(np.asarray(sampler.indices(epoch, config.epochs, rng), dtype=np.int64))
        losses = []
        for s in range(0, len(order), config.batch_size):
            idx = order[s:s + config.batch_size]
            # Adam with linear warm-up then cosine decay (brief Sec. 3b)
            factor = min(1.0, (step + 1) / max(config.warmup_steps, 1))
            factor *= 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0)))
            for group in optimizer.param_groups:
                group["lr"] = config.lr * factor
            x = augment(normalise(train_x[idx].to(device), mean, std), config, generator)
            x = model_view(x, config.resolution)
            x = haar_dwt(x) if config.wavelet else x
            loss = diffusion_loss(net, x, train_y[idx].to(device), schedule, config, generator, k)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            optimizer.step()
            ema.update(net, step)
            losses.append(float(loss.detach()))
            step += 1
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan")}
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
            clf = make_classifier(ema.module, config, k, config.val_votes, ctx.seed).eval()
            probs = classify(clf, val_x, mean, std, device)
            score = ctx.score(val_y, probs)[ctx.headline_metric]
            record.update(val_macro_f1=score, val_accuracy=float((probs.argmax(1) == val_y).mean()))
            if score > best:
                best, best_state = score, {key: v.clone() for key, v in ema.state_dict().items()}
        ctx.report(**record)
    ema.load_state_dict(best_state)
    module = make_classifier(ema.module, config, k, config.votes, ctx.seed + 1).eval()
    from plugins.diffclf.explain import make_explainer  # imports this module

    predictor = Predictor(module, mean=mean, std=std, batch_size=64, exportable=False, device=device)
    return Predictor(module, mean=mean, std=std, batch_size=64, exportable=False, device=device,
                     explain=make_explainer(predictor, config))
