"""``gan-aug``: a ResNet-18 classifier whose minority classes are topped up with class-conditional GAN samples.

The GAN-augmentation baseline of the imbalanced medical-imaging papers (conditional GANs and StyleGAN2-ADA
rows in their tables). Two stages, both on the *training split only*:

1. A class-conditional DCGAN is trained on the training images: the generator has conditional batch norm
   (class-specific gain and bias, Dumoulin et al. 2017; de Vries et al. 2017), the discriminator is a
   projection discriminator with spectral norm (Miyato & Koyama 2018; Miyato et al. 2018), trained with
   the hinge loss. Small medical datasets overfit a GAN's discriminator quickly, so every image the
   discriminator sees, real or generated, first goes through DiffAugment (Zhao et al. 2020,
   "Differentiable Augmentation for Data-Efficient GAN Training"): random colour (brightness, saturation,
   contrast), translation (up to 1/8 of the image) and cutout (a square of half the image side), applied
   differentiably so the generator's gradient passes through them. The generator works at the smallest
   power of two >= the data size (at least 16 px) and its output is resized to the data size, so any
   channel count (1 or 3) and any size >= 16 px works.
   The adversarial updates run in the shared loop (``harness.toolkit.training.train_loop``, its ``update=``
   form: one discriminator and one generator step per batch, batches drawn uniformly from the training
   split whatever the experiment's sampler), reported as the trial's ``gan`` stage. Batch norm in the
   generator normalises with batch statistics while it trains; so that sampling matches, the generator's
   statistics are then set to the average batch statistics of training-like batches ("standing
   statistics", Brock et al. 2019) and every sample is drawn with those, so an image does not depend on
   the other classes in its sampling batch.
2. ResNet-18 is trained with the shared supervised loop (``harness.toolkit.training.train_classifier``); through
   its ``extra_batches(epoch)`` hook every epoch's training set gets, for each class c,
   ``max(0, ceil(balance * n_max) - n_c)`` generated images of class c, where ``n_max`` is the majority
   class count of the training split (``balance=1.0``: every class up to the majority count; ``0``: no
   synthetic images, i.e. plain ``resnet``).

Choice of synthetic pool: by default (``fresh_samples=true``) the top-up images are drawn fresh from the
generator every epoch, so the classifier never sees the same synthetic image twice and cannot memorise
generator artefacts of a single draw; sampling costs one generator forward pass per image (milliseconds
on CPU). ``fresh_samples=false`` draws one fixed pool before the classifier starts and reuses it every
epoch (the offline-synthesis protocol of most papers).

Artefacts: ``gan_samples.png`` (one row per class, in class order, generated after GAN training) and
``gan_history.json`` (the GAN's losses every few steps, and the top-up counts).

Profiles: ``smoke`` (seconds, for tests); ``cpu`` (a narrow GAN, 300 steps of batch 32, then the classifier
with ``resnet``'s cpu budget, 108 optimizer steps of batch 128 over the real and synthetic images, and every
class topped up to the majority count; on ``synthetic`` the classifier has ``resnet``'s 64 steps of batch 32; a
step budget stays resnet's however many images are added (fewer epochs over the larger set); measured times in
benchmarks/README.md "GAN augmentation");
``paper`` (a wider GAN trained for 20k steps with a 64 px generator, Adam 2e-4 / betas (0.5, 0.999) as
in DCGAN and DiffAugment's low-data setting, the classifier as MedMNIST v2's ResNet-18 with every class
topped up to the majority count; run with ``--set dataset.size=64`` or larger for the 64-128 px setting).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import MethodSpec, hookimpl
from harness.contract.specs import check_range
from harness.toolkit.training_config import TrainConfig

DIFFAUGMENT_OPS = ("color", "translation", "cutout")  # the operations of model.DIFFAUGMENT


@dataclass(frozen=True)
class GanAugConfig(TrainConfig):
    # Classifier
    backbone: str = "resnet18"  # any timm model name
    pretrained: bool = False  # ImageNet weights, only if already in the local cache
    # Top-up: every class is topped up to ceil(balance * majority count) with generated images.
    balance: float = 1.0
    fresh_samples: bool = True  # new synthetic images every epoch (true) or one fixed pool (false)
    # GAN (conditional DCGAN, hinge loss, DiffAugment)
    latent_dim: int = 64
    g_width: int = 64  # generator channels at the last (highest-resolution) block; doubled per block down
    d_width: int = 64  # discriminator channels at the first block; doubled per block down
    gan_steps: int = 2000  # discriminator + generator updates
    gan_batch_size: int = 64
    g_lr: float = 2e-4
    d_lr: float = 2e-4
    beta1: float = 0.5  # Adam betas (DCGAN: 0.5, 0.999)
    beta2: float = 0.999
    diffaugment: str = "color,translation,cutout"  # comma-separated subset of color, translation, cutout
    gan_min_size: int = 16  # the generator works at the smallest power of two >= max(size, gan_min_size)
    standing_batches: int = 16  # batches of gan_batch_size averaged for the generator's standing statistics
    grid_per_class: int = 8  # samples per row of gan_samples.png

    def __post_init__(self):
        super().__post_init__()
        check_range("balance", self.balance, low=0.0)
        for name in ("latent_dim", "g_width", "d_width", "gan_steps", "standing_batches", "grid_per_class"):
            check_range(name, getattr(self, name), low=1)
        check_range("gan_batch_size", self.gan_batch_size, low=2)
        check_range("g_lr", self.g_lr, low=0.0, low_open=True)
        check_range("d_lr", self.d_lr, low=0.0, low_open=True)
        check_range("beta1", self.beta1, low=0.0, high=0.999999)
        check_range("beta2", self.beta2, low=0.0, high=0.999999)
        check_range("gan_min_size", self.gan_min_size, low=16)
        self.diffaugment_ops()

    def diffaugment_ops(self) -> tuple[str, ...]:
        """``diffaugment`` as a tuple of operations, e.g. ``("color", "translation")``; unknown ones are an error."""
        ops = tuple(p.strip() for p in self.diffaugment.split(",") if p.strip())
        unknown = [op for op in ops if op not in DIFFAUGMENT_OPS]
        if unknown:
            raise ValueError(f"diffaugment {self.diffaugment!r} has unknown operations {unknown}; use a "
                             f"comma-separated subset of {', '.join(DIFFAUGMENT_OPS)} (or '' for none)")
        return ops


PROFILES = {
    "smoke": {"epochs": 1, "batch_size": 64, "balance": 0.5, "latent_dim": 32, "g_width": 16, "d_width": 16,
              "gan_steps": 20, "gan_batch_size": 32, "grid_per_class": 4},
    # the classifier has resnet's cpu budget (plugins/baselines: 108 steps of batch 128; on synthetic 64 of 32),
    # over the real and synthetic images; every class topped up to the majority count, as under paper (at 0.25,
    # before 2026-12-02, RetinaMNIST got 56 images in one class and PneumoniaMNIST none)
    "cpu": {"steps": 108, "min_epochs": 2, "batch_size": 128, "lr": 2e-3, "balance": 1.0, "latent_dim": 64,
            "g_width": 16, "d_width": 32, "gan_steps": 300, "gan_batch_size": 32},
    "paper": {"epochs": 100, "batch_size": 128, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
              "schedule": "multistep", "milestones": (50, 75), "balance": 1.0, "latent_dim": 128,
              "g_width": 64, "d_width": 64, "gan_steps": 20000, "gan_batch_size": 64, "gan_min_size": 64},
}

SEARCH_SPACE = {
    "lr": ("loguniform", 1e-4, 1e-2),
    "balance": ("uniform", 0.0, 1.0),
    "gan_steps": ("choice", [500, 1000, 2000, 4000]),
    "g_lr": ("loguniform", 5e-5, 1e-3),
    "d_lr": ("loguniform", 5e-5, 1e-3),
    "diffaugment": ("choice", ["color,translation,cutout", "translation,cutout", "color,translation", ""]),
}


@hookimpl
def register_methods(register):
    register(MethodSpec(
        name="gan-aug",
        description="ResNet-18 with minority classes topped up by a conditional DCGAN + DiffAugment",
        paper="Radford et al. 2016 (DCGAN); Miyato & Koyama 2018 (projection D); Zhao et al. 2020 (DiffAugment)",
        config=GanAugConfig,
        fit="plugins.gan_aug.train:fit",
        profiles=PROFILES,
        dataset_profiles={"cpu": {"synthetic": {"steps": 64, "batch_size": 32}}},  # as resnet's
        search_space=SEARCH_SPACE,
    ))
