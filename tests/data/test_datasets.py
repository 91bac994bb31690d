"""Datasets: npz, folder-per-class, CSV manifest; splits grouped by patient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from meddx.data.datasets import describe, format_summary, load_dataset, load_manifest
from meddx.data.splits import assign_splits, kfold_splits
from meddx.errors import DataError, InputError


def _png(path: Path, value: int, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)
    return path


def _manifest(tmp_path: Path, n_patients: int = 20, slices: int = 3) -> Path:
    rows = ["path,label,patient_id"]
    for p in range(n_patients):
        label = "lesion" if p % 2 else "normal"
        for s in range(slices):
            f = _png(tmp_path / "img" / f"p{p}_{s}.png", (10 * p + s) % 256)
            rows.append(f"img/{f.name},{label},P{p:03d}")
    csv = tmp_path / "manifest.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def test_breastmnist_npz(shared_data):
    ds = load_dataset(shared_data / "medmnist" / "breastmnist_trainval.npz")
    assert len(ds) == 546 + 78
    assert ds.task == "binary" and ds.class_names == ["malignant", "normal, benign"]
    assert ds.spatial_ndim == 2
    splits = assign_splits(ds)
    assert (splits == "train").sum() == 546 and (splits == "val").sum() == 78 and (splits == "test").sum() == 0
    assert describe(ds, splits)["counts"] == {"malignant": 147 + 21, "normal, benign": 399 + 57}


def test_adrenal_npz_is_3d(shared_data):
    ds = load_dataset(shared_data / "medmnist" / "adrenalmnist3d_trainval.npz")
    assert ds.spatial_ndim == 3 and ds.items[0].shape == (28, 28, 28)


def test_mednist_folder(shared_data):
    ds = load_dataset(shared_data / "mednist")
    assert ds.class_names == ["AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT"]
    assert ds.task == "multiclass" and len(ds) == 5400
    splits = assign_splits(ds, seed=0)
    counts = {s: int((splits == s).sum()) for s in ("train", "val", "test")}
    assert abs(counts["test"] - 810) < 60 and abs(counts["val"] - 810) < 60
    # stratified: every class is in every split in roughly equal share
    for s in ("val", "test"):
        per_class = np.bincount(ds.labels[splits == s], minlength=6)
        assert per_class.min() > 120
    assert (assign_splits(ds, seed=0) == splits).all()  # deterministic


def test_manifest_patient_split_never_shares_patients(tmp_path):
    ds = load_manifest(_manifest(tmp_path, n_patients=30, slices=4))
    assert ds.patient_ids is not None
    splits = assign_splits(ds, seed=3)
    owners: dict[str, set[str]] = {}
    for pid, s in zip(ds.patient_ids, splits):
        owners.setdefault(pid, set()).add(s)
    assert all(len(v) == 1 for v in owners.values())
    assert {"train", "val", "test"} <= set(splits)
    for tr, te in kfold_splits(ds, k=5):
        assert not set(ds.patient_ids[tr]) & set(ds.patient_ids[te])


def test_manifest_patient_in_two_given_splits_is_an_error(tmp_path):
    _png(tmp_path / "a.png", 1)
    _png(tmp_path / "b.png", 2)
    (tmp_path / "m.csv").write_text("path,label,patient_id,split\na.png,x,P1,train\nb.png,y,P1,test\n")
    with pytest.raises(DataError, match="P1"):
        assign_splits(load_manifest(tmp_path / "m.csv"))


def test_manifest_missing_file_names_it(tmp_path):
    _png(tmp_path / "a.png", 1)
    (tmp_path / "m.csv").write_text("path,label\na.png,x\nmissing.png,y\n")
    with pytest.raises(InputError, match=r"m\.csv.*line 3.*missing\.png"):
        load_manifest(tmp_path / "m.csv")


def test_manifest_unknown_label(tmp_path):
    _png(tmp_path / "a.png", 1)
    _png(tmp_path / "b.png", 1)
    (tmp_path / "m.csv").write_text("path,label\na.png,cat\nb.png,dog\n")
    with pytest.raises(DataError, match="unknown label.*dog"):
        load_manifest(tmp_path / "m.csv", class_names=["cat", "cow"])


def test_manifest_missing_columns(tmp_path):
    (tmp_path / "m.csv").write_text("file,diagnosis\na.png,x\n")
    with pytest.raises(DataError, match="lacks column"):
        load_manifest(tmp_path / "m.csv")


def test_segmentation_manifest_needs_no_label_column(tmp_path):
    """path,mask (what a segmentation user writes): rows are labelled by whether they name a mask."""
    for name in ("a.png", "a_mask.png", "b.png", "c.png", "c_mask.png"):
        _png(tmp_path / name, 1)
    (tmp_path / "m.csv").write_text("path,mask\na.png,a_mask.png\nb.png,\nc.png,c_mask.png\n")
    ds = load_manifest(tmp_path / "m.csv")
    assert ds.class_names == ["mask", "no mask"]
    assert [ds.class_names[k] for k in ds.labels] == ["mask", "no mask", "mask"]
    assert [m is not None for m in ds.masks] == [True, False, True]
    (tmp_path / "all.csv").write_text("path,mask\na.png,a_mask.png\nc.png,c_mask.png\n")  # one class is fine here
    assert load_manifest(tmp_path / "all.csv").class_names == ["mask"]


def test_classifier_on_a_manifest_without_labels_is_one_error(tmp_path, capsys):
    from meddx.cli import main

    rows = ["path,mask"] + [f"{_png(tmp_path / f'i{i}.png', i).name},{_png(tmp_path / f'i{i}_m.png', 255).name}"
                            for i in range(12)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    code = main(["train", str(tmp_path / "m.csv"), "--out", str(tmp_path / "RUN")])
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("meddx: error: ")]
    assert code == 2 and len(errors) == 1 and "m.csv" in errors[0] and "--task segmentation" in errors[0], errors
    assert not (tmp_path / "RUN").exists()


def test_npz_without_needed_keys(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4)), labels=np.zeros(2))
    with pytest.raises(DataError, match=r"bad\.npz.*train_images"):
        load_dataset(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad2.npz", train_images=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match="train_labels"):
        load_dataset(tmp_path / "bad2.npz")


def test_npz_with_nans(tmp_path):
    x = np.zeros((4, 8, 8), dtype=np.float32)
    x[1, 2, 3] = np.nan
    np.savez(tmp_path / "nan.npz", train_images=x, train_labels=np.array([[0], [1], [0], [1]]))
    with pytest.raises(InputError, match="NaN"):
        load_dataset(tmp_path / "nan.npz")


def test_empty_folder_and_single_class(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        load_dataset(tmp_path / "empty")
    _png(tmp_path / "one" / "cls" / "a.png", 3)
    with pytest.raises(DataError, match="only one class"):
        load_dataset(tmp_path / "one")


def test_summary_reports_imbalance(tmp_path):
    for i in range(9):
        _png(tmp_path / "d" / "common" / f"{i}.png", i)
    for i in range(2):
        _png(tmp_path / "d" / "rare" / f"{i}.png", i)
    ds = load_dataset(tmp_path / "d")
    summary = describe(ds, assign_splits(ds, val_fraction=0.0, test_fraction=0.0))
    text = format_summary(summary)
    assert "imbalance 4.5:1" in text and "rare" in text and "weight" not in text
    # the line says what training will do with the imbalance, not what an earlier default did
    assert "training is unweighted" in format_summary(summary, class_weights=False)
    assert "balanced class weights" in format_summary(summary, class_weights=True)
