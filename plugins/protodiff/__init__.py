"""Prototype-guided diffusion (IMPROVE, built on ProtoDiffusion) and its classifier-free-guidance baseline.

Two class-conditional image generators, trained on the **training split only** (methods brief, Sec. 4):

- **prototype** (IMPROVE / ProtoDiffusion): prototypes are learned first by generalised convolutional
  prototype learning (GCPL: logits_c = -gamma min_j ||f(x) - m_cj||^2, loss = CE + lambda ||f(x) - m_y||^2,
  on the features of an encoder the harness trains on the training split; IMPROVE uses CLIP, which runs here
  only when its weights are in the local cache). The UNet's class table is overwritten with the prototypes
  and frozen; the class vector c = W2 SiLU(W1 m_y) enters every ResBlock through its own projection beside
  the time embedding.
- **cfg** (the IMPROVE baseline): the same UNet, conditioning and sampler with a learned class table.

Both train with label dropout 0.1 (the null condition is c = 0) and sample with classifier-free guidance
(eps~ = (1 + w) eps(x, c) - w eps(x, 0), w = 1.8, the two passes as one batch) and DDIM-50.

Four methods use them:

- ``protodiff``, ``cfg-diff``: **augmenters**. A ResNet-18 is trained on the real training split plus
  ``synthetic_per_class`` generated images per class (a leaderboard row beside ``resnet``).
- ``protodiff-tstr``, ``cfg-diff-tstr``: the papers' evaluation, **train on synthetic, test on real**: the
  classifier sees only the generated images (the real training split trains the prototypes and the generator,
  nothing else). The real-image reference row is ``resnet`` on the same data.

A generator (with its prototypes and its sample pool) is trained once per (training split, image size,
generator settings, seed) and kept under ``<runs>/<experiment>/.generators/``, so ``protodiff`` and
``protodiff-tstr`` (and ``cfg-diff`` / ``cfg-diff-tstr``) of one run share it; its key is in the result's
``notes``. Each trial also records, under ``notes.generation``, the Frechet distance and k-NN precision /
recall of the generated set against the **validation** images (per class, pooled and the class mean, in the
fixed feature space of ``harness.toolkit.genmetrics``), and saves ``samples_<generator>.png`` (one row per
class: validation images, then generated ones) in its artefacts.

Profiles: ``smoke`` (seconds); ``cpu`` (RetinaMNIST or the capped PneumoniaMNIST: a 32-channel UNet for
1,500 steps, prototypes from 6 GCPL epochs, 100 images per class by stochastic DDIM-25 (eta = 1: with these
short budgets it beats deterministic DDIM on every generation metric), ResNet-18 as ``resnet``'s cpu profile;
on ``synthetic``, the default run, a 16-channel UNet for 300 steps and 20 images per class, about a minute per
method; measured costs in benchmarks/README.md); ``paper`` (IMPROVE: 64 px, channels 64 x [1, 2, 4, 8],
2 res blocks, dropout 0.1, T = 1000, AdamW with a 1e-4 peak, 1500 epochs, DDIM-50; 100 training and 50 test
images per class, bone marrow with the 14 classes of its downstream task; the TSTR classifier a ResNeXt-50).
Implementation: ``model.py`` (GCPL, the conditioning, the loss, the sampler), ``train.py`` (stages, cache, fit).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from harness import MethodSpec, hookimpl
from harness.contract.specs import check_range
from harness.toolkit.training_config import TrainConfig


@dataclass(frozen=True)
class CfgDiffConfig(TrainConfig):
    """The CFG generator and the downstream classifier. TrainConfig's fields (epochs, lr, ...) train the
    classifier; the fields below build, train and sample the generator."""

    # downstream classifier (a timm backbone; ``resnet``'s, so the real-image reference row compares like with like)
    backbone: str = "resnet18"
    pretrained: bool = False  # ImageNet weights, only if already in the local cache
    synthetic_per_class: int = 100  # generated images per class (IMPROVE: 100)
    # UNet (harness.toolkit.nn.unet; IMPROVE: channels 64 x [1, 2, 4, 8], 2 res blocks, dropout 0.1)
    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4, 8)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (64, 32, 16, 8)  # ProtoDiffusion: attention after every ResBlock
    dropout: float = 0.1
    emb_dim: int = 256  # time embedding 64 -> 256 -> 256; class embedding d -> 256 -> 256
    class_dim: int = 768  # d: the class vector's width (a prototype; IMPROVE's CLIP space is 768-d)
    # diffusion: linear beta 1e-4 -> 0.02 over T steps, eps-prediction
    timesteps: int = 1000
    label_dropout: float = 0.1  # p of training with the null condition (c = 0)
    guidance_scale: float = 1.8  # w of classifier-free guidance
    sample_steps: int = 50  # DDIM steps (evenly spaced over 0 ... T-1)
    eta: float = 0.0  # DDIM eta (0: deterministic)
    # generator training: AdamW, linear warm-up then cosine (ProtoDiffusion; peak lr 1e-4, brief decision 11)
    gen_epochs: int = 1500
    gen_steps: int = 0  # > 0: the budget in optimizer steps instead (epochs = steps / steps per epoch)
    gen_batch_size: int = 32  # IMPROVE: 16 per GPU on 2 GPUs
    gen_lr: float = 1e-4
    gen_weight_decay: float = 1e-4
    gen_warmup_epochs: int = 75  # ProtoDiffusion: epochs / 20
    gen_ema: float = 0.0  # > 0: sample with an EMA of the weights, this decay (averaging from a fifth of the steps on)
    gen_hflip: bool = True
    # reporting
    grid_per_class: int = 8  # generated images per class in samples_<generator>.png
    knn_k: int = 3  # k of the k-NN manifolds of precision / recall (Kynkaanniemi et al. 2019)

    def __post_init__(self):
        super().__post_init__()
        check_range("synthetic_per_class", self.synthetic_per_class, low=1)
        check_range("channels", self.channels, low=1)
        check_range("num_res_blocks", self.num_res_blocks, low=1)
        check_range("dropout", self.dropout, low=0.0, high=1.0)
        check_range("emb_dim", self.emb_dim, low=1)
        check_range("class_dim", self.class_dim, low=1)
        check_range("timesteps", self.timesteps, low=2)
        check_range("label_dropout", self.label_dropout, low=0.0, high=1.0, low_open=True)
        check_range("guidance_scale", self.guidance_scale, low=0.0)
        check_range("sample_steps", self.sample_steps, low=1, high=self.timesteps)
        check_range("eta", self.eta, low=0.0, high=1.0)
        if self.gen_steps <= 0:
            check_range("gen_epochs", self.gen_epochs, low=1)
        check_range("gen_steps", self.gen_steps, low=0)
        check_range("gen_batch_size", self.gen_batch_size, low=2)
        check_range("gen_lr", self.gen_lr, low=0.0, low_open=True)
        check_range("gen_weight_decay", self.gen_weight_decay, low=0.0)
        check_range("gen_warmup_epochs", self.gen_warmup_epochs, low=0)
        check_range("gen_ema", self.gen_ema, low=0.0, high=0.99999)
        check_range("grid_per_class", self.grid_per_class, low=1)
        check_range("knn_k", self.knn_k, low=1)
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty list of positive integers; found {self.channel_mult}")


@dataclass(frozen=True)
class ProtoDiffConfig(CfgDiffConfig):
    """The prototype generator: the CFG generator's settings plus prototype learning (GCPL, brief Sec. 4a.1)."""

    encoder: str = "resnet18"  # timm name; CLIP towers too (vit_large_patch14_clip_224.openai, 768-d in IMPROVE)
    encoder_pretrained: bool = False  # pretrained weights, only if already in the local cache
    encoder_size: int = 0  # the encoder's input size (images are resized to it); 0: the data's size
    freeze_encoder: bool = False  # train only the projection and the prototypes (IMPROVE keeps CLIP frozen)
    prototypes_per_class: int = 1  # several: the prototype loss uses the nearest of the class's prototypes
    gamma: float = 2.0  # logits_c = -gamma min_j ||f - m_cj||^2 (ProtoDiffusion's code: s = 2)
    proto_lambda: float = 0.01  # weight of the prototype loss ||f - m_y||^2 (brief decision 10)
    proto_epochs: int = 30
    proto_lr: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        check_range("encoder_size", self.encoder_size, low=0)
        check_range("prototypes_per_class", self.prototypes_per_class, low=1)
        check_range("gamma", self.gamma, low=0.0, low_open=True)
        check_range("proto_lambda", self.proto_lambda, low=0.0)
        check_range("proto_epochs", self.proto_epochs, low=1)
        check_range("proto_lr", self.proto_lr, low=0.0, low_open=True)


