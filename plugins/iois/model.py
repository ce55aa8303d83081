"""IOIS, the model side (Li et al., MICCAI 2024; brief Sec. 2): the generator, AAS, and the guided sampler.

Read next to the paper:

- **Eq. 2** (generator training): the epsilon-prediction loss E_{t, x_0, eps} ||eps - eps_theta(x_t, t[, y])||^2
  with x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps on linear betas (``denoising_loss``). The paper writes the
  label-free eps_theta(x_t, t); the reported numbers came from the code's class-conditional eps_theta(x_t, t, y)
  (``conditional=True``, the default). The cpu profiles regress v instead of eps (``prediction="v"``, Salimans &
  Ho 2022), converted to eps for sampling: the same model class, far faster to train.
- **Eq. 3** (the reverse step): the ancestral step from x_t to x_{t-1} with the posterior of x_0 = x0_hat(eps)
  (``harness.toolkit.nn.diffusion.ancestral_step``).
- **Eq. 4** (classifier guidance): eps_hat = eps_theta - s grad_{x_t} log p_psi(y | x_t) (``guidance="eq4"``,
  used in the Eq. 3 step). The code instead corrects a DDIM step with the score form of Dhariwal & Nichol,
  eps_hat = eps_theta - sqrt(1 - abar_t) s grad log p_psi(y | x_t) (``guidance="ddim"``, the default), after
  clipping x0_hat to [-1, 1]. In both the classifier is the one being trained (eval mode), it is not
  noise-aware (t is not its input) and p_psi(y | x_t) = softmax(f_psi(x_t))_y.
- **Algorithm 1**, per epoch: allocate (AAS: ``aas_allocation``), synthesise (OIS: ``GuidedSampler.sample``),
  merge (this epoch's synthetic images only), train; ``plugins/iois/train.py`` runs it around the shared loop.

Generation dominates the cost (K x steps x (one generator forward + one classifier forward and input-gradient)
per epoch), so every step runs on the whole batch of all classes at once: one UNet forward without autograd,
one batched classifier forward + backward to the input only (the classifier's weights do not take gradients).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.errors import HarnessError
from harness.toolkit.nn.diffusion import (
    ancestral_step,
    classifier_guided_eps,
    classifier_log_prob_grad,
    ddim_step,
    eps_to_x0,
    q_sample,
    respace,
    to_eps,
    v_target,
    x0_to_eps,
)
from harness.toolkit.nn.schedules import DiscreteSchedule
from harness.toolkit.nn.unet import UNet

GENERATOR_VERSION = 3  # bump when the generator's training changes, so cached generators are retrained
# The config fields the generator depends on (with the data and GENERATOR_VERSION: its cache key).
GENERATOR_FIELDS = ("conditional", "gen_size", "gen_channels", "gen_channel_mult", "gen_res_blocks", "gen_attention",
                    "gen_dropout", "gen_emb_dim", "timesteps", "beta_start", "beta_end", "gen_steps",
                    "gen_batch_size", "gen_lr", "gen_ema_decay", "gen_hflip", "gen_prediction", "gen_seed")


# ------------------------------------------------------------------------------------------------ AAS


def aas_allocation(accuracy, k: int, present=None) -> np.ndarray:
    """Accuracy-adaptive sampling: n_c = floor(softmax_c(1 - acc_c) K) synthetic images per class (brief Sec. 2a.2).

    ``accuracy``: per-class training accuracy in [0, 1]. ``present``: a mask of the classes the training split
    has (the others get none and leave the softmax). The floor makes sum_c n_c <= K.

    >>> aas_allocation([0.5, 0.5], 10).tolist()
    [5, 5]
    """
    acc = np.asarray(accuracy, dtype=np.float64)
    if acc.ndim != 1 or len(acc) == 0:
        raise HarnessError(f"IOIS: per-class accuracies must be a non-empty vector; found shape {acc.shape}")
    if k < 0:
        raise HarnessError(f"IOIS: K (synthetic images per epoch) must be >= 0; found {k}")
    mask = np.ones(len(acc), bool) if present is None else np.asarray(present, bool)
    if not mask.any():
        return np.zeros(len(acc), np.int64)
    if np.any(~np.isfinite(acc[mask])) or np.any((acc[mask] < 0) | (acc[mask] > 1)):
        raise HarnessError(f"IOIS: per-class accuracies must be in [0, 1]; found {acc[mask].tolist()}")
    logits = np.where(mask, 1.0 - np.nan_to_num(acc), -np.inf)
    weights = np.exp(logits - logits[mask].max())
    return np.floor(weights / weights.sum() * k + 1e-9).astype(np.int64)


def equal_allocation(num_classes: int, k: int, present=None) -> np.ndarray:
    """Equal counts per class (the ``iois-ois`` and ``iois-offline`` rows): floor(K / C) each."""
    return aas_allocation(np.full(num_classes, 0.5), k, present)


def per_class_accuracy(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """acc_c = the fraction of class-c images predicted as c (NaN for a class with no image)."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        rows = labels == c
        if rows.any():
            out[c] = float((predictions[rows] == c).mean())
    return out


