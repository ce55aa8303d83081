"""Shared set-up of the pytest-benchmark suite (issue 17): one torch thread, a private cache folder, the registry.

The suite lives outside ``testpaths`` (``tests``), so a plain ``pytest`` never collects it; run it with
``python -m pytest benchmarks/suite`` (see benchmarks/README.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))  # fakes.py, whatever pytest's import mode


def shared_data_dir() -> Path:
    """``HARNESS_TEST_DATA``, else ``../shared/data`` next to the repository (as tests/conftest.py)."""
    env = os.environ.get("HARNESS_TEST_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _one_thread(tmp_path_factory):
    """One torch thread (the machine's cores may be busy), a session cache dir, no plugin environment."""
    import torch

    torch.set_num_threads(1)
    saved = {k: os.environ.get(k) for k in ("HARNESS_CACHE_DIR", "HARNESS_PLUGINS", "HARNESS_BLOCK_PLUGINS",
                                             "HARNESS_DATA_DIR")}
    os.environ["HARNESS_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    for k in ("HARNESS_PLUGINS", "HARNESS_BLOCK_PLUGINS", "HARNESS_DATA_DIR"):
        os.environ.pop(k, None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def registry():
    from harness.run.runner import cached_plugins

    return cached_plugins((), ())[1]


def method_names() -> list[str]:
    """Every registered method, at collection time (the parametrisation of the per-method benchmarks)."""
    from harness.run.runner import cached_plugins

    return sorted(cached_plugins((), ())[1].methods)
