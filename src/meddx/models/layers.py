"""Finding layers in a built model: the Grad-CAM target (`find_cam_layer`).

The one implementation of "which feature map does Grad-CAM explain", used by `meddx.explain`.
Keras is imported inside the function, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import Any

from meddx.errors import ConfigError
from meddx.models.registry import CAM_LAYER

__all__ = ["find_cam_layer", "layer_output"]


def layer_output(layer: Any) -> Any | None:
    """The layer's single symbolic output, or None (no output, several outputs, or shared use)."""
    try:
        out = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return None
    if isinstance(out, (list, tuple)):
        return None
    return out


def input_rank(model: Any) -> int:
    """4 for (N, H, W, C) models, 5 for (N, D, H, W, C) models; ConfigError for anything else."""
    if len(model.inputs) != 1:
        raise ConfigError(f"model '{model.name}' has {len(model.inputs)} inputs; Grad-CAM needs a single image input")
    rank = len(model.inputs[0].shape)
    if rank not in (4, 5):
        raise ConfigError(
            f"model '{model.name}' input has shape {tuple(model.inputs[0].shape)}; "
            "expected (N, H, W, C) or (N, D, H, W, C)"
        )
    return rank


def find_cam_layer(model: Any) -> str:
    """Name of the layer Grad-CAM should explain in a Keras model.

    The layer named 'features' (meddx models mark their last spatial feature map with it) when its
    output is spatial (4D or 5D); otherwise the last layer, in topological order, whose output has
    the input's rank (4D for 2D models, 5D for 3D) and is not a model output. ConfigError when
    there is none.
    """
    import keras

    rank = input_rank(model)
    output_ids = {id(t) for t in model.outputs}
    candidates = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        out = layer_output(layer)
        if out is None:
            continue
        if layer.name == CAM_LAYER and len(out.shape) in (4, 5):
            return layer.name
        if len(out.shape) == rank and id(out) not in output_ids:
            candidates.append(layer.name)
    if not candidates:
        raise ConfigError(f"model '{model.name}' has no layer with a spatial ({rank}D) output for Grad-CAM")
    return candidates[-1]
