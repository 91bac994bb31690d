"""meddx.models: a registry of flat functional Keras models that output logits.

Cheap to import (Keras is loaded only when a model is built or loaded).
"""

from __future__ import annotations

from meddx.models.registry import (
    ModelSpec,
    build_model,
    find_cam_layer,
    list_models,
    load_model,
    model_spec,
    register,
)

__all__ = ["ModelSpec", "build_model", "find_cam_layer", "list_models", "load_model", "model_spec", "register"]
