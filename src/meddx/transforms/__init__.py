"""meddx.transforms: preprocessing (image -> model input) and 2D/3D augmentation.

numpy/scipy/scikit-image only at import time; `Augmenter.as_tf_function` imports TensorFlow lazily.
"""

from __future__ import annotations

from meddx.transforms._base import transform_from_config
from meddx.transforms.augment import AUGMENT_PRESETS, Augmenter
from meddx.transforms.preprocess import INTENSITY_CHOICES, WINDOW_PRESETS, Preprocessing

__all__ = ["AUGMENT_PRESETS", "Augmenter", "INTENSITY_CHOICES", "Preprocessing", "WINDOW_PRESETS",
           "transform_from_config"]
