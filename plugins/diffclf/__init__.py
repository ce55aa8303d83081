"""``diffclf``: the conditional diffusion classifier with majority voting (Favero et al. 2025, MIDL).

A class-conditional image diffusion model (v-prediction on the shifted-cosine log-SNR schedule, min-SNR
weighting, label dropout to a null class, EMA weights) is trained on the training split; an image is then
classified by its per-class denoising error over N trials of (t, noise), the same noise shared by all
classes of a trial (Li et al. 2023). Rules: ``mean`` (lowest mean error) or ``vote`` (each trial votes for
its lowest-error class; the paper's contribution), optionally with Li et al.'s staged class pruning
(``prune_stages`` = cumulative trial counts after which ``prune_keep`` classes are kept).

Per test image the predictions also carry ``uncertainty`` (1 - the winner's vote share) and
``vote_entropy``. ``explain`` writes the accuracy-vs-referral curve and counterfactual maps
(noise to t = 0.5, denoise towards another class with classifier-free guidance w = 4.5).

Profiles: ``smoke`` (tiny UNet, 4 trials), ``cpu`` (N = 51; the 28 px images are area-resized to 14 px and
Haar-transformed to 12 x 7 x 7, a 16-channel two-level UNet, 16 epochs; the schedule shift uses image_d = 28,
the data's size, instead of the paper's 256, since -2.8 nats of shift leave tiny images almost pure noise),
``paper`` (UNet levels 128-128-256-512-1024, N = 501, Haar input, 700 epochs).
Implementation: ``plugins/diffclf/model.py`` (training, classifier) and ``plugins/diffclf/explain.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import MethodSpec, hookimpl


@dataclass(frozen=True)
class DiffClfConfig:
    # training (Favero et al.: Adam 1e-4, cosine schedule with 100 warm-up steps, batch 128, grad clip 1)
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"  # adam | adamw | sgd (harness.toolkit.training.make_optimizer)
    lr: float = 1e-4  # peak; linear warm-up over ``warmup_steps`` then cosine decay to 0
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    hflip: bool = True  # augmentation (harness.toolkit.training.augment)
    vflip: bool = False
    rotation: float = 0.0
    eval_every: int = 5  # validate (Macro-F1 with ``val_votes`` trials) every N epochs and after the last
    # UNet (harness.toolkit.nn.unet)
    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    emb_dim: int = 256
    # diffusion (brief Sec. 3.3-3.5)
    label_dropout: float = 0.15  # p of replacing the label by the null class
    snr_gamma: float = 5.0  # w = 1 / (1 + min(e^lambda, gamma))
    base_d: int = 64  # schedule shift 2 log(base_d / image_d)
    image_d: int = 256
    wavelet: bool = False  # Haar DWT input transform (12 x H/2 x W/2 for RGB)
    resolution: int = 0  # 0: the data's size; else images are area-resized to this size for the diffusion model
    ema_decay: float = 0.999
    ema_every: int = 5
    ema_start: int = 50
    # classification (brief Sec. 3.6)
    votes: int = 51  # N trials of (t, noise) per image
    rule: str = "vote"  # vote | mean
    prune_stages: tuple[int, ...] = ()  # cumulative trial counts ending a stage (Li et al.), e.g. (10,)
    prune_keep: tuple[int, ...] = ()  # classes kept after each stage, e.g. (3,)
    val_votes: int = 11  # trials for checkpoint selection on validation
    max_rows: int = 4096  # rows per batched network call
    mean_temperature: float = 1.0  # mean rule: probs = softmax(-mean error / temperature)
    # explanations (brief Sec. 3.8)
    cf_t: float = 0.5
    cf_steps: int = 50
    cf_guidance: float = 4.5
    explain_per_class: int = 2


PROFILES = {
    "smoke": {"epochs": 2, "batch_size": 32, "lr": 2e-3, "image_d": 28, "channels": 8, "channel_mult": (1, 2), "emb_dim": 32,
              "votes": 4, "val_votes": 2, "eval_every": 1, "warmup_steps": 2, "ema_decay": 0.9, "ema_every": 1,
              "ema_start": 2, "cf_steps": 4, "explain_per_class": 1},
    "cpu": {"epochs": 16, "batch_size": 32, "lr": 2e-3, "channels": 16, "channel_mult": (1, 2), "emb_dim": 64,
            "wavelet": True, "resolution": 14, "image_d": 28, "votes": 51, "val_votes": 5, "eval_every": 4, "warmup_steps": 20, "ema_decay": 0.99,
            "ema_every": 1, "ema_start": 20, "cf_steps": 25, "explain_per_class": 1},
    "paper": {"epochs": 700, "batch_size": 128, "lr": 1e-4, "channels": 128, "channel_mult": (1, 1, 2, 4, 8),
              "num_res_blocks": 2, "attention_resolutions": (16,), "emb_dim": 512, "wavelet": True, "votes": 501,
              "val_votes": 51, "eval_every": 10, "warmup_steps": 100, "ema_decay": 0.999, "ema_every": 5,
              "ema_start": 50, "cf_steps": 50, "explain_per_class": 4},
}

SEARCH_SPACE = {
    "lr": ("loguniform", 1e-4, 3e-3),
    "channels": ("choice", [16, 32, 64]),
    "label_dropout": ("uniform", 0.05, 0.3),
}


@hookimpl
def register_methods(register):
    register(MethodSpec(
        name="diffclf",
        description="Conditional diffusion classifier: per-class denoising error, majority vote over N trials",
        paper="Favero et al. 2025 (MIDL), with Li et al. 2023 (Diffusion Classifier) pruning",
        config=DiffClfConfig,
        fit="plugins.diffclf.model:fit",
        profiles=PROFILES,
        search_space=SEARCH_SPACE,
    ))
