"""``iois``: online, classifier-guided image synthesis with accuracy-adaptive sampling, and its ablation rows.

Li, Lin, Chen, Cheng, "Image synthesis for imbalanced medical image classification" (IOIS), MICCAI 2024.
Implemented from ``docs/methods-brief.md`` section 2 and issue 18; the generator and the guided sampler live
in ``plugins/iois/model.py`` (read it next to the paper's Eqs. 2-4 and Algorithm 1), the training in
``plugins/iois/train.py``. This module only registers the methods and must stay cheap to import (no torch).

1. **Generator** (offline, once): a class-conditional image diffusion model (the shared UNet, linear betas,
   epsilon-prediction, EMA weights) trained on the *training split only*, then frozen. It is cached on disk
   under the harness cache dir, keyed on the dataset, a hash of its training split, the protocol, the size,
   the generator settings and ``gen_seed``: the three variants and every classifier seed share one
   generator (the result's ``notes`` say ``generator_key``, ``generator_train_seconds``, ``generator_cached``).
   ``conditional=false`` trains the label-free generator of the paper's Eqs. 2-4 instead.
2. **AAS** (each epoch): K synthetic images are allocated as n_c = floor(softmax_c(1 - acc_c) K), acc_c the
   classifier's per-class accuracy on the training set (real + that epoch's synthetic images, validation
   transforms) at the end of the previous epoch.
3. **OIS**: the allocated images are sampled in large batches with DDIM (``sample_steps``, eta 0, x0 clipped),
   guided by the gradient of the classifier being trained, g = s grad log softmax(f(x_t))_y (s = 1, the
   classifier not noise-aware): ``guidance="ddim"`` is the code's correction eps - sqrt(1 - abar_t) g in a
   DDIM step, ``guidance="eq4"`` the paper's Eq. 4, eps - s g, in an ancestral step (Eq. 3).
4. **Merge**: each epoch trains on all real images plus only that epoch's synthetic images.

``epoch_order``: ``code`` (acc starts at 0.5, so the first allocation is uniform, and images are synthesised
before the first epoch) or ``paper`` (Algorithm 1: train first; the first epoch is real-only).

Three methods, the IOIS rows of the paper's Table 1, share one config (``variant`` is pinned by every profile):

- ``iois-offline``: one pool of K images (equal counts per class) generated before training, guided by a
  classifier first trained on the real images (``pretrain_epochs``), kept fixed while a fresh classifier trains.
- ``iois-ois``: online synthesis every epoch, equal counts per class.
- ``iois``: online synthesis + accuracy-adaptive sampling (the full method).

Deviations from the official code, on purpose: the generator never sees validation or test images (the
code's training folder may have held them); the checkpoint is selected on validation Macro-F1 (the code
selects on the test split); the last partial sampling batch is kept (the code drops it: 1984 of 2000 images).
As in the code, the classifier is guided with x_t at the generator's size (the code's 128 px x_t into a
classifier trained at 224 px; the ``cpu`` profile keeps that ratio: a 16 px generator for 28 px data; on ``synthetic``, 16 px, the two agree). The
shared UNet stands in for ADM: the paper profile has ADM-128's widths, depth and attention resolutions, not its
scale-shift norm, learned sigma or res-block resampling.

``gen_prediction="v"`` (``smoke`` and ``cpu``): the generator regresses v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0
(Salimans & Ho 2022) instead of ADM's eps; the sampler turns its output into eps, so the guidance and the steps
are unchanged. At a budget of a few hundred to a thousand optimizer steps an eps-model gets the images' global
colour wrong (its error in the image mean at high noise is amplified by sqrt(1 - abar_t) / sqrt(abar_t), up to
156x, when x0 is estimated, and a deterministic sampler keeps that colour). Measured on ``synthetic`` with the
cpu generator, 500 steps, DDIM-10: mean colour of the samples (R, G, B) 0.43 / 0.48 / 0.53 and a spread of
image colours of 0.33 for eps, against 0.77 / 0.58 / 0.49 and 0.03 for v; the data: 0.78 / 0.59 / 0.49 and 0.06.
The generator's EMA copies the weights for the first fifth of the steps and averages after (a short budget's
average would otherwise keep a visible share of the untrained network).

Profiles: ``smoke`` (seconds, for tests); ``cpu`` (ResNet-10-T classifier, a 32-channel v-prediction UNet
generator at 16 px, 1,500 steps, K = 20% of the training split, DDIM-10, 10 epochs; on ``synthetic`` 5 epochs and a 300-step
generator, about a minute per variant once the generator is cached; a RetinaMNIST trial within 15 minutes;
figures in benchmarks/README.md); ``paper`` (ADM-128-sized generator trained 50k steps, EMA 0.9999, DDIM-50,
ResNet-50 ImageNet-pretrained, SGD 0.0125 batch 32 for 200 epochs with x0.1 at 60/120/180, Resize-crop + flip
+ rotation 30; K = 2000 on HAM10000 / ISIC 2018, 28.5% of the training split elsewhere; run at
``--set dataset.size=224``).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import MethodSpec, hookimpl
from harness.contract.specs import check_range
from harness.toolkit.training_config import TrainConfig

VARIANTS = ("offline", "ois", "full")


@dataclass(frozen=True)
class IOISConfig(TrainConfig):
    """IOIS settings. The supervised-loop fields (``epochs``, ``lr``, ``batch_size``, flips, ``rotation``,
    ``crop_scale``, ...) are the classifier's; the ``gen_*`` fields are the generator's."""

    variant: str = "full"  # Table 1 row: offline | ois | full (OIS + AAS)
    # --- the classifier f_psi (brief Sec. 2b: ResNet-50, ImageNet-pretrained) ---
    backbone: str = "resnet50"  # any timm model name
    pretrained: bool = True  # ImageNet weights, only if already in the local cache
    pretrain_epochs: int = 0  # offline: epochs of the real-only classifier that guides the pool (0: = epochs)
    # --- AAS and OIS (Sec. 2a, steps 1-3) ---
    synthetic_per_epoch: int = 0  # K; 0: round(k_fraction x training-set size)
    k_fraction: float = 0.2  # K as a fraction of the training split when synthetic_per_epoch = 0
    epoch_order: str = "code"  # code: acc_c = 0.5 first, synthesise before epoch 1 | paper: epoch 1 real-only
    guidance: str = "ddim"  # ddim: eps - sqrt(1 - abar_t) s g, DDIM step (code) | eq4: eps - s g, ancestral step
    guidance_scale: float = 1.0  # s
    guidance_normalise: bool = False  # feed the classifier x_t in its input normalisation (the code: [-1, 1] as is)
    sample_steps: int = 50  # DDIM steps respaced from the T training steps (eq4: ancestral steps; T = the paper's)
    sample_batch: int = 256  # images per batched guided-sampling call
    # --- the generator eps_theta (Sec. 2a, step 1: ADM-128, class-conditional, linear betas, T = 1000) ---
    conditional: bool = True  # false: the label-free generator of the paper's Eqs. 2-4 (guidance alone steers)
    gen_size: int = 0  # the generator's resolution (0: the data size); samples are resized to the data size
    gen_channels: int = 256
    gen_channel_mult: tuple[int, ...] = (1, 1, 2, 3, 4)
    gen_res_blocks: int = 2
    gen_attention: tuple[int, ...] = (32, 16, 8)  # feature-map resolutions with self-attention
    gen_dropout: float = 0.0
    gen_emb_dim: int = 1024  # time (+ class) embedding width (ADM: 4 x channels)
    timesteps: int = 1000  # T
    beta_start: float = 1e-4
    beta_end: float = 0.02
    gen_steps: int = 50_000  # optimizer steps (rounded up to whole epochs of the training split)
    gen_batch_size: int = 32
    gen_lr: float = 1e-4  # Adam
    gen_ema_decay: float = 0.9999
    gen_hflip: bool = True  # random horizontal flips of the generator's training images (ADM's default)
    gen_prediction: str = "eps"  # eps (ADM, the paper) | v (Salimans & Ho 2022; the cpu budgets need it, see above)
    gen_seed: int = 0  # the generator's seed: one generator for every classifier seed
    grid_per_class: int = 8  # images per class in the synthetic-image grids

    def __post_init__(self):
        super().__post_init__()
        check_range("variant", self.variant, choices=VARIANTS)
        check_range("pretrain_epochs", self.pretrain_epochs, low=0)
        check_range("synthetic_per_epoch", self.synthetic_per_epoch, low=0)
        check_range("k_fraction", self.k_fraction, low=0.0, high=10.0)
        check_range("epoch_order", self.epoch_order, choices=("code", "paper"))
        check_range("guidance", self.guidance, choices=("ddim", "eq4"))
        check_range("guidance_scale", self.guidance_scale, low=0.0)
        check_range("sample_steps", self.sample_steps, low=1, high=self.timesteps)
        check_range("sample_batch", self.sample_batch, low=1)
        check_range("gen_size", self.gen_size, low=0)
        check_range("gen_channels", self.gen_channels, low=1)
        if not self.gen_channel_mult or min(self.gen_channel_mult) < 1:
            raise ValueError(f"gen_channel_mult must be a non-empty list of positive integers; "
                             f"found {list(self.gen_channel_mult)!r}")
        check_range("gen_res_blocks", self.gen_res_blocks, low=1)
        check_range("gen_dropout", self.gen_dropout, low=0.0, high=1.0)
        check_range("gen_emb_dim", self.gen_emb_dim, low=1)
        check_range("timesteps", self.timesteps, low=2)
        check_range("beta_start", self.beta_start, low=0.0, high=1.0, low_open=True)
        check_range("beta_end", self.beta_end, low=self.beta_start, high=1.0)
        check_range("gen_prediction", self.gen_prediction, choices=("eps", "v"))
        check_range("gen_steps", self.gen_steps, low=1)
        check_range("gen_batch_size", self.gen_batch_size, low=2)
        check_range("gen_lr", self.gen_lr, low=0.0, low_open=True)
        check_range("gen_ema_decay", self.gen_ema_decay, low=0.0, high=0.999999)
        check_range("grid_per_class", self.grid_per_class, low=1)


@dataclass(frozen=True)
class IOISOISConfig(IOISConfig):
    variant: str = "ois"


@dataclass(frozen=True)
class IOISOfflineConfig(IOISConfig):
    variant: str = "offline"


_SMOKE_GENERATOR = {"gen_prediction": "v", "gen_channels": 8, "gen_channel_mult": (1, 2), "gen_res_blocks": 1,
                    "gen_attention": (), "gen_emb_dim": 32, "gen_steps": 8, "gen_batch_size": 32, "gen_lr": 2e-3,
                    "gen_ema_decay": 0.5}
# cpu: a 32-channel three-level UNet at 16 px (for the 28 px data: the paper's 128 / 224 ratio), Adam 2e-3 (a
# short budget needs the large rate), EMA 0.995; DDIM-10 sampling in batches of 256. The classifier: ResNet-10-T
# (timm's ResNet with one block per stage; at <= 64 px the small-image stem) with the IOIS augmentations.
_CPU_GENERATOR = {"gen_prediction": "v", "gen_size": 16, "gen_channels": 32, "gen_channel_mult": (1, 2, 2),
                  "gen_res_blocks": 1, "gen_attention": (), "gen_emb_dim": 128, "gen_steps": 1500,
                  "gen_batch_size": 32, "gen_lr": 2e-3, "gen_ema_decay": 0.995}
_CLASSIFIER_AUG = {"hflip": True, "rotation": 30.0, "crop_scale": 0.77}  # Resize 256 -> RandomCrop 224: area 0.77

PROFILES = {
    "smoke": {**_SMOKE_GENERATOR, **_CLASSIFIER_AUG, "backbone": "resnet10t", "pretrained": False, "epochs": 2,
              "pretrain_epochs": 1, "batch_size": 64, "optimizer": "adamw", "lr": 2e-3, "schedule": "cosine",
              "k_fraction": 0.2, "sample_steps": 3, "sample_batch": 256, "grid_per_class": 3},
    "cpu": {**_CPU_GENERATOR, **_CLASSIFIER_AUG, "backbone": "resnet10t", "pretrained": False, "epochs": 10,
            "pretrain_epochs": 5, "batch_size": 32, "optimizer": "adamw", "lr": 2e-3, "schedule": "cosine",
            "k_fraction": 0.2, "sample_steps": 10, "sample_batch": 256},
    "paper": {**_CLASSIFIER_AUG, "backbone": "resnet50", "pretrained": True, "epochs": 200, "pretrain_epochs": 0,
              "batch_size": 32, "optimizer": "sgd", "lr": 0.0125, "momentum": 0.9, "weight_decay": 1e-4,
              "schedule": "multistep", "milestones": (60, 120, 180), "k_fraction": 0.285, "sample_steps": 50,
              "sample_batch": 256, "gen_size": 128, "gen_channels": 256, "gen_channel_mult": (1, 1, 2, 3, 4),
              "gen_res_blocks": 2, "gen_attention": (32, 16, 8), "gen_emb_dim": 1024, "gen_steps": 50_000,
              "gen_batch_size": 32, "gen_lr": 1e-4, "gen_ema_decay": 0.9999},
}

# The paper's data protocol (70/10/20 stratified, "iois") on its datasets; K = 2000 on ISIC 2018 (HAM10000).
_PAPER_DATA = {"aptos": {"dataset.split": "iois"}, "ham10000": {"dataset.split": "iois"},
               "isic2018": {"dataset.split": "iois"}}
DATASET_PROFILES = {
    "smoke": _PAPER_DATA,
    # the built-in synthetic set (320 training images) is in the default `harness run`: about a minute per variant
    "cpu": {**_PAPER_DATA, "synthetic": {"epochs": 5, "pretrain_epochs": 3, "gen_steps": 300}},
    "paper": {**_PAPER_DATA, "ham10000": {"dataset.split": "iois", "synthetic_per_epoch": 2000},
              "isic2018": {"dataset.split": "iois", "synthetic_per_epoch": 2000}},
}

SEARCH_SPACE = {
    "lr": ("loguniform", 3e-4, 1e-2),
    "k_fraction": ("uniform", 0.1, 0.5),
    "guidance_scale": ("loguniform", 0.1, 10.0),
}

_PAPER = "Li, Lin, Chen, Cheng, IOIS: online image synthesis with accuracy-adaptive sampling, MICCAI 2024"


def _profiles(variant: str) -> dict:
    # every profile pins the variant, so a profile can never turn one Table 1 row into another
    return {name: {**values, "variant": variant} for name, values in PROFILES.items()}


@hookimpl
def register_methods(register):
    rows = [
        ("iois", IOISConfig, "full",
         "IOIS: classifier-guided diffusion synthesis every epoch, accuracy-adaptive class allocation"),
        ("iois-ois", IOISOISConfig, "ois",
         "IOIS ablation: online classifier-guided synthesis every epoch, equal counts per class"),
        ("iois-offline", IOISOfflineConfig, "offline",
         "IOIS ablation: one fixed pool of guided diffusion samples generated before training"),
    ]
    for name, config, variant, description in rows:
        register(MethodSpec(
            name=name,
            description=description,
            paper=_PAPER,
            config=config,
            fit="plugins.iois.train:fit",
            profiles=_profiles(variant),
            search_space=SEARCH_SPACE,
            uses_sampler=False,  # the IOIS rows train on uniform batches (the synthesis is the re-balancing)
            dataset_profiles=DATASET_PROFILES,
        ))