# Which settings make a generator (its cache key) and which only sample from it or train the classifier.
CLASSIFIER_KEYS = frozenset(f.name for f in dataclasses.fields(TrainConfig)) | {"backbone", "pretrained"}
SAMPLING_KEYS = frozenset({"synthetic_per_class", "guidance_scale", "sample_steps", "eta"})
REPORT_KEYS = frozenset({"grid_per_class", "knn_k"})


def generator_settings(config) -> dict:
    """The settings that determine the trained generator (and, for ``protodiff``, its prototypes)."""
    skip = CLASSIFIER_KEYS | SAMPLING_KEYS | REPORT_KEYS
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in skip}


def sampling_settings(config) -> dict:
    return {key: getattr(config, key) for key in sorted(SAMPLING_KEYS)}


# The classifier of every profile is ``resnet``'s, so the TSTR rows and the real-image reference compare
# training data only.
SMOKE = {"epochs": 1, "batch_size": 64, "synthetic_per_class": 4, "channels": 8, "channel_mult": (1, 2),
         "num_res_blocks": 1, "attention_resolutions": (), "dropout": 0.0, "emb_dim": 32, "class_dim": 16,
         "sample_steps": 3, "gen_epochs": 1, "gen_batch_size": 32, "gen_lr": 1e-3, "gen_warmup_epochs": 0,
         "grid_per_class": 2}
