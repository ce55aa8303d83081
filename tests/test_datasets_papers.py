"""The papers' dataset plugins (plugins/datasets/<publisher>.py over plugins/datasets/reader.py): trees in each
publisher's layout (tests/datatrees.py) with small generated images, the real HAM10000 sample, split protocols,
the on-disk cache, and bad input (more of it in test_datasets_safety.py)."""

from __future__ import annotations

import csv
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness import DatasetRequest, HarnessError
from harness.run.config import build_dataclass
from harness.toolkit.data import grouped_stratified_split
from plugins.datasets import aptos, bone_marrow, chexpert, ham10000, imagefolder, isic2018
from plugins.datasets import reader as D
from tests.datatrees import COLOURS, chex_row, colour_labels, shade, write_csv, write_image
from tests.datatrees import write_aptos as make_aptos
from tests.datatrees import write_bone_marrow as make_bone_marrow
from tests.datatrees import write_chexpert as make_chexpert
from tests.datatrees import write_ham as make_ham
from tests.datatrees import write_isic as make_isic

NAMES = ("aptos", "ham10000", "isic2018", "chexpert", "bone-marrow", "imagefolder")


def shared_ham() -> Path:
    env = os.environ.get("HARNESS_TEST_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    path = base / "ham10000_subset"
    if not (path / "HAM10000_metadata.csv").exists() or not (path / "images").is_dir():
        pytest.skip(f"real HAM10000 sample not found at {path} (set HARNESS_TEST_DATA to the shared/data folder)")
    return path


def request(options_cls, data_dir, cache_dir, seed=0, **values):
    options = build_dataclass(options_cls, values, options_cls.__name__)
    return DatasetRequest(options=options, seed=seed, data_dir=Path(data_dir) if data_dir else None,
                          cache_dir=Path(cache_dir))


def all_rows(data):
    return sum(len(s) for s in (data.train, data.val, data.test))


# ------------------------------------------------------------------------------------- registration


def test_every_dataset_is_listed_with_classes_modality_licence_citation_and_how_to_obtain(cli, registry):
    listed = {d["name"]: d for d in json.loads(cli("list", "datasets", "--json").output)}
    for name in NAMES:
        entry, spec = listed[name], registry.get("datasets", name)
        assert entry["plugin"] == name  # one module (and entry point) per publisher
        assert entry["modality"] and entry["license"] and entry["source"]
        assert "Layout:" in spec.obtain and "DATA_DIR" in spec.obtain
    assert listed["ham10000"]["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert listed["isic2018"]["classes"] == ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert listed["bone-marrow"]["classes"][:3] == ["ABE", "ART", "BAS"] and len(listed["bone-marrow"]["classes"]) == 21
    assert listed["chexpert"]["channels"] == 1
    assert "grouped" in listed["ham10000"]["protocols"] and "official" in listed["isic2018"]["protocols"]


# --------------------------------------------------------------------------------- layouts and splits


def test_aptos_loads_labels_and_iois_split_is_stratified_and_disjoint(tmp_path):
    make_aptos(tmp_path / "data" / "aptos")
    data = aptos.load(request(aptos.AptosOptions, tmp_path / "data", tmp_path / "c", size=16, split="iois"))
    assert data.classes == aptos.CLASSES and data.protocol == "iois"
    assert (len(data.train), len(data.val), len(data.test)) == (35, 5, 10)  # 70/10/20 of 10 per class
    for split in (data.train, data.val, data.test):
        assert split.images.shape[1:] == (16, 16, 3)
        np.testing.assert_array_equal(colour_labels(split.images), split.labels)
        assert np.bincount(split.labels, minlength=5).min() == np.bincount(split.labels).max()  # stratified


def test_diffmic_takes_validation_from_train_never_from_test(tmp_path):
    make_aptos(tmp_path / "aptos")
    for seed in (0, 1):
        data = aptos.load(request(aptos.AptosOptions, tmp_path, tmp_path / "c", seed=seed, size=8, split="diffmic",
                                    val_fraction=0.2))
        assert len(data.test) == 15 and len(data.train) + len(data.val) == 35  # 70/30, val out of the 70
        table = aptos.read_table(request(aptos.AptosOptions, tmp_path, tmp_path / "c", seed=seed, split="diffmic"))
        parts = D.split_indices(table, "diffmic", seed, 0.2)
        test_only = D.split_indices(table, "diffmic", seed, 0.5)["test"]
        np.testing.assert_array_equal(parts["test"], test_only)  # val_fraction does not move the test set
        assert not set(parts["val"]) & set(parts["test"]) and not set(parts["val"]) & set(parts["train"])


def test_split_seed_fixes_the_split_across_trial_seeds(tmp_path):
    make_aptos(tmp_path / "aptos")
    labels = {}
    for seed in (0, 1):
        for fixed in (None, 5):
            data = aptos.load(request(aptos.AptosOptions, tmp_path, tmp_path / "c", seed=seed, size=8, split_seed=fixed))
            labels[seed, fixed] = np.asarray(data.test.images).sum(axis=(1, 2, 3))
    np.testing.assert_array_equal(labels[0, 5], labels[1, 5])
    assert not np.array_equal(labels[0, None], labels[1, None])


def test_aptos_crop_border_crops_to_the_retina(tmp_path):
    root = tmp_path / "aptos"
    make_aptos(root, per_class=4)
    fundus = np.zeros((60, 90, 3), np.uint8)
    fundus[10:50, 25:65] = (180, 90, 40)  # the "retina" inside a black border
    Image.fromarray(fundus).save(root / "train_images" / "0a000f.png")
    plain = aptos.load(request(aptos.AptosOptions, tmp_path, tmp_path / "c", size=16, split="diffmic", split_seed=0,
                                 val_fraction=0.34))
    cropped = aptos.load(request(aptos.AptosOptions, tmp_path, tmp_path / "c", size=16, split="diffmic", split_seed=0,
                                   val_fraction=0.34, crop_border=True))

    def find(data):
        for split in (data.train, data.val, data.test):
            for image in split.images:
                if abs(int(image[8, 8, 0]) - 180) < 3 and abs(int(image[8, 8, 1]) - 90) < 3:
                    return image
        raise AssertionError("fundus image not found")

    assert find(plain).min() == 0  # the black border is still there
    assert np.abs(find(cropped).astype(int) - (180, 90, 40)).max() <= 2  # only the retina is left


def test_ham10000_reads_both_parts_and_grouped_split_keeps_lesions_together(tmp_path):
    make_ham(tmp_path / "ham10000")
    for seed in (0, 1, 2):
        table = ham10000.read_table(request(ham10000.HAM10000Options, tmp_path, tmp_path / "c"))
        assert len(table.files) == 70 and all(f is not None for f in table.files)
        parts = D.split_indices(table, "grouped", seed, 0.1)
        sides = {}
        for side, idx in parts.items():
            for i in idx:
                sides.setdefault(table.groups[i], set()).add(side)
        assert all(len(s) == 1 for s in sides.values())  # no lesion on two sides
        assert sum(len(v) for v in parts.values()) == 70
    data = ham10000.load(request(ham10000.HAM10000Options, tmp_path, tmp_path / "c", size=12))
    for split in (data.train, data.val, data.test):
        np.testing.assert_array_equal(colour_labels(split.images), split.labels)
    assert data.protocol == "grouped" and all_rows(data) == 70


def test_ham10000_tab_metadata_and_one_folder_of_images_under_any_name(tmp_path):
    root = tmp_path / "ham10000"
    rows = make_ham(root, per_class=3)
    (root / "all").mkdir()
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        for f in (root / part).iterdir():
            f.rename(root / "all" / f.name)
        (root / part).rmdir()
    (root / "HAM10000_metadata.csv").unlink()
    with open(root / "HAM10000_metadata.tab", "w") as f:  # the Harvard Dataverse download: tab-separated
        f.write("lesion_id\timage_id\tdx\n" + "".join(f'"{r[0]}"\t"{r[1]}"\t"{r[2]}"\n' for r in rows))
    data = ham10000.load(request(ham10000.HAM10000Options, tmp_path, tmp_path / "c", size=8, split="iois"))
    assert all_rows(data) == 21
    for split in (data.train, data.val, data.test):
        np.testing.assert_array_equal(colour_labels(split.images), split.labels)
    with pytest.raises(HarnessError, match=r"(?s)ISIC_000000.jpg listed in .*HAM10000_metadata.tab was not found "
                                           r"\(looked in .*elsewhere/\)"):
        (root / "elsewhere").mkdir()
        ham10000.load(request(ham10000.HAM10000Options, tmp_path, tmp_path / "c", size=8, image_dirs=["elsewhere"]))


def test_grouped_stratified_split_on_the_full_official_metadata():
    root = shared_ham()
    rows = list(csv.DictReader(open(root / "HAM10000_metadata.csv")))
    assert len(rows) == 10015
    labels = np.asarray([ham10000.CLASSES.index(r["dx"]) for r in rows])
    groups = np.asarray([r["lesion_id"] for r in rows])
    parts = grouped_stratified_split(labels, groups, (0.7, 0.1, 0.2), seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(10015))
    seen = [set(groups[p]) for p in parts]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    for c in range(7):  # every class is split close to 70/10/20
        n = (labels == c).sum()
        share = [(labels[p] == c).sum() / n for p in parts]
        assert abs(share[0] - 0.7) < 0.06 and abs(share[1] - 0.1) < 0.06 and abs(share[2] - 0.2) < 0.06


def test_isic2018_official_split_uses_the_three_ground_truth_files(tmp_path):
    make_isic(tmp_path / "isic2018")
    data = isic2018.load(request(isic2018.ISIC2018Options, tmp_path, tmp_path / "c", size=8))
    assert data.classes == isic2018.CLASSES and data.protocol == "official"
    assert (len(data.train), len(data.val), len(data.test)) == (56, 14, 21)
    for split in (data.train, data.val, data.test):
        np.testing.assert_array_equal(colour_labels(split.images), split.labels)
    diffmic = isic2018.load(request(isic2018.ISIC2018Options, tmp_path, tmp_path / "c", size=8, split="diffmic"))
    assert all_rows(diffmic) == 56  # non-official protocols split the training set only


def test_isic2018_without_test_ground_truth_or_groupings(tmp_path):
    make_isic(tmp_path / "isic2018", counts=(("Training", 10),))
    with pytest.raises(HarnessError, match="(?s)ISIC2018_Task3_Test_GroundTruth.csv.*split=diffmic"):
        isic2018.load(request(isic2018.ISIC2018Options, tmp_path, tmp_path / "c", size=8))
    with pytest.raises(HarnessError, match="split=grouped needs a lesion"):
        isic2018.load(request(isic2018.ISIC2018Options, tmp_path, tmp_path / "c", size=8, split="grouped"))
    data = isic2018.load(request(isic2018.ISIC2018Options, tmp_path, tmp_path / "c", size=8, split="iois"))
    assert (len(data.train), len(data.val), len(data.test)) == (49, 7, 14)


def test_isic2018_grouped_uses_the_lesion_groupings_file(tmp_path):
    make_isic(tmp_path / "isic2018", counts=(("Training", 10),), groupings=True)
    table = isic2018.read_table(request(isic2018.ISIC2018Options, tmp_path, tmp_path / "c", split="grouped"))
    parts = D.split_indices(table, "grouped", 0, 0.1)
    groups = np.asarray(table.groups)
    assert len(set(groups)) < len(groups)  # several images per lesion
    assert not set(groups[parts["train"]]) & set(groups[parts["test"]])
    assert not set(groups[parts["val"]]) & set(groups[parts["test"]])


def test_chexpert_default_task_is_favero_pleural_effusion_vs_no_finding(tmp_path):
    expected = make_chexpert(tmp_path / "chexpert")
    data = chexpert.load(request(chexpert.CheXpertOptions, tmp_path, tmp_path / "c", size=8))
    assert data.classes == ("No Finding", "Pleural Effusion") and data.channels == 1
    # official: test = valid.csv; val drawn from train.csv
    assert len(data.test) == len(expected["test"])
    assert len(data.train) + len(data.val) == len(expected["train"]) and len(data.val) > 0
    np.testing.assert_array_equal(np.sort(data.test.labels), np.sort([lab for _, lab in expected["test"]]))
    for split in (data.train, data.val, data.test):
        np.testing.assert_array_equal(split.images[:, 0, 0, 0] > 135, split.labels == 1)


def test_chexpert_uncertain_policy_views_and_patient_groups(tmp_path):
    make_chexpert(tmp_path / "chexpert")

    def table(**values):
        return chexpert.read_table(request(chexpert.CheXpertOptions, tmp_path, tmp_path / "c", **values))

    base = table()
    assert len(base.files) == 8  # 6 train + 2 valid patients with exactly one of the two findings
    ones = table(uncertain="ones")  # patients 2, 6, 10 (train) and 102 (valid) have PE = -1 -> positive
    assert len(ones.files) == 12 and ones.labels.sum() == base.labels.sum() + 4
    assert len(table(uncertain="zeros").files) == 8  # -1 -> 0 with No Finding blank: neither finding
    assert len(table(views="all").files) == 16 and len(table(first_study_only=False).files) == 16
    binary = table(negative="")  # Pleural Effusion vs everything else
    assert binary.labels.tolist().count(1) == 4 and len(binary.files) == 12  # -1 rows excluded
    grouped = table(split="grouped", first_study_only=False, views="all")
    parts = D.split_indices(grouped, "grouped", 0, 0.1)
    groups = np.asarray(grouped.groups)
    assert set(groups) == {f"patient{p:05d}" for p in (1, 4, 5, 8, 9, 12, 100, 101)}
    assert not set(groups[parts["train"]]) & set(groups[parts["test"]])
    assert set(groups[parts["test"]]) <= {f"patient{p:05d}" for p in range(1, 13)}  # train.csv only
    with pytest.raises(HarnessError, match="uncertain must be one of"):
        table(uncertain="maybe")
    with pytest.raises(HarnessError, match="not a CheXpert finding"):
        table(positive="Broken Leg")


def test_bone_marrow_nested_folders_class_subset_and_empty_class_warning(tmp_path):
    make_bone_marrow(tmp_path / "bone-marrow")
    with pytest.warns(UserWarning, match="17 class\\(es\\) have no images: ART, EBO, EOS"):
        data = bone_marrow.load(request(bone_marrow.BoneMarrowOptions, tmp_path, tmp_path / "c", size=8))
    assert data.classes == bone_marrow.CLASSES and all_rows(data) == 40
    counts = np.bincount(np.concatenate([data.train.labels, data.val.labels, data.test.labels]), minlength=21)
    assert counts[[0, 2, 3, 10]].tolist() == [10, 10, 10, 10] and counts.sum() == 40
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the subset has images for every class: no warning
        subset = bone_marrow.load(request(bone_marrow.BoneMarrowOptions, tmp_path, tmp_path / "c", size=8, classes="LYT,BAS",
                                            max_per_class=6))
    assert subset.classes == ("BAS", "LYT") and all_rows(subset) == 12
    with pytest.raises(HarnessError, match="classes XYZ unknown"):
        bone_marrow.load(request(bone_marrow.BoneMarrowOptions, tmp_path, tmp_path / "c", classes=["XYZ"]))


def test_imagefolder_root_option_and_official_layout(tmp_path):
    for c, name in enumerate(("benign", "malignant")):
        for i in range(10):
            write_image(tmp_path / "mine" / name / "deeper" / f"{i}.png", shade(COLOURS[c], i))
            for split, n in (("train", 6), ("test", 3)):
                if i < n:
                    write_image(tmp_path / "off" / split / name / f"{i}.bmp", shade(COLOURS[c], i + 10 * (split == "test")))
    data = imagefolder.load(request(imagefolder.ImageFolderOptions, None, tmp_path / "c", size=8, root=str(tmp_path / "mine")))
    assert data.classes == ("benign", "malignant") and all_rows(data) == 20
    off = imagefolder.load(request(imagefolder.ImageFolderOptions, tmp_path, tmp_path / "c", size=8, root="off",
                                     split="official", channels=1))
    assert len(off.test) == 6 and len(off.train) + len(off.val) == 12 and off.channels == 1
    with pytest.raises(HarnessError, match="split=official needs"):
        imagefolder.load(request(imagefolder.ImageFolderOptions, None, tmp_path / "c", root=str(tmp_path / "mine"),
                                   split="official"))


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("loader,options,layout_bit", [
    (aptos.load, aptos.AptosOptions, "train_images/<id_code>.png"),
    (ham10000.load, ham10000.HAM10000Options, "HAM10000_images_part_1/"),
    (isic2018.load, isic2018.ISIC2018Options, "ISIC2018_Task3_Training_Input/"),
    (chexpert.load, chexpert.CheXpertOptions, "CheXpert-v1.0-small/"),
    (bone_marrow.load, bone_marrow.BoneMarrowOptions, "one folder per class abbreviation"),
])
def test_missing_root_or_csv_shows_the_publishers_layout(tmp_path, loader, options, layout_bit):
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError) as err:
        loader(request(options, tmp_path / "empty", tmp_path / "c"))
    assert layout_bit in str(err.value) and str(tmp_path / "empty") in str(err.value)
    assert "Download" in str(err.value) or "Request" in str(err.value)
    with pytest.raises(HarnessError, match="does not exist"):
        loader(request(options, tmp_path / "nowhere", tmp_path / "c"))
    with pytest.raises(HarnessError, match="none was given"):
        loader(request(options, None, tmp_path / "c"))


def test_csv_missing_a_column_names_it(tmp_path):
    write_csv(tmp_path / "aptos" / "train.csv", ("id_code", "grade"), [("a", 1)])
    (tmp_path / "aptos" / "train_images").mkdir()
    with pytest.raises(HarnessError, match=r"train.csv: expected columns id_code, diagnosis; missing diagnosis"):
        aptos.load(request(aptos.AptosOptions, tmp_path, tmp_path / "c"))


def test_missing_image_is_named_or_skipped_with_a_count(tmp_path):
    make_aptos(tmp_path / "aptos")
    (tmp_path / "aptos" / "train_images" / "3a004f.png").unlink()
    (tmp_path / "aptos" / "train_images" / "1a002f.png").unlink()
    with pytest.raises(HarnessError, match=r"image 1a002f.png listed in .*train.csv was not found.*2 of 50"):
        aptos.load(request(aptos.AptosOptions, tmp_path, tmp_path / "c", size=8))
    with pytest.warns(UserWarning, match="dropped 2 of 50 rows"):
        data = aptos.load(request(aptos.AptosOptions, tmp_path, tmp_path / "c", size=8, skip_missing="true"))
    assert all_rows(data) == 48


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_or_truncated_image_is_a_clear_error(tmp_path, damage):
    make_aptos(tmp_path / "aptos", per_class=4)
    target = tmp_path / "aptos" / "train_images" / "2a001f.png"
    if damage == "garbage":
        target.write_bytes(b"this is not an image")
    else:
        noisy = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(noisy).save(target)
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    with pytest.raises(HarnessError, match=r"2a001f.png is corrupt or truncated"):
        aptos.load(request(aptos.AptosOptions, tmp_path, tmp_path / "c", size=8))


def test_label_outside_the_known_classes(tmp_path):
    make_ham(tmp_path / "ham10000", per_class=2)
    path = tmp_path / "ham10000" / "HAM10000_metadata.csv"
    path.write_text(path.read_text().replace(",nv,", ",naevus,", 1))
    with pytest.raises(HarnessError, match=r"HAM10000_metadata.csv, row \d+: dx 'naevus' is not a known class; "
                                           r"expected one of akiec, bcc"):
        ham10000.load(request(ham10000.HAM10000Options, tmp_path, tmp_path / "c"))
    rows = make_aptos(tmp_path / "aptos", per_class=1)
    write_csv(tmp_path / "aptos" / "train.csv", ("id_code", "diagnosis"), [*rows, (rows[0][0], 7)])
    with pytest.raises(HarnessError, match=r"row 7: diagnosis '7' is not a known class; expected 0-4"):
        aptos.load(request(aptos.AptosOptions, tmp_path, tmp_path / "c"))
    make_isic(tmp_path / "isic2018", counts=(("Training", 1),))
    gt = tmp_path / "isic2018" / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    gt.write_text(gt.read_text() + "ISIC_Tr0000,1.0,1.0,0.0,0.0,0.0,0.0,0.0\n")
    with pytest.raises(HarnessError, match="expected exactly one of MEL, NV"):
        isic2018.load(request(isic2018.ISIC2018Options, tmp_path, tmp_path / "c", split="iois"))


def test_csv_path_escaping_the_data_root(tmp_path):
    make_chexpert(tmp_path / "chexpert")
    write_image(tmp_path / "secret.jpg", 0, mode="L")
    train = tmp_path / "chexpert" / "CheXpert-v1.0-small" / "train.csv"
    with open(train, "a", newline="") as f:
        csv.writer(f).writerow(chex_row("CheXpert-v1.0-small/../../secret.jpg", "Frontal", "1.0", ""))
    with pytest.raises(HarnessError, match=r"train.csv, row 50: path '\.\./\.\./secret.jpg' escapes the data root"):
        chexpert.load(request(chexpert.CheXpertOptions, tmp_path, tmp_path / "c"))
    rows = make_ham(tmp_path / "ham10000", per_class=1)
    write_csv(tmp_path / "ham10000" / "HAM10000_metadata.csv", ("lesion_id", "image_id", "dx"),
              [r[:3] for r in rows] + [("HAM_x", "../../secret", "nv")])
    with pytest.raises(HarnessError, match=r"image_id '\.\./\.\./secret' is not a plain image name"):
        ham10000.load(request(ham10000.HAM10000Options, tmp_path, tmp_path / "c"))


def test_grayscale_rgba_palette_and_16bit_images_are_normalised(tmp_path):
    root = tmp_path / "mixed" / "only"
    root.mkdir(parents=True)
    Image.new("L", (10, 12), 100).save(root / "gray.png")
    Image.new("RGBA", (10, 12), (10, 20, 30, 0)).save(root / "rgba.png")
    Image.fromarray(np.full((12, 10), 51400, np.uint16)).save(root / "deep.png")  # 16-bit: 51400/257 = 200
    Image.new("RGB", (10, 12), (40, 50, 60)).quantize(4).save(root / "palette.png")
    assert Image.open(root / "deep.png").mode.startswith("I")
    expected = {"deep": (200, 200, 200), "gray": (100, 100, 100), "palette": (40, 50, 60), "rgba": (10, 20, 30)}
    for name, colour in expected.items():
        image = D.decode_image(root / f"{name}.png", 8, 3)
        assert image.shape == (8, 8, 3) and image.dtype == np.uint8
        assert np.abs(image.astype(int) - colour).max() <= 1, name
    gray = D.decode_image(root / "rgba.png", 8, 1)
    assert gray.shape == (8, 8, 1) and abs(int(gray[0, 0, 0]) - round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)) <= 1
    assert D.decode_image(root / "deep.png", 8, 1)[0, 0, 0] == 200


