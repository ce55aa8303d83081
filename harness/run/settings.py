"""Settings of a run, with every default in one place.

The core names no plugin: which metric is the headline, which metrics a trial must have to count as ``ok``,
which sampler a method that declares none trains with, and which metrics a progress line shows are settings
here (their defaults are the built-in plugins' names). :class:`RunSettings` is the same for every trial of a
run and picklable, so the Ray executor ships it to its workers as it is.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.contract.result import DEFAULT_DATASET, DEFAULT_SAMPLER  # noqa: F401 (the run's defaults, named here too)
from harness.errors import HarnessError
from harness.run.latency import LatencySettings

ENV_DATA_DIR = "HARNESS_DATA_DIR"
ENV_CACHE_DIR = "HARNESS_CACHE_DIR"

HEADLINE_METRIC = "macro_f1"  # leaderboards rank on it; the training loop selects checkpoints on val_<it>
REQUIRED_METRICS = ("macro_f1", "balanced_accuracy", "mcc")  # a trial without any of these is not ok
SHOWN_METRICS = ("macro_f1", "balanced_accuracy", "accuracy")  # the executors' progress lines

SEED_MAX = 2**32 - 1  # numpy's seed range (torch accepts more; the harness uses the common one)
DEVICE_FORMS = "cpu, cuda, cuda:N, mps or auto"
_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+|mps|auto)$")


@dataclass(frozen=True)
class RunSettings:
    """Where things are and how to run; the same for every trial of a run (and picklable for Ray)."""

    runs_dir: Path = Path("runs")
    data_dir: Path | None = None
    cache_dir: Path | None = None
    plugins: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    device: str = "auto"
    threads: int | None = None
    latency: LatencySettings = field(default_factory=LatencySettings)
    save_model: bool = True  # keep each ok trial's predictor in trial_dir/model/ (--no-save-model: off)
    headline_metric: str = HEADLINE_METRIC
    required_metrics: tuple[str, ...] = REQUIRED_METRICS
    default_sampler: str = DEFAULT_SAMPLER
    shown_metrics: tuple[str, ...] = SHOWN_METRICS

    def __post_init__(self):
        check_device(self.device)
        if self.threads is not None and self.threads < 1:
            raise HarnessError(f"--threads must be at least 1; found {self.threads}")

    def resolved_data_dir(self) -> Path | None:
        if self.data_dir is not None:
            return Path(self.data_dir).expanduser()
        env = os.environ.get(ENV_DATA_DIR)
        return Path(env).expanduser() if env else None

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir).expanduser()
        env = os.environ.get(ENV_CACHE_DIR)
        if env:
            return Path(env).expanduser()
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "harness"


def check_device(device: str) -> None:
    """Refuse a device string torch would not understand (before anything runs)."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise HarnessError(f"--device must be one of {DEVICE_FORMS}; found {device!r}")


def check_device_available(device: str) -> None:
    """Refuse a device this machine does not have (``cuda`` without a GPU, ``cuda:3`` with two GPUs, ``mps``
    off Apple silicon). Imports torch: called when trials are about to run here, not for ``--help``."""
    check_device(device)
    if device in ("cpu", "auto"):
        return
    import torch

    if device == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise HarnessError("--device mps: torch sees no Apple MPS device on this machine; use --device cpu or auto")
        return
    if not torch.cuda.is_available():
        raise HarnessError(f"--device {device}: torch sees no CUDA GPU on this machine (torch.cuda.is_available() is "
                           f"False); use --device cpu, or auto to take a GPU only where there is one")
    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise HarnessError(f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")


def parse_seeds(text: str | None, flag: str = "--seeds") -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``: integers from 0 to 2**32 - 1, at least one; a repeated seed is kept once."""
    parts = [p.strip() for p in (text or "").split(",") if p.strip()]
    if not parts:
        raise HarnessError(f"{flag} is empty: give at least one integer seed, e.g. {flag} 0,1,2")
    seeds: list[int] = []
    for part in parts:
        try:
            seed = int(part)
        except ValueError:
            raise HarnessError(f"{flag} expects comma-separated integers from 0 to {SEED_MAX}, like 0,1,2; "
                               f"found {part!r}") from None
        check_seed(seed, flag)
        if seed not in seeds:
            seeds.append(seed)
    return tuple(seeds)


def check_seed(seed: int, flag: str = "--seeds") -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise HarnessError(f"{flag}: a seed must be an integer from 0 to {SEED_MAX}; found {seed!r}")
