"""Spec types: what plugins register and what flows between the core and a method.

All of these are frozen dataclasses. None of them imports torch; the torch-dependent helpers import it
lazily. The flow is one way::

    DatasetSpec.load -> DataSplits -> MethodSpec.fit(data, config, ctx) -> Predictor -> MetricSpec
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError

PROFILES = ("smoke", "cpu", "paper")


def resolve_callable(target: Callable | str, what: str) -> Callable:
    """Turn ``"package.module:function"`` into the function (a callable is returned as it is)."""
    if callable(target):
        return target
    module_name, _, attr = str(target).partition(":")
    if not attr:
        raise HarnessError(f"{what}: expected a callable or 'module:function', found {target!r}")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise HarnessError(f"{what}: module {module_name!r} has no attribute {attr!r}") from None


def check_range(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, choices: tuple | None = None) -> None:
    """Raise ``ValueError("NAME must be ...; found VALUE")`` when a config value is out of range. Config
    dataclasses call it in ``__post_init__``; the harness turns the error into a message naming the method
    or dataset before any trial starts (``--set resnet.epochs=-3`` is refused, not trained)."""
    if choices is not None:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; found {value!r}")
        return
    if low is not None and (value < low or (low_open and value == low)):
        bound = f"greater than {low}" if low_open else f"at least {low}"
        raise ValueError(f"{name} must be {bound}" + (f" and at most {high}" if high is not None else "")
                         + f"; found {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be at most {high}; found {value!r}")


# ---------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Split:
    """One split: ``images`` uint8 (N, H, W, C) and ``labels`` int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None  # a stable id per image (the dataset's own, or a content hash): pairs runs

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise HarnessError(
                f"Split images must be uint8 (N, H, W, C); found {self.images.dtype} {self.images.shape}"
            )
        if len(self.images) != len(self.labels):
            raise HarnessError(f"Split has {len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DataSplits:
    """What a dataset's ``load`` returns: train / val / test at the requested size, plus class names.

    ``val`` is always present and never overlaps ``test``: model selection uses ``val`` only.
    """

    train: Split
    val: Split
    test: Split
    classes: tuple[str, ...]
    name: str = ""
    protocol: str = "official"
    fingerprint: str | None = None  # a hash of the prepared arrays (labels included): ties results to the data
    warnings: tuple[str, ...] = ()  # facts about the data a result should carry (absent classes, dropped rows, ...)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def size(self) -> int:
        return int(self.train.images.shape[1])


@dataclass(frozen=True)
class DatasetOptions:
    """Options every dataset understands (``--set dataset.size=64``, ``--set dataset.split=iois``).

    A dataset with more options subclasses this and names it in ``DatasetSpec.options``.
    """

    size: int = 28  # images are resized to size x size
    split: str = "official"  # the split protocol, one of DatasetSpec.protocols


@dataclass(frozen=True)
class DatasetRequest:
    """Everything ``DatasetSpec.load`` receives."""

    options: Any  # an instance of the spec's options dataclass
    seed: int  # the seed for protocols that draw a split (the trial's data seed)
    data_dir: Path | None  # --data-dir / HARNESS_DATA_DIR
    cache_dir: Path  # where decoded arrays may be cached


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset a plugin provides.

    ``load(request: DatasetRequest) -> DataSplits`` does the decoding; it runs only when a trial needs
    the data. ``classes`` is the class order (index = label).
    """

    name: str
    description: str
    load: Callable[[DatasetRequest], DataSplits] | str
    classes: tuple[str, ...]
    modality: str = ""
    channels: int = 3
    source: str = ""  # citation / where it comes from
    license: str = ""
    obtain: str = ""  # how to get the files (shown in "not found" errors)
    protocols: tuple[str, ...] = ("official",)
    options: type = DatasetOptions
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # option overrides per profile
    needs_data_dir: bool = True

    def load_fn(self) -> Callable[[DatasetRequest], DataSplits]:
        return resolve_callable(self.load, f"dataset {self.name!r} load")


# ------------------------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Predictor:
    """What a method's ``fit`` returns.

    ``module`` maps a normalised float batch (N, C, H, W) to class probabilities (N, K). It may instead
    return a dict with ``"probs"`` and further per-image tensors (for example ``"uncertainty"``); those
    are stored as extra columns of ``predictions.parquet``.

    Optional capabilities:
    - ``explain(images_uint8, labels, out_dir) -> list[Path]``: writes explanation images.
    - ``exportable``: ``module`` can be exported to ONNX (then the harness also times ONNX Runtime).
    """

    module: Any  # torch.nn.Module
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    batch_size: int = 256
    exportable: bool = True
    explain: Callable[..., list[Path]] | None = None
    device: str = "cpu"

    def to_tensor(self, images: np.ndarray):
        """uint8 (N, H, W, C) -> normalised float tensor (N, C, H, W) on the predictor's device."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2)
        return normalise(x, self.mean, self.std)

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Probabilities (and any extra per-image outputs) for uint8 images, in batches."""
        import torch

        self.module.eval()
        out: dict[str, list[np.ndarray]] = {}
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                y = self.module(self.to_tensor(images[start : start + self.batch_size]))
                if not isinstance(y, dict):
                    y = {"probs": y}
                for key, value in y.items():
                    out.setdefault(key, []).append(value.detach().float().cpu().numpy())
        return {key: np.concatenate(parts) for key, parts in out.items()}


def _broadcast(values: tuple[float, ...], channels: int) -> list[float]:
    values = list(values)
    if len(values) == channels:
        return values
    if len(values) == 1:
        return values * channels
    raise HarnessError(f"normalisation has {len(values)} values for {channels}-channel images; expected 1 or "
                       f"{channels}")


def normalise(batch_u8, mean: tuple[float, ...], std: tuple[float, ...]):
    """uint8 (N, C, H, W) tensor -> float ``(x / 255 - mean) / std`` per channel (``mean`` / ``std`` with one
    value, or one per channel). The one normalisation: predictors and the training loop both use it."""
    import torch

    x = batch_u8.float().div_(255.0)
    c = x.shape[1]
    m = torch.tensor(_broadcast(tuple(mean), c), device=x.device).view(1, c, 1, 1)
    s = torch.tensor(_broadcast(tuple(std), c), device=x.device).view(1, c, 1, 1)
    return (x - m) / s


@dataclass(frozen=True)
class TrialContext:
    """What a method's ``fit`` receives besides the data and its config."""

    seed: int
    device: str
    threads: int
    trial_dir: Path  # checkpoints and artefacts go here (``trial_dir / "artefacts"`` is shown in reports)
    reporter: Callable[..., None]  # report(epoch=..., **metrics): console or Ray Tune
    sampler_factory: Callable[[np.ndarray], Any]  # labels -> Sampler (see SamplerSpec)
    profile: str = "cpu"
    time_budget_s: float | None = None
    scorer: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None  # the registered metrics
    headline_metric: str = "macro_f1"  # what the training loop selects checkpoints on (as val_<metric>)

    notes: dict[str, Any] = field(default_factory=dict)  # what the method adds to its result (see ``note``)

    def note(self, **values: Any) -> None:
        """Record method-specific facts in the trial's result (``result.json`` ``notes``), e.g. the prior's
        validation score, a cached generator's key, generation metrics. JSON-able values only."""
        self.notes.update(values)

    def score(self, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        """The registered metric plugins on (labels, probabilities), e.g. of the validation split: what a
        method selects its checkpoint on. ``{name: value}``; a metric that cannot be computed is left out."""
        if self.scorer is None:
            raise HarnessError("this TrialContext has no scorer: the runner provides one from the metric plugins")
        return self.scorer(np.asarray(labels), np.asarray(probs))

    def report(self, **metrics: Any) -> None:
        """Report per-epoch numbers, e.g. ``ctx.report(epoch=3, val_macro_f1=0.41, loss=1.2)``."""
        self.reporter(**metrics)

    def make_sampler(self, labels: np.ndarray):
        """The experiment's sampler for these training labels (``.indices(epoch, num_epochs, rng)``)."""
        return self.sampler_factory(np.asarray(labels))

    @property
    def artefacts_dir(self) -> Path:
        path = self.trial_dir / "artefacts"
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class MethodSpec:
    """A classification method a plugin provides.

    ``config`` is a dataclass whose defaults are the method's settings; ``profiles`` maps ``smoke``,
    ``cpu`` and ``paper`` to overrides of those defaults. ``fit(data, config, ctx) -> Predictor``
    trains (selecting any checkpoint on ``data.val`` only, never on ``data.test``).

    ``search_space`` maps config keys to domains for ``harness tune``:
    ``("loguniform", lo, hi)``, ``("uniform", lo, hi)``, ``("choice", [a, b, ...])``,
    ``("randint", lo, hi)``.
    """

    name: str
    description: str
    config: type
    fit: Callable[..., Predictor] | str
    paper: str = ""
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    search_space: Mapping[str, tuple] = field(default_factory=dict)
    uses_sampler: bool = True  # trains a classifier on batches drawn by the experiment's sampler
    # Per-dataset settings of a profile: {profile: {dataset: {key: value}}}. Config keys apply on top of the
    # profile for that dataset (DiffMIC's paper chain length: 60 on APTOS, 250 on ISIC); keys "dataset.OPTION"
    # state what the paper's data protocol was, and a trial whose dataset option differs says so (a warning).
    dataset_profiles: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)

    def fit_fn(self) -> Callable[..., Predictor]:
        return resolve_callable(self.fit, f"method {self.name!r} fit")

    def config_keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.config)]


# ------------------------------------------------------------------------------- samplers, metrics


@dataclass(frozen=True)
class SamplerSpec:
    """A training-batch sampler.

    ``build(labels) -> sampler`` where ``sampler.indices(epoch, num_epochs, rng)`` returns the
    training indices of one epoch (an int array; its length is the epoch's number of samples).
    """

    name: str
    description: str
    build: Callable[[np.ndarray], Any] | str
    source: str = ""

    def build_fn(self) -> Callable[[np.ndarray], Any]:
        return resolve_callable(self.build, f"sampler {self.name!r} build")


@dataclass(frozen=True)
class MetricSpec:
    """A metric computed once on the full test predictions.

    ``compute(y_true, probs) -> float`` with ``y_true`` int (N,) and ``probs`` float (N, K).
    """

    name: str
    description: str
    compute: Callable[[np.ndarray, np.ndarray], float] | str
    source: str = ""
    higher_is_better: bool = True

    def compute_fn(self) -> Callable[[np.ndarray, np.ndarray], float]:
        return resolve_callable(self.compute, f"metric {self.name!r} compute")
