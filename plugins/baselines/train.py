"""Training the baselines (imports torch): each ``fit`` is the shared supervised loop
(``harness.toolkit.training.train_classifier``) with its paper's head and loss from ``model.py``.

- ``fit``: cross-entropy (``resnet``, ``resnet50``, ``vit``, ``swin``, ``pvt``).
- ``fit_focal``: focal loss, softmax form by default (``form="sigmoid"``: Lin et al.'s per-class form).
- ``fit_cb_focal``: class-balanced focal loss, Cui et al.'s sigmoid form by default (last-layer bias
  initialised to the prior ``bias_prior``), softmax form as an option.
- ``fit_ldam_drw``: Cao et al.'s cosine head, LDAM margins and deferred re-weighting.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness import Predictor
from harness.toolkit.training import Softmax, epochs_for, normalisation, train_classifier
from plugins.baselines.model import (
    NormalisedSigmoid,
    build_for,
    class_counts,
    drw_start,
    effective_number_weights,
    focal_loss,
    ldam_loss,
    ldam_margins,
    set_prior_bias,
    sigmoid_focal_loss,
    with_cosine_head,
)


def _train(data, config, ctx, model, pretrained_loaded: bool, loss_fn=None, probs=Softmax) -> Predictor:
    mean, std = normalisation(data.channels, pretrained_loaded)
    model, _ = train_classifier(model, data, config, ctx, mean=mean, std=std, loss_fn=loss_fn, probs=probs)
    return Predictor(probs(model), mean=mean, std=std, device=ctx.device)


def fit(data, config, ctx) -> Predictor:
    """Cross-entropy on ``config.backbone``."""
    built = build_for(config, data)
    return _train(data, config, ctx, built.model, built.pretrained_loaded,
                  loss_fn=lambda z, y, epoch: F.cross_entropy(z, y))


def _focal(data, config, ctx, weight: torch.Tensor | None) -> Predictor:
    built = build_for(config, data)
    if config.form == "sigmoid":
        if config.bias_prior > 0:
            set_prior_bias(built.model, config.bias_prior)
        return _train(data, config, ctx, built.model, built.pretrained_loaded, probs=NormalisedSigmoid,
                      loss_fn=lambda z, y, epoch: sigmoid_focal_loss(z, y, config.gamma, weight))
    return _train(data, config, ctx, built.model, built.pretrained_loaded,
                  loss_fn=lambda z, y, epoch: focal_loss(z, y, config.gamma, weight))


def fit_focal(data, config, ctx) -> Predictor:
    return _focal(data, config, ctx, None)


def fit_cb_focal(data, config, ctx) -> Predictor:
    counts = class_counts(data.train.labels, data.num_classes)
    weights = effective_number_weights(counts, config.beta)
    ctx.note(class_weights=[round(float(w), 6) for w in weights])
    return _focal(data, config, ctx, torch.tensor(weights, dtype=torch.float32))


def fit_ldam_drw(data, config, ctx) -> Predictor:
    counts = class_counts(data.train.labels, data.num_classes)
    margins = ldam_margins(counts, config.max_margin)
    weights = effective_number_weights(counts, config.beta)
    start = drw_start(epochs_for(config, len(data.train)).epochs, config.drw_epoch)
    ctx.note(ldam_margins=[round(float(m), 6) for m in margins], drw_start_epoch=start + 1,
             drw_weights=[round(float(w), 6) for w in weights])
    margins_t = torch.tensor(margins, dtype=torch.float32)
    weights_t = torch.tensor(weights, dtype=torch.float32)

    def loss_fn(z, y, epoch):
        return ldam_loss(z, y, margins_t, config.scale, weights_t if epoch >= start else None)

    built = build_for(config, data)
    model = with_cosine_head(built.model, data.num_classes, config.scale)
    return _train(data, config, ctx, model, built.pretrained_loaded, loss_fn=loss_fn)
