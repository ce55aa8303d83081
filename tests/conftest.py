"""Shared fixtures: the real data folder (skipped where absent), a fresh registry, a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``../shared/data`` next to the repository (or ``HARNESS_TEST_DATA``)."""
    env = os.environ.get("HARNESS_TEST_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture
def data_dir() -> Path:
    path = shared_data_dir()
    if not (path / "retinamnist" / "retinamnist.npz").exists():
        pytest.skip(f"real MedMNIST data not found at {path} (set HARNESS_TEST_DATA to the shared/data folder)")
    return path


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Each test gets its own cache dir and no plugin/data environment leaking in from the shell."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("HARNESS_PLUGINS", "HARNESS_BLOCK_PLUGINS", "HARNESS_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def registry():
    from harness.registry import load_plugins

    return load_plugins().build_registry()


@pytest.fixture
def cli():
    """Invoke the CLI in-process: ``cli("run", "--profile", "smoke")`` -> click Result."""
    from click.testing import CliRunner

    from harness.cli import main
    from harness.run.runner import cached_plugins

    def invoke(*args: str, **kwargs):
        cached_plugins.cache_clear()
        return CliRunner().invoke(main, list(args), catch_exceptions=False, **kwargs)

    return invoke


# Smallest synthetic data that still has every class in every split.
TINY = ("--set", "synthetic.size=16", "--set", "synthetic.n_train=70", "--set", "synthetic.n_val=35",
        "--set", "synthetic.n_test=35")


@pytest.fixture
def aptos_data_dir(tmp_path) -> Path:
    """A data directory holding an APTOS-layout tree (``DIR/aptos/train.csv``, ``train_images/``): 10 images
    per grade, for ``harness run --datasets aptos --data-dir DIR`` (see ``tests/datatrees.py``)."""
    from tests.datatrees import write_aptos

    write_aptos(tmp_path / "data" / "aptos", per_class=10)
    return tmp_path / "data"
