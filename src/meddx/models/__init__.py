"""meddx.models: a registry of flat functional Keras models that output logits.

Cheap to import: listing models and reading their specs import no Keras/TensorFlow (Keras is
loaded only when a model is built or loaded, or a layer is looked up in a built model).
"""

from __future__ import annotations

from meddx.models.layers import find_cam_layer
from meddx.models.registry import (
    ModelSpec,
    build_model,
    list_models,
    load_model,
    model_spec,
    register,
)

__all__ = ["ModelSpec", "build_model", "find_cam_layer", "list_models", "load_model", "model_spec", "register"]
