"""The stages of ``protodiff`` / ``cfg-diff`` and their TSTR variants (imports torch).

``fit`` runs, on the shared training loop (``harness.toolkit.training.train_loop``):

1. (prototype generator only) **prototype learning** on the training split: ``learn_prototypes``;
2. **generator training** on the training split only (``train_generator``: it receives a ``DataSplits`` whose
   validation and test splits are empty);
3. **sampling** ``synthetic_per_class`` images per class (``model.sample``);
4. **generation metrics** of those images against the validation split, and the sample grid;
5. the **classifier**: ResNet-18 on real + synthetic images (augment) or on synthetic images only (TSTR),
   selected on the validation split like every method.

Stages 1-3 are cached per (training split, image size, generator settings, seed) in the harness cache
(``harness.toolkit.cache``, as IOIS's generator: ``<cache dir>/protodiff-generators/<key>.pt`` and the pool of
synthetic images beside it; a file lock makes a second trial wait for the first, not retrain), so the TSTR and
augmentation rows of one generator share it across experiments.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from harness import DataSplits, HarnessError, Predictor, Split
from harness.toolkit import backbones
from harness.toolkit.cache import ArtefactCache, cache_key, cache_root, split_hash
from harness.toolkit.genmetrics import FeatureEncoder, generation_report
from harness.toolkit.nn.ema import EMA
from harness.toolkit.training import (
    Softmax,
    epochs_for,
    normalisation,
    predict,
    to_uint8_tensor,
    train_classifier,
    train_loop,
)
from harness.toolkit.training_config import TrainConfig
from plugins.protodiff.config import generator_settings, sampling_settings
from plugins.protodiff.model import PrototypeNet, build_denoiser, diffusion_loss, gcpl_loss, sample

CACHE_VERSION = 1
CACHE_FOLDER = "protodiff-generators"  # under the harness cache directory (``harness.toolkit.cache``)


@dataclasses.dataclass(frozen=True)
class GeneratorTrainConfig(TrainConfig):
    grad_clip: float = 1.0


class UniformOrder:
    """Every training image once per epoch in a random order: the prototype and generator stages ignore the
    experiment's sampler (a generator is shared by methods and samplers; its classes are conditioned on)."""

    def __init__(self, labels: np.ndarray):
        self.n = len(labels)

    def indices(self, epoch: int, num_epochs: int, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(self.n)


def _empty(split: Split) -> Split:
    return Split(split.images[:0], split.labels[:0])


def only(data: DataSplits, train: Split, val: Split | None = None) -> DataSplits:
    """A DataSplits with this training split, this (or an empty) validation split and an empty test split."""
    return DataSplits(train=train, val=val if val is not None else _empty(train), test=_empty(train),
                      classes=data.classes, name=data.name, protocol=data.protocol)


# ------------------------------------------------------------------------------- 1. prototype learning


def learn_prototypes(train: DataSplits, config, ctx) -> tuple[PrototypeNet, dict]:
    """GCPL on ``train.train`` (``train.val`` is not used for selection: the last state is kept). Returns the
    network (its ``prototypes`` are (C, M, d)) and what to record about the encoder."""
    k, m = train.num_classes, config.prototypes_per_class
    size = config.encoder_size or train.size
    kwargs = {"img_size": size} if config.encoder.startswith("vit") else {}
    net = backbones.create(config.encoder, num_classes=0, in_chans=train.channels, image_size=size,
                           pretrained=config.encoder_pretrained, **kwargs)
    encoder = net.model
    if net.pretrained_loaded:
        cfg = getattr(encoder, "pretrained_cfg", {}) or {}
        mean, std = tuple(cfg.get("mean", (0.5,))), tuple(cfg.get("std", (0.5,)))
    else:
        mean, std = normalisation(train.channels, False)
    model = PrototypeNet(encoder, int(encoder.num_features), config.class_dim, k, m, config.gamma,
                         input_size=config.encoder_size, freeze_encoder=config.freeze_encoder)
    stage_cfg = TrainConfig(epochs=config.proto_epochs, batch_size=config.batch_size, optimizer="adamw",
                            lr=config.proto_lr, weight_decay=config.weight_decay, schedule="cosine",
                            hflip=config.hflip, vflip=config.vflip, rotation=config.rotation)

    def loss(x, y, epoch):
        return gcpl_loss(model.features(x), model.prototypes, y, config.gamma, config.proto_lambda)

    params = [p for p in model.parameters() if p.requires_grad]
    model, history = train_loop(ctx, stage_cfg, model=model, data=train, mean=mean, std=std, loss=loss,
                                params=params, stage="prototypes")
    info = {"encoder": config.encoder, "encoder_pretrained_loaded": bool(net.pretrained_loaded),
            "encoder_frozen": bool(config.freeze_encoder), "feature_dim": int(encoder.num_features),
            "dim": config.class_dim, "per_class": m, "gamma": config.gamma, "lambda": config.proto_lambda,
            "epochs": len(history.records), "final_loss": history.records[-1].get("loss") if history.records else None,
            "mean": list(mean), "std": list(std)}
    if net.note:
        info["encoder_note"] = net.note
    return model.eval(), info


# ------------------------------------------------------------------------------- 2. generator training


def train_generator(train: DataSplits, config, ctx, *, table: torch.Tensor | None = None, per_class: int = 1,
                    mode_weights: torch.Tensor | None = None):
    """Train the conditional denoiser on ``train.train`` only, whose labels are condition indices
    (class * per_class + prototype). Returns the network to sample from (the EMA when ``gen_ema`` > 0)."""
    if len(train.val) or len(train.test):
        raise HarnessError("train_generator takes the training split only (empty validation and test splits)")
    k = train.num_classes
    net = build_denoiser(channels=train.channels, size=train.size, num_classes=k, config=config, table=table,
                         per_class=per_class, mode_weights=mode_weights)
    stage_cfg = GeneratorTrainConfig(
        epochs=config.gen_epochs, steps=config.gen_steps, batch_size=config.gen_batch_size, optimizer="adamw",
        lr=config.gen_lr, weight_decay=config.gen_weight_decay, schedule="cosine",
        warmup_epochs=config.gen_warmup_epochs, hflip=config.gen_hflip, vflip=False, rotation=0.0)
    budget = epochs_for(stage_cfg, len(train.train))
    # the average starts after the first fifth of the steps (before, it copies the weights), so a short cpu
    # budget does not sample from a mix with the random initialisation
    ema = EMA(net, config.gen_ema, start_step=budget.steps // 5) if config.gen_ema > 0 else None
    generator = torch.Generator().manual_seed(ctx.seed + 1)

    def loss(x, index, epoch):
        return diffusion_loss(net, x, index, config.label_dropout, generator)

    mean = std = (0.5,) * train.channels  # images in [-1, 1]
    net, history = train_loop(ctx, stage_cfg, model=net, data=train, mean=mean, std=std, loss=loss, ema=ema,
                              stage="generator")
    final = (ema.module if ema is not None else net).eval()
    return final, {"epochs": budget.epochs, "steps": budget.steps, "ema": config.gen_ema,
                   "final_loss": history.records[-1].get("loss") if history.records else None}


# ------------------------------------------------------------------------------------------ the cache


def generator_key(data: DataSplits, config, kind: str, seed: int) -> str:
    from harness import __version__

    return cache_key({"version": CACHE_VERSION, "harness": __version__, "kind": kind, "seed": seed,
                      "train": split_hash(data.train), "shape": list(data.train.images.shape[1:]),
                      "classes": list(data.classes), "settings": generator_settings(config)})


def _cache(ctx) -> ArtefactCache:
    return ArtefactCache(cache_root(ctx) / CACHE_FOLDER)


def obtain_generator(data: DataSplits, config, ctx, kind: str):
    """The trained generator for these data and settings: from the cache, or trained (and cached) now.
    Returns (denoiser, facts about it)."""
    key = generator_key(data, config, kind, ctx.seed)

    def build() -> dict:
        meta, net = _train(data, config, ctx, kind)
        return {"state": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "meta": json.dumps(meta)}

    stored, cached = _cache(ctx).get_or_build(key, build)
    meta, state = json.loads(stored["meta"]), stored["state"]
    net = build_denoiser(channels=data.channels, size=data.size, num_classes=data.num_classes, config=config,
                         table=state.get("condition.table") if kind == "prototype" else None,
                         per_class=meta["per_class"], mode_weights=state["mode_weights"])
    net.load_state_dict(state)
    return net.to(ctx.device).eval(), {**meta, "key": key, "cached": cached}


def _train(data: DataSplits, config, ctx, kind: str):
    """Stages 1-2 on the training split: (facts, trained denoiser)."""
    started = time.perf_counter()
    uniform_ctx = dataclasses.replace(ctx, sampler_factory=UniformOrder)
    train = only(data, data.train)  # the generator and the prototypes see the training split only
    meta: dict = {"kind": kind, "per_class": 1, "train_images": len(data.train)}
    table = weights = None
    labels = np.asarray(data.train.labels, dtype=np.int64)
    if kind == "prototype":
        protonet, info = learn_prototypes(train, config, uniform_ctx)
        m = config.prototypes_per_class
        prototypes = protonet.prototypes.detach().cpu()  # (C, M, d)
        table = prototypes.reshape(-1, prototypes.shape[-1])
        x = to_uint8_tensor(data.train.images)
        mean, std = tuple(info["mean"]), tuple(info["std"])
        if m > 1:  # each training image is conditioned on the nearest prototype of its class
            from harness.contract.specs import normalise

            j = torch.cat([protonet.assign(normalise(x[s : s + 256].to(ctx.device), mean, std),
                                           torch.from_numpy(labels[s : s + 256]).to(ctx.device)).cpu()
                           for s in range(0, len(labels), 256)]).numpy()
        else:
            j = np.zeros_like(labels)
        weights = torch.zeros(data.num_classes, m)
        np.add.at(weights.numpy(), (labels, j), 1.0)
        weights = weights + (weights.sum(1, keepdim=True) == 0).float()  # an absent class: uniform
        probs = predict(Softmax(protonet), x, mean, std, ctx.device)
        meta["prototypes"] = {**info, "train_macro_f1": ctx.score(labels, probs).get(ctx.headline_metric)}
        meta["per_class"] = m
        labels = labels * m + j
    t0 = time.perf_counter()
    net, facts = train_generator(only(data, Split(data.train.images, labels)), config, uniform_ctx, table=table,
                                 per_class=meta["per_class"], mode_weights=weights)
    meta.update(generator=facts, generator_seconds=time.perf_counter() - t0,
                train_seconds=time.perf_counter() - started)
    return meta, net


def obtain_pool(net, data: DataSplits, config, ctx, key: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """``synthetic_per_class`` images of every class (class order), cached beside the generator."""
    settings = sampling_settings(config)

    def build() -> dict:
        labels = np.repeat(np.arange(data.num_classes), config.synthetic_per_class)
        t0 = time.perf_counter()
        images = sample(net, labels, shape=(data.channels, data.size, data.size),
                        guidance_scale=config.guidance_scale, steps=config.sample_steps, eta=config.eta,
                        seed=ctx.seed + 2, device=ctx.device)
        meta = {**settings, "images": int(len(labels)), "sample_seconds": time.perf_counter() - t0}
        return {"images": torch.from_numpy(images), "labels": torch.from_numpy(labels), "meta": json.dumps(meta)}

    stored, cached = _cache(ctx).get_or_build(f"{key}-pool-{cache_key(settings)[:12]}", build)
    return stored["images"].numpy(), stored["labels"].numpy(), {**json.loads(stored["meta"]), "cached": cached}


# ------------------------------------------------------------------------------------- 4. metrics, grid


def save_grid(path: Path, real: Split, fake: np.ndarray, fake_labels: np.ndarray, num_classes: int,
              per_class: int, pad: int = 2, min_tile: int = 48) -> Path:
    """One row per class: up to ``per_class`` validation images, a gap, then ``per_class`` generated ones."""
    from PIL import Image

    size, channels = fake.shape[1], fake.shape[3]
    scale = max(1, -(-min_tile // size))
    tile, gap = size * scale, 3 * pad
    width = 2 * per_class * (tile + pad) + pad + gap
    grid = np.full((num_classes * (tile + pad) + pad, width, channels), 255, np.uint8)
    for c in range(num_classes):
        top = pad + c * (tile + pad)
        rows = (real.images[real.labels == c][:per_class], fake[fake_labels == c][:per_class])
        for block, images in enumerate(rows):
            for i, img in enumerate(images):
                left = pad + block * (per_class * (tile + pad) + gap) + i * (tile + pad)
                grid[top : top + tile, left : left + tile] = np.asarray(img).repeat(scale, 0).repeat(scale, 1)
    Image.fromarray(grid[..., 0] if channels == 1 else grid).save(path)
    return path


def measure(fake: np.ndarray, fake_labels: np.ndarray, data: DataSplits, config, ctx) -> dict:
    """Frechet distance and k-NN precision / recall of the generated images against the validation split."""
    encoder = FeatureEncoder(data.channels, data.size, device=ctx.device)
    t0 = time.perf_counter()
    report = generation_report(encoder(np.asarray(data.val.images)), data.val.labels, encoder(fake), fake_labels,
                               data.classes, k=config.knn_k)
    return {"real": "validation split", "encoder": encoder.describe(), **report,
            "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------- fit

GENERATOR_NAMES = {"prototype": "protodiff", "learned": "cfg-diff"}


def fit(data: DataSplits, config, ctx, *, kind: str, use: str) -> Predictor:
    if kind not in GENERATOR_NAMES or use not in ("augment", "tstr"):
        raise HarnessError(f"protodiff: kind must be prototype | learned and use augment | tstr; found {kind}, {use}")
    torch.manual_seed(ctx.seed)
    net, facts = obtain_generator(data, config, ctx, kind)
    fake, fake_labels, pool = obtain_pool(net, data, config, ctx, facts["key"])
    name = GENERATOR_NAMES[kind]
    save_grid(ctx.artefacts_dir / f"samples_{name}.png", data.val, fake, fake_labels, data.num_classes,
              config.grid_per_class)
    generation = measure(fake, fake_labels, data, config, ctx)
    (ctx.artefacts_dir / f"generation_{name}.json").write_text(json.dumps(generation, indent=1))
    prototypes = facts.pop("prototypes", None)
    ctx.note(generator={"name": name, "conditioning": kind, **facts}, synthetic=pool, generation=generation,
             **({"prototypes": prototypes} if prototypes else {}))

    built = backbones.create(config.backbone, num_classes=data.num_classes, in_chans=data.channels,
                             image_size=data.size, pretrained=config.pretrained)
    mean, std = normalisation(data.channels, built.pretrained_loaded)
    pool_x, pool_y = to_uint8_tensor(fake), torch.from_numpy(fake_labels.astype(np.int64))
    if use == "tstr":  # train on synthetic only; select on the real validation split like every method
        model, _ = train_classifier(built.model, only(data, Split(fake, fake_labels.astype(np.int64)), data.val),
                                    config, ctx, mean=mean, std=std)
    else:
        model, _ = train_classifier(built.model, data, config, ctx, mean=mean, std=std,
                                    extra_batches=lambda epoch: (pool_x, pool_y))
    return Predictor(Softmax(model), mean=mean, std=std, device=ctx.device)


def fit_protodiff(data, config, ctx):
    return fit(data, config, ctx, kind="prototype", use="augment")


def fit_protodiff_tstr(data, config, ctx):
    return fit(data, config, ctx, kind="prototype", use="tstr")


def fit_cfg_diff(data, config, ctx):
    return fit(data, config, ctx, kind="learned", use="augment")


def fit_cfg_diff_tstr(data, config, ctx):
    return fit(data, config, ctx, kind="learned", use="tstr")
