"""meddx.evaluate: metrics as plain functions over numpy arrays, plus plots.

Never imports keras/tensorflow; scikit-learn, scipy and matplotlib are imported inside the
functions that need them, so importing this package is cheap.
"""

from __future__ import annotations

from meddx.evaluate.classification import (
    bootstrap_ci,
    brier_score,
    calibration_bins,
    classification_metrics,
    expected_calibration_error,
    macro_auc_ovr,
    multilabel_auc,
    pr_points,
    roc_auc,
    roc_points,
    youden_threshold,
)
from meddx.evaluate.localisation import best_threshold_iou, localisation_metrics, pointing_game
from meddx.evaluate.plots import (
    plot_calibration,
    plot_confusion,
    plot_pr,
    plot_roc,
    plot_roc_comparison,
    plot_training_curves,
    write_classification_outputs,
)
from meddx.evaluate.segmentation import (
    average_surface_distance,
    dice,
    hausdorff95,
    iou,
    lesion_detection,
    segmentation_metrics,
)

__all__ = [
    "average_surface_distance", "best_threshold_iou", "bootstrap_ci", "brier_score", "calibration_bins",
    "classification_metrics", "dice", "expected_calibration_error", "hausdorff95", "iou", "lesion_detection",
    "localisation_metrics", "macro_auc_ovr", "multilabel_auc", "plot_calibration", "plot_confusion", "plot_pr",
    "plot_roc", "plot_roc_comparison", "plot_training_curves", "pointing_game", "pr_points", "roc_auc",
    "roc_points", "segmentation_metrics", "write_classification_outputs", "youden_threshold",
]
