"""The medmnist plugin on the real files in ../shared/data (skipped with a reason where absent)."""

from __future__ import annotations

import numpy as np
import pytest

from harness import HarnessError
from harness.config import config_from_dict
from harness.specs import DatasetRequest


def _load(registry, name, data_dir, cache_dir, **options):
    spec = registry.datasets[name]
    request = DatasetRequest(options=config_from_dict(spec.options, options), seed=0, data_dir=data_dir,
                             cache_dir=cache_dir)
    return spec.load_fn()(request)


def test_retinamnist_official_splits(registry, data_dir, tmp_path):
    data = _load(registry, "retinamnist", data_dir, tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (1080, 120, 400)
    assert data.train.images.shape[1:] == (28, 28, 3) and data.channels == 3
    assert data.classes == ("0", "1", "2", "3", "4")
    assert np.bincount(data.train.labels).tolist() == [486, 128, 206, 194, 66]
    assert np.bincount(data.test.labels).tolist() == [174, 46, 92, 68, 20]


def test_pneumoniamnist_grayscale(registry, data_dir, tmp_path):
    data = _load(registry, "pneumoniamnist", data_dir, tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (4708, 524, 624)
    assert data.train.images.shape[1:] == (28, 28, 1)
    assert data.classes == ("normal", "pneumonia")
    assert np.bincount(data.test.labels).tolist() == [234, 390]


def test_file_directly_in_data_dir(registry, data_dir, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "retinamnist.npz").symlink_to(data_dir / "retinamnist" / "retinamnist.npz")
    assert len(_load(registry, "retinamnist", flat, tmp_path).test) == 400


def test_resized_copy_is_cached_and_memory_mapped(registry, data_dir, tmp_path):
    first = _load(registry, "retinamnist", data_dir, tmp_path / "cache", size=32)
    assert first.train.images.shape[1:] == (32, 32, 3)
    second = _load(registry, "retinamnist", data_dir, tmp_path / "cache", size=32)
    assert isinstance(second.train.images, np.memmap)
    assert np.array_equal(np.asarray(second.test.images), first.test.images)
    assert np.array_equal(second.test.labels, first.test.labels)


def test_not_a_medmnist_file(registry, tmp_path):
    (tmp_path / "retinamnist").mkdir()
    np.savez(tmp_path / "retinamnist" / "retinamnist.npz", something=np.zeros(3))
    with pytest.raises(HarnessError, match="not a MedMNIST file"):
        _load(registry, "retinamnist", tmp_path, tmp_path)
