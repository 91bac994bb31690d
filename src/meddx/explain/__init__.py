"""meddx.explain: Grad-CAM family and occlusion heatmaps, heatmap -> lesions, overlays, localisation metrics.

Importing this package is cheap (TensorFlow/Keras load only when a heatmap is computed).
"""

from __future__ import annotations

from meddx.explain.cam import METHODS, explain, grad_cam, grad_cam_plus_plus, occlusion
from meddx.explain.lesions import heatmap_to_lesions, lesions_table, mask_to_lesions
from meddx.explain.localisation import energy_inside, pointing_game, pointing_hits
from meddx.explain.overlay import save_overlay, save_volume_overlay

__all__ = [
    "METHODS", "explain", "grad_cam", "grad_cam_plus_plus", "occlusion",
    "heatmap_to_lesions", "lesions_table", "mask_to_lesions",
    "energy_inside", "pointing_game", "pointing_hits",
    "save_overlay", "save_volume_overlay",
]
