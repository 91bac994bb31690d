"""Image/mask pair discovery and the LGG manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from meddx.data.datasets import load_manifest
from meddx.data.lgg import find_pairs, is_paired_folder, lgg_manifest, paired_folder_dataset
from meddx.errors import DataError


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(arr.astype(np.uint8)).save(path)


def test_lgg_manifest_has_10_patients_and_218_slices(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "lgg"
    if not root.is_dir():
        pytest.skip("lgg data absent")
    csv_path = lgg_manifest(root, tmp_path / "lgg.csv")
    ds = load_manifest(csv_path)
    assert len(ds) == 218
    assert len(set(ds.patient_ids)) == 10
    assert ds.masks is not None and all(m.endswith("_mask.tif") for m in ds.masks)
    assert all(Path(m).name == Path(i).name.replace(".tif", "_mask.tif") for i, m in zip(ds.items, ds.masks))
    assert ds.class_names == ["lesion", "normal"]
    # labels follow the masks: a "lesion" slice has foreground, a "normal" one none
    from meddx.io import read_image
    for k in (0, int(np.flatnonzero(ds.labels == 0)[0])):
        assert (read_image(ds.masks[k]).array.max() > 0) == (ds.labels[k] == 0)
    counts = ds.class_counts()
    assert counts["lesion"] + counts["normal"] == 218 and 0 < counts["lesion"] < 218
    # slices in natural order within a patient (..._2 before ..._10)
    first = [Path(p).stem for p in ds.items if "TCGA_CS_4941" in p][:3]
    assert first == [f"TCGA_CS_4941_19960909_{k}" for k in (1, 2, 3)]


def test_paired_folder_discovery(tmp_path: Path) -> None:
    disc = np.zeros((16, 16), np.uint8)
    disc[4:9, 4:9] = 255
    for pid in ("pa", "pb"):
        for k in (1, 2, 10):
            _png(tmp_path / pid / f"{pid}_{k}.png", np.full((16, 16), 40 * k % 255))
            _png(tmp_path / pid / f"{pid}_{k}_mask.png", disc if k == 2 else np.zeros((16, 16)))
    _png(tmp_path / "pb" / "extra_unpaired.png", np.zeros((16, 16)))
    assert is_paired_folder(tmp_path)
    pairs = find_pairs(tmp_path)
    assert [p[0].name for p in pairs[:3]] == ["pa_1.png", "pa_2.png", "pa_10.png"]
    assert {p[2] for p in pairs} == {"pa", "pb"}
    ds = paired_folder_dataset(tmp_path)
    assert len(ds) == 6 and ds.kind == "paired"
    assert [ds.class_names[i] for i in ds.labels[:3]] == ["normal", "lesion", "normal"]
    csv_path = lgg_manifest(tmp_path, tmp_path / "sub" / "m.csv")
    assert "../pa/pa_1.png" in csv_path.read_text()
    again = load_manifest(csv_path)
    assert list(again.labels) == list(ds.labels) and list(again.patient_ids) == list(ds.patient_ids)


def test_manifest_of_several_paired_folders(tmp_path: Path) -> None:
    """lgg/ + lgg_more/ as one manifest: every patient's slices, and a patient in two folders refused."""
    for root, patient in (("one", "pa"), ("two", "pb"), ("three", "pa")):
        for k in (1, 2):
            _png(tmp_path / root / patient / f"{patient}_{k}.png", np.zeros((16, 16)))
            _png(tmp_path / root / patient / f"{patient}_{k}_mask.png", np.full((16, 16), 255 * (k == 2)))
    csv_path = lgg_manifest([tmp_path / "one", tmp_path / "two"], tmp_path / "both.csv")
    ds = load_manifest(csv_path)
    assert list(ds.patient_ids) == ["pa", "pa", "pb", "pb"] and ds.masks is not None
    assert [ds.class_names[i] for i in ds.labels] == ["normal", "lesion"] * 2
    with pytest.raises(DataError, match="patient pa is in both"):
        lgg_manifest([tmp_path / "one", tmp_path / "three"], tmp_path / "mixed.csv")
    assert not (tmp_path / "mixed.csv").exists()


def test_flat_folder_and_broken_pairs(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", np.zeros((8, 8)))
    _png(tmp_path / "a_mask.png", np.zeros((8, 8)))
    pairs = find_pairs(tmp_path)
    assert pairs[0][2] == "a"  # a file in the root is its own patient
    _png(tmp_path / "orphan_mask.png", np.zeros((8, 8)))
    with pytest.raises(DataError, match="orphan_mask.png"):
        find_pairs(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not is_paired_folder(empty)
    with pytest.raises(DataError):
        find_pairs(empty)
