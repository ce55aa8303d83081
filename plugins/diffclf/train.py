"""Training of ``diffclf`` on the shared loop (Favero et al. 2025, brief Sec. 3b). Imports torch.

``fit`` hands the paper's loss (``model.diffusion_loss`` on the resized, Haar-transformed batch) to
``harness.toolkit.training.train_loop``, which owns the epochs or step budget, Adam, the learning-rate
schedule (warm-up, then cosine), gradient clipping, the EMA updates and the per-epoch learning curve
(``ctx.report``). Every ``eval_every`` epochs the loop scores the classifier over the **EMA** weights on the
validation split (``val_votes`` trials) and keeps the best EMA state (the paper selects on validation F1).
The selected EMA network is returned inside a ``DiffusionClassifier`` with ``votes`` trials.

Notes in the result (``ctx.note``): the budget in optimizer steps and epochs, the best validation epoch and
score, and ``budget_limited``: whether the validation headline metric was still rising over the last fifth
of the budget (by more than ``STILL_IMPROVING_MARGIN``), i.e. more training would likely have helped.
"""

from __future__ import annotations

import dataclasses

import torch

from harness import HarnessError, Predictor
from harness.contract.curves import still_improving
from harness.toolkit.nn.ema import EMA
from harness.toolkit.nn.wavelet import haar_dwt
from harness.toolkit.training import epochs_for, train_loop
from plugins.diffclf.explain import make_explainer
from plugins.diffclf.model import build_unet, diffusion_loss, make_classifier, make_schedule, model_view

STILL_IMPROVING_MARGIN = 0.02  # validation headline-metric rise over the last fifth of the budget


def budget_limited(records: list[dict], key: str, margin: float = STILL_IMPROVING_MARGIN) -> bool | None:
    """Whether the validation score ``key`` was still rising over the last fifth of the budget: the
    leaderboard's still-improving rule (``harness.contract.curves``) at this method's margin; None when the
    curve cannot tell."""
    flag = still_improving(records, key, margin)
    return None if flag is None else flag["improving"]


def fit(data, config, ctx) -> Predictor:
    torch.manual_seed(ctx.seed)
    device, k = ctx.device, data.num_classes
    size = config.resolution or data.size
    if config.wavelet and size % 2:
        raise HarnessError(f"diffclf wavelet=true needs an even image size; found {size} px "
                           "(set diffclf.resolution to an even size, or dataset.size)")
    mean = std = (0.5,) * data.channels  # images in [-1, 1] (brief Sec. 3.1)
    net = build_unet(config, data.channels, data.size, k).to(device)
    ema = EMA(net, config.ema_decay, config.ema_every, config.ema_start)
    schedule = make_schedule(config)
    generator = torch.Generator().manual_seed(ctx.seed + 1)  # t, eps and label dropout of the loss

    # the paper's warm-up is in optimizer steps: the loop's unit is (fractional) epochs
    budget = epochs_for(config, len(data.train))
    loop_cfg = dataclasses.replace(
        config, warmup_epochs=config.warmup_epochs + config.warmup_steps / budget.steps_per_epoch)

    def loss(x, y, epoch):
        x0 = model_view(x, config.resolution)
        x0 = haar_dwt(x0) if config.wavelet else x0
        return diffusion_loss(net, x0, y, schedule, generator, k, label_dropout=config.label_dropout,
                              snr_gamma=config.snr_gamma)

    def snapshot() -> dict:
        return {key: v.detach().clone() for key, v in ema.state_dict().items()}

    _, history = train_loop(
        ctx, loop_cfg, model=net, data=data, mean=mean, std=std, loss=loss, ema=ema,
        evaluate=lambda: make_classifier(ema.module, config, k, config.val_votes, ctx.seed).eval(),
        state=snapshot, load_state=ema.load_state_dict)
    select = f"val_{ctx.headline_metric}"
    ctx.note(steps=budget.steps, epochs=budget.epochs, best_epoch=history.best_epoch,
             **{f"best_{select}": history.best_score},
             budget_limited=budget_limited(history.records, select))
    module = make_classifier(ema.module, config, k, config.votes, ctx.seed + 1).eval()
    return Predictor(module, mean=mean, std=std, batch_size=64, exportable=False, device=device,
                     onnx_runtime="plugins.diffclf.export:onnx_runtime",
                     explain=make_explainer(module, config, mean=mean, std=std, batch_size=64, device=device))
