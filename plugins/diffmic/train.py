"""DiffMIC's training, on the shared loop (``harness.toolkit.training.train_loop``).

- ``basic`` (Table 2's first row): the DCG global branch (the same backbone, pretrained where available, as
  the diffusion rows' prior) trained alone with cross-entropy, exactly as the diffusion rows train their DCG
  (Adam with amsgrad at ``dcg_lr``, ``dcg_warmup_epochs + epochs`` epochs). basic -> C1 therefore adds the label
  diffusion and nothing else.
- C1 / C2 / full: stage 1 pre-trains the DCG with cross-entropy on the fused logits (code: 15 epochs,
  paper: 10). Stage 2 trains the denoiser (``loss``: the noise MSE, plus the MMD terms for ``full``) and after
  each denoiser step takes one cross-entropy step on the DCG with the same batch (``on_step_end``). The priors
  that condition the denoiser are computed as the reference implementation does: the DCG in eval mode
  (running batch-norm statistics, as at test time), without gradient; the cross-entropy step is a separate
  training-mode forward.
- Selection: both stages keep the best state on *validation* Macro-F1 (stage 1 of the prior, stage 2 of the
  chain, one chain per image with its per-image noise). The official code selects on the test set.
- Probabilities (``readout="argmax"``): softmax(y0 / tau) of the one chain, tau fitted on the validation
  split by minimising the negative log-likelihood (temperature scaling, Guo et al. 2017), unless
  ``temperature`` > 0 fixes it. With ``readout="vote"`` the probabilities are the vote shares. The result's
  ``notes`` say which, with the prior's and the chain's validation Macro-F1 at the selected checkpoint.
- Latency: the predictor's ``latency_module`` runs one chain per image (the paper's cost); the uncertainty
  chains run only in ``module`` (the predictions' ``uncertainty`` column).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness import HarnessError, Predictor
from harness.toolkit.training import epochs_for, normalisation, predict, to_uint8_tensor, train_loop
from plugins.diffmic.explain import make_explainer
from plugins.diffmic.model import (
    DCG,
    Denoiser,
    DiffMICClassifier,
    Encoder,
    LabelDiffusion,
    Prior,
    antithetic_timesteps,
    diffusion_loss,
    priors,
)


def fit(data, config, ctx) -> Predictor:
    """Train the Table 2 row named by ``config.variant`` and return its predictor."""
    if config.variant == "basic":
        return fit_basic(data, config, ctx)
    return fit_diffusion(data, config, ctx)


# ------------------------------------------------------------------------------------------ the DCG


def build_dcg(data, cfg, ctx, *, local: bool) -> DCG:
    """The DCG of the config; under the ``paper`` profile, ``pretrained=True`` without cached weights is an error."""
    dcg = DCG(num_classes=data.num_classes, in_chans=data.channels, image_size=data.size,
              global_backbone=cfg.dcg_backbone, local_backbone=cfg.local_backbone, pretrained=cfg.pretrained,
              num_crops=cfg.num_crops, crop_size=max(1, round(cfg.crop_fraction * data.size)),
              crop_channels=cfg.crop_channels, attention_dim=cfg.attention_dim, local=local)
    if ctx.profile == "paper" and cfg.pretrained and not dcg.pretrained_loaded:
        names = cfg.dcg_backbone if not local else f"{cfg.dcg_backbone} / {cfg.local_backbone}"
        raise HarnessError(
            f"DiffMIC's paper profile starts its DCG from ImageNet weights ({names}), and they are not in the local "
            "cache (the Hugging Face hub cache, HF_HOME, or torch's hub cache); the harness never downloads them. "
            "Put the timm weights there, or run with --set <method>.pretrained=false (a deviation from the paper) "
            "or another profile.")
    return dcg


def dcg_optimizer(dcg: DCG, cfg) -> torch.optim.Optimizer:
    return torch.optim.Adam(dcg.parameters(), lr=cfg.dcg_lr, amsgrad=True)  # the code's DCG optimizer


def train_dcg(dcg: DCG, optimizer, data, cfg, ctx, *, mean, std, epochs: int, stage: str) -> dict:
    """Cross-entropy on the fused logits for ``epochs`` epochs (constant ``dcg_lr``, no gradient clipping), the
    prior's best validation state kept. Returns the loop's history."""
    stage_cfg = dataclasses.replace(cfg, epochs=epochs, steps=0, schedule="constant", warmup_epochs=0, grad_clip=0.0)
    prior = Prior(dcg)
    _, history = train_loop(ctx, stage_cfg, model=dcg, data=data, mean=mean, std=std, optimizer=optimizer,
                            loss=lambda x, y, epoch: F.cross_entropy(dcg.fused_logits(dcg(x)), y),
                            evaluate=lambda: prior.eval(), stage=stage)
    return history


def fit_basic(data, cfg, ctx) -> Predictor:
    dcg = build_dcg(data, cfg, ctx, local=False)
    mean, std = normalisation(data.channels, dcg.pretrained_loaded)
    history = train_dcg(dcg, dcg_optimizer(dcg, cfg), data, cfg, ctx, mean=mean, std=std,
                        epochs=cfg.dcg_warmup_epochs + epochs_for(cfg, len(data.train)).epochs, stage="basic")
    ctx.note(val_macro_f1=history.best_score, selected_epoch=history.best_epoch)
    return Predictor(Prior(dcg).eval(), mean=mean, std=std, device=ctx.device)


# ------------------------------------------------------------------------------ C1 / C2 / full


def fit_temperature(y0: np.ndarray, labels: np.ndarray) -> float:
    """tau minimising the mean negative log-likelihood of softmax(y0 / tau) (Guo et al. 2017), on a log grid
    refined by a bounded scalar search; tau in [1e-3, 1e3]."""
    from scipy.optimize import minimize_scalar

    logits = torch.from_numpy(np.asarray(y0, dtype=np.float64))
    target = torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def nll(log_tau: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_tau), target))

    grid = np.linspace(math.log(1e-3), math.log(1e3), 61)
    best = grid[int(np.argmin([nll(v) for v in grid]))]
    step = grid[1] - grid[0]
    result = minimize_scalar(nll, bounds=(max(best - step, grid[0]), min(best + step, grid[-1])), method="bounded")
    return float(math.exp(result.x))


class JointStage:
    """Stage 2's two steps per batch: ``loss`` (the denoiser's, on priors from the DCG in eval mode, without
    gradient, as the reference computes them) and ``dcg_step`` (one cross-entropy step on the DCG, a separate
    training-mode forward)."""

    def __init__(self, dcg: DCG, denoiser: Denoiser, diffusion: LabelDiffusion, optimizer, cfg, num_classes: int,
                 generator: torch.Generator):
        self.dcg, self.denoiser, self.diffusion, self.optimizer = dcg, denoiser, diffusion, optimizer
        self.draws, self.mmd_weight = cfg.noise_draws, (cfg.mmd_weight if cfg.variant == "full" else 0.0)
        self.num_classes, self.generator = num_classes, generator

    def priors(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The fused and branch priors of the DCG in eval mode (running batch-norm statistics), no gradient."""
        self.dcg.eval()
        with torch.no_grad():
            return priors(self.dcg, self.dcg(x))

    def loss(self, x: torch.Tensor, y: torch.Tensor, epoch: int):
        prior = self.priors(x)
        e = self.denoiser.image_feature(x)  # once for the three branches
        y0 = F.one_hot(y, self.num_classes).float()
        if self.draws > 1:  # several (t, eps) pairs per image for one pass of the encoders
            e, y0 = e.repeat(self.draws, 1), y0.repeat(self.draws, 1)
            prior = {k: v.repeat(self.draws, 1) for k, v in prior.items()}
        t = antithetic_timesteps(len(y0), self.diffusion.timesteps, self.generator, x.device)
        noise = torch.randn(len(y0), self.num_classes, generator=self.generator).to(x.device)
        return diffusion_loss(self.denoiser, self.diffusion, e, y0, prior, t, noise, self.mmd_weight)

    def dcg_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.dcg.train()
        ce = F.cross_entropy(self.dcg.fused_logits(self.dcg(x)), y)
        self.optimizer.zero_grad(set_to_none=True)
        ce.backward()
        self.optimizer.step()
        self.dcg.eval()
        return {"dcg_loss": float(ce.detach())}