def test_fit_modes(tmp_path):
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :10] = 255  # white left quarter
    Image.fromarray(image).save(tmp_path / "wide.png")
    crop = D.decode_image(tmp_path / "wide.png", 20, 3, fit="crop")  # centre 20x20: no white
    stretch = D.decode_image(tmp_path / "wide.png", 20, 3, fit="stretch")  # left quarter white
    pad = D.decode_image(tmp_path / "wide.png", 20, 3, fit="pad")  # 10 rows of image, black bands
    assert crop.max() == 0
    assert stretch[:, :4].min() == 255 and stretch[:, 7:].max() < 40
    assert pad[0].max() == 0 and pad[-1].max() == 0 and pad[10, 1].min() == 255


# ---------------------------------------------------------------------------------------------- cache


def test_second_load_is_memory_mapped_and_a_changed_file_invalidates_it(tmp_path):
    make_ham(tmp_path / "ham10000", per_class=4)
    req = request(ham10000.HAM10000Options, tmp_path, tmp_path / "c", size=16, split="iois", split_seed=0)
    first = ham10000.load(req)
    assert not isinstance(first.train.images, np.memmap)
    second = ham10000.load(req)
    assert isinstance(second.train.images, np.memmap) and isinstance(second.test.images, np.memmap)
    np.testing.assert_array_equal(first.test.images, second.test.images)
    np.testing.assert_array_equal(first.test.labels, second.test.labels)
    # another protocol re-uses the decoded pool (one pool file), with its own split cache
    ham10000.load(request(ham10000.HAM10000Options, tmp_path, tmp_path / "c", size=16, split="diffmic", split_seed=0,
                                 val_fraction=0.34))
    assert len(list((tmp_path / "c" / "ham10000").glob("pool-*.npy"))) == 1
    # a touched file (same content, new mtime) invalidates
    image = next((tmp_path / "ham10000" / "HAM10000_images_part_1").glob("*.jpg"))
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert not isinstance(ham10000.load(req).train.images, np.memmap)
    assert isinstance(ham10000.load(req).train.images, np.memmap)
    # a changed image is decoded again: its new colour shows
    for f in (tmp_path / "ham10000").rglob("*.jpg"):
        write_image(f, (250, 250, 250), size=(30, 22))
    t = time.time() + 10
    os.utime(f, (t, t))
    changed = ham10000.load(req)
    assert np.asarray(changed.train.images).min() > 240


