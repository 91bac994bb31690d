"""Synthetic demo data: shapes, exact masks, patient grouping, determinism, folder + manifest."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from meddx.data.synthetic import CLASS_NAMES, make_synthetic_dataset, make_synthetic_sequences, write_synthetic_folder


@pytest.fixture(scope="module")
def data():
    return make_synthetic_dataset(n=120, size=64, lesion_fraction=0.5, seed=3)


def test_shapes_types_and_labels(data):
    assert data["images"].shape == (120, 64, 64) and data["images"].dtype == np.float32
    assert data["masks"].shape == (120, 64, 64) and data["masks"].dtype == np.uint8
    assert data["labels"].shape == (120,) and set(np.unique(data["labels"])) == {0, 1}
    assert data["labels"].sum() == 60
    assert data["class_names"] == ["normal", "lesion"] == CLASS_NAMES
    assert 0.0 <= data["images"].min() and data["images"].max() <= 1.0
    assert np.isfinite(data["images"]).all()


def test_masks_match_labels_and_lesion_size(data):
    areas = data["masks"].sum(axis=(1, 2))
    assert set(np.unique(data["masks"])) <= {0, 1}
    assert (areas[data["labels"] == 0] == 0).all()
    assert (areas[data["labels"] == 1] >= 4).all()
    diam = 2 * np.sqrt(areas[data["labels"] == 1] / np.pi) / 64
    assert np.median(diam) > 0.05 and diam.max() < 0.2


def test_lesion_changes_the_image_where_the_mask_is(data):
    # lesion pixels differ from the surrounding organ by more than the noise
    diffs = []
    for img, m in zip(data["images"][data["labels"] == 1], data["masks"][data["labels"] == 1]):
        from scipy import ndimage

        m = m.astype(bool)
        ring = ndimage.binary_dilation(m, iterations=3) & ~ndimage.binary_dilation(m, iterations=1)
        diffs.append(abs(img[m].mean() - img[ring].mean()))
    assert np.median(diffs) > 0.08


def test_intensity_statistics_do_not_give_the_label_away(data):
    from sklearn.metrics import roc_auc_score

    # whole-image mean/std alone should not separate the classes (the lesion is a local finding)
    for stat in (data["images"].mean(axis=(1, 2)), data["images"].std(axis=(1, 2))):
        assert abs(roc_auc_score(data["labels"], stat) - 0.5) < 0.2


def test_patients_group_several_slices(data):
    ids, counts = np.unique(data["patient_ids"], return_counts=True)
    assert len(ids) == 20 and (counts == 6).all()
    # slices of a patient share anatomy: closer to each other than to another patient's
    a = data["images"][data["patient_ids"] == ids[0]]
    b = data["images"][data["patient_ids"] == ids[1]]
    assert np.abs(a[0] - a[1]).mean() < np.abs(a[0] - b[0]).mean()


def test_deterministic_and_seed_dependent():
    a = make_synthetic_dataset(n=12, size=32, seed=7)
    b = make_synthetic_dataset(n=12, size=32, seed=7)
    c = make_synthetic_dataset(n=12, size=32, seed=8)
    for k in ("images", "labels", "masks", "patient_ids"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["images"], c["images"])


def test_uint8_and_extreme_fractions():
    d = make_synthetic_dataset(n=10, size=32, lesion_fraction=0.0, seed=1, dtype="uint8")
    assert d["images"].dtype == np.uint8 and d["labels"].sum() == 0 and d["masks"].sum() == 0
    d = make_synthetic_dataset(n=10, size=32, lesion_fraction=1.0, seed=1)
    assert d["labels"].sum() == 10 and (d["masks"].sum(axis=(1, 2)) > 0).all()
    with pytest.raises(ValueError):
        make_synthetic_dataset(n=0)


def test_sequences_have_contiguous_lesion_runs():
    s = make_synthetic_sequences(n_studies=8, n_slices=12, size=48, seed=2)
    assert s["images"].shape == (8, 12, 48, 48) and s["masks"].shape == (8, 12, 48, 48)
    assert s["frame_labels"].shape == (8, 12) and s["labels"].shape == (8,)
    assert s["labels"].sum() == 4
    for fl, lab, (start, stop), m in zip(s["frame_labels"], s["labels"], s["runs"], s["masks"]):
        np.testing.assert_array_equal(fl, (m.sum(axis=(1, 2)) > 0).astype(int))
        assert lab == int(fl.any())
        if lab:
            on = np.flatnonzero(fl)
            assert on[0] == start and on[-1] == stop - 1 and len(on) == stop - start >= 3  # contiguous
        else:
            assert fl.sum() == 0 and start == stop == 0
    t = make_synthetic_sequences(n_studies=8, n_slices=12, size=48, seed=2)
    np.testing.assert_array_equal(s["images"], t["images"])


def test_write_folder_and_manifest(tmp_path):
    from PIL import Image

    manifest = write_synthetic_folder(tmp_path / "demo", n=14, size=32, seed=5, slices_per_patient=4)
    assert manifest == tmp_path / "demo" / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    assert list(rows[0].keys()) == ["path", "label", "patient_id", "mask"]
    assert len(rows) == 14
    ref = make_synthetic_dataset(n=14, size=32, seed=5, slices_per_patient=4, dtype="uint8")
    for i, r in enumerate(rows):
        assert r["path"].startswith(r["label"] + "/") and r["label"] in CLASS_NAMES
        assert r["label"] == CLASS_NAMES[ref["labels"][i]] and r["patient_id"] == ref["patient_ids"][i]
        img = np.asarray(Image.open(tmp_path / "demo" / r["path"]))
        mask = np.asarray(Image.open(tmp_path / "demo" / r["mask"]))
        np.testing.assert_array_equal(img, ref["images"][i])
        np.testing.assert_array_equal(mask > 0, ref["masks"][i] > 0)
        assert r["mask"].endswith("_mask.png")
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["lesion", "manifest.csv", "normal"]
    assert not list((tmp_path / "demo").rglob(".*"))  # no temporary files left
