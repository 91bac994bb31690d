"""The demo recipe's Grad-CAM points at the lesion (synthetic data, where the lesion masks are exact)."""

from __future__ import annotations

import json

import pytest

# Exact pointing game (no pixel tolerance): the hottest heatmap pixel must lie inside the lesion mask.
# The issue asks for 0.9; the demo recipe measured 0.739 (88 lesion cases; 0.45 before the recipe change), so this
# is the highest honest bar reached so far. A smaller training set (n=720) collapsed localisation, so the test
# trains the full demo set.
MIN_HIT_RATE = 0.7


@pytest.mark.slow
def test_demo_recipe_gradcam_pointing_game(tmp_path) -> None:
    from meddx.workflows import run_demo

    # a fixed epoch count (not the demo's wall-clock budget), so the result does not depend on machine load
    summary = run_demo(tmp_path / "demo", epochs=30, minutes=60, log=lambda s: None)
    metrics = json.loads(open(summary["metrics"], encoding="utf-8").read())
    loc = metrics["localisation"]
    assert loc["method"] == "gradcam" and loc["tolerance"] == 0.0
    assert loc["n_evaluated"] >= 80
    assert metrics["auc"] >= 0.9
    assert loc["pointing_hit_rate"] >= MIN_HIT_RATE, loc


@pytest.mark.slow
def test_fine_grid_recipe_gradcam_pointing_game_reaches_0_9(tmp_path) -> None:
    """The demo data with FINE_CAM_MODEL (32x32 Grad-CAM grid, 40 epochs): the issue's >= 0.9, exact.

    Measured 0.943 on 88 lesion slices (AUC 0.989); several minutes on 2 cores."""
    from meddx.workflows import FINE_CAM_MODEL, run_demo

    summary = run_demo(tmp_path / "demo", epochs=40, minutes=120, log=lambda s: None, model_options=FINE_CAM_MODEL)
    metrics = json.loads(open(summary["metrics"], encoding="utf-8").read())
    loc = metrics["localisation"]
    assert loc["method"] == "gradcam" and loc["tolerance"] == 0.0 and loc["n_evaluated"] >= 80
    assert loc["pointing_hit_rate"] >= 0.9, loc