class _FirstChain(nn.Module):
    """y0 of chain 0 (the readout's sample), for fitting the temperature."""

    def __init__(self, classifier: DiffMICClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return self.classifier.label_samples(x)[:, 0]


def fit_diffusion(data, cfg, ctx) -> Predictor:
    device = ctx.device
    dcg = build_dcg(data, cfg, ctx, local=cfg.variant != "c1").to(device)
    encoder = Encoder(cfg.encoder_backbone, in_chans=data.channels, image_size=data.size,
                      pretrained=cfg.encoder_pretrained)
    denoiser = Denoiser(num_classes=data.num_classes, feature_dim=cfg.feature_dim, timesteps=cfg.timesteps,
                        encoder=encoder).to(device)
    diffusion = LabelDiffusion(cfg.timesteps, cfg.beta_start, cfg.beta_end)
    mean, std = normalisation(data.channels, dcg.pretrained_loaded)
    # one chain per image, the readout of the config (the predictor adds the uncertainty chains)
    classifier = DiffMICClassifier(dcg, denoiser, diffusion, test_timesteps=cfg.test_timesteps, sampler=cfg.sampler,
                                   ddim_eta=cfg.ddim_eta, readout=cfg.readout, votes=cfg.votes,
                                   temperature=cfg.temperature or 1.0, uncertainty_chains=0, seed=ctx.seed)
    optimizer = dcg_optimizer(dcg, cfg)

    # Stage 1: the DCG warm-up with cross-entropy.
    if cfg.dcg_warmup_epochs > 0:
        train_dcg(dcg, optimizer, data, cfg, ctx, mean=mean, std=std, epochs=cfg.dcg_warmup_epochs,
                  stage="dcg_warmup")

    # Stage 2: the denoiser, one DCG cross-entropy step after each of its steps.
    joint = JointStage(dcg, denoiser, diffusion, optimizer, cfg, data.num_classes,
                       torch.Generator().manual_seed(ctx.seed + 1))
    val_x, val_y = to_uint8_tensor(data.val.images), np.asarray(data.val.labels, dtype=np.int64)
    budget = epochs_for(cfg, len(data.train))

    def prior_score(epoch, model):
        if (epoch + 1) % max(1, cfg.eval_every) and epoch + 1 != budget.epochs:
            return None
        return {"val_prior_macro_f1": ctx.score(val_y, predict(Prior(dcg).eval(), val_x, mean, std, device))["macro_f1"]}

    _, history = train_loop(
        ctx, cfg, model=denoiser, data=data, mean=mean, std=std, loss=joint.loss, on_step_end=joint.dcg_step,
        evaluate=lambda: classifier.eval(), on_epoch_end=prior_score, stage="joint",
        epoch_offset=cfg.dcg_warmup_epochs,
        state=lambda: (copy.deepcopy(dcg.state_dict()), copy.deepcopy(denoiser.state_dict())),
        load_state=lambda s: (dcg.load_state_dict(s[0]), denoiser.load_state_dict(s[1])))
    dcg.eval()

    # The selected checkpoint: the prior's and the chain's validation scores, and the probabilities' temperature.
    notes = {"selected_epoch": history.best_epoch,
             "val_prior_macro_f1": ctx.score(val_y, predict(Prior(dcg).eval(), val_x, mean, std, device))["macro_f1"]}
    if cfg.readout == "argmax":
        tau = cfg.temperature
        if tau <= 0:
            tau = fit_temperature(predict(_FirstChain(classifier).eval(), val_x, mean, std, device), val_y)
        classifier = classifier.variant(temperature=tau).eval()
        notes.update(temperature=tau, probabilities="softmax(y0 / temperature) of one chain; temperature "
                     + ("fitted on validation (NLL)" if cfg.temperature <= 0 else "set in the config"))
    else:
        notes.update(probabilities=f"vote shares over {cfg.votes} chains")
    notes["val_macro_f1"] = ctx.score(val_y, predict(classifier, val_x, mean, std, device))["macro_f1"]
    ctx.note(**notes)

    final = classifier.variant(uncertainty_chains=cfg.uncertainty_chains, channels_last=device == "cpu",
                               dtype=getattr(torch, cfg.inference_dtype)).eval()
    explain = make_explainer(final, mean, std, device, cfg.explain_per_class, data.classes) \
        if cfg.explain_per_class > 0 else None
    return Predictor(final, mean=mean, std=std, device=device, exportable=False, explain=explain,
                     onnx_runtime="plugins.diffmic.export:onnx_runtime",
                     batch_size=max(1, min(256, 2048 // final.chains)),
                     latency_module=final.variant(uncertainty_chains=0))
