"""A test plugin for tests/test_trust.py: methods that behave as a careless or hostile world does, each in one way.

- ``waits`` touches ``<flag>.started`` and waits (up to ``seconds``) until the file ``flag`` exists, then predicts
  the training prior: a trial that is in progress for as long as a test needs (locks, Ctrl-C);
- ``disk-full`` raises ``OSError(ENOSPC)`` inside fit, as a method saving a checkpoint on a full disk does;
- ``dies`` ends its process (``os._exit(1)``) inside fit, as a worker killed by the OOM killer does;
- dataset ``no-fingerprint``: a tiny dataset whose ``load`` computes no fingerprint (a third party's that does
  not use the toolkit).
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import DatasetSpec, DataSplits, MethodSpec, Predictor, Split, hookimpl


@dataclass(frozen=True)
class Config:
    flag: str = ""
    seconds: float = 60.0


def _prior_predictor(data):
    import torch

    counts = torch.bincount(torch.from_numpy(np.asarray(data.train.labels)), minlength=data.num_classes).double() + 1
    prior = (counts / counts.sum()).float()

    class Prior(torch.nn.Module):
        def forward(self, x):
            return prior.expand(x.shape[0], -1).clone()

    return Predictor(Prior())


def waits(data, config, ctx):
    flag = Path(config.flag)
    Path(f"{flag}.started").write_text(str(os.getpid()))
    deadline = time.monotonic() + config.seconds
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return _prior_predictor(data)


def disk_full(data, config, ctx):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(ctx.trial_dir / "checkpoint.pt"))


def dies(data, config, ctx):
    os._exit(1)


def load_plain(request):
    rng = np.random.default_rng(0)

    def split(n):
        labels = np.arange(n) % 2
        return Split(rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8), labels.astype(np.int64))

    return DataSplits(train=split(20), val=split(10), test=split(10), classes=("a", "b"), name="no-fingerprint")


@hookimpl
def register_methods(register):
    for name, fit, what in (("waits", waits, "waits for a flag file"), ("disk-full", disk_full, "ENOSPC in fit"),
                            ("dies", dies, "os._exit(1) in fit")):
        register(MethodSpec(name=name, description=f"trust test: {what}", config=Config, fit=fit,
                            uses_sampler=False))


@hookimpl
def register_datasets(register):
    register(DatasetSpec(name="no-fingerprint", description="trust test: no data fingerprint", load=load_plain,
                         classes=("a", "b"), needs_data_dir=False))
