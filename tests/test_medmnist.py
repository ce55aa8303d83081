"""The medmnist plugin on the real files in ../shared/data (skipped with a reason where absent)."""

from __future__ import annotations

import numpy as np
import pytest

from harness import HarnessError
from harness.contract.specs import DatasetRequest
from harness.run.config import config_from_dict


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


def _fake_npz(root, name="pneumoniamnist", n_train=(300, 100), n_val=20, n_test=30):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(n_train)), n_train)
    arrays = {"train_images": rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8),
              "train_labels": labels[:, None],
              "val_images": rng.integers(0, 256, (n_val, 28, 28), dtype=np.uint8),
              "val_labels": (np.arange(n_val) % 2)[:, None],
              "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": (np.arange(n_test) % 2)[:, None]}
    (root / name).mkdir(parents=True)
    np.savez(root / name / f"{name}.npz", **arrays)
    return arrays


def test_max_train_is_a_fixed_stratified_subsample(registry, tmp_path):
    arrays = _fake_npz(tmp_path)
    data = _load(registry, "pneumoniamnist", tmp_path, tmp_path, max_train=100)
    assert np.bincount(data.train.labels).tolist() == [75, 25]  # the 3:1 class ratio kept
    # each kept image is one of the training images, with its own label; none is repeated
    flat = arrays["train_images"].reshape(len(arrays["train_images"]), -1)
    rows = [int(np.flatnonzero((flat == img.reshape(-1)).all(1))[0]) for img in data.train.images]
    assert len(set(rows)) == 100 and (arrays["train_labels"][rows, 0] == data.train.labels).all()
    # val and test are untouched; the protocol says what was done
    assert (len(data.val), len(data.test)) == (20, 30)
    assert "subsampled to 100 of 400" in data.protocol
    # the same images for every trial seed (the subsample belongs to the dataset, not to the trial)
    spec = registry.datasets["pneumoniamnist"]
    other = spec.load_fn()(DatasetRequest(options=config_from_dict(spec.options, {"max_train": 100}), seed=7,
                                          data_dir=tmp_path, cache_dir=tmp_path))
    assert np.array_equal(other.train.images, data.train.images)
    # a cap at or above the split's size changes nothing
    whole = _load(registry, "pneumoniamnist", tmp_path, tmp_path, max_train=400)
    assert len(whole.train) == 400 and whole.protocol == "official"


def test_bad_max_train_is_explained(registry, tmp_path):
    _fake_npz(tmp_path)
    with pytest.raises(HarnessError, match="max_train must be a whole number of at least 2"):
        _load(registry, "pneumoniamnist", tmp_path, tmp_path, max_train=1)


def test_cpu_profile_caps_large_training_splits_at_retinamnists_size(registry):
    from harness.run.trial import resolve_dataset_options

    assert resolve_dataset_options(registry, "pneumoniamnist", {}, "cpu").max_train == 1080
    assert resolve_dataset_options(registry, "retinamnist", {}, "cpu").max_train is None
    assert resolve_dataset_options(registry, "pneumoniamnist", {}, "paper").max_train is None
    override = {"pneumoniamnist": {"max_train": None}}
    assert resolve_dataset_options(registry, "pneumoniamnist", override, "cpu").max_train is None


def test_pneumoniamnist_cpu_profile_on_the_real_file(registry, data_dir, tmp_path):
    data = _load(registry, "pneumoniamnist", data_dir, tmp_path, max_train=1080)
    assert len(data.train) == 1080 and np.bincount(data.train.labels).tolist() == [278, 802]
    assert (len(data.val), len(data.test)) == (524, 624)