def test_set_overrides_reach_the_dataset_options(tmp_path, registry):
    """--set dataset.skip_missing=true etc., resolved as `harness run` resolves them, then loaded."""
    from harness.run.config import parse_overrides
    from harness.run.trial import resolve_dataset_options

    make_aptos(tmp_path / "aptos", per_class=6)
    (tmp_path / "aptos" / "train_images" / "4a005f.png").unlink()
    overrides = parse_overrides(["dataset.skip_missing=true", "dataset.split=diffmic", "aptos.size=16",
                                 "dataset.split_seed=3"])
    options = resolve_dataset_options(registry, "aptos", overrides, profile="cpu")
    assert (options.skip_missing, options.split, options.size, options.split_seed) == (True, "diffmic", 16, 3)
    assert resolve_dataset_options(registry, "aptos", {}, profile="paper").size == 224
    spec = registry.get("datasets", "aptos")
    with pytest.warns(UserWarning, match="dropped 1 of 30 rows"):
        data = spec.load_fn()(DatasetRequest(options=options, seed=0, data_dir=tmp_path, cache_dir=tmp_path / "c"))
    assert all_rows(data) == 29 and data.size == 16 and data.protocol == "diffmic"
    with pytest.raises(HarnessError, match="has no split protocol 'official'"):
        resolve_dataset_options(registry, "aptos", parse_overrides(["dataset.split=official"]))


