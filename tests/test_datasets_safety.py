"""Datasets tied to their data and safe against bad trees (issues 14 and 15): fingerprints, image ids, and one
test per kind of bad input (link loops, links out of the root, repeated CSV rows, broken .npz files, empty
splits, absent classes, test images unlike the training images), each asserting its message."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from harness import DatasetRequest, DataSplits, HarnessError, Split
from harness.run.config import build_dataclass
from harness.toolkit import data as toolkit_data
from harness.toolkit.data import finish
from plugins.datasets import aptos, bone_marrow, chexpert, ham10000, imagefolder, isic2018, medmnist, synthetic
from tests.datatrees import (
    COLOURS,
    shade,
    write_aptos,
    write_bone_marrow,
    write_chexpert,
    write_csv,
    write_ham,
    write_image,
    write_isic,
)


def request(options_cls, data_dir, cache_dir, trial_seed=0, **values):
    return DatasetRequest(options=build_dataclass(options_cls, values, options_cls.__name__), seed=trial_seed,
                          data_dir=Path(data_dir) if data_dir else None, cache_dir=Path(cache_dir))


def load_medmnist(data_dir, cache_dir, name="pneumoniamnist", **values):
    return medmnist.load(request(medmnist.MedMNISTOptions, data_dir, cache_dir, **values), name)


def all_ids(data) -> list[str]:
    return [str(i) for s in (data.train, data.val, data.test) for i in s.ids]


def write_classes(root: Path, per_class=6, classes=("akiec", "bcc"), size=(20, 16)):
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"{i}.png", shade(COLOURS[c], i), size=size)


def fake_npz(root: Path, name="pneumoniamnist", test_labels=None, n_train=(30, 10), n_val=8, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(n_train)), n_train)
    test = np.asarray(test_labels) if test_labels is not None else np.arange(n_test) % 2
    arrays = {"train_images": rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8),
              "train_labels": labels[:, None],
              "val_images": rng.integers(0, 256, (n_val, 28, 28), dtype=np.uint8),
              "val_labels": (np.arange(n_val) % 2)[:, None],
              "test_images": rng.integers(0, 256, (len(test), 28, 28), dtype=np.uint8),
              "test_labels": test[:, None]}
    (root / name).mkdir(parents=True, exist_ok=True)
    path = root / name / f"{name}.npz"
    np.savez(path, **arrays)
    return path, arrays


# ---------------------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_computed_once_cached_and_follows_the_content(tmp_path, monkeypatch):
    write_aptos(tmp_path / "a" / "aptos", per_class=6)
    req = request(aptos.AptosOptions, tmp_path / "a", tmp_path / "c", size=8, split_seed=0)
    first = aptos.load(req)
    assert isinstance(first.fingerprint, str) and len(first.fingerprint) == 24

    # the second load memory-maps the arrays and reads ids and fingerprint from meta.json: no pixel is hashed
    def no_hashing(images):
        raise AssertionError("a cached load hashed images")

    with monkeypatch.context() as m:
        m.setattr(toolkit_data, "image_digests", no_hashing)
        second = aptos.load(req)
    assert isinstance(second.train.images, np.memmap) and second.fingerprint == first.fingerprint
    assert all_ids(second) == all_ids(first)

    # the same files in another --data-dir: the same prepared arrays, the same fingerprint
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert aptos.load(request(aptos.AptosOptions, tmp_path / "b", tmp_path / "c", size=8,
                              split_seed=0)).fingerprint == first.fingerprint

    # another --data-dir whose files differ (one image, one label): another fingerprint each time
    write_image(tmp_path / "b" / "aptos" / "train_images" / "0a000f.png", (1, 2, 3), size=(24, 18))
    changed_image = aptos.load(request(aptos.AptosOptions, tmp_path / "b", tmp_path / "c", size=8, split_seed=0))
    csv_path = tmp_path / "b" / "aptos" / "train.csv"
    csv_path.write_text(csv_path.read_text().replace("1a000f,1", "1a000f,2"))
    changed_label = aptos.load(request(aptos.AptosOptions, tmp_path / "b", tmp_path / "c", size=8, split_seed=0))
    assert len({first.fingerprint, changed_image.fingerprint, changed_label.fingerprint}) == 3


def test_medmnist_fingerprint_changes_when_labels_in_the_npz_change(tmp_path):
    path, arrays = fake_npz(tmp_path)
    before = load_medmnist(tmp_path, tmp_path / "c")
    assert load_medmnist(tmp_path, tmp_path / "c").fingerprint == before.fingerprint
    arrays["test_labels"][0, 0] = 1 - arrays["test_labels"][0, 0]  # "fixing" one label
    np.savez(path, **arrays)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    after = load_medmnist(tmp_path, tmp_path / "c")
    assert after.fingerprint != before.fingerprint
    assert all_ids(after) == all_ids(before)  # the images (and so their content ids) are the same


def test_synthetic_has_a_fingerprint_of_its_generated_arrays():
    def load(**values):
        return synthetic.load(request(synthetic.SyntheticOptions, None, "/nonexistent", size=8, n_train=14, n_val=7,
                                      n_test=7, **values))

    a, b = load(), load()
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 24
    assert load(seed=1).fingerprint != a.fingerprint and load(separation=2.0).fingerprint != a.fingerprint
    relabelled = dataclasses.replace(a, test=Split(a.test.images, (a.test.labels + 1) % 7), fingerprint=None)
    assert finish(relabelled).fingerprint != a.fingerprint


# ----------------------------------------------------------------------------------------------- ids


def test_each_dataset_gives_its_own_image_ids_and_they_survive_the_cache(tmp_path):
    write_aptos(tmp_path / "aptos", per_class=6)
    write_ham(tmp_path / "ham10000", per_class=6)
    write_isic(tmp_path / "isic2018")
    write_chexpert(tmp_path / "chexpert")
    write_bone_marrow(tmp_path / "bone-marrow")
    write_classes(tmp_path / "imagefolder" / "mine" / "deep")
    cases = [
        (aptos.load, aptos.AptosOptions, {}, {f"{c}a{i:03d}f" for c in range(5) for i in range(6)}),
        (ham10000.load, ham10000.HAM10000Options, {}, {f"ISIC_{c}{i:05d}" for c in range(7) for i in range(6)}),
        (isic2018.load, isic2018.ISIC2018Options, {}, {f"ISIC_{p}{c}{i:03d}" for p, n in (("Tr", 8), ("Va", 2),
                                                                                           ("Te", 3))
                                                      for c in range(7) for i in range(n)}),
        (chexpert.load, chexpert.CheXpertOptions, {}, None),
        (bone_marrow.load, bone_marrow.BoneMarrowOptions, {"classes": "ABE,BAS,BLA,LYT"}, None),
        (imagefolder.load, imagefolder.ImageFolderOptions, {"root": "imagefolder/mine"}, None),
    ]
    for load, options, values, expected in cases:
        req = request(options, tmp_path, tmp_path / "c", size=8, **values)
        data = load(req)
        ids = all_ids(data)
        assert len(ids) == len(set(ids)) == sum(len(s) for s in (data.train, data.val, data.test))
        if expected is not None:
            assert set(ids) == expected, load
        assert all_ids(load(req)) == ids  # the cached load gives the same ids in the same order
    chex = chexpert.load(request(chexpert.CheXpertOptions, tmp_path, tmp_path / "c", size=8))
    assert "valid/patient00100/study1/view1_frontal.jpg" in all_ids(chex)
    marrow = bone_marrow.load(request(bone_marrow.BoneMarrowOptions, tmp_path, tmp_path / "c", size=8,
                                      classes="ABE,BAS,BLA,LYT"))
    assert "ABE/0001-1000/ABE_00001.jpg" in all_ids(marrow)
    mine = imagefolder.load(request(imagefolder.ImageFolderOptions, tmp_path, tmp_path / "c", size=8,
                                    root="imagefolder/mine"))
    assert sorted(all_ids(mine)) == sorted(f"deep/{c}/{i}.png" for c in ("akiec", "bcc") for i in range(6))


def test_medmnist_and_synthetic_ids_are_content_hashes_of_the_stored_pixels(tmp_path):
    _, arrays = fake_npz(tmp_path)
    arrays_train = arrays["train_images"]
    data = load_medmnist(tmp_path, tmp_path / "c")
    expected = [hashlib.sha1(np.ascontiguousarray(image[..., None])).hexdigest()[:16] for image in arrays_train]
    assert list(data.train.ids) == expected
    resized = load_medmnist(tmp_path, tmp_path / "c", size=32)  # the same image has the same id at any size
    assert all_ids(resized) == all_ids(data) and resized.train.images.shape[1:] == (32, 32, 1)
    gen = synthetic.load(request(synthetic.SyntheticOptions, None, tmp_path, size=8, n_train=14, n_val=7, n_test=7))
    assert gen.test.ids[0] == hashlib.sha1(np.ascontiguousarray(gen.test.images[0])).hexdigest()[:16]


def test_repeated_images_get_distinct_content_ids_and_a_leak_warning(tmp_path):
    path, arrays = fake_npz(tmp_path)
    arrays["test_images"][3] = arrays["train_images"][0]  # a test image that is a training image
    arrays["test_images"][4] = arrays["train_images"][0]
    np.savez(path, **arrays)
    with pytest.warns(UserWarning, match=r"2 of 10 test images are pixel-identical to a training or validation image"):
        data = load_medmnist(tmp_path, tmp_path / "c")
    assert data.test.ids[3] == f"{data.train.ids[0]}~2" and data.test.ids[4] == f"{data.train.ids[0]}~3"
    assert any("pixel-identical" in w for w in data.warnings)


def test_real_retinamnist_ids_are_unique_and_its_splits_carry_no_warning(registry, data_dir, tmp_path):
    spec = registry.datasets["retinamnist"]
    data = spec.load_fn()(DatasetRequest(options=spec.options(), seed=0, data_dir=data_dir, cache_dir=tmp_path))
    assert len(set(all_ids(data))) == 1600 and data.fingerprint
    assert data.warnings == ()


# ------------------------------------------------------------------------------------------ bad trees


def test_imagefolder_does_not_follow_a_directory_link_loop(tmp_path):
    root = tmp_path / "imagefolder"
    write_classes(root, per_class=15, classes=("akiec", "nv"))
    (root / "akiec" / "loop").symlink_to("..")  # before: 15 files became 605 images of one class
    with pytest.warns(UserWarning, match=r"1 directory link\(s\) below .* were not followed \(akiec/loop -> \.\.\)"):
        data = imagefolder.load(request(imagefolder.ImageFolderOptions, tmp_path, tmp_path / "c", size=8))
    assert sum(len(s) for s in (data.train, data.val, data.test)) == 30
    assert any("akiec/loop -> .." in w for w in data.warnings)
    assert not any("pixel-identical" in w for w in data.warnings)


def test_a_linked_class_folder_is_not_followed(tmp_path):
    root = tmp_path / "imagefolder"
    write_classes(root, per_class=6, classes=("akiec", "nv"))
    (root / "zz").symlink_to(root)  # a class folder that is the root itself
    with pytest.warns(UserWarning) as caught:
        data = imagefolder.load(request(imagefolder.ImageFolderOptions, tmp_path, tmp_path / "c", size=8))
    assert data.classes == ("akiec", "nv", "zz") and sum(len(s) for s in (data.train, data.val, data.test)) == 12
    messages = [str(w.message) for w in caught]
    assert any("zz -> " in m and "not followed" in m for m in messages)
    assert any("1 class(es) have no images: zz" in m for m in messages)


def test_an_image_link_leaving_the_data_root_is_refused(tmp_path):
    outside = tmp_path / "secret.png"
    write_image(outside, (9, 9, 9))
    root = tmp_path / "data" / "imagefolder"
    write_classes(root)
    (root / "akiec" / "evil.png").symlink_to(outside)
    with pytest.raises(HarnessError, match=r"dataset 'imagefolder': .*akiec/evil.png is a link to .*secret.png, "
                                           r"outside the data root .*imagefolder. Image files must be inside"):
        imagefolder.load(request(imagefolder.ImageFolderOptions, tmp_path / "data", tmp_path / "c", size=8))
    # the same in a publisher layout: a listed image that links out of the dataset's folder
    write_aptos(tmp_path / "data" / "aptos", per_class=4)
    target = tmp_path / "data" / "aptos" / "train_images" / "2a001f.png"
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(HarnessError, match=r"dataset 'aptos': .*2a001f.png is a link to .*secret.png, outside"):
        aptos.load(request(aptos.AptosOptions, tmp_path / "data", tmp_path / "c", size=8))
    # a link that stays inside the root is read
    target.unlink()
    target.symlink_to(tmp_path / "data" / "aptos" / "train_images" / "2a002f.png")
    assert len(aptos.load(request(aptos.AptosOptions, tmp_path / "data", tmp_path / "c", size=8)).train) > 0


def test_an_image_listed_twice_with_two_labels_is_rejected_naming_both_rows(tmp_path):
    rows = write_ham(tmp_path / "ham10000", per_class=3)
    write_csv(tmp_path / "ham10000" / "HAM10000_metadata.csv", ("lesion_id", "image_id", "dx"),
              [r[:3] for r in rows] + [(rows[0][0], rows[0][1], "nv")])
    with pytest.raises(HarnessError, match=r"dataset 'ham10000': 1 image\(s\) are listed more than once with different "
                                           r"labels, groups or splits; first ISIC_000000: HAM10000_metadata.csv row 2: "
                                           r"label akiec, group HAM_00000; HAM10000_metadata.csv row 23: label nv, "
                                           r"group HAM_00000. Expected one row per image"):
        ham10000.load(request(ham10000.HAM10000Options, tmp_path, tmp_path / "c", size=8))


def test_an_isic_image_in_two_official_splits_is_rejected(tmp_path):
    parts = write_isic(tmp_path / "isic2018", counts=(("Training", 3), ("Test", 2)))
    gt = tmp_path / "isic2018" / "ISIC2018_Task3_Test_GroundTruth.csv"
    write_csv(gt, ("image", *isic2018.CLASSES), parts["Test"] + [parts["Training"][0]])
    with pytest.raises(HarnessError, match=r"first ISIC_Tr0000: ISIC2018_Task3_Training_GroundTruth.csv row 2: label "
                                           r"MEL, train split; ISIC2018_Task3_Test_GroundTruth.csv row 16: label MEL, "
                                           r"test split"):
        isic2018.load(request(isic2018.ISIC2018Options, tmp_path, tmp_path / "c", size=8))


def test_an_identical_repeated_row_is_used_once_with_a_warning(tmp_path):
    rows = write_aptos(tmp_path / "aptos", per_class=4)
    write_csv(tmp_path / "aptos" / "train.csv", ("id_code", "diagnosis"), rows + [rows[5]])
    with pytest.warns(UserWarning, match=r"dataset 'aptos': 1 image\(s\) are listed more than once with the same label "
                                         r"\(first 1a001f: train.csv row 7; train.csv row 22\); each is used once"):
        data = aptos.load(request(aptos.AptosOptions, tmp_path, tmp_path / "c", size=8))
    assert sum(len(s) for s in (data.train, data.val, data.test)) == 20 and all_ids(data).count("1a001f") == 1
    assert any("listed more than once" in w for w in data.warnings)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_broken_npz_names_the_file_and_what_to_do(tmp_path, damage):
    path, _ = fake_npz(tmp_path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    else:
        path.write_bytes(b"")
    with pytest.raises(HarnessError, match=rf"{path} cannot be read \(.*\): the file is truncated or corrupt, or not a "
                                           r"MedMNIST .npz .* Delete it and download it again: Download pneumoniamnist"):
        load_medmnist(tmp_path, tmp_path / "c")


def test_an_npz_missing_an_array_names_it(tmp_path):
    path, arrays = fake_npz(tmp_path)
    del arrays["val_labels"]
    np.savez(path, **arrays)
    with pytest.raises(HarnessError, match=r"not a MedMNIST file: .*missing val_labels"):
        load_medmnist(tmp_path, tmp_path / "c")
    with zipfile.ZipFile(path, "a") as z:  # a damaged member: still a clear error
        z.writestr("val_labels.npy", b"\x93NUMPY garbage")
    with pytest.raises(HarnessError, match="cannot be read"):
        load_medmnist(tmp_path, tmp_path / "c")


def test_an_empty_test_split_is_an_error_naming_dataset_and_protocol(tmp_path):
    fake_npz(tmp_path, test_labels=[])
    with pytest.raises(HarnessError, match=r"dataset 'pneumoniamnist', protocol 'official': the test split is empty "
                                           r"\(40 train / 8 val / 0 test images\)"):
        load_medmnist(tmp_path, tmp_path / "c")
    root = tmp_path / "imagefolder"
    write_classes(root / "train")
    for c in ("akiec", "bcc"):
        (root / "test" / c).mkdir(parents=True)
    with pytest.raises(HarnessError, match=r"dataset 'imagefolder', protocol 'official': the test split is empty"):
        imagefolder.load(request(imagefolder.ImageFolderOptions, tmp_path, tmp_path / "c", size=8, split="official"))


def test_an_empty_validation_split_is_an_error(tmp_path):
    fake_npz(tmp_path, n_val=0)
    with pytest.raises(HarnessError, match=r"protocol 'official': the val split is empty"):
        load_medmnist(tmp_path, tmp_path / "c")


def test_a_class_absent_from_the_test_split_is_a_warning(tmp_path):
    fake_npz(tmp_path, test_labels=[0] * 10)
    with pytest.warns(UserWarning, match=r"dataset 'pneumoniamnist', protocol 'official': class\(es\) absent from the "
                                         r"test split: pneumonia; Macro-F1 and balanced accuracy count them"):
        data = load_medmnist(tmp_path, tmp_path / "c")
    assert [w for w in data.warnings if "absent from the test split: pneumonia" in w]
    cached = load_medmnist(tmp_path, tmp_path / "c")  # the warning is kept with the cache
    assert cached.warnings == data.warnings and isinstance(cached.test.images, np.memmap)


def test_test_images_of_another_source_size_are_a_warning(tmp_path):
    root = tmp_path / "imagefolder"
    write_classes(root / "train", per_class=6, size=(20, 16))
    write_classes(root / "test", per_class=3, size=(60, 48))
    for c in ("akiec", "bcc"):  # the test images must differ from the training ones in pixels too
        for i in range(3):
            write_image(root / "test" / c / f"{i}.png", shade(COLOURS[c == "bcc"], 10 + i), size=(60, 48))
    with pytest.warns(UserWarning, match=r"protocol 'official': 6 of 6 test images have a source size no training "
                                         r"image has \(test: 60x48 \(6\); training: 20x16 \(\d+\)\); all are resized "
                                         r"to 8x8"):
        data = imagefolder.load(request(imagefolder.ImageFolderOptions, tmp_path, tmp_path / "c", size=8,
                                        split="official"))
    assert any("source size" in w for w in data.warnings)
    write_aptos(tmp_path / "aptos", per_class=6)  # sizes vary within every split: no warning
    assert not any("source size" in w for w in aptos.load(request(aptos.AptosOptions, tmp_path, tmp_path / "c",
                                                                  size=8)).warnings)


def test_splits_whose_arrays_differ_in_size_are_a_warning():
    rng = np.random.default_rng(0)

    def split(n, size):
        return Split(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 2)

    data = finish(DataSplits(split(6, 8), split(4, 8), split(4, 16), classes=("a", "b"), name="custom"))
    assert "dataset 'custom', protocol 'official': test images are 16x16x3, training images are 8x8x3." in data.warnings
    with pytest.raises(HarnessError, match=r"image id 'x' is listed twice \(train and test\)"):
        finish(DataSplits(Split(split(2, 8).images, np.arange(2), np.asarray(["x", "y"])), split(2, 8),
                          Split(split(2, 8).images, np.arange(2), np.asarray(["x", "z"])), classes=("a", "b")))
    with pytest.raises(HarnessError, match=r"test labels range over 0..2; expected 0..1"):
        finish(DataSplits(split(2, 8), split(2, 8), Split(split(3, 8).images, np.arange(3)), classes=("a", "b")))
