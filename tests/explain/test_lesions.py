"""heatmap_to_lesions / mask_to_lesions / lesions_table and localisation metrics."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from meddx.errors import ConfigError, InputError
from meddx.explain import energy_inside, heatmap_to_lesions, lesions_table, mask_to_lesions, pointing_game
from meddx.io.image import Image


def _two_box_heatmap() -> np.ndarray:
    heat = np.zeros((10, 20, 30), dtype=np.float32)
    heat[2:5, 3:8, 4:10] = 1.0  # lesion A: 3 x 5 x 6 voxels, peak 1.0
    heat[6:9, 12:18, 20:28] = 0.7  # lesion B: 3 x 6 x 8 voxels, peak 0.7
    heat[0, 0, 0] = 0.9  # a single hot voxel: below min_size
    return heat


def test_heatmap_two_blobs_anisotropic_spacing():
    spacing = (2.5, 0.8, 0.5)
    lesions = heatmap_to_lesions(_two_box_heatmap(), threshold=0.5, min_size=4, spacing=spacing)
    assert len(lesions) == 2
    a, b = lesions
    assert (a["id"], b["id"]) == (1, 2)
    assert a["score"] == pytest.approx(1.0) and b["score"] == pytest.approx(0.7)
    assert a["score_mean"] == pytest.approx(1.0)
    assert a["n_px"] == 3 * 5 * 6 and b["n_px"] == 3 * 6 * 8
    assert a["centroid_px"] == pytest.approx((3.0, 5.0, 6.5))
    assert b["centroid_px"] == pytest.approx((7.0, 14.5, 23.5))
    assert a["bbox_px"] == ((2, 4), (3, 7), (4, 9))
    assert b["bbox_px"] == ((6, 8), (12, 17), (20, 27))
    assert a["extent_px"] == (3, 5, 6)
    assert a["centroid_mm"] == pytest.approx((7.5, 4.0, 3.25))
    assert a["extent_mm"] == pytest.approx((7.5, 4.0, 3.0))
    assert b["extent_mm"] == pytest.approx((7.5, 4.8, 4.0))
    assert a["volume_ml"] == pytest.approx(90 * 2.5 * 0.8 * 0.5 / 1000)
    assert "area_mm2" not in a
    assert a["mask"].shape == (10, 20, 30) and a["mask"].sum() == 90
    assert not (a["mask"] & b["mask"]).any()


def test_heatmap_options():
    heat = _two_box_heatmap()
    assert len(heatmap_to_lesions(heat, min_size=1)) == 3  # the single hot voxel now counts
    assert len(heatmap_to_lesions(heat, min_size=1, max_lesions=1)) == 1
    assert len(heatmap_to_lesions(heat, threshold=0.8)) == 1  # B (0.7) falls below 0.8 * max
    otsu = heatmap_to_lesions(heat + 0.01 * np.random.default_rng(0).random(heat.shape), threshold="otsu")
    assert len(otsu) == 2
    assert heatmap_to_lesions(np.zeros((8, 8))) == []
    no_mm = heatmap_to_lesions(heat)[0]
    assert "centroid_mm" not in no_mm and "volume_ml" not in no_mm
    with pytest.raises(ConfigError):
        heatmap_to_lesions(heat, threshold=1.5)
    with pytest.raises(ConfigError):
        heatmap_to_lesions(heat, threshold="median")
    with pytest.raises(ConfigError):
        heatmap_to_lesions(heat, spacing=(1.0, 1.0))
    with pytest.raises(InputError):
        heatmap_to_lesions(np.zeros(5))


def test_heatmap_2d_area_and_image_geometry():
    heat = np.zeros((40, 50))
    yy, xx = np.mgrid[:40, :50]
    heat += np.exp(-((yy - 10) ** 2 + (xx - 12) ** 2) / 8.0)
    heat += 0.8 * np.exp(-((yy - 30) ** 2 + (xx - 40) ** 2) / 8.0)
    img = Image(np.zeros((40, 50)), spacing=(0.5, 2.0), origin=(10.0, 20.0, 30.0), has_geometry=True)
    lesions = heatmap_to_lesions(heat, threshold=0.3, spacing=img)
    assert len(lesions) == 2
    a, b = lesions
    assert a["centroid_px"] == pytest.approx((10.0, 12.0), abs=1e-6)  # symmetric blob: exact centre
    assert b["centroid_px"] == pytest.approx((30.0, 40.0), abs=1e-6)
    assert a["peak_px"] == (10, 12)
    assert a["area_mm2"] == pytest.approx(a["n_px"] * 1.0)
    assert a["extent_mm"] == pytest.approx((a["extent_px"][0] * 0.5, a["extent_px"][1] * 2.0))
    # LPS position: origin + direction @ (index * spacing), identity direction in 2D
    assert a["centroid_lps_mm"] == pytest.approx((10.0 + 10 * 0.5, 20.0 + 12 * 2.0, 30.0))


def test_mask_to_lesions_exact_volume_from_label_map():
    spacing = (3.0, 0.7, 0.65)
    labels = np.zeros((12, 30, 30), dtype=np.uint16)
    rng = np.random.default_rng(0)
    labels[rng.random(labels.shape) < 0.05] = 1  # label 1: scattered voxels, one lesion by label
    labels[5:9, 10:20, 3:8] = 2
    labels[0:2, 25:30, 25:30] = 7
    lesions = mask_to_lesions(labels, spacing)
    assert [l["label"] for l in lesions] == [1, 2, 7]
    voxel = float(np.prod(spacing))
    for lesion in lesions:
        count = int((labels == lesion["label"]).sum())
        assert lesion["n_px"] == count
        assert lesion["volume_ml"] == count * voxel / 1000.0  # exact, not approx
        assert lesion["score"] is None
    assert lesions[1]["bbox_px"] == ((5, 8), (10, 19), (3, 7))
    assert lesions[1]["extent_mm"] == pytest.approx((12.0, 7.0, 3.25))


def test_mask_to_lesions_binary_components():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:6, 2:6] = True
    mask[10:15, 12:19] = True
    mask[6, 6] = True  # touches the first square only diagonally: separate with face connectivity
    lesions = mask_to_lesions(mask, spacing=(0.5, 0.5))
    assert sorted(l["n_px"] for l in lesions) == [1, 16, 35]
    assert len(mask_to_lesions(mask, connectivity=2)) == 2
    big = max(lesions, key=lambda l: l["n_px"])
    assert big["area_mm2"] == 35 * 0.25
    assert big["centroid_px"] == pytest.approx((12.0, 15.0))
    assert len(mask_to_lesions(mask.astype(np.float32), min_size=2)) == 2
    with pytest.raises(InputError):
        mask_to_lesions(np.full((4, 4), 0.5))


def test_lesions_table_is_flat_and_csv_ready():
    rows = lesions_table(heatmap_to_lesions(_two_box_heatmap(), spacing=(2.5, 0.8, 0.5)))
    assert len(rows) == 2
    row = rows[0]
    assert "mask" not in row
    assert row["bbox_px_z_min"] == 2 and row["bbox_px_x_max"] == 9
    assert row["centroid_mm_y"] == pytest.approx(4.0)
    assert row["extent_px_x"] == 6
    assert all(isinstance(v, (int, float, str, type(None))) for v in row.values())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(row))
    writer.writeheader()
    writer.writerows(rows)
    assert buf.getvalue().count("\n") == 3


def test_localisation_metrics():
    masks = np.zeros((3, 10, 10), bool)
    masks[:, 4:6, 4:6] = True
    heat = np.zeros((3, 10, 10))
    heat[0, 5, 5] = 1.0  # hit
    heat[1, 5, 7] = 1.0  # 2 px away from the mask
    heat[2, 0, 0] = 1.0  # miss
    assert pointing_game(heat, masks) == pytest.approx(1 / 3)
    assert pointing_game(heat, masks, tolerance_px=2.0) == pytest.approx(2 / 3)
    np.testing.assert_allclose(energy_inside(heat, masks), [1.0, 0.0, 0.0])