# ----------------------------------------------------------------------------------- real HAM10000 sample


def test_real_ham10000_sample_with_skip_missing_loads_exactly_the_images_present():
    root = shared_ham()
    truth = {r["image_id"]: int(r["label"]) for r in csv.DictReader(open(root / "labels.csv"))
             if r["path"].startswith("images/")}
    present = sorted(p.stem for p in (root / "images").glob("*.jpg"))
    assert sorted(truth) == present and len(present) == 70
    cache = Path(os.environ["HARNESS_CACHE_DIR"])
    with pytest.warns(UserWarning, match=f"dropped {10015 - 70} of 10015 rows"):
        data = ham10000.load(request(ham10000.HAM10000Options, root, cache, size=32, skip_missing=True))
    assert all_rows(data) == 70
    # every loaded image is one of the 70 files, once, with the label labels.csv gives it
    reference = {image_id: D.decode_image(root / "images" / f"{image_id}.jpg", 32, 3) for image_id in present}
    seen = []
    for split in (data.train, data.val, data.test):
        for image, label in zip(split.images, split.labels):
            match = [i for i, ref in reference.items() if np.array_equal(ref, image)]
            assert len(match) == 1
            assert truth[match[0]] == label, match[0]
            seen.append(match[0])
    assert sorted(seen) == present
    assert np.bincount(np.concatenate([data.train.labels, data.val.labels, data.test.labels])).tolist() == [10] * 7
    with pytest.raises(HarnessError) as err:
        ham10000.load(request(ham10000.HAM10000Options, root, cache, size=32))
    named = str(err.value).split("image ", 1)[1].split(" ", 1)[0]
    assert named.endswith(".jpg") and named[:-4] not in truth and "9945 of 10015" in str(err.value)