CPU = {"epochs": 12, "batch_size": 128, "lr": 2e-3, "synthetic_per_class": 100, "channels": 32,
       "channel_mult": (1, 2, 2), "num_res_blocks": 1, "attention_resolutions": (7,), "dropout": 0.1,
       "emb_dim": 128, "class_dim": 128, "sample_steps": 25, "eta": 1.0, "gen_steps": 1500, "gen_batch_size": 32,
       "gen_lr": 1e-3, "gen_warmup_epochs": 2, "gen_ema": 0.995}
PAPER = {"epochs": 100, "batch_size": 128, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
         "schedule": "multistep", "milestones": (50, 75), "synthetic_per_class": 100, "channels": 64,
         "channel_mult": (1, 2, 4, 8), "num_res_blocks": 2, "attention_resolutions": (64, 32, 16, 8),
         "dropout": 0.1, "emb_dim": 256, "class_dim": 768, "sample_steps": 50, "gen_epochs": 1500,
         "gen_batch_size": 32, "gen_lr": 1e-4, "gen_warmup_epochs": 75}
PROTO = {"smoke": {"proto_epochs": 1}, "cpu": {"proto_epochs": 6}, "paper": {"proto_epochs": 50, "proto_lr": 1e-4}}
# The default `harness run` (synthetic, 320 training images): about a minute per method with the shared generator.
CPU_SYNTHETIC = {"epochs": 6, "synthetic_per_class": 20, "channels": 16, "gen_steps": 300, "sample_steps": 20,
                 "emb_dim": 64, "class_dim": 64}
