"""``diffmic``: DiffMIC, dual-guidance diffusion for medical image classification, with its ablations.

Yang et al., "DiffMIC: Dual-Guidance Diffusion Network for Medical Image Classification", MICCAI 2023,
built on CARD (Han et al., NeurIPS 2022). Implemented from ``docs/methods-brief.md`` section 1. This module
registers the methods and holds their config; it must stay cheap to import (no torch). The package:
``model.py`` (read it next to the paper: the label diffusion on ``harness.toolkit.nn``, the DCG, the denoiser,
the losses, the predictor module), ``train.py`` (the stages on the shared training loop), ``explain.py``
(saliency and ROI images), ``export.py`` (ONNX export of the per-step networks, an ONNX Runtime-driven chain).

Four methods, the rows of the paper's Table 2, share one config dataclass (``variant`` selects the row):

- ``diffmic-basic``: the prior's network alone: the DCG global branch (the same backbone, pretrained where
  available, as the diffusion rows) trained with cross-entropy as the diffusion rows train their DCG, so
  basic -> C1 measures the label diffusion, not pretraining or a different encoder.
- ``diffmic-c1``: vanilla label diffusion with a plain classifier prior (the DCG global branch only:
  backbone + bias-free 1x1 conv + spatial mean), no ROI / local branch, no MMD.
- ``diffmic-c2``: + the dual-granularity conditional guidance (global + local priors), no MMD.
- ``diffmic``: + the MMD regularisers on the global and local branches (the full method).

Deviations from the official code, on purpose:

- Model selection uses the validation split only. **The official code selects its checkpoint on the
  test set** (validation every 10 epochs with the full 1000-step chain on the test images).
- The priors are detached in the denoiser step (the code zeroes their gradients before the DCG step); as in
  the code they come from the DCG in eval mode, and its cross-entropy step is a separate training-mode forward.
- The image feature of the denoiser is computed once per image (training: once for the three branches;
  inference: once per image, not once per step). The result is the same; only the cost changes.
- The chain's noise is seeded per image (a hash of the image and the trial seed), so a prediction depends
  neither on its batch nor on its position in it.
- Probabilities: softmax(y0 / tau) of the one chain with tau fitted on validation (NLL), or the vote shares
  with ``readout="vote"``; the result's ``notes`` say which. The predicted class is the code's either way.
- Metrics are computed once on the full test predictions (the code averages accuracy and kappa per
  batch).

Profiles: ``smoke`` (seconds, for tests); ``cpu`` (a tiny CNN for all three encoders, width 512, a 100-step
schedule with the 1000-step schedule's end point, 8 noise draws per image, the code's 15-epoch DCG warm-up,
then 800 denoiser steps (``steps``; ``--set diffmic.steps=0 --set diffmic.epochs=N`` counts epochs instead)
at lr 3e-3; about 5 to 10 minutes of one core per trial; see ``benchmarks/README.md`` for the budget study);
``paper`` (the code's settings: ResNet-50 DCG branches with ImageNet weights, which must be in the local cache,
ResNet-18 image encoder trained from scratch, width 6144, batch 32, Adam 1e-3 with a 40-epoch warm-up then
cosine, 1000 epochs, T = 1000, rotation with zero fill), with the paper's per-dataset settings
(``DATASET_PROFILES``: 60 chain steps, batch 32 and vertical flips on APTOS, 250 steps and batch 64 on
ISIC / HAM10000, 100 otherwise; the 70/30 ``diffmic`` split at 224 px as the stated protocol). On ``synthetic``
(the default run, 320 images at 16 px) the ``cpu`` profile trains 200 denoiser steps after the paper's 10-epoch
DCG warm-up and validates every 10 epochs, so the four DiffMIC rows fit the run's 10 minutes.

Inference options beyond the code: ``sampler=respaced|ddim``, ``readout=vote`` (CARD's majority vote),
``uncertainty_chains`` (the spread of the label over chains, stored as the ``uncertainty`` column; latency is
timed with one chain, the paper's cost, and with the uncertainty chains as ``full_ms_*``),
``inference_dtype=bfloat16`` (bfloat16 weights, float32 chain state: what meets the CPU latency target
at the paper's settings; see ``benchmarks/README.md``), and saliency / ROI explanation images.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import MethodSpec, hookimpl
from harness.contract.specs import check_range
from harness.toolkit.training_config import TrainConfig

VARIANTS = ("basic", "c1", "c2", "full")
SAMPLERS = ("truncated", "respaced", "ddim")
READOUTS = ("argmax", "vote")


@dataclass(frozen=True)
class DiffMICConfig(TrainConfig):
    """Settings of DiffMIC and its ablations. The supervised-loop fields (``epochs`` or ``steps``, ``lr``,
    ``batch_size``, ``warmup_epochs``, ``schedule``, flips, ``rotation``, ``eval_every``) apply to the denoiser's
    stage; the DCG trains with ``dcg_lr`` (and, for ``basic``, for ``dcg_warmup_epochs`` + ``epochs`` epochs)."""

    variant: str = "full"  # Table 2 row: basic | c1 | c2 | full
    # --- DCG: dual-granularity conditional guidance (paper Sec. 2.1) ---
    dcg_backbone: str = "resnet50"  # global branch, truncated after the last stage (timm name or "tinycnn")
    local_backbone: str = "resnet50"  # local branch over the ROI crops, + global average pooling
    pretrained: bool = True  # ImageNet weights for the DCG backbones from the local cache (paper profile: required)
    num_crops: int = 6  # K ROIs
    crop_fraction: float = 32 / 224  # crop side / image side (32 px at 224)
    crop_channels: str = "first"  # "first": channel 0 replicated to 3 (as in the code) | "all"
    attention_dim: int = 128  # gated-attention MIL hidden size
    dcg_lr: float = 2e-4  # Adam (amsgrad) for the DCG
    dcg_warmup_epochs: int = 15  # CE pre-training of the DCG (code: 15, paper: 10)
    # --- the denoiser epsilon_theta(x, y_t, p, t) (Sec. 2.2) ---
    encoder_backbone: str = "resnet18"  # image encoder of the denoiser, trained jointly
    encoder_pretrained: bool = False  # the code trains it from scratch
    feature_dim: int = 6144  # width of the Hadamard-product MLP
    # --- label-space diffusion (CARD) ---
    timesteps: int = 1000  # T of the training schedule
    beta_start: float = 1e-4
    beta_end: float = 0.02  # linear beta schedule
    mmd_weight: float = 0.5  # lambda of the MMD terms (full variant only)
    grad_clip: float = 1.0
    noise_draws: int = 1  # (t, eps) draws per image and step (the code: 1); more trains the denoiser
    #                       faster for the same encoder cost (CPU profiles)
    # --- inference (Sec. 2.3) ---
    test_timesteps: int = 100  # n: 250 ISIC / HAM10000, 100 PMG2000, 60 APTOS (see DATASET_PROFILES)
    sampler: str = "truncated"  # truncated (the code) | respaced | ddim
    ddim_eta: float = 0.0
    readout: str = "argmax"  # argmax of one chain (the code) | vote (CARD-style majority vote)
    votes: int = 100  # chains per image for readout="vote"
    temperature: float = 0.0  # argmax readout: probs = softmax(y0 / tau); 0 = tau fitted on validation (NLL)
    uncertainty_chains: int = 8  # chains whose label spread is the "uncertainty" column (0: off)
    inference_dtype: str = "float32"  # float32 | bfloat16 (weights of the predictor; the chain state stays fp32)
    explain_per_class: int = 2  # test images per class drawn with their saliency map and ROI boxes
    # supervised-loop defaults as in the paper
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    rotation: float = 30.0

    def __post_init__(self):
        super().__post_init__()
        check_range("variant", self.variant, choices=VARIANTS)
        check_range("num_crops", self.num_crops, low=1)
        check_range("crop_fraction", self.crop_fraction, low=0.0, high=1.0, low_open=True)
        check_range("crop_channels", self.crop_channels, choices=("first", "all"))
        check_range("attention_dim", self.attention_dim, low=1)
        check_range("dcg_lr", self.dcg_lr, low=0.0, low_open=True)
        check_range("dcg_warmup_epochs", self.dcg_warmup_epochs, low=0)
        check_range("feature_dim", self.feature_dim, low=1)
        check_range("timesteps", self.timesteps, low=1)
        check_range("beta_start", self.beta_start, low=0.0, high=self.beta_end, low_open=True)
        check_range("beta_end", self.beta_end, low=self.beta_start, high=0.999)
        check_range("mmd_weight", self.mmd_weight, low=0.0)
        check_range("grad_clip", self.grad_clip, low=0.0)
        check_range("noise_draws", self.noise_draws, low=1)
        check_range("test_timesteps", self.test_timesteps, low=1, high=self.timesteps)
        check_range("sampler", self.sampler, choices=SAMPLERS)
        check_range("ddim_eta", self.ddim_eta, low=0.0, high=1.0)
        check_range("readout", self.readout, choices=READOUTS)
        check_range("votes", self.votes, low=1)
        check_range("temperature", self.temperature, low=0.0)
        check_range("uncertainty_chains", self.uncertainty_chains, low=0)
        check_range("inference_dtype", self.inference_dtype, choices=("float32", "bfloat16"))
        check_range("explain_per_class", self.explain_per_class, low=0)


@dataclass(frozen=True)
class DiffMICC2Config(DiffMICConfig):
    variant: str = "c2"


@dataclass(frozen=True)
class DiffMICC1Config(DiffMICConfig):
    variant: str = "c1"


@dataclass(frozen=True)
class DiffMICBasicConfig(DiffMICConfig):
    variant: str = "basic"


_SMALL = {"dcg_backbone": "tinycnn", "local_backbone": "tinycnn", "encoder_backbone": "tinycnn",
          "pretrained": False, "crop_fraction": 2 / 7}

PROFILES = {
    "smoke": {**_SMALL, "epochs": 3, "dcg_warmup_epochs": 1, "batch_size": 64, "feature_dim": 64,
              "warmup_epochs": 0, "test_timesteps": 10, "uncertainty_chains": 4, "explain_per_class": 1,
              "num_crops": 3},
    # cpu: the tiny CNN for the three encoders, width 512, a 100-step schedule with the 1000-step schedule's end
    # point (betas x 10, alpha_bar_T ~ 5e-5) and 8 (t, eps) draws per image, the code's 15-epoch DCG warm-up,
    # then 800 denoiser steps (at least 10 epochs) at 3x the paper's learning rate: Adam moves a weight by about
    # lr per step, and the denoiser has ~1,000 steps here against the paper's ~100,000 (see benchmarks/README.md)
    "cpu": {**_SMALL, "steps": 800, "min_epochs": 10, "dcg_warmup_epochs": 15, "batch_size": 64, "lr": 3e-3,
            "feature_dim": 512, "warmup_epochs": 1, "eval_every": 5, "timesteps": 100, "beta_start": 1e-3,
            "beta_end": 0.2, "test_timesteps": 100, "noise_draws": 8, "uncertainty_chains": 4},
    # paper: the code's settings (brief Sec. 1b); 224 px centre-square crops, zero-filled rotation (torchvision's)
    "paper": {"dcg_backbone": "resnet50", "local_backbone": "resnet50", "encoder_backbone": "resnet18",
              "pretrained": True, "crop_fraction": 32 / 224, "feature_dim": 6144, "epochs": 1000,
              "dcg_warmup_epochs": 15, "batch_size": 32, "optimizer": "adam", "lr": 1e-3,
              "weight_decay": 0.0, "schedule": "cosine", "warmup_epochs": 40, "eval_every": 10,
              "timesteps": 1000, "test_timesteps": 100, "rotation": 30.0, "rotation_padding": "zeros",
              "hflip": True, "vflip": False, "uncertainty_chains": 8},
}

# The paper's per-dataset settings (brief Sec. 1b): the reverse-chain length (250 ISIC / HAM10000, 60 APTOS,
# 100 otherwise), the batch, APTOS's vertical flips, and the data protocol the numbers came from (the 70/30
# "diffmic" split at 224 px; a trial on other options gets a warning in its result).
_PAPER_DATA = {"dataset.split": "diffmic", "dataset.size": 224}
DATASET_PROFILES = {
    # the default run's data (320 images at 16 px): the chain reaches its prior after 150-175 denoiser steps
    # there (benchmarks/README.md, "The default run"); 200 steps, the paper's 10-epoch DCG warm-up and a
    # validation every 10 epochs keep all four DiffMIC rows inside its 10 minutes
    "cpu": {"synthetic": {"steps": 200, "dcg_warmup_epochs": 10, "eval_every": 10}},
    "paper": {
        "aptos": {"test_timesteps": 60, "batch_size": 32, "vflip": True, **_PAPER_DATA},
        "ham10000": {"test_timesteps": 250, "batch_size": 64, **_PAPER_DATA},
        "isic2018": {"test_timesteps": 250, "batch_size": 64, **_PAPER_DATA},
    },
}

SEARCH_SPACE = {
    "lr": ("loguniform", 1e-4, 3e-3),
    "dcg_lr": ("loguniform", 5e-5, 1e-3),
    "mmd_weight": ("uniform", 0.0, 1.0),
    "feature_dim": ("choice", [256, 512, 1024]),
    "test_timesteps": ("choice", [60, 100, 250]),
}

_PAPER = "Yang et al., DiffMIC, MICCAI 2023 (Table 2 ablation); CARD, Han et al., NeurIPS 2022"


def _profiles(variant: str) -> dict:
    # every profile pins the variant, so a profile can never turn one Table 2 row into another
    return {name: {**values, "variant": variant} for name, values in PROFILES.items()}


@hookimpl
def register_methods(register):
    rows = [
        ("diffmic", DiffMICConfig, "full",
         "DiffMIC: label diffusion guided by global + local (ROI, gated-attention MIL) priors, with MMD"),
        ("diffmic-c2", DiffMICC2Config, "c2",
         "DiffMIC ablation C2: label diffusion with the DCG global + local priors, no MMD"),
        ("diffmic-c1", DiffMICC1Config, "c1",
         "DiffMIC ablation C1: vanilla label diffusion (CARD) with a plain classifier prior"),
        ("diffmic-basic", DiffMICBasicConfig, "basic",
         "DiffMIC ablation 'basic': the prior's classifier alone (the DCG global branch), cross-entropy"),
    ]
    for name, config, variant, description in rows:
        register(MethodSpec(
            name=name,
            description=description,
            paper=_PAPER,
            config=config,
            fit="plugins.diffmic.train:fit",
            profiles=_profiles(variant),
            dataset_profiles=DATASET_PROFILES,
            search_space=SEARCH_SPACE if variant != "basic" else {"dcg_lr": SEARCH_SPACE["dcg_lr"]},
        ))
