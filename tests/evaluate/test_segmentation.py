"""Segmentation and localisation metrics on generated shapes with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from meddx.evaluate import localisation as L
from meddx.evaluate import segmentation as S


def _square(shape, y0, x0, size=10):
    m = np.zeros(shape, bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


def test_dice_iou_known_overlap():
    a = _square((40, 40), 10, 10)
    b = _square((40, 40), 13, 10)  # overlap 7 x 10 = 70 of 100 each
    assert S.dice(a, b) == pytest.approx(0.7)
    assert S.iou(a, b) == pytest.approx(70 / 130)
    assert S.dice(a, a) == 1.0 and S.hausdorff95(a, a) == 0.0


def test_hd95_offset_squares_isotropic_and_anisotropic():
    a = _square((40, 40), 10, 10)
    b = _square((40, 40), 13, 10)  # shifted 3 px along y
    assert S.hausdorff95(a, b) == pytest.approx(3.0)
    assert S.hausdorff95(a, b, spacing=(0.5, 0.5)) == pytest.approx(1.5)
    assert S.hausdorff95(a, b, spacing=(2.0, 0.5)) == pytest.approx(6.0)  # y spacing counts
    c = _square((40, 40), 10, 13)  # shifted 3 px along x
    assert S.hausdorff95(a, c, spacing=(2.0, 0.5)) == pytest.approx(1.5)  # x spacing counts
    assert S.hausdorff(a, b, spacing=(2.0, 0.5)) == pytest.approx(6.0)
    # ASD: 36 surface pixels each way; distances (pixels) 10 x 3, 2 x 2, 2 x 1 (top edge and side
    # pixels above the other square), rest 0 except bottom-interior pixels -> check bounds only
    asd = S.average_surface_distance(a, b)
    assert 0.5 < asd < 3.0


def test_3d_cube_with_anisotropic_spacing():
    a = np.zeros((20, 20, 20), bool)
    a[3:13, 3:13, 3:13] = True
    b = np.roll(a, 2, axis=0)
    assert S.dice(a, b) == pytest.approx(0.8)
    assert S.hausdorff95(a, b, spacing=(3.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert S.hausdorff95(a, b, spacing=(1.0, 1.0, 1.0)) == pytest.approx(2.0)


def test_empty_mask_conventions():
    z = np.zeros((10, 10), bool)
    a = _square((10, 10), 2, 2, 3)
    assert S.dice(z, z) == 1.0 and S.iou(z, z) == 1.0 and S.hausdorff95(z, z) == 0.0
    assert S.average_surface_distance(z, z) == 0.0
    assert S.dice(z, a) == 0.0 and S.iou(a, z) == 0.0
    assert math.isnan(S.hausdorff95(z, a)) and math.isnan(S.average_surface_distance(a, z))


def test_lesion_detection_counts_components():
    truth = np.zeros((50, 50), bool)
    truth[5:10, 5:10] = True     # lesion 1: hit
    truth[30:35, 30:35] = True   # lesion 2: missed
    pred = np.zeros_like(truth)
    pred[7:12, 7:12] = True      # overlaps lesion 1
    pred[40:44, 5:9] = True      # false positive
    r = S.lesion_detection(pred, truth, spacing=(0.5, 0.5))
    assert r["n_lesions"] == 2 and r["n_detected"] == 1 and r["sensitivity"] == 0.5
    assert r["n_pred_components"] == 2 and r["n_false_positive"] == 1
    assert r["lesion_volumes"] == [6.25, 6.25]
    # lesion 1 is only 9/25 covered: a 50% overlap requirement misses it
    assert S.lesion_detection(pred, truth, min_overlap=0.5)["n_detected"] == 0


def test_segmentation_metrics_summary():
    a = _square((40, 40), 10, 10)
    b = _square((40, 40), 13, 10)
    z = np.zeros_like(a)
    r = S.segmentation_metrics([a, b, z], [b, b, a], spacings=(2.0, 2.0))
    assert r["n"] == 3 and r["units"] == "mm"
    assert r["dice"] == pytest.approx((0.7 + 1.0 + 0.0) / 3)
    assert r["hd95"] == pytest.approx((6.0 + 0.0) / 2) and r["n_hd95_undefined"] == 1
    assert r["lesion_sensitivity"] == pytest.approx(2 / 3) and r["fp_per_image"] == 0.0
    assert r["per_case"][2]["hd95"] is None
    json.dumps(r, allow_nan=False)
    r2 = S.segmentation_metrics([a, b], [b, b], spacings=[(1.0, 1.0), (2.0, 2.0)])
    assert r2["per_case"][0]["hd95"] == pytest.approx(3.0)
    # lesion-case Dice averages only the cases whose truth has a lesion: the empty pair is left out
    r3 = S.segmentation_metrics([a, z], [b, z])
    assert r3["n_lesion_cases"] == 1 and r3["dice_lesion_cases"] == pytest.approx(0.7)
    assert r3["dice"] == pytest.approx((0.7 + 1.0) / 2)


def test_pointing_game_hit_miss_and_tolerance():
    mask = _square((32, 32), 10, 10, 5)
    heat = np.zeros((32, 32))
    heat[12, 12] = 1.0
    assert L.pointing_game(heat, mask) is True
    heat2 = np.zeros((32, 32))
    heat2[12, 18] = 1.0  # 4 px right of the mask's last column (14)
    assert L.pointing_game(heat2, mask) is False
    assert L.pointing_game(heat2, mask, tolerance=4) is True
    assert L.pointing_game(heat2, mask, tolerance=3) is False
    assert L.pointing_game(heat, np.zeros_like(mask)) is False
    # low-resolution heatmap is resized to the mask
    low = np.zeros((8, 8))
    low[3, 3] = 1.0
    assert L.pointing_game(low, mask) is True


def test_best_threshold_iou_and_summary():
    mask = _square((32, 32), 8, 8, 8)
    heat = mask.astype(float) * 0.8 + 0.1
    iou, thr = L.best_threshold_iou(heat, mask)
    assert iou == pytest.approx(1.0) and thr == pytest.approx(1.0)
    blob = np.zeros((32, 32))
    blob[8:16, 8:20] = 1.0  # 8 x 12 covers the 8 x 8 mask -> IoU 64/96
    assert L.best_threshold_iou(blob, mask)[0] == pytest.approx(64 / 96)
    off = np.zeros((32, 32))
    off[25, 25] = 1.0
    r = L.localisation_metrics([heat, off, heat], [mask, mask, np.zeros_like(mask)])
    assert r["n"] == 3 and r["n_evaluated"] == 2 and r["n_empty_mask"] == 1
    assert r["pointing_hit_rate"] == 0.5
    json.dumps(r, allow_nan=False)


def test_masks_touching_the_border_and_small_objects_in_big_volume():
    a = _square((40, 40), 0, 0)  # touches the array border: border pixels count as surface
    b = _square((40, 40), 3, 0)
    assert S.hausdorff95(a, b) == pytest.approx(3.0)
    vol = np.zeros((60, 128, 128), bool)
    vol[20:30, 40:60, 40:60] = True
    assert S.hausdorff95(vol, np.roll(vol, 3, axis=1), spacing=(2.5, 0.7, 0.7)) == pytest.approx(2.1)


def test_patient_dice_stacks_each_patients_slices() -> None:
    """Dice per patient over the stacked volume (not the mean of slice Dices), averaged over patients."""
    from meddx.evaluate.segmentation import patient_dice

    a1 = np.zeros((4, 4), bool); a1[:2, :2] = True   # 4 px truth
    p1 = np.zeros((4, 4), bool); p1[:2, :1] = True   # 2 px, all inside
    empty = np.zeros((4, 4), bool)
    fp = np.zeros((4, 4), bool); fp[3, 3] = True
    # patient A: slice 1 Dice 2*2/6, slice 2 empty/empty -> stacked 2*2/(2+4) = 0.667 (mean of slices would be 0.83)
    # patient B: truth empty, one false-positive pixel -> 0
    res = patient_dice([p1, empty, fp], [a1, empty, empty], ["A", "A", "B"])
    assert res["per_patient"]["A"] == pytest.approx(4 / 6)
    assert res["per_patient"]["B"] == 0.0
    assert res["mean"] == pytest.approx(2 / 6)
    assert patient_dice([empty], [empty], ["C"])["mean"] == 1.0
    odd = patient_dice([p1, np.zeros((2, 2))], [a1, np.zeros((2, 2))], ["D", "D"])
    assert odd["skipped"] == ["D"] and odd["mean"] is None
