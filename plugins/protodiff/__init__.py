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
on ``synthetic``, the default run, a 16-channel UNet for 250 steps, 20 images per class and ``resnet``'s 64
steps of batch 32 for the classifier, under a minute per method; measured costs in benchmarks/README.md); ``paper`` (IMPROVE: 64 px, channels 64 x [1, 2, 4, 8],
2 res blocks, dropout 0.1, T = 1000, AdamW with a 1e-4 peak, 1500 epochs, DDIM-50; 100 training and 50 test
images per class, bone marrow with the 14 classes of its downstream task; the TSTR classifier a ResNeXt-50).
Implementation: ``model.py`` (GCPL, the conditioning, the loss, the sampler), ``train.py`` (stages, cache, fit).
"""

from __future__ import annotations

from harness import MethodSpec, hookimpl
from plugins.protodiff.config import (  # re-exported: the names the package's users know
    CLASSIFIER_KEYS,
    REPORT_KEYS,
    SAMPLING_KEYS,
    CfgDiffConfig,
    ProtoDiffConfig,
    generator_settings,
    sampling_settings,
)

__all__ = ["CLASSIFIER_KEYS", "REPORT_KEYS", "SAMPLING_KEYS", "CfgDiffConfig", "ProtoDiffConfig",
           "generator_settings", "sampling_settings", "register_methods"]

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
# The default `harness run` (synthetic, 320 training images): under a minute per method with the shared generator;
# the classifier has resnet's budget there (64 steps of batch 32), so the augmenter rows compare with resnet's.
# Its 16 px images give UNet levels of 16 / 8 / 4 px: attention at 4 px, the level the cpu profile's 7 px is at 28 px.
CPU_SYNTHETIC = {"steps": 64, "min_epochs": 2, "batch_size": 32, "synthetic_per_class": 20, "channels": 16,
                 "gen_steps": 250, "sample_steps": 20, "emb_dim": 64, "class_dim": 64, "attention_resolutions": (4,)}
PROTO_CPU_SYNTHETIC = {**CPU_SYNTHETIC, "proto_epochs": 2}
# train-on-synthetic: 32 steps (7 epochs over the 140 synthetic images, about resnet's 64 steps over the 320 real
# ones); the generator is shared with the augmenter row
TSTR_SYNTHETIC = {"steps": 32}
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
    proto_tstr = {**DATASET_PROFILES, "cpu": {"synthetic": {**PROTO_CPU_SYNTHETIC, **TSTR_SYNTHETIC}}}
    cfg_tstr = {**DATASET_PROFILES, "cpu": {"synthetic": {**CPU_SYNTHETIC, **TSTR_SYNTHETIC}}}
    for name, config, profiles, datasets, space, paper, what in (
        ("protodiff", ProtoDiffConfig, _profiles(PROTO), proto_datasets, PROTO_SEARCH_SPACE, PAPER_CITATION,
         "ResNet-18 on real images plus prototype-guided diffusion samples (IMPROVE)"),
        ("protodiff-tstr", ProtoDiffConfig, _profiles(PROTO, TSTR_PAPER), proto_tstr, PROTO_SEARCH_SPACE,
         PAPER_CITATION, "ResNet-18 trained on prototype-guided diffusion samples only, tested on real (IMPROVE)"),
        ("cfg-diff", CfgDiffConfig, _profiles(), cfg_datasets, SEARCH_SPACE, CFG_CITATION,
         "ResNet-18 on real images plus class-conditional diffusion samples (CFG, learned class embeddings)"),
        ("cfg-diff-tstr", CfgDiffConfig, _profiles(TSTR_PAPER), cfg_tstr, SEARCH_SPACE, CFG_CITATION,
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