def test_real_ham10000_sample_grouped_split_never_shares_a_lesion():
    root = shared_ham()
    table = ham10000.read_table(request(ham10000.HAM10000Options, root, Path(os.environ["HARNESS_CACHE_DIR"])))
    keep = [i for i, f in enumerate(table.files) if f is not None]
    groups = np.asarray(table.groups)[keep]
    for seed in range(5):
        parts = grouped_stratified_split(table.labels[keep], groups, (0.7, 0.1, 0.2), seed)
        sides = [set(groups[p]) for p in parts]
        assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
        assert sum(len(p) for p in parts) == 70


# ------------------------------------------------------------------------------------------ end to end


def test_harness_run_on_an_aptos_tree_records_ids_and_fingerprint(tmp_path, cli, aptos_data_dir):
    """The aptos_data_dir fixture (tests/datatrees.write_aptos) through `harness run`, as a method test uses it."""
    import polars as pl

    runs = tmp_path / "runs"
    result = cli("run", "--methods", "constant", "--plugin", "tests.failing_plugin", "--datasets", "aptos",
                 "--data-dir", str(aptos_data_dir), "--profile", "smoke", "--no-onnx", "--set", "aptos.size=16",
                 "--runs-dir", str(runs))
    assert result.exit_code == 0, result.output
    (record_path,) = list((runs / "aptos").rglob("result.json"))
    record = json.loads(record_path.read_text())
    assert record["status"] == "ok" and record["protocol"] == "iois" and record["n_test"] == 10
    expected = aptos.load(request(aptos.AptosOptions, aptos_data_dir, tmp_path / "c", size=16, split_seed=None))
    assert record["data_fingerprint"] == expected.fingerprint
    preds = pl.read_parquet(record_path.parent / "predictions.parquet")
    assert preds["image_id"].to_list() == list(expected.test.ids)
    assert all(len(i) == 6 and i[1:5] in {"a000", "a001", "a002", "a003", "a004", "a005", "a006", "a007", "a008",
                                          "a009"} for i in preds["image_id"].to_list())
