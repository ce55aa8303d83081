"""The papers' data protocols as dataset options (issues 16 and 19): fixed per-class draws for every dataset
(IMPROVE: 100 training and 50 test images per class), bone marrow's ``improve14`` classes, Favero et al.'s
CheXpert split rule and their balanced ISIC melanoma-vs-benign task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness import DatasetRequest, HarnessError
from harness.run.config import build_dataclass, parse_overrides
from harness.run.trial import resolve_dataset_options
from plugins.datasets import aptos, bone_marrow, chexpert, isic2018, medmnist, reader, synthetic
from tests.datatrees import CHEX_HEADER, chex_row, write_aptos, write_bone_marrow, write_csv, write_image, write_isic
from tests.test_datasets_safety import fake_npz


def request(options_cls, data_dir, cache_dir, trial_seed=0, **values):
    return DatasetRequest(options=build_dataclass(options_cls, values, options_cls.__name__), seed=trial_seed,
                          data_dir=Path(data_dir) if data_dir else None, cache_dir=Path(cache_dir))


def counts(split, k):
    return np.bincount(split.labels, minlength=k).tolist()


# ------------------------------------------------------------------------------------ per-class draws


def test_train_and_test_per_class_are_fixed_draws_from_the_protocols_splits(tmp_path):
    write_aptos(tmp_path / "aptos", per_class=20)
    whole = aptos.load(request(aptos.AptosOptions, tmp_path, tmp_path / "c", size=8, split_seed=3))
    assert (counts(whole.train, 5), counts(whole.val, 5), counts(whole.test, 5)) == ([14] * 5, [2] * 5, [4] * 5)
    drawn = {}
    for trial_seed in (0, 1):
        drawn[trial_seed] = aptos.load(request(aptos.AptosOptions, tmp_path, tmp_path / "c", trial_seed=trial_seed,
                                               size=8, split_seed=3, train_per_class=5, test_per_class=3))
    data = drawn[0]
    assert counts(data.train, 5) == [5] * 5 and counts(data.test, 5) == [3] * 5
    assert list(data.val.ids) == list(whole.val.ids)  # validation stays whole
    assert set(data.train.ids) <= set(whole.train.ids) and set(data.test.ids) <= set(whole.test.ids)
    assert list(drawn[1].train.ids) == list(data.train.ids)  # the same images for every trial seed
    assert data.protocol == ("iois; train: 5 per class of 70 (fixed draw, seed 0); test: 3 per class of 20 "
                             "(fixed draw, seed 0)")
    assert data.fingerprint != whole.fingerprint and whole.protocol == "iois"


def test_a_class_with_fewer_images_than_asked_keeps_all_of_them_with_a_warning(tmp_path):
    write_aptos(tmp_path / "aptos", per_class=10)
    with pytest.warns(UserWarning, match=r"dataset 'aptos': train_per_class=50, but the train split has fewer images "
                                         r"of no DR \(7\), mild \(7\), .*: all of those are kept"):
        data = aptos.load(request(aptos.AptosOptions, tmp_path, tmp_path / "c", size=8, train_per_class=50))
    assert counts(data.train, 5) == [7] * 5 and any("train_per_class=50" in w for w in data.warnings)


def test_per_class_draws_on_medmnist_and_synthetic(tmp_path):
    fake_npz(tmp_path, n_train=(30, 10), n_test=10)
    options = build_dataclass(medmnist.MedMNISTOptions, {"max_train": 20, "train_per_class": 4, "test_per_class": 2},
                              "m")
    data = medmnist.load(DatasetRequest(options=options, seed=0, data_dir=tmp_path, cache_dir=tmp_path / "c"),
                         "pneumoniamnist")
    assert counts(data.train, 2) == [4, 4] and counts(data.test, 2) == [2, 2] and len(data.val) == 8
    assert data.protocol.startswith("official, training split subsampled to 20 of 40")
    assert data.protocol.endswith("train: 4 per class of 20 (fixed draw, seed 0); test: 2 per class of 10 "
                                  "(fixed draw, seed 0)")
    gen = synthetic.load(request(synthetic.SyntheticOptions, None, tmp_path, size=8, n_train=200, n_val=14, n_test=70,
                                 train_per_class=2, test_per_class=1))
    assert counts(gen.train, 7) == [2] * 7 and counts(gen.test, 7) == [1] * 7 and len(gen.val) == 14


def test_dataset_options_are_checked_when_the_experiment_is_built(registry):
    for dataset in ("synthetic", "retinamnist", "aptos", "bone-marrow"):
        options = resolve_dataset_options(registry, dataset, parse_overrides(["dataset.train_per_class=100",
                                                                              "dataset.test_per_class=50"]))
        assert (options.train_per_class, options.test_per_class) == (100, 50)
    with pytest.raises(HarnessError, match=r"dataset 'aptos': invalid config: train_per_class must be at least 1; "
                                           r"found 0"):
        resolve_dataset_options(registry, "aptos", parse_overrides(["aptos.train_per_class=0"]))
    for dataset, override, message in (("aptos", "fit=zoom", "fit must be one of 'crop', 'stretch', 'pad'"),
                                       ("ham10000", "size=4", "size must be at least 8 and at most 1024"),
                                       ("chexpert", "views=side", "views must be one of 'frontal', 'lateral', 'all'"),
                                       ("isic2018", "task=binary", "task must be one of 'all', 'melanoma'"),
                                       ("imagefolder", "channels=4", "channels must be one of 1, 3"),
                                       ("pneumoniamnist", "max_train=1", "max_train must be a whole number of at "
                                                                         "least 2")):
        with pytest.raises(HarnessError, match=rf"dataset '{dataset}': invalid config: {message}"):
            resolve_dataset_options(registry, dataset, parse_overrides([f"{dataset}.{override}"]))


# -------------------------------------------------------------------------------- bone marrow, IMPROVE


def test_improve14_is_improves_downstream_classes(tmp_path):
    assert bone_marrow.IMPROVE14 == ("BAS", "BLA", "EBO", "EOS", "HAC", "LYT", "MMZ", "MON", "MYB", "NGB", "NGS", "PEB",
                                     "PLM", "PMO")
    assert len(bone_marrow.IMPROVE16) == 16 and {"ART", "NIF"} <= set(bone_marrow.IMPROVE16)
    write_bone_marrow(tmp_path / "bone-marrow", classes=bone_marrow.CLASSES, per_class=5)
    data = bone_marrow.load(request(bone_marrow.BoneMarrowOptions, tmp_path, tmp_path / "c", size=8,
                                    classes="improve14", train_per_class=2))
    assert data.classes == bone_marrow.IMPROVE14
    ids = [i for s in (data.train, data.val, data.test) for i in s.ids]
    assert {i.split("/")[0] for i in ids} == set(bone_marrow.IMPROVE14)  # no ART, no NIF, no ABE ...
    assert counts(data.train, 14) == [2] * 14
    with pytest.raises(HarnessError, match=r"classes improve15 unknown; expected \"all\", a subset of ABE, .* or one "
                                           r"of the names improve14"):
        bone_marrow.load(request(bone_marrow.BoneMarrowOptions, tmp_path, tmp_path / "c", classes="improve15"))


# --------------------------------------------------------------------------------------- Favero et al.


def test_favero_split_rule_reproduces_their_counts():
    train, val, test = reader.ordered_cut(20405)  # CheXpert: 16,324 / 2,040 / 2,040
    assert (len(train), len(val), len(test)) == (16324, 2040, 2040)
    assert train[-1] == 16323 and val[0] == 16324 and test[-1] == 20404 and val[-1] < test[0]
    assert tuple(map(len, reader.ordered_cut(10212))) == (8169, 1021, 1021)  # their ISIC set


def write_favero_chexpert(base: Path, patients: int = 25) -> list[str]:
    """train.csv with one kept row per patient (study1/view1_frontal, PE XOR NF) and rows the rule drops:
    a second frontal view, a second study, a lateral view, an uncertain label. Returns the kept ids in order."""
    rows, kept = [], []
    for p in range(1, patients + 1):
        pe, nf = ("1.0", "") if p % 2 else ("", "1.0")
        for rel, view, values in ((f"train/patient{p:05d}/study1/view1_frontal.jpg", "Frontal", (pe, nf)),
                                  (f"train/patient{p:05d}/study1/view2_frontal.jpg", "Frontal", (pe, nf)),
                                  (f"train/patient{p:05d}/study1/view3_lateral.jpg", "Lateral", (pe, nf)),
                                  (f"train/patient{p:05d}/study2/view1_frontal.jpg", "Frontal", (pe, nf))):
            write_image(base / "CheXpert-v1.0-small" / rel, 60 + 150 * (pe == "1.0") + p % 40, (20, 24), mode="L")
            rows.append(chex_row(f"CheXpert-v1.0-small/{rel}", view, *values))
        kept.append(f"train/patient{p:05d}/study1/view1_frontal.jpg")
    write_image(base / "CheXpert-v1.0-small" / "train/patient00099/study1/view1_frontal.jpg", 9, (20, 24), mode="L")
    rows.insert(3, chex_row("CheXpert-v1.0-small/train/patient00099/study1/view1_frontal.jpg", "Frontal", "-1.0", ""))
    write_csv(base / "CheXpert-v1.0-small" / "train.csv", CHEX_HEADER, rows)
    return kept


def test_chexpert_favero_protocol_cuts_the_task_rows_in_csv_order(tmp_path):
    kept = write_favero_chexpert(tmp_path / "chexpert")  # no valid.csv: favero does not need it
    splits = {}
    for trial_seed in (0, 1):
        splits[trial_seed] = chexpert.load(request(chexpert.CheXpertOptions, tmp_path, tmp_path / "c",
                                                   trial_seed=trial_seed, size=8, split="favero"))
    data = splits[0]
    assert list(data.train.ids) == kept[:20] and list(data.val.ids) == kept[20:22]
    assert list(data.test.ids) == kept[23:25]  # int(0.2 * 25) = 5 tail rows: 2 val, 1 unused, 2 test
    assert list(splits[1].test.ids) == list(data.test.ids)  # fixed: no seed
    assert data.classes == ("No Finding", "Pleural Effusion") and data.protocol == "favero"
    np.testing.assert_array_equal(data.train.labels, [p % 2 for p in range(1, 21)])
    with pytest.raises(HarnessError, match="split=official needs .*valid.csv"):
        chexpert.load(request(chexpert.CheXpertOptions, tmp_path, tmp_path / "c", size=8))


def test_isic2018_melanoma_vs_benign_balanced_as_favero(tmp_path):
    write_isic(tmp_path / "isic2018", counts=(("Training", 10), ("Validation", 2), ("Test", 3)))
    data = {s: isic2018.load(request(isic2018.ISIC2018Options, tmp_path, tmp_path / "c", trial_seed=s, size=8,
                                     task="melanoma", split="favero")) for s in (0, 1)}
    d = data[0]
    assert d.classes == ("benign", "melanoma")
    total = np.concatenate([d.train.labels, d.val.labels, d.test.labels])
    assert np.bincount(total).tolist() == [10, 10]  # 10 melanomas, 10 of the 40 benign images drawn
    assert (len(d.train), len(d.val), len(d.test)) == (16, 2, 2)
    ids = [i for s in (d.train, d.val, d.test) for i in s.ids]
    assert all(i.startswith("ISIC_Tr") for i in ids)  # Training images only
    assert {int(i[7]) for i in ids} <= {0, 1, 4, 5, 6}  # MEL, NV, BKL, DF, VASC: no BCC, no AKIEC
    assert list(data[1].test.ids) == list(d.test.ids)  # a fixed split, whatever the trial seed
    other = isic2018.load(request(isic2018.ISIC2018Options, tmp_path, tmp_path / "c", size=8, task="melanoma",
                                  split="favero", split_seed=5))
    assert list(other.test.ids) != list(d.test.ids)
    # the 7-class official task is unchanged; task=melanoma on another protocol is not balanced
    assert isic2018.load(request(isic2018.ISIC2018Options, tmp_path, tmp_path / "c", size=8)).classes == isic2018.CLASSES
    iois = isic2018.load(request(isic2018.ISIC2018Options, tmp_path, tmp_path / "c", size=8, task="melanoma",
                                 split="iois", negatives="NV,BCC"))
    assert iois.classes == ("not melanoma", "melanoma")
    assert np.bincount(np.concatenate([iois.train.labels, iois.val.labels, iois.test.labels])).tolist() == [20, 10]
    with pytest.raises(HarnessError, match="negatives must be ISIC classes other than MEL"):
        isic2018.load(request(isic2018.ISIC2018Options, tmp_path, tmp_path / "c", task="melanoma", negatives="MEL"))
    with pytest.raises(HarnessError, match="invalid config: task must be one of 'all', 'melanoma'; found 'binary'"):
        isic2018.load(request(isic2018.ISIC2018Options, tmp_path, tmp_path / "c", task="binary"))
