"""Spec types: what plugins register and what flows between the core and a method.

All of these are frozen dataclasses. None of them imports torch; the torch-dependent helpers import it
lazily. The flow is one way::

    DatasetSpec.load -> DataSplits -> MethodSpec.fit(data, config, ctx) -> Predictor -> MetricSpec
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from harness.errors import HarnessError

PROFILES = ("smoke", "cpu", "paper")
MIN_IMAGE_SIZE = 8  # the smallest image a dataset may be resized to (a ResNet stem needs a few pixels)
MAX_IMAGE_SIZE = 1024  # the same bound the file-based datasets state
PROB_TOLERANCE = 1e-4  # predicted class probabilities must sum to 1 within this, per row
MAX_NAME_BYTES = 200  # names become folder names (a trial key adds a hash); file names stop at 255 bytes


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
    below = low is not None and (value < low or (low_open and value == low))
    if below or (high is not None and value > high):  # the message states the whole allowed range
        bounds = [f"greater than {low}" if low_open else f"at least {low}"] if low is not None else []
        bounds += [f"at most {high}"] if high is not None else []
        raise ValueError(f"{name} must be {' and '.join(bounds)}; found {value!r}")


def check_name(name: Any, what: str) -> str:
    """``name`` if it can be one folder name below the runs folder; otherwise a :class:`HarnessError` saying
    what ``what`` (e.g. ``"--experiment"``, ``"method name"``) may be. Refused: empty, ``.`` and ``..``, a
    ``/`` or ``\\`` (or the platform's separators), control characters, a leading or trailing space, more than
    200 bytes."""
    problem = None
    if not isinstance(name, str) or not name:
        problem = "it is empty" if isinstance(name, str) else f"it is a {type(name).__name__}"
    elif name in (".", ".."):
        problem = f"{name!r} names a folder that already exists"
    elif any(sep in name for sep in {"/", "\\", os.sep, os.altsep or "/"}):
        problem = "it contains a path separator"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        problem = "it contains a control character"
    elif name != name.strip():
        problem = "it starts or ends with a space"
    elif len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        problem = f"it is longer than {MAX_NAME_BYTES} bytes"
    if problem:
        raise HarnessError(f"{what} {name!r} cannot be a folder name in the runs folder: {problem}. Use letters, "
                           f"digits and . _ - + (no '/', '\\' or '..').")
    return name


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


class HiddenSplit:
    """What ``data.test`` is inside a method's ``fit``: the runner keeps the test split, and touching this one
    (its images, labels, ids, length, iteration) raises a :class:`HarnessError` naming the method. Every touch
    is remembered, so a method that catches the error still fails its trial."""

    __slots__ = ("_method", "_touched")

    def __init__(self, method: str):
        object.__setattr__(self, "_method", method)
        object.__setattr__(self, "_touched", [])

    @property
    def touched(self) -> list[str]:
        """What was asked of it (empty: the method never looked at the test split)."""
        return object.__getattribute__(self, "_touched")

    def error(self) -> HarnessError:
        method = object.__getattribute__(self, "_method")
        return HarnessError(f"method {method!r} read data.test inside fit; a method may select on data.val only "
                            f"(the harness predicts the test split itself, after fit)")

    def _refuse(self, what: str):
        object.__getattribute__(self, "_touched").append(what)
        raise object.__getattribute__(self, "error")()

    def __getattribute__(self, name: str):
        if name in ("touched", "error", "_refuse", "__class__", "__repr__") or (
                name.startswith("__") and name.endswith("__") and name not in ("__len__", "__iter__", "__getitem__")):
            return object.__getattribute__(self, name)
        object.__getattribute__(self, "_refuse")(name)

    def __setattr__(self, name, value):
        self._refuse(name)

    def __len__(self):
        self._refuse("len")

    def __iter__(self):
        self._refuse("iter")

    def __getitem__(self, item):
        self._refuse("getitem")

    def __bool__(self):
        self._refuse("bool")

    def __array__(self, *args, **kwargs):
        self._refuse("array")

    def __repr__(self) -> str:
        return "HiddenSplit(the test split: kept by the runner while fit runs)"

    def __reduce__(self):  # a pickled predictor that kept a reference to ``data`` stays picklable
        return (HiddenSplit, (object.__getattribute__(self, "_method"),))


@dataclass(frozen=True)
class DataSplits:
    """What a dataset's ``load`` returns: train / val / test at the requested size, plus class names.

    ``val`` is always present and never overlaps ``test``: model selection uses ``val`` only. A method's
    ``fit`` receives :meth:`without_test`: its ``test`` is a :class:`HiddenSplit` that refuses to be read.
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

    def without_test(self, method: str) -> DataSplits:
        """These splits with ``test`` replaced by a :class:`HiddenSplit` (what ``fit`` receives)."""
        return dataclasses.replace(self, test=HiddenSplit(method))


@dataclass(frozen=True)
class DatasetOptions:
    """Options every dataset understands (``--set dataset.size=64``, ``--set dataset.split=iois``).

    A dataset with more options subclasses this and names it in ``DatasetSpec.options``.
    """

    size: int = 28  # images are resized to size x size
    split: str = "official"  # the split protocol, one of DatasetSpec.protocols

    def __post_init__(self):  # subclasses that add options call super().__post_init__() from their own
        check_range("size", self.size, low=MIN_IMAGE_SIZE, high=MAX_IMAGE_SIZE)
        if not isinstance(self.split, str) or not self.split:
            raise ValueError(f"split must be the name of a split protocol; found {self.split!r}")


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
    - ``exportable``: ``module`` can be exported to ONNX (then the harness also times ONNX Runtime). A module
      that is not one graph (a loop around networks, as a diffusion chain) sets it False and may name its
      ``onnx_runtime``: ``"package.module:function"``, called as ``function(module, directory, example,
      threads=N)``, that exports the networks the module calls per step to ``directory`` and returns a module
      with the same input and output running them on ONNX Runtime (its ``onnx_provider`` names the provider);
      the harness times that as the ONNX Runtime latency. A name, not a callable, so a kept model keeps it.
    - ``latency_module``: what the harness times when it differs from ``module``, e.g. a diffusion method's one
      chain per image (the paper's cost) where ``module`` also runs extra chains for an uncertainty column;
      ``module`` is then timed too, as ``full_ms_per_image_*``.
    """

    module: Any  # torch.nn.Module
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    batch_size: int = 256
    exportable: bool = True
    explain: Callable[..., list[Path]] | None = None
    device: str = "cpu"
    latency_module: Any = None  # torch.nn.Module with the same input, timed instead of ``module``
    onnx_runtime: str | None = None  # "module:function" giving the module's ONNX Runtime form (not one graph)

    def to_tensor(self, images: np.ndarray):
        """uint8 (N, H, W, C) -> normalised float tensor (N, C, H, W) on the predictor's device."""
        return normalise(to_uint8_tensor(images).to(self.device), self.mean, self.std)

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


def check_probabilities(probs: np.ndarray, *, method: str, rows: int, num_classes: int, split: str = "test",
                        tolerance: float = PROB_TOLERANCE) -> np.ndarray:
    """Raise a :class:`HarnessError` naming ``method`` unless ``probs`` is a (rows, num_classes) array of finite,
    non-negative numbers whose rows sum to 1 within ``tolerance``; returns it as float64 otherwise."""
    probs = np.asarray(probs)
    where = f"method {method!r} returned probabilities for the {split} split"
    if probs.shape != (rows, num_classes):
        raise HarnessError(f"{where} of shape {probs.shape}; expected ({rows}, {num_classes}): one row per image, "
                           f"one column per class")
    if not np.issubdtype(probs.dtype, np.number) or np.issubdtype(probs.dtype, np.complexfloating):
        raise HarnessError(f"{where} of dtype {probs.dtype}; expected real numbers")
    probs = probs.astype(np.float64)
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        raise HarnessError(f"{where} that are not finite (NaN or inf) in {_rows(bad)}; e.g. row "
                           f"{int(np.flatnonzero(bad)[0])}: {np.array2string(probs[bad][0], precision=4)}")
    bad = (probs < 0).any(axis=1)
    if bad.any():
        raise HarnessError(f"{where} that are negative in {_rows(bad)} (smallest {probs.min():.6g}); a predictor "
                           f"returns probabilities (e.g. softmax of its logits), not scores")
    sums = probs.sum(axis=1)
    bad = np.abs(sums - 1.0) > tolerance
    if bad.any():
        raise HarnessError(f"{where} whose rows do not sum to 1 within {tolerance:g}: {_rows(bad)}, row sums from "
                           f"{sums.min():.6g} to {sums.max():.6g}; normalise them (e.g. softmax) in the predictor")
    return probs


def _rows(mask: np.ndarray, shown: int = 8) -> str:
    index = np.flatnonzero(mask)
    listed = ", ".join(str(i) for i in index[:shown]) + (", ..." if len(index) > shown else "")
    return f"{len(index)} of {len(mask)} rows ({listed})"


def _broadcast(values: tuple[float, ...], channels: int) -> list[float]:
    values = list(values)
    if len(values) == channels:
        return values
    if len(values) == 1:
        return values * channels
    raise HarnessError(f"normalisation has {len(values)} values for {channels}-channel images; expected 1 or "
                       f"{channels}")


def to_uint8_tensor(images: np.ndarray):
    """uint8 (N, H, W, C) numpy -> uint8 (N, C, H, W) tensor, sharing memory where possible. A read-only array (a
    memory-mapped dataset cache) is shared too: every use indexes or converts it into a new tensor, never writes."""
    import warnings

    import torch

    images = np.ascontiguousarray(images)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(images).permute(0, 3, 1, 2)


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
    sampler_factory: Callable[[np.ndarray], Sampler]  # labels -> Sampler (see Sampler, SamplerSpec)
    profile: str = "cpu"
    time_budget_s: float | None = None
    scorer: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None  # the registered metrics
    # What the training loop selects checkpoints on (as val_<metric>); the runner passes
    # RunSettings.headline_metric (default in harness/run/settings.py).
    headline_metric: str = "macro_f1"
    cache_dir: Path | None = None  # the harness cache (--cache-dir / HARNESS_CACHE_DIR): models shared by trials

    notes: dict[str, Any] = field(default_factory=dict)  # what the method adds to its result (see ``note``)
    warnings: list[str] = field(default_factory=list)  # what the method warns about (see ``warn``)

    def note(self, **values: Any) -> None:
        """Record method-specific facts in the trial's result (``result.json`` ``notes``), e.g. the prior's
        validation score, a cached generator's key, generation metrics. JSON-able values only."""
        self.notes.update(values)

    def warn(self, text: str) -> None:
        """Add a sentence to the trial's ``warnings`` (shown in the report's *Warnings*): what a reader of its row
        must know, e.g. that a setting made the method a no-op. One sentence: what happened, what it means."""
        self.warnings.append(str(text))

    def score(self, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
        """The registered metric plugins on (labels, probabilities), e.g. of the validation split: what a
        method selects its checkpoint on. ``{name: value}``; a metric that cannot be computed is left out."""
        if self.scorer is None:
            raise HarnessError("this TrialContext has no scorer: the runner provides one from the metric plugins")
        return self.scorer(np.asarray(labels), np.asarray(probs))

    def report(self, **metrics: Any) -> None:
        """Report per-epoch numbers, e.g. ``ctx.report(epoch=3, val_macro_f1=0.41, loss=1.2)``."""
        self.reporter(**metrics)

    def make_sampler(self, labels: np.ndarray) -> Sampler:
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


@runtime_checkable
class Sampler(Protocol):
    """The sampler protocol: what ``SamplerSpec.build(labels)`` returns and ``ctx.make_sampler(labels)`` gives a
    method. ``indices`` returns the training indices of epoch ``epoch`` (0-based) of ``num_epochs``: a 1-d
    integer array in ``0 .. len(labels) - 1`` (repeats allowed; its length is the epoch's number of draws),
    drawn only from ``rng`` so that the same generator state gives the same order."""

    def indices(self, epoch: int, num_epochs: int, rng: np.random.Generator) -> np.ndarray: ...


@dataclass(frozen=True)
class SamplerSpec:
    """A training-batch sampler.

    ``build(labels) -> Sampler`` (see :class:`Sampler`): ``sampler.indices(epoch, num_epochs, rng)`` returns the
    training indices of one epoch (an int array; its length is the epoch's number of samples).
    """

    name: str
    description: str
    build: Callable[[np.ndarray], Sampler] | str
    source: str = ""

    def build_fn(self) -> Callable[[np.ndarray], Sampler]:
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