# ------------------------------------------------------------------------------------------ generator


def make_schedule(config) -> DiscreteSchedule:
    """Linear betas beta_start ... beta_end over T = ``timesteps`` (ADM's, the code's: 1e-4 ... 0.02, T = 1000)."""
    return DiscreteSchedule.make("linear", config.timesteps, beta_start=config.beta_start, beta_end=config.beta_end)


def generator_size(config, data_size: int) -> int:
    return config.gen_size or data_size


def build_generator(config, channels: int, num_classes: int, data_size: int) -> UNet:
    """eps_theta: the shared UNet, class-conditional (``conditional``) or label-free."""
    return UNet(channels, channels=config.gen_channels, channel_mult=tuple(config.gen_channel_mult),
                num_res_blocks=config.gen_res_blocks, attention_resolutions=tuple(config.gen_attention),
                dropout=config.gen_dropout, emb_dim=config.gen_emb_dim,
                num_classes=num_classes if config.conditional else 0,
                image_size=generator_size(config, data_size))


def denoising_loss(net: nn.Module, x0: torch.Tensor, y: torch.Tensor | None, schedule: DiscreteSchedule,
                   generator: torch.Generator, prediction: str = "eps") -> torch.Tensor:
    """Eq. 2: mean ||eps - eps_theta(x_t, t[, y])||^2, t ~ U{0, ..., T-1}, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
    (Ho et al. 2020, L_simple). ``x0`` in [-1, 1]; ``y=None`` for the label-free generator. ``prediction="v"``
    regresses v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 instead (Salimans & Ho 2022; the cpu profiles)."""
    b = x0.shape[0]
    t = torch.randint(0, schedule.num_steps, (b,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    alpha, sigma = schedule.alpha_sigma(t)
    x_t = q_sample(x0, alpha, sigma, noise)
    target = noise if prediction == "eps" else v_target(x0, noise, alpha, sigma)
    return F.mse_loss(net(x_t, t.float(), y), target)


# ----------------------------------------------------------------------------------- guided sampling


class GuidanceView(nn.Module):
    """What the classifier f_psi sees of x_t: x_t at the generator's size, in [-1, 1], as the code feeds it (its
    128 px x_t goes to the ResNet-50 trained at 224 px), or with ``normalise`` mapped to the classifier's input
    normalisation (brief, open choice 7). Returns logits."""

    def __init__(self, classifier: nn.Module, mean=None, std=None, normalise: bool = False):
        super().__init__()
        self.classifier = classifier
        self.normalise = normalise and mean is not None
        if self.normalise:
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x_t: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            x_t = ((x_t + 1) / 2 - self.mean.to(x_t.device)) / self.std.to(x_t.device)
        return self.classifier(x_t)


class frozen_eval:  # noqa: N801  (a context manager used like a function)
    """The classifier in eval mode with its weights not requiring gradients, restored afterwards: guidance takes
    the gradient with respect to x_t only, so the backward pass skips every weight gradient."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.training = self.module.training
        self.flags = [(p, p.requires_grad) for p in self.module.parameters()]
        self.module.eval()
        for p, _ in self.flags:
            p.requires_grad_(False)
        return self.module

    def __exit__(self, *exc):
        for p, flag in self.flags:
            p.requires_grad_(flag)
        self.module.train(self.training)
        return False


class GuidedSampler:
    """OIS: classifier-guided sampling from the frozen generator ``net`` (see the module docstring).

    ``sample(labels, classifier, generator)`` returns uint8 (N, C, out_size, out_size) images of the requested
    classes; ``classifier`` maps x_t (at the generator's size, in [-1, 1]) to logits (a :class:`GuidanceView`),
    or is None for unguided sampling. ``prediction``: what ``net`` predicts ("eps" or "v"); the guidance and the
    steps work on eps.
    """

    def __init__(self, net: nn.Module, schedule: DiscreteSchedule, *, size: int, channels: int, out_size: int,
                 steps: int, guidance: str = "ddim", scale: float = 1.0, conditional: bool = True,
                 prediction: str = "eps", batch_size: int = 256, device: str = "cpu"):
        if guidance not in ("ddim", "eq4"):
            raise HarnessError(f"IOIS guidance must be 'ddim' (the code) or 'eq4' (the paper); found {guidance!r}")
        if prediction not in ("eps", "v"):
            raise HarnessError(f"IOIS generator prediction must be 'eps' or 'v'; found {prediction!r}")
        self.net, self.schedule = net.eval(), schedule
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.size, self.channels, self.out_size = size, channels, out_size
        self.timesteps = respace(schedule.num_steps, steps)  # descending, ending at 0
        self.abar = schedule.alphas_cumprod.float()
        self.guidance, self.scale, self.conditional = guidance, scale, conditional
        self.prediction, self.batch_size, self.device = prediction, batch_size, device

    def guided_eps(self, x_t: torch.Tensor, t: int, y: torch.Tensor, classifier) -> torch.Tensor:
        """eps_hat of one step for the whole batch (module docstring: the two forms)."""
        n = x_t.shape[0]
        a_t, s_t = self.abar[t].sqrt(), (1 - self.abar[t]).sqrt()
        with torch.no_grad():
            out = self.net(x_t, torch.full((n,), float(t), device=x_t.device), y if self.conditional else None)
            eps = to_eps(self.prediction, x_t, out, a_t, s_t)
        if self.guidance == "ddim":  # the code: x0_hat clipped and eps recomputed from it, before the guidance
            eps = x0_to_eps(x_t, eps_to_x0(x_t, eps, a_t, s_t).clamp(-1, 1), a_t, s_t)
        if classifier is None or self.scale == 0:
            return eps
        grad = classifier_log_prob_grad(classifier, x_t, y)  # g / s = grad_{x_t} log softmax(f(x_t))_y, batched
        if self.guidance == "ddim":
            return classifier_guided_eps(eps, grad, s_t, self.scale)  # eps - sqrt(1 - abar_t) s g
        return eps - self.scale * grad  # Eq. 4

    def step(self, x_t: torch.Tensor, i: int, eps_hat: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """x_t -> x_s for the i-th respaced timestep t (s the next one; after t = 0, x0_hat)."""
        t = int(self.timesteps[i])
        last = i + 1 == len(self.timesteps)
        a_t, s_t = self.abar[t].sqrt(), (1 - self.abar[t]).sqrt()
        abar_s = torch.tensor(1.0) if last else self.abar[int(self.timesteps[i + 1])]
        a_s, s_s = abar_s.sqrt(), (1 - abar_s).sqrt()
        if self.guidance == "ddim":  # eta = 0 (Song et al. Eq. 12)
            return ddim_step(x_t, eps_hat, a_t, s_t, a_s, s_s, eta=0.0)
        x0_hat = eps_to_x0(x_t, eps_hat, a_t, s_t).clamp(-1, 1)
        if last:
            return x0_hat
        noise = torch.randn(x_t.shape, generator=generator).to(x_t.device)
        return ancestral_step(x_t, x0_hat, a_t, s_t, a_s, s_s, noise)  # Eq. 3

    def sample_batch(self, y: torch.Tensor, classifier, generator: torch.Generator) -> torch.Tensor:
        """One batch: x_T ~ N(0, I), then every respaced step; returns x_0 in [-1, 1] at the generator's size."""
        x = torch.randn((len(y), self.channels, self.size, self.size), generator=generator).to(self.device)
        y = y.to(self.device)
        for i, t in enumerate(self.timesteps.tolist()):
            x = self.step(x, i, self.guided_eps(x, t, y, classifier), generator)
        return x.clamp(-1, 1)

    def sample(self, labels, classifier=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (N, C, out_size, out_size) images of ``labels``, in batches of ``batch_size`` (all classes mixed)."""
        labels = torch.as_tensor(labels, dtype=torch.int64)
        generator = generator or torch.Generator().manual_seed(0)
        out = []
        for start in range(0, len(labels), self.batch_size):
            if classifier is not None:
                with frozen_eval(classifier):
                    x0 = self.sample_batch(labels[start : start + self.batch_size], classifier, generator)
            else:
                x0 = self.sample_batch(labels[start : start + self.batch_size], None, generator)
            if self.out_size != self.size:
                x0 = F.interpolate(x0, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False,
                                   antialias=self.out_size < self.size)
            out.append(((x0 + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu())
        if not out:
            return torch.zeros(0, self.channels, self.out_size, self.out_size, dtype=torch.uint8)
        return torch.cat(out)