PROTO_CPU_SYNTHETIC = {**CPU_SYNTHETIC, "proto_epochs": 2}
# The paper's data protocol (IMPROVE, Sec. 4): 64 px, 100 training and 50 test images per class.
PAPER_DATA = {"dataset.size": 64, "dataset.train_per_class": 100, "dataset.test_per_class": 50}
DATASET_PROFILES = {"paper": {"ham10000": PAPER_DATA, "bone-marrow": {**PAPER_DATA, "dataset.classes": "improve14"}}}

SEARCH_SPACE = {
    "guidance_scale": ("uniform", 0.0, 4.0),
    "synthetic_per_class": ("choice", [25, 50, 100, 200]),
    "gen_lr": ("loguniform", 1e-4, 3e-3),
    "lr": ("loguniform", 1e-4, 1e-2),
}
PROTO_SEARCH_SPACE = {**SEARCH_SPACE, "proto_lambda": ("loguniform", 1e-3, 1e-1), "gamma": ("loguniform", 0.5, 8.0)}

PAPER_CITATION = ("IMPROVE (Shandilya et al. 2024: prototype-guided diffusion, expert-free evaluation); ProtoDiffusion (ACML "
                  "2023); GCPL (Yang et al. 2018); classifier-free guidance (Ho & Salimans 2022); DDIM (Song et al. "
                  "2021)")
CFG_CITATION = ("IMPROVE's baseline: class-conditional DDPM with learned class embeddings and classifier-free "
                "guidance (Ho & Salimans 2022), DDIM sampling (Song et al. 2021)")


# IMPROVE's downstream classifier is a ResNeXt-50 (the TSTR rows' paper profile; their real-image reference
# is then ``--set resnet.backbone=resnext50_32x4d``); the augmenters keep ``resnet``'s ResNet-18.
TSTR_PAPER = {"paper": {"backbone": "resnext50_32x4d"}}


def _profiles(*extras: dict) -> dict:
    out = {"smoke": dict(SMOKE), "cpu": dict(CPU), "paper": dict(PAPER)}
    for extra in extras:
        for profile, values in extra.items():
            out[profile].update(values)
    return out


@hookimpl
def register_methods(register):
    proto_datasets = {**DATASET_PROFILES, "cpu": {"synthetic": PROTO_CPU_SYNTHETIC}}
    cfg_datasets = {**DATASET_PROFILES, "cpu": {"synthetic": CPU_SYNTHETIC}}
    for name, config, profiles, datasets, space, paper, what in (
        ("protodiff", ProtoDiffConfig, _profiles(PROTO), proto_datasets, PROTO_SEARCH_SPACE, PAPER_CITATION,
         "ResNet-18 on real images plus prototype-guided diffusion samples (IMPROVE)"),
        ("protodiff-tstr", ProtoDiffConfig, _profiles(PROTO, TSTR_PAPER), proto_datasets, PROTO_SEARCH_SPACE,
         PAPER_CITATION, "ResNet-18 trained on prototype-guided diffusion samples only, tested on real (IMPROVE)"),
        ("cfg-diff", CfgDiffConfig, _profiles(), cfg_datasets, SEARCH_SPACE, CFG_CITATION,
         "ResNet-18 on real images plus class-conditional diffusion samples (CFG, learned class embeddings)"),
        ("cfg-diff-tstr", CfgDiffConfig, _profiles(TSTR_PAPER), cfg_datasets, SEARCH_SPACE, CFG_CITATION,
         "ResNet-18 trained on class-conditional diffusion samples only (CFG), tested on real (TSTR)"),
    ):
        register(MethodSpec(
            name=name,
            description=what,
            paper=paper,
            config=config,
            fit=f"plugins.protodiff.train:fit_{name.replace('-', '_')}",
            profiles=profiles,
            search_space=space,
            dataset_profiles=datasets,
        ))
